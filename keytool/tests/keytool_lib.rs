//! The library API the daemon uses: create, load, consistency checks.

use orgsync_keytool::{InstanceDir, KeytoolError};
use orgsync_protocol::identity::{Fingerprint, OrgKeyPair};

#[test]
fn create_then_load_gives_the_same_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("inst");
    let made = InstanceDir::create(&path, "Acme", "127.0.0.1:7700").unwrap();
    let dir = InstanceDir::new(&path);
    let loaded = dir.load_identity().unwrap();
    assert_eq!(loaded.org_id, made.org_id);
    assert_eq!(loaded.org_id, made.genesis_public_key.org_id());
    assert_eq!(loaded.instance_id, made.instance_id);
    assert_eq!(loaded.public_key(), made.public_key());
    assert_eq!(
        loaded.fingerprint,
        Fingerprint::of_certificate(&loaded.cert_der)
    );
    assert_eq!(loaded.key_der.as_slice(), made.key_der.as_slice());
    assert_eq!(
        dir.listen_address().unwrap().as_deref(),
        Some("127.0.0.1:7700")
    );
    assert!(dir.load_partners().unwrap().is_empty());
    let b = loaded.bundle(vec!["acme.example:7700".into()]);
    assert_eq!(
        orgsync_keytool::bundle::Bundle::parse(&b.to_line()).unwrap(),
        b
    );
    assert!(matches!(
        InstanceDir::create(&path, "Acme", "127.0.0.1:7700"),
        Err(KeytoolError::AlreadyInitialised { .. })
    ));
}

#[test]
fn a_swapped_key_file_or_certificate_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("inst");
    InstanceDir::create(&path, "Acme", "127.0.0.1:7700").unwrap();
    let dir = InstanceDir::new(&path);
    let key_path = dir.org_key_path(0);
    let original = std::fs::read(&key_path).unwrap();
    let other = OrgKeyPair::generate();
    let hex = format!(
        "{}\n",
        data_encoding::HEXLOWER.encode(&other.secret_bytes()[..])
    );
    std::fs::write(&key_path, hex).unwrap();
    let err = dir.load_identity().unwrap_err().to_string();
    assert!(
        err.contains("org-0.key") && err.contains("does not hold the key"),
        "{err}"
    );
    std::fs::write(&key_path, &original).unwrap();
    dir.load_identity().unwrap();

    // Another instance's certificate in place of ours.
    let other_inst = tmp.path().join("other");
    InstanceDir::create(&other_inst, "Other", "127.0.0.1:7701").unwrap();
    std::fs::copy(other_inst.join("tls.crt"), dir.tls_cert_path()).unwrap();
    let err = dir.load_identity().unwrap_err().to_string();
    assert!(err.contains("tls.crt") && err.contains("differs"), "{err}");
}

#[test]
fn bad_init_arguments_are_refused_without_creating_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("inst");
    assert!(matches!(
        InstanceDir::create(&path, "Acme", "no-port"),
        Err(KeytoolError::BadAddress { .. })
    ));
    assert!(matches!(
        InstanceDir::create(&path, "  ", "127.0.0.1:7700"),
        Err(KeytoolError::BadOrgName { .. })
    ));
    assert!(!path.exists());
}

#[test]
fn rotate_records_signed_links_and_export_carries_them() {
    use orgsync_protocol::rotation::{verify_chain, Anchor, MAX_CHAIN};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("inst");
    let made = InstanceDir::create(&path, "Acme", "127.0.0.1:7700").unwrap();
    let dir = InstanceDir::new(&path);
    assert!(made.bundle(vec![]).rotation.is_none());
    for _ in 0..MAX_CHAIN + 2 {
        dir.rotate().unwrap();
    }
    let id = dir.load_identity().unwrap();
    let epoch = id.epoch;
    assert_eq!(epoch as usize, MAX_CHAIN + 2);
    assert_eq!(id.rotations.len(), MAX_CHAIN + 2);
    let text = std::fs::read_to_string(dir.identity_path()).unwrap();
    assert_eq!(text.matches("[[rotation]]").count(), MAX_CHAIN + 2);
    // The bundle carries the last 16 links, verifiable from any of those
    // epochs' keys, not from older ones.
    let b = id.bundle(vec![]);
    let chain = b.rotation.clone().unwrap();
    assert_eq!(chain.links.len(), MAX_CHAIN);
    assert_eq!(
        orgsync_keytool::bundle::Bundle::parse(&b.to_line()).unwrap(),
        b
    );
    let check = |anchor| {
        verify_chain(
            &b.org_id,
            &chain,
            b.epoch,
            &b.public_key,
            &b.cert_fingerprint,
            &anchor,
        )
    };
    let known = |e: u32| Anchor::Known {
        epoch: e,
        key: id.keys[&e].public(),
    };
    assert_eq!(check(known(epoch - 16)), Ok(()));
    assert_eq!(check(known(epoch - 1)), Ok(()));
    assert!(check(known(1)).is_err());
    assert!(check(Anchor::Genesis).is_err());

    // A damaged link in identity.toml is caught on load.
    let first_sig = text
        .lines()
        .find(|l| l.starts_with("signature = "))
        .unwrap()
        .to_string();
    // Change the first hex digit of the signature.
    let i = first_sig.find('"').unwrap() + 1;
    let mut bytes = first_sig.clone().into_bytes();
    bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
    let damaged = String::from_utf8(bytes).unwrap();
    std::fs::write(dir.identity_path(), text.replacen(&first_sig, &damaged, 1)).unwrap();
    let err = dir.load_identity().unwrap_err().to_string();
    assert!(
        err.contains("rotation for epoch 1 is not signed by the key of epoch 0"),
        "{err}"
    );
}
