//! End-to-end: a 64 MiB résumé attached on A reaches B although B is
//! interrupted twice while the file is arriving (kill -9 once, SIGTERM
//! once). Each restart resumes from the bytes already on B's disk and the
//! content B serves is byte-identical to the original.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::Instance;

const SIZE: usize = 64 << 20;

/// Deterministic, incompressible test content.
fn content(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The size of the partial download in `partial/`, if one is there.
fn partial_size(partial: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(partial).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
}

/// Waits until B's partial file holds at least `at_least` bytes (and is
/// not complete); returns its size. Panics if it ever shrinks below `floor`.
fn wait_partial(b: &Instance, partial: &Path, floor: u64, at_least: u64) -> u64 {
    support::wait_for(
        &format!("B's partial résumé to reach {at_least} bytes"),
        Duration::from_secs(120),
        || {
            let size = partial_size(partial);
            if let Some(s) = size {
                assert!(s >= floor, "partial file shrank from {floor} to {s} bytes: the transfer restarted instead of resuming");
                assert!(
                    s < SIZE as u64,
                    "the transfer completed before it could be interrupted"
                );
            }
            assert!(b.is_running());
            size.filter(|s| *s >= at_least)
        },
    )
}

#[test]
fn resume_of_64_mib_survives_two_interruptions() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    Instance::pair(&a, &b);
    a.start();
    b.start();

    let data = content(SIZE);
    let want = blake3::hash(&data);
    let src: PathBuf = a.dir.parent().unwrap().join("ada-cv.pdf");
    std::fs::write(&src, &data).unwrap();
    drop(data);

    let contact = a.put("contact", &["--set", "first_name=Ada"]);
    let resume = a
        .cli_ok(&["attach-resume", &contact, src.to_str().unwrap()])
        .trim()
        .to_string();
    let meta = a.cli_json(&["get", &resume]);
    assert_eq!(meta["fields"]["size"], SIZE as u64);

    let partial = b.dir.join("blobs").join("partial");
    // Interruption 1: kill -9 while the file is growing.
    let s1 = wait_partial(&b, &partial, 0, 4 << 20);
    b.kill9();
    let after_kill = partial_size(&partial).expect("partial file kept after kill -9");
    assert!(after_kill >= s1);
    b.start();
    // Interruption 2: SIGTERM, after the transfer has made progress.
    let s2 = wait_partial(&b, &partial, after_kill, after_kill + (8 << 20));
    b.stop();
    let after_stop = partial_size(&partial).expect("partial file kept after SIGTERM");
    assert!(after_stop >= s2);
    b.start();

    // The résumé record arrived long ago; its content becomes readable
    // on B only once complete and verified.
    let out = b.dir.parent().unwrap().join("received.pdf");
    support::wait_for(
        "the résumé content on B",
        Duration::from_secs(300),
        || {
            if let Some(s) = partial_size(&partial) {
                assert!(
                    s >= after_stop,
                    "partial file shrank after restart: {s} < {after_stop}"
                );
            }
            b.cli(&["get-resume", &resume, "-o", out.to_str().unwrap()])
                .status
                .success()
                .then_some(())
        },
    );
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), SIZE);
    assert_eq!(
        blake3::hash(&got),
        want,
        "B's copy differs from the original"
    );
    assert_eq!(
        partial_size(&partial),
        None,
        "no partial file left once complete"
    );
    eprintln!("interrupted at {s1} (kill -9) and {s2} (SIGTERM) of {SIZE} bytes");
    a.stop();
    b.stop();
}
