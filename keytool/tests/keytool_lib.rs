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
