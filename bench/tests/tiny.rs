//! CI keeps the bench from rotting: `orgsync-bench --tiny all` must run
//! every scenario against real daemons and print every row. No timing is
//! asserted; the PASS/FAIL column is for people reading a full-size run.

use std::process::Command;

#[test]
fn tiny_all_runs_every_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_orgsync-bench"))
        .args(["--tiny", "all"])
        .output()
        .expect("run orgsync-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "orgsync-bench --tiny all failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for row in [
        "machine:",
        "baseline: raw sled apply_batch(1000)+flush",
        "baseline: raw quinn, one stream",
        "baseline: raw quinn + AEAD 64 KiB chunks",
        "baseline: raw quinn round trip p50",
        "1 replication A->B, durable on B",
        "baseline: raw sled CPU per 100k records",
        "1 cost: CPU per 100k changes, A and B (one process)",
        "1 cost: UDP bytes per change A->B",
        "1s replication through a share (flag, auto-approve) vs mirror",
        "2 latency API write A -> event on B, p50",
        "2 latency API write A -> event on B, p99",
        "3 resume file",
        "4 initial sync of 10000 objects",
        "5 memory: peak RSS of orgsyncd A (sender) during 4",
        "5 memory: peak RSS of orgsyncd B (receiver) during 4",
        "4 cost: CPU per 100k changes, orgsyncd A (sender)",
        "4 cost: CPU per 100k changes, orgsyncd B (receiver)",
        "4 cost: UDP bytes per change A->B",
        "6 fan-out A -> 3 partners, aggregate",
        "6 fan-out: slowest partner done after A's last write",
        "7 growth: replication with 5000 stored",
        "7 growth: replication, 5000 vs 1000 stored",
        "7 growth: latency p99, 5000 vs 1000 stored",
        // Measured, or a row saying what is missing and how to install it.
        "peers: PouchDB",
        "peers: Syncthing",
    ] {
        assert!(
            stdout.contains(row),
            "no row {row:?} in the output:\n{stdout}"
        );
    }
    // An installed peer is measured and compared (bench/peers/install.sh).
    for (peer, ratio) in [
        ("PouchDB", "peers: replication, orgsync / PouchDB"),
        ("PouchDB", "peers: change latency p99, orgsync / PouchDB"),
        ("Syncthing", "peers: resume file, orgsync / Syncthing"),
    ] {
        let installed = !stdout.contains(&format!("peers: {peer} not measured"));
        assert!(
            !installed || stdout.contains(ratio),
            "{peer} is installed but there is no row {ratio:?}:\n{stdout}"
        );
    }
    // Every scenario row carries a verdict.
    let verdicts = stdout
        .lines()
        .map(str::trim_end)
        .filter(|l| l.ends_with("PASS") || l.ends_with("FAIL"))
        .count();
    assert!(verdicts >= 10, "expected a verdict per target:\n{stdout}");
}

#[test]
fn repeat_reports_every_round_and_the_median_round() {
    let out = Command::new(env!("CARGO_BIN_EXE_orgsync-bench"))
        .args(["--tiny", "--repeat", "3", "baselines"])
        .output()
        .expect("run orgsync-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "orgsync-bench --tiny --repeat 3 baselines failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for heading in [
        "round 1 of 3:",
        "round 2 of 3:",
        "round 3 of 3:",
        "median of 3 rounds",
    ] {
        assert!(stdout.contains(heading), "no {heading:?} in:\n{stdout}");
    }
    // The median table's sled row lists the three rounds' figures.
    let median = &stdout[stdout.find("median of 3 rounds").unwrap_or(0)..];
    let sled = median
        .lines()
        .find(|l| l.starts_with("baseline: raw sled apply_batch(1000)+flush"))
        .unwrap_or_else(|| panic!("no sled row in the median table:\n{median}"));
    let figures: Vec<f64> = sled
        .split_whitespace()
        .rev()
        .take(3)
        .map(|f| f.parse().unwrap_or(f64::NAN))
        .collect();
    assert!(
        figures.iter().all(|f| f.is_finite() && *f > 0.0),
        "the sled row should end with three figures: {sled:?}"
    );
}

#[test]
fn repeat_refuses_an_even_number_of_rounds() {
    let out = Command::new(env!("CARGO_BIN_EXE_orgsync-bench"))
        .args(["--tiny", "--repeat", "2", "baselines"])
        .output()
        .expect("run orgsync-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--repeat 2 was accepted");
    assert!(
        stderr.contains("use an odd number"),
        "the error should say what to use instead: {stderr}"
    );
}
