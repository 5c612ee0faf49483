//! Archive round trips and corruption, property-tested.

use proptest::prelude::*;

use super::archive::{FileEntry, Payload};
use super::{seal, BackupError, Manifest, ARCHIVE_VERSION};

fn manifest(objects: usize) -> Manifest {
    Manifest {
        archive_version: ARCHIVE_VERSION,
        store_format: crate::store::format::CURRENT,
        instance: "0123456789abcdef".into(),
        org: "org".into(),
        log_head: 7,
        created_ms: 1,
        objects,
        digest: "d".into(),
        with_secrets: false,
        write_pause_us: 3,
    }
}

fn payload_strategy() -> impl Strategy<Value = Payload> {
    let file = (
        "[a-z]{1,8}(/[a-z0-9][a-z0-9.]{0,7}){0,2}",
        0u32..0o777,
        proptest::collection::vec(any::<u8>(), 0..3000),
    )
        .prop_map(|(path, mode, data)| FileEntry { path, mode, data });
    let entry = (
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(any::<u8>(), 0..200),
    );
    let tree = (
        proptest::collection::vec(any::<u8>(), 1..12),
        proptest::collection::vec(entry, 0..30),
    );
    (
        0usize..1000,
        proptest::collection::vec(file, 0..6),
        proptest::collection::vec(tree, 0..4),
    )
        .prop_map(|(n, files, trees)| Payload {
            manifest: manifest(n),
            files,
            trees,
        })
}

fn sealed(payload: &[u8], pass: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    seal::seal_to(&mut out, payload, pass, |_| {}).expect("seal");
    out
}

/// One encrypted archive of a few chunks, sealed once (argon2 is slow).
fn encrypted_fixture() -> &'static (Vec<u8>, Vec<u8>) {
    static F: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let payload: Vec<u8> = (0..(seal::CHUNK_SIZE as usize * 2 + 777))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let archive = sealed(&payload, Some(b"pass"));
        (payload, archive)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn payload_round_trips_through_a_plain_archive(p in payload_strategy()) {
        let bytes = p.encode();
        let archive = sealed(&bytes, None);
        let opened = seal::open(&archive, None).expect("open");
        prop_assert_eq!(Payload::decode(&opened).expect("decode"), p);
    }

    #[test]
    fn any_flipped_byte_of_a_plain_archive_is_refused(
        p in payload_strategy(), at in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let mut archive = sealed(&p.encode(), None);
        let i = at.index(archive.len());
        archive[i] ^= 1 << bit;
        prop_assert!(seal::open(&archive, None).is_err());
    }

    #[test]
    fn any_truncation_of_a_plain_archive_is_refused(p in payload_strategy(), at in any::<prop::sample::Index>()) {
        let archive = sealed(&p.encode(), None);
        let cut = at.index(archive.len());
        prop_assert!(seal::open(&archive[..cut], None).is_err());
    }

    #[test]
    fn payload_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Payload::decode(&data);
        let _ = seal::open(&data, None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_damage_to_an_encrypted_archive_is_refused(
        at in any::<prop::sample::Index>(), bit in 0u8..8, truncate in any::<bool>(),
    ) {
        let (_, archive) = encrypted_fixture();
        let i = at.index(archive.len());
        let damaged = if truncate {
            archive[..i].to_vec()
        } else {
            let mut d = archive.clone();
            d[i] ^= 1 << bit;
            d
        };
        prop_assert!(seal::open(&damaged, Some(b"pass")).is_err());
    }
}

#[test]
fn encrypted_archive_opens_with_its_passphrase_only() {
    let (payload, archive) = encrypted_fixture();
    assert!(seal::is_encrypted(archive));
    assert_eq!(
        &seal::open(archive, Some(b"pass")).expect("open")[..],
        &payload[..]
    );
    assert!(matches!(
        seal::open(archive, Some(b"nope")),
        Err(BackupError::WrongPassphrase)
    ));
    assert!(matches!(
        seal::open(archive, None),
        Err(BackupError::PassphraseNeeded)
    ));
    // A cut exactly at a chunk boundary is not a complete archive.
    let header = archive.len() - (payload.len() + 3 * (5 + 16));
    let first_chunk_end = header + 5 + seal::CHUNK_SIZE as usize + 16;
    assert!(matches!(
        seal::open(&archive[..first_chunk_end], Some(b"pass")),
        Err(BackupError::Truncated { .. })
    ));
}

#[test]
fn payload_paths_cannot_escape() {
    for path in ["../x", "/etc/passwd", "a/../../b", "./a", "a//b", ""] {
        let p = Payload {
            manifest: manifest(0),
            files: vec![FileEntry {
                path: path.into(),
                mode: 0o600,
                data: vec![],
            }],
            trees: vec![],
        };
        assert!(Payload::decode(&p.encode()).is_err(), "{path:?} accepted");
    }
}
