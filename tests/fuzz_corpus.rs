//! Every fuzz target's invariants (`fuzz/checks.rs`) in CI, without
//! cargo-fuzz: each decoder runs over every file of its seed corpus
//! (`fuzz/corpus/<target>/`) and over arbitrary bytes from proptest.
//! The fuzzer itself (longer, coverage-guided) is run with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run -O <target> -- -max_total_time=60`.

#[path = "../fuzz/checks.rs"]
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
    fn import_line_json_like(text in "\\{(\"(kind|id|fields|custom|flags|first_name|email)\": ?(\"[a-z0-9@.-]{0,12}\"|[0-9]{1,6}|null|\\[\\]|\\{\\}), ?){0,6}\\}") {
        checks::import_line(text.as_bytes());
    }
}

/// Writes the pairing-message seeds from real encodings (the other corpora
/// are hand-written or come from the protocol's own tests):
/// `cargo test --test fuzz_corpus -- --ignored write_pairing_seeds`.
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
