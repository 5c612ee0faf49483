//! Crash campaign: real daemons killed with SIGKILL at random moments and
//! restarted, round after round. Each round picks a kill point:
//!
//! - **apply**: Globex is killed while it applies a backlog from Acme;
//! - **flush**: Globex is killed while API writes stream into its store
//!   (group commit and flush in progress);
//! - **blob**: Globex is killed while it receives a résumé from Acme;
//! - **import**: Acme is killed while it ingests a drop file.
//!
//! The moment is a random delay from a seeded generator (the delay shapes
//! where the crash lands; every assertion waits on a condition with a
//! deadline). After each round: every acknowledged write (the API answered
//! with an id, or the drop file reached `done/`) is present on both sides,
//! no write is there twice, every drop file is either wholly ingested or not
//! at all, résumés arrive intact, and the stores converge (equal digests).
//!
//! CI runs 4 rounds (one of each kind). The long campaign:
//! `ORGSYNC_CRASH_ROUNDS=200 cargo test --release --test e2e crash_campaign:: -- --nocapture`;
//! replay one with `ORGSYNC_CRASH_SEED=<seed printed by the run>`.

use crate::support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::{contacts_ndjson, custom_values, wait_for, Instance};

const TIMEOUT: Duration = Duration::from_secs(300);
/// Records in a backlog or import file.
const FILE_RECORDS: usize = 1_500;
/// Size of a résumé.
const BLOB: usize = 8 << 20;

#[derive(Clone, Copy, Debug)]
enum Kill {
    Apply,
    Flush,
    Blob,
    Import,
}

const KINDS: [Kill; 4] = [Kill::Apply, Kill::Flush, Kill::Blob, Kill::Import];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

/// Pseudo-random bytes (résumé content) from `seed`.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = vec![0u8; len];
    rng.fill(&mut out[..]);
    out
}

/// What the campaign knows was acknowledged, per batch tag: the record
/// numbers (custom field `n`) the API or a done/ file confirmed.
#[derive(Default)]
struct Ledger {
    acked: HashMap<String, Vec<usize>>,
    /// Numbers written but not acknowledged (in flight at a kill): may be
    /// present or not, but never twice.
    unsure: HashMap<String, Vec<usize>>,
    /// Résumé object id -> BLAKE3 of its content.
    resumes: Vec<(String, blake3::Hash)>,
    next: usize,
}

impl Ledger {
    fn take(&mut self, n: usize) -> usize {
        let from = self.next;
        self.next += n;
        from
    }
}

/// Every check of the end of a round, on one instance; its digest.
fn check(inst: &Instance, ledger: &Ledger, round: usize) -> (usize, String) {
    let objects = inst.objects();
    let mut by_tag: HashMap<String, Vec<usize>> = HashMap::new();
    for o in &objects {
        if let (Some(tag), Some(n)) = (o["custom"]["batch"].as_str(), o["custom"].get("n")) {
            let n: usize = n
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad n in {o}"));
            by_tag.entry(tag.to_string()).or_default().push(n);
        }
    }
    for (tag, ns) in &by_tag {
        let mut sorted = ns.clone();
        sorted.sort_unstable();
        let before = sorted.len();
        sorted.dedup();
        assert_eq!(
            before,
            sorted.len(),
            "round {round}: {}: a write of batch {tag} is there twice",
            inst.name
        );
    }
    for (tag, want) in &ledger.acked {
        let have: std::collections::HashSet<usize> = by_tag
            .get(tag)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        let missing: Vec<_> = want.iter().filter(|n| !have.contains(n)).collect();
        assert!(
            missing.is_empty(),
            "round {round}: {}: {} acknowledged writes of batch {tag} are missing (first {:?})",
            inst.name,
            missing.len(),
            missing.first()
        );
    }
    for (id, hash) in &ledger.resumes {
        let out = inst.dir.parent().expect("tmp").join("check.pdf");
        wait_for(&format!("résumé {id} on {}", inst.name), TIMEOUT, || {
            inst.cli(&["get-resume", id, "-o", out.to_str().expect("utf-8")])
                .status
                .success()
                .then_some(())
        });
        let got = std::fs::read(&out).expect("résumé copy");
        assert_eq!(
            blake3::hash(&got),
            *hash,
            "round {round}: résumé {id} differs"
        );
    }
    support::digest_of(&objects)
}

/// Bytes of the largest partial blob of `inst` (0 when none or complete).
fn partial_bytes(inst: &Instance) -> u64 {
    std::fs::read_dir(inst.dir.join("blobs").join("partial"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Waits until the drop file `name` of `inst` is in done/ (whole) or
/// failed/; after a kill it may also sit in import/ until the restarted
/// daemon takes it again.
fn wait_import(inst: &Instance, name: &str) -> &'static str {
    inst.import_outcome(name, TIMEOUT)
}

#[test]
fn kill9_at_random_moments_loses_nothing_and_applies_nothing_twice() {
    let rounds = env_u64("ORGSYNC_CRASH_ROUNDS").unwrap_or(4) as usize;
    let seed = env_u64("ORGSYNC_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("crash campaign: {rounds} rounds, ORGSYNC_CRASH_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    Instance::pair(&a, &b);
    a.start();
    b.start();
    let mut ledger = Ledger::default();
    let mut tally: HashMap<&'static str, usize> = HashMap::new();
    let started = Instant::now();

    for round in 0..rounds {
        let kind = KINDS[round % KINDS.len()];
        let delay = Duration::from_millis(rng.gen_range(0..1_500));
        let tag = format!("r{round}");
        match kind {
            Kill::Apply => {
                // Acme's backlog (acknowledged once in done/), then Globex
                // killed after a random delay: before, while or after it
                // receives and applies it (the line printed tells which
                // part it had acknowledged).
                let before = a.acked_by("Globex");
                let from = ledger.take(FILE_RECORDS);
                let name = format!("{tag}.ndjson");
                a.drop_file(&name, &contacts_ndjson(&tag, from, FILE_RECORDS));
                assert_eq!(wait_import(&a, &name), "done");
                ledger
                    .acked
                    .insert(tag.clone(), (from..from + FILE_RECORDS).collect());
                std::thread::sleep(delay);
                let acked = a.acked_by("Globex") - before;
                b.kill9();
                eprintln!(
                    "round {round}: Globex had acknowledged {acked} of the {FILE_RECORDS}-change backlog at the kill"
                );
                b.start();
            }
            Kill::Flush => {
                // A writer streams API writes into Globex until the kill.
                let stop = AtomicBool::new(false);
                let base = ledger.next;
                // The writer runs the CLI on its own: the test kills the
                // daemon (a mutable use of `b`) meanwhile.
                let dir = b.dir.clone();
                let (acked, unsure) = std::thread::scope(|s| {
                    let writer = s.spawn(|| {
                        let mut acked = Vec::new();
                        let mut unsure = Vec::new();
                        while !stop.load(Ordering::SeqCst) {
                            let n = base + acked.len() + unsure.len();
                            let out = support::run(
                                std::process::Command::new(support::bin("orgsync"))
                                    .arg("--dir")
                                    .arg(&dir)
                                    .args([
                                        "put",
                                        "contact",
                                        "--set",
                                        &format!("first_name=Flush {n}"),
                                        "--custom",
                                        &format!("n={n}"),
                                        "--custom",
                                        &format!("batch={tag}"),
                                    ]),
                            );
                            if out.status.success() {
                                acked.push(n);
                            } else {
                                // The daemon died under this write.
                                unsure.push(n);
                                break;
                            }
                        }
                        (acked, unsure)
                    });
                    std::thread::sleep(delay + Duration::from_millis(200));
                    b.kill9();
                    stop.store(true, Ordering::SeqCst);
                    writer.join().expect("writer")
                });
                ledger.next += acked.len() + unsure.len();
                eprintln!(
                    "round {round}: {} API writes acknowledged before the kill",
                    acked.len()
                );
                ledger.acked.insert(tag.clone(), acked);
                ledger.unsure.insert(tag.clone(), unsure);
                b.start();
            }
            Kill::Blob => {
                let data = content(BLOB, seed ^ round as u64);
                let hash = blake3::hash(&data);
                let src: PathBuf = a.dir.parent().expect("tmp").join(format!("{tag}.pdf"));
                std::fs::write(&src, &data).expect("résumé file");
                let contact = a.put("contact", &["--set", &format!("first_name=Cv {round}")]);
                let resume = a
                    .cli_ok(&["attach-resume", &contact, src.to_str().expect("utf-8")])
                    .trim()
                    .to_string();
                ledger.resumes.push((resume, hash));
                std::thread::sleep(delay);
                let partial = partial_bytes(&b);
                b.kill9();
                eprintln!(
                    "round {round}: partial résumé at the kill: {partial} of {BLOB} bytes (0: not started or complete)"
                );
                b.start();
            }
            Kill::Import => {
                // Acme killed while it ingests a drop file: afterwards the
                // file is wholly in or wholly out, never half (checked by
                // the exact count of its records below).
                let from = ledger.take(FILE_RECORDS);
                let name = format!("{tag}.ndjson");
                a.drop_file(&name, &contacts_ndjson(&tag, from, FILE_RECORDS));
                std::thread::sleep(delay);
                a.kill9();
                let done_at_kill = a.import_dir().join("done").join(&name).exists();
                a.start();
                // Not yet in done/: the restarted daemon takes it again.
                assert_eq!(wait_import(&a, &name), "done", "{name} after the crash");
                let n = custom_values(
                    &a.objects()
                        .into_iter()
                        .filter(|o| o["custom"]["batch"] == tag.as_str())
                        .collect::<Vec<_>>(),
                    "n",
                )
                .len();
                assert_eq!(
                    n, FILE_RECORDS,
                    "round {round}: the drop file killed mid-import left {n} of its {FILE_RECORDS} records (in done/ at the kill: {done_at_kill})"
                );
                ledger
                    .acked
                    .insert(tag.clone(), (from..from + FILE_RECORDS).collect());
            }
        }
        *tally
            .entry(match kind {
                Kill::Apply => "apply",
                Kill::Flush => "flush",
                Kill::Blob => "blob",
                Kill::Import => "import",
            })
            .or_default() += 1;

        a.wait_synced(TIMEOUT);
        b.wait_synced(TIMEOUT);
        let (da, db) = (check(&a, &ledger, round), check(&b, &ledger, round));
        assert_eq!(
            da, db,
            "round {round} ({kind:?}, delay {delay:?}): stores differ"
        );
        eprintln!(
            "round {round}: kill during {kind:?} after {delay:?}: {} objects on both, converged",
            da.0
        );
    }
    let acked: usize = ledger.acked.values().map(Vec::len).sum();
    eprintln!(
        "crash campaign: {rounds} rounds {tally:?} in {:.0?}, seed {seed}: {acked} acknowledged writes, \
         lost 0, duplicates 0, half-ingested files 0, converged yes",
        started.elapsed()
    );
    for inst in [&a, &b] {
        assert!(
            !inst.log_text().contains("panicked"),
            "{} panicked",
            inst.name
        );
    }
    a.stop();
    b.stop();
}
