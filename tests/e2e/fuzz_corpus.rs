//! Every fuzz target's invariants (`fuzz/checks.rs`) in CI, without
//! cargo-fuzz: each decoder runs over every file of its seed corpus
//! (`fuzz/corpus/<target>/`) and over arbitrary bytes from proptest.
//! The fuzzer itself (longer, coverage-guided) is run with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run -O <target> -- -max_total_time=60`.

#[path = "../../fuzz/checks.rs"]
mod checks;

use proptest::prelude::*;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("corpus file");
            (p.display().to_string(), data)
        })
        .collect()
}

#[test]
fn every_decoder_survives_its_seed_corpus() {
    for (target, check) in checks::TARGETS {
        let files = corpus(target);
        assert!(
            files.len() >= 3,
            "{target}: the seed corpus has {} files",
            files.len()
        );
        for (name, data) in &files {
            let r = std::panic::catch_unwind(|| check(data));
            assert!(r.is_ok(), "{target} panicked on {name}");
        }
        eprintln!("fuzz corpus: {target}: {} files, 0 panics", files.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn frame_decode_arbitrary(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        checks::frame_decode(&data);
    }

    #[test]
    fn envelope_open_arbitrary(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        checks::envelope_open(&data);
    }

    #[test]
    fn bundle_parse_arbitrary(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        checks::bundle_parse(&data);
    }

    #[test]
    fn pairing_message_arbitrary(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        checks::pairing_message(&data);
    }

    #[test]
    fn config_parse_arbitrary(text in "(\\[[a-z]{0,8}\\]\n|[a-z_]{1,20} = (\"[^\"]{0,10}\"|[0-9]{1,12}|true)\n|[ -~]{0,40}\n){0,12}") {
        checks::config_parse(text.as_bytes());
    }

    #[test]
    fn config_parse_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        checks::config_parse(&data);
    }

    #[test]
    fn import_line_arbitrary(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        checks::import_line(&data);
    }

    #[test]
    fn backup_archive_arbitrary(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        checks::backup_archive(&data);
    }

    #[test]
    fn import_line_json_like(text in "\\{(\"(kind|id|fields|custom|flags|first_name|email)\": ?(\"[a-z0-9@.-]{0,12}\"|[0-9]{1,6}|null|\\[\\]|\\{\\}), ?){0,6}\\}") {
        checks::import_line(text.as_bytes());
    }
}

/// Writes the pairing-message seeds from real encodings (the other corpora
/// are hand-written or come from the protocol's own tests):
/// `cargo test --test e2e -- --ignored fuzz_corpus::write_pairing_seeds`.
#[test]
#[ignore = "regenerates fuzz/corpus/pairing_message"]
fn write_pairing_seeds() {
    use orgsync_keytool::pairing::{Message, RefusalReason};
    use orgsync_protocol::model::OrgId;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pairing_message");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let seeds = [
        (
            "hello",
            Message::Hello {
                version: 1,
                expected: OrgId([3; 32]),
                pake: vec![9; 33],
            },
        ),
        (
            "refused",
            Message::Refused {
                reason: RefusalReason::Burned,
            },
        ),
        (
            "pake_reply",
            Message::PakeReply {
                pake: vec![5; 33],
                confirm: [6; 32],
            },
        ),
        (
            "confirm",
            Message::Confirm {
                confirm: [1; 32],
                sealed: vec![2; 120],
            },
        ),
        ("reject", Message::Reject),
        (
            "accept",
            Message::Accept {
                sealed: vec![4; 90],
            },
        ),
        ("done", Message::Done),
        (
            "fail",
            Message::Fail {
                reason: "bundle refused: wrong épreuve".into(),
            },
        ),
    ];
    for (name, m) in seeds {
        std::fs::write(dir.join(name), m.encode()).expect("seed");
    }
}

/// Writes the rotation-proof seeds of the bundle parser from real bundles
/// (a chain signed with real keys, and malformed sections under a valid
/// checksum): `cargo test --test e2e -- --ignored fuzz_corpus::write_rotation_seeds`.
#[test]
#[ignore = "regenerates fuzz/corpus/bundle_parse/rotation_*"]
fn write_rotation_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/bundle_parse");
    let good = signed_rotated_bundle(3);
    std::fs::write(dir.join("rotation_valid_epoch3"), good.to_line() + "\n").expect("seed");
    let payload = rotation_payload_head();
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    // Section tag, then count 0 / 17 / cut inside a link / unknown tag.
    let mut p = payload.clone();
    p.extend_from_slice(&[1, 0]);
    seeds.push(("rotation_zero_links", p));
    let mut p = payload.clone();
    p.extend_from_slice(&[1, 17]);
    p.extend_from_slice(&[7; 32]);
    seeds.push(("rotation_17_links", p));
    let mut p = payload.clone();
    p.extend_from_slice(&[1, 2]);
    p.extend_from_slice(&[7; 32 + 132 + 50]);
    seeds.push(("rotation_cut_in_link", p));
    let mut p = payload.clone();
    p.extend_from_slice(&[9, 1]);
    seeds.push(("rotation_unknown_section", p));
    for (name, p) in seeds {
        std::fs::write(dir.join(name), line_with_payload(&p) + "\n").expect("seed");
    }
}

/// A bundle of a fresh organisation rotated `n` times, its chain signed by
/// real keys.
fn signed_rotated_bundle(n: u32) -> orgsync_protocol::bundle::Bundle {
    use orgsync_protocol::bundle::Bundle;
    use orgsync_protocol::identity::{Fingerprint, OrgKeyPair};
    use orgsync_protocol::rotation::{RotationChain, RotationLink};
    let keys: Vec<OrgKeyPair> = (0..=n).map(|_| OrgKeyPair::generate()).collect();
    let org = keys[0].public().org_id();
    let fp = Fingerprint::of_certificate(b"seed certificate");
    let links = (1..=n)
        .map(|e| {
            RotationLink::sign(
                &keys[e as usize - 1],
                &org,
                e,
                keys[e as usize].public(),
                fp,
            )
        })
        .collect();
    Bundle::new(
        "Rotated Seed".into(),
        org,
        keys[n as usize].public(),
        n,
        fp,
        vec!["seed.example:7700".into()],
    )
    .and_then(|b| {
        b.with_rotation(Some(RotationChain {
            base_key: keys[0].public(),
            links,
        }))
    })
    .expect("valid rotated bundle")
}

/// The payload of an epoch-3 bundle up to (and including) its addresses:
/// name, account number, key, epoch, fingerprint, no address.
fn rotation_payload_head() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&4u16.to_be_bytes());
    p.extend_from_slice(b"Seed");
    p.extend_from_slice(&[1; 32]);
    p.extend_from_slice(&[2; 32]);
    p.extend_from_slice(&3u32.to_be_bytes());
    p.extend_from_slice(&[3; 32]);
    p.push(0);
    p
}

/// `orgsync-bundle:v1:<base64url(payload)>:<checksum>`, the checksum being
/// the first 4 bytes of BLAKE3 of the text before it: arbitrary payloads
/// get past the typo check and reach the decoder.
fn line_with_payload(payload: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut line = String::from("orgsync-bundle:v1:");
    for chunk in payload.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            line.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    let check = blake3::hash(line.as_bytes());
    line.push(':');
    for byte in &check.as_bytes()[..4] {
        line.push_str(&format!("{byte:02x}"));
    }
    line
}

#[test]
fn the_bundle_corpus_covers_the_rotation_section() {
    use orgsync_protocol::bundle::{Bundle, BundleError};
    use orgsync_protocol::rotation::{verify_chain, Anchor};
    let files = corpus("bundle_parse");
    let text = |name: &str| {
        let (_, data) = files
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .unwrap_or_else(|| panic!("fuzz/corpus/bundle_parse/{name} is missing"));
        String::from_utf8_lossy(data).into_owned()
    };
    // The signed seed parses and its chain verifies from the genesis key.
    let good = Bundle::parse(&text("rotation_valid_epoch3")).expect("signed seed parses");
    let chain = good.rotation.as_ref().expect("the seed carries a proof");
    assert_eq!(
        verify_chain(
            &good.org_id,
            chain,
            good.epoch,
            &good.public_key,
            &good.cert_fingerprint,
            &Anchor::Genesis
        ),
        Ok(())
    );
    for (name, expect) in [
        ("rotation_zero_links", "BadRotation"),
        ("rotation_17_links", "BadRotation"),
        ("rotation_cut_in_link", "Truncated"),
        ("rotation_unknown_section", "UnknownSection"),
    ] {
        let e = Bundle::parse(&text(name)).expect_err(name);
        let ok = match expect {
            "BadRotation" => matches!(e, BundleError::BadRotation { .. }),
            "Truncated" => matches!(e, BundleError::Truncated { .. }),
            _ => matches!(e, BundleError::UnknownSection { .. }),
        };
        assert!(ok, "{name}: {e:?}");
    }
    // The test's own encoder agrees with the parser.
    assert_eq!(
        Bundle::parse(&line_with_payload(&rotation_payload_head())).map(|b| b.epoch),
        Ok(3)
    );
    eprintln!("fuzz corpus: bundle_parse: 1 signed rotation seed verifies, 4 malformed sections refused with their variant");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary rotation sections under a valid checksum (arbitrary bytes
    /// alone almost never get past it).
    #[test]
    fn bundle_rotation_section_arbitrary(
        count in 0u8..20,
        tail in proptest::collection::vec(any::<u8>(), 0..2400),
    ) {
        let mut p = rotation_payload_head();
        p.extend_from_slice(&[1, count]);
        p.extend_from_slice(&tail);
        checks::bundle_parse(line_with_payload(&p).as_bytes());
    }

    /// A real signed bundle with one byte changed and the checksum fixed:
    /// the decoder and the chain check see every field altered.
    #[test]
    fn bundle_signed_rotation_altered(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        use std::sync::OnceLock;
        static GOOD: OnceLock<Vec<u8>> = OnceLock::new();
        let good = GOOD.get_or_init(|| {
            let line = signed_rotated_bundle(2).to_line();
            let payload = line.split(':').nth(2).expect("payload").to_string();
            decode_b64url(&payload)
        });
        let mut p = good.clone();
        let i = pos.index(p.len());
        p[i] = byte;
        checks::bundle_parse(line_with_payload(&p).as_bytes());
    }
}

fn decode_b64url(text: &str) -> Vec<u8> {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let vals: Vec<u32> = text
        .bytes()
        .map(|c| B64.iter().position(|&b| b == c).expect("base64url") as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in vals.chunks(4) {
        let mut n = 0u32;
        for (i, v) in chunk.iter().enumerate() {
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// Writes the backup-archive seeds from real encodings:
/// `cargo test --test e2e -- --ignored fuzz_corpus::write_backup_seeds`.
#[test]
#[ignore = "regenerates fuzz/corpus/backup_archive"]
fn write_backup_seeds() {
    use orgsync_daemon::backup::archive::{FileEntry, Payload};
    use orgsync_daemon::backup::{seal, Manifest};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/backup_archive");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let payload = Payload {
        manifest: Manifest {
            archive_version: 1,
            store_format: 2,
            instance: "0123456789abcdef".into(),
            org: "org".into(),
            log_head: 3,
            created_ms: 1,
            objects: 0,
            digest: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262".into(),
            with_secrets: false,
            write_pause_us: 5,
        },
        files: vec![FileEntry {
            path: "orgsync.toml".into(),
            mode: 0o644,
            data: b"[sync]\n".to_vec(),
        }],
        trees: vec![(
            b"data".to_vec(),
            vec![(b"mformat".to_vec(), vec![0, 0, 0, 2])],
        )],
    }
    .encode();
    let seal_with = |pass: Option<&[u8]>| {
        let mut out = Vec::new();
        seal::seal_to(&mut out, &payload, pass, |_| {}).expect("seal");
        out
    };
    std::fs::write(dir.join("payload"), &payload).expect("seed");
    std::fs::write(dir.join("plain"), seal_with(None)).expect("seed");
    std::fs::write(dir.join("encrypted"), seal_with(Some(b"pass"))).expect("seed");
}
