//! The peers a user would pick instead of orgsync, measured in the same run
//! (issue 16 item 6): PouchDB with live replication against scenarios 1
//! and 2, Syncthing against scenario 3. Each peer is a scenario of its own,
//! run right after the orgsync scenarios it is compared with, so that the
//! load of a shared machine drifts as little as possible in between. The bench installs nothing: a peer
//! that is not there becomes a row saying what is missing and the command
//! that installs it (`bench/peers/install.sh`), and the run goes on.
//!
//! Ratios are orgsync ÷ peer, computed by [`ratios`] from the rows of the
//! same run.

mod child;
mod http;
mod pouchdb;
mod syncthing;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::baseline::percentile;
use crate::report::Row;

pub use child::interrupt;

/// The sizes of the peers' workloads.
pub struct Sizes {
    /// Records PouchDB replicates (scenario 1's count).
    pub records: u64,
    /// Single changes timed on PouchDB (scenario 2's count), after the
    /// warm-up.
    pub samples: usize,
    /// Untimed single changes first (scenario 2's warm-up).
    pub warmup: usize,
    /// Bytes of the file Syncthing carries (scenario 3's size).
    pub file: usize,
    /// 1 KiB files whose pickup is timed (each takes Syncthing's watcher
    /// delay, 10 s by default).
    pub pickups: usize,
}

impl Sizes {
    /// The same sizes as scenarios 1–3 (`--tiny`: theirs too).
    pub fn new(tiny: bool) -> Sizes {
        if tiny {
            Sizes {
                records: 5_000,
                samples: 50,
                warmup: 20,
                file: 4 << 20,
                pickups: 1,
            }
        } else {
            Sizes {
                records: 200_000,
                samples: 1_000,
                warmup: 20,
                file: 256 << 20,
                pickups: 5,
            }
        }
    }
}

/// The command that installs the peers, for the rows of missing ones.
const INSTALL: &str = "bench/peers/install.sh";

/// Where `install.sh` and the node scripts are: `ORGSYNC_BENCH_PEERS`, or
/// `bench/peers` of the source tree the bench was built from.
fn scripts_dir() -> PathBuf {
    std::env::var_os("ORGSYNC_BENCH_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/peers")))
}

/// Row names the ratios are looked up by.
const POUCH_RATE: &str = "peers: PouchDB live replication A->B, all on B";
const POUCH_P50: &str = "peers: PouchDB write A -> B's _changes, p50";
const POUCH_P99: &str = "peers: PouchDB write A -> B's _changes, p99";
const SYNCTHING_RATE: &str = "peers: Syncthing file A->B after A's scan";
const ORGSYNC_RATE: &str = "1 replication A->B, durable on B";
const ORGSYNC_P50: &str = "2 latency API write A -> event on B, p50";
const ORGSYNC_P99: &str = "2 latency API write A -> event on B, p99";
const ORGSYNC_RESUME: &str = "3 resume file";

/// Measures PouchDB if it is installed (otherwise one row saying what is
/// missing), stopping every process it started and removing every file
/// before it returns, by `deadline` or on Ctrl-C ([`interrupt`]).
pub fn run_pouchdb(sizes: &Sizes, deadline: Instant) -> Result<Vec<Row>> {
    let scripts = scripts_dir();
    match pouchdb::missing(&scripts) {
        Some(what) => Ok(vec![not_installed("PouchDB", &what)]),
        None => measure_pouchdb(&scripts, sizes, deadline),
    }
}

/// Measures Syncthing if it is installed, as [`run_pouchdb`] does PouchDB.
pub fn run_syncthing(sizes: &Sizes, deadline: Instant) -> Result<Vec<Row>> {
    match syncthing::missing() {
        Some(what) => Ok(vec![not_installed("Syncthing", &what)]),
        None => measure_syncthing(sizes, deadline),
    }
}

fn measure_pouchdb(
    scripts: &std::path::Path,
    sizes: &Sizes,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let versions = pouchdb::versions(scripts)?;
    eprintln!(
        "peers: {versions}: {} records, then {} single changes...",
        sizes.records, sizes.samples
    );
    let root = tempfile::tempdir()?;
    let m = pouchdb::measure(
        scripts,
        root.path(),
        sizes.records,
        sizes.samples,
        sizes.warmup,
        deadline,
    )?;
    let mut latency = m.latency_ms;
    let p50 = percentile(&mut latency, 0.50);
    let p99 = percentile(&mut latency, 0.99);
    let max = percentile(&mut latency, 1.0);
    let rate = sizes.records as f64 / m.secs;
    eprintln!(
        "peers: {versions}: {} records of {} B written on A in {:.2} s, all on B after {:.2} s ({rate:.0} docs/s); latency p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        sizes.records, m.record_len, m.write_secs, m.secs
    );
    Ok(vec![
        Row::info(
            &format!(
                "peers: {versions}, replication batch_size {}",
                pouchdb::BATCH_SIZE
            ),
            "-",
            f64::NAN,
        ),
        Row::info(
            "peers: PouchDB bulkDocs(1000) write rate on A meanwhile",
            "docs/s",
            sizes.records as f64 / m.write_secs,
        ),
        Row::info(POUCH_RATE, "docs/s", rate),
        Row::info(POUCH_P50, "ms", p50),
        Row::info(POUCH_P99, "ms", p99),
        Row::info("peers: PouchDB write A -> B's _changes, max", "ms", max),
    ])
}

fn measure_syncthing(sizes: &Sizes, deadline: Instant) -> Result<Vec<Row>> {
    let version = syncthing::version()?;
    eprintln!(
        "peers: Syncthing {version}: a {} MiB file, then {} 1 KiB pickups...",
        sizes.file >> 20,
        sizes.pickups
    );
    let root = tempfile::tempdir()?;
    let m = syncthing::measure(root.path(), sizes.file, sizes.pickups, deadline)?;
    let mb = sizes.file as f64 / 1e6;
    let rate = mb / m.transfer_secs;
    let with_scan = mb / (m.scan_secs + m.transfer_secs);
    let mut pickups = m.pickups_s;
    let p50 = percentile(&mut pickups, 0.50);
    let max = percentile(&mut pickups, 1.0);
    eprintln!(
        "peers: Syncthing {version}: {} MiB scanned on A in {:.2} s, whole on B {:.2} s later ({rate:.0} MB/s; {with_scan:.0} MB/s with the scan); 1 KiB pickup p50 {p50:.2} s, max {max:.2} s (watcher delay {} s)",
        sizes.file >> 20,
        m.scan_secs,
        m.transfer_secs,
        m.watcher_delay_s
    );
    Ok(vec![
        Row::info(&format!("peers: Syncthing {version}"), "-", f64::NAN),
        Row::info(SYNCTHING_RATE, "MB/s", rate),
        Row::info(
            "peers: Syncthing file A->B with A's scan (hashing)",
            "MB/s",
            with_scan,
        ),
        Row::info(
            &format!(
                "peers: Syncthing 1 KiB pickup p50, watcher delay {} s",
                m.watcher_delay_s
            ),
            "s",
            p50,
        ),
    ])
}

/// The row of a peer that is not installed: what is missing, and how to
/// install it. Not an error: CI and most machines run without the peers.
fn not_installed(peer: &str, what: &str) -> Row {
    Row::info(
        &format!("peers: {peer} not measured: {what}; install the peers with `{INSTALL}`"),
        "-",
        f64::NAN,
    )
}

/// The orgsync ÷ peer rows, from the rows of one run: orgsync's figure,
/// the peer's as the baseline, and issue 16's target. A pair with either
/// side missing gives no row.
pub fn ratios(rows: &[Row]) -> Vec<Row> {
    let find = |name: &str| {
        rows.iter()
            .find(|r| r.scenario.starts_with(name) && !r.value.is_nan())
            .map(|r| r.value)
    };
    let mut out = Vec::new();
    let mut pair =
        |scenario: &str, metric: &str, ours, theirs, target: &str, pass: fn(f64) -> bool| {
            if let (Some(ours), Some(theirs)) = (ours, theirs) {
                let row = Row {
                    scenario: scenario.into(),
                    metric: metric.into(),
                    value: ours,
                    baseline: Some(theirs),
                    target: target.into(),
                    pass: None,
                };
                let verdict = row.ratio().map(pass);
                out.push(Row {
                    pass: verdict,
                    ..row
                });
            }
        };
    pair(
        "peers: replication, orgsync / PouchDB",
        "objects/s",
        find(ORGSYNC_RATE),
        find(POUCH_RATE),
        ">= 10x",
        |r| r >= 10.0,
    );
    pair(
        "peers: change latency p50, orgsync / PouchDB",
        "ms",
        find(ORGSYNC_P50),
        find(POUCH_P50),
        "<= 0.1x (10x faster)",
        |r| r <= 0.1,
    );
    pair(
        "peers: change latency p99, orgsync / PouchDB",
        "ms",
        find(ORGSYNC_P99),
        find(POUCH_P99),
        "<= 0.1x (10x faster)",
        |r| r <= 0.1,
    );
    pair(
        "peers: resume file, orgsync / Syncthing",
        "MB/s",
        find(ORGSYNC_RESUME),
        find(SYNCTHING_RATE),
        ">= 1.2x",
        |r| r >= 1.2,
    );
    out
}

/// How long PouchDB may take: 200,000 records at ≈ 1,500/s and 1,000
/// changes at ≈ 40 ms on the loaded 2-core machine of `RESULTS.md`, and
/// set-up, about four times over.
pub fn pouchdb_deadline(tiny: bool) -> Duration {
    Duration::from_secs(if tiny { 180 } else { 15 * 60 })
}

/// How long Syncthing may take: the 256 MiB file and five pickups of
/// ≈ 10 s (its watcher delay), and set-up, about four times over.
pub fn syncthing_deadline(tiny: bool) -> Duration {
    Duration::from_secs(if tiny { 180 } else { 5 * 60 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, value: f64) -> Row {
        Row::info(scenario, "-", value)
    }

    #[test]
    fn ratios_divide_orgsync_by_the_peer_and_judge_the_target() {
        let rows = vec![
            row(ORGSYNC_RATE, 50_000.0),
            row(POUCH_RATE, 4_000.0),
            row(ORGSYNC_P50, 0.6),
            row(POUCH_P50, 12.0),
            row(ORGSYNC_P99, 2.0),
            row(POUCH_P99, 10.0),
            row("3 resume file 256 MiB A->B", 300.0),
            row(SYNCTHING_RATE, 200.0),
        ];
        let r = ratios(&rows);
        let got: Vec<(f64, Option<bool>)> = r
            .iter()
            .map(|row| (row.ratio().unwrap_or(f64::NAN), row.pass))
            .collect();
        let want = [
            (12.5, Some(true)),
            (0.05, Some(true)),
            (0.2, Some(false)),
            (1.5, Some(true)),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((ratio, pass), (want_ratio, want_pass)) in got.iter().zip(want) {
            assert!((ratio - want_ratio).abs() < 1e-9, "{got:?}");
            assert_eq!(*pass, want_pass, "{got:?}");
        }
    }

    #[test]
    fn a_peer_not_measured_gives_no_ratio_row() {
        let rows = vec![
            row(ORGSYNC_RATE, 50_000.0),
            not_installed("PouchDB", "no `node` in PATH"),
        ];
        assert!(ratios(&rows).is_empty());
        let missing = not_installed("Syncthing", "no `syncthing` in PATH");
        assert!(missing.scenario.contains("bench/peers/install.sh"));
        assert_eq!(missing.pass, None, "a missing peer must not fail the run");
    }
}
