//! End-to-end: two daemons linked only through the fault-injecting UDP
//! proxy (testkit's `FaultProxy`): 5% loss, reordering, duplicates and
//! jitter the whole time, and a 10 s partition in the middle, while both
//! sides write concurrently (two drop-folder writers and one API writer per
//! side). After the heal both stores converge (equal digests), every write
//! of both sides is present once, and each side applied each of the other's
//! changes exactly once.
//!
//! CI runs 4,000 changes (2,000 a side) in debug; the full scenario of the
//! reliability table (20,000 changes) is
//! `ORGSYNC_FAULT_CHANGES=20000 cargo test --release --test e2e faults:: -- --nocapture`.

use crate::support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orgsync_keytool::InstanceDir;
use orgsync_testkit::{FaultConfig, FaultProxy};
use support::{contacts_ndjson, custom_values, Instance};

/// Changes written by both sides together in CI.
const CI_CHANGES: usize = 4_000;
/// How long the link stays cut.
const PARTITION: Duration = Duration::from_secs(10);
/// Drop files per writer per phase.
const FILES_PER_PHASE: usize = 2;
/// API writes per side.
const API_WRITES: usize = 45;
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// Points `dir`'s partner `name` at `addresses` (empty: never dialed).
fn set_partner_addresses(dir: &std::path::Path, name: &str, addresses: Vec<String>) {
    let inst = InstanceDir::new(dir);
    let mut partners = inst.load_partners().expect("partners.toml");
    let p = partners
        .iter_mut()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no partner {name}"));
    p.addresses = addresses;
    inst.save_partners(&partners).expect("save partners.toml");
}

/// One side's writers for one phase: two drop-folder writers of
/// FILES_PER_PHASE files each, `sizes[w * FILES_PER_PHASE + f]` records in
/// file `f` of writer `w` (records numbered from `next`), run concurrently
/// with `api` single-record API writes. Returns the numbers written; every one
/// was acknowledged (file moved to done/, or the API answered with an id).
fn write_phase(
    inst: &Instance,
    tag: &str,
    phase: usize,
    sizes: &[usize],
    api: usize,
    next: &AtomicUsize,
) -> Vec<usize> {
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for w in 0..2 {
            handles.push(s.spawn(move || {
                let mut written = Vec::new();
                for f in 0..FILES_PER_PHASE {
                    let per_file = sizes[w * FILES_PER_PHASE + f];
                    let from = next.fetch_add(per_file, Ordering::SeqCst);
                    let name = format!("{tag}-p{phase}-w{w}-f{f}.ndjson");
                    inst.drop_file(&name, &contacts_ndjson(tag, from, per_file));
                    assert_eq!(
                        inst.import_outcome(&name, SYNC_TIMEOUT),
                        "done",
                        "{name} was not ingested"
                    );
                    written.extend(from..from + per_file);
                }
                written
            }));
        }
        handles.push(s.spawn(move || {
            let mut written = Vec::new();
            for _ in 0..api {
                let n = next.fetch_add(1, Ordering::SeqCst);
                let id = inst.put(
                    "contact",
                    &[
                        "--set",
                        &format!("first_name=Api {n}"),
                        "--custom",
                        &format!("n={n}"),
                        "--custom",
                        &format!("batch={tag}"),
                    ],
                );
                assert!(!id.is_empty(), "put answered no id");
                written.push(n);
            }
            written
        }));
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer thread"))
            .collect()
    })
}

#[test]
fn lossy_link_with_a_partition_converges_with_every_write() {
    let total = env_or("ORGSYNC_FAULT_CHANGES", CI_CHANGES as u64) as usize;
    let seed = env_or("ORGSYNC_FAULT_SEED", 0x5eed);
    let per_side = total / 2;
    // Three phases (lossy, partitioned, healing), each: 2 writers x
    // FILES_PER_PHASE files plus a third of the API writes.
    let api_per_phase = API_WRITES / 3;
    let files = 3 * 2 * FILES_PER_PHASE;
    let in_files = per_side - 3 * api_per_phase;
    let sizes: Vec<usize> = (0..files)
        .map(|k| in_files / files + usize::from(k < in_files % files))
        .collect();
    let phase_sizes: Vec<&[usize]> = sizes.chunks(2 * FILES_PER_PHASE).collect();
    eprintln!("faults: {per_side} changes a side, seed {seed:#x}");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    Instance::pair(&a, &b);
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], b.port));
    let faults = FaultConfig {
        duplicate: 0.01,
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(2),
        ..FaultConfig::lossy(0.05, 0.05)
    };
    let proxy = rt
        .block_on(FaultProxy::start(upstream, faults, seed))
        .expect("proxy");
    // Only Acme dials, and only through the proxy.
    set_partner_addresses(&a.dir, "Globex", vec![proxy.local_addr().to_string()]);
    set_partner_addresses(&b.dir, "Acme", Vec::new());
    a.start();
    b.start();

    let (next_a, next_b) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut written_a = Vec::new();
    let mut written_b = Vec::new();
    let started = Instant::now();
    let mut phase = |n: usize, a: &Instance, b: &Instance| {
        std::thread::scope(|s| {
            let ha = s.spawn(|| write_phase(a, "A", n, phase_sizes[n], api_per_phase, &next_a));
            let hb = s.spawn(|| write_phase(b, "B", n, phase_sizes[n], api_per_phase, &next_b));
            written_a.extend(ha.join().expect("A's writers"));
            written_b.extend(hb.join().expect("B's writers"));
        });
    };

    // Phase 0: lossy link.
    phase(0, &a, &b);
    // Phase 1: the link is cut for PARTITION while both sides keep writing.
    proxy.partition();
    let cut_at = Instant::now();
    let dropped_before = proxy.stats().dropped;
    phase(1, &a, &b);
    // Holding the partition for its full length is the scenario, not a wait
    // for a condition.
    std::thread::sleep(PARTITION.saturating_sub(cut_at.elapsed()));
    let during = proxy.stats().dropped - dropped_before;
    assert!(during > 0, "nothing tried to cross the partition");
    proxy.heal();
    // Phase 2: writes continue while the link comes back (still lossy).
    phase(2, &a, &b);

    a.wait_synced(SYNC_TIMEOUT);
    b.wait_synced(SYNC_TIMEOUT);
    let converged_after = started.elapsed();
    let objects_a = a.objects();
    let objects_b = b.objects();
    let (na, da) = support::digest_of(&objects_a);
    let (nb, db) = support::digest_of(&objects_b);
    assert_eq!(na, 2 * per_side, "objects on Acme");
    assert_eq!((nb, &db), (na, &da), "the stores converged");

    // Every write of each side is on both sides, once.
    for (objects, side) in [(&objects_a, "Acme"), (&objects_b, "Globex")] {
        for (tag, written) in [("A", &written_a), ("B", &written_b)] {
            let mine: Vec<_> = objects
                .iter()
                .filter(|o| o["custom"]["batch"] == tag)
                .cloned()
                .collect();
            let ns: Vec<usize> = custom_values(&mine, "n")
                .iter()
                .map(|v| v.parse().expect("numeric n"))
                .collect();
            let unique: HashSet<usize> = ns.iter().copied().collect();
            assert_eq!(
                ns.len(),
                unique.len(),
                "{side}: a write of {tag} is there twice"
            );
            let want: HashSet<usize> = written.iter().copied().collect();
            assert_eq!(want.len(), per_side, "{tag} acknowledged writes");
            let missing = want.difference(&unique).count();
            assert_eq!(
                missing, 0,
                "{side}: {missing} acknowledged writes of {tag} are missing"
            );
        }
    }
    // Each side applied each change of the other exactly once.
    let applied_a = a.metric("orgsync_changes_applied_total");
    let applied_b = b.metric("orgsync_changes_applied_total");
    assert_eq!(applied_a, per_side as u64, "changes applied on Acme");
    assert_eq!(applied_b, per_side as u64, "changes applied on Globex");
    let stats = proxy.stats();
    eprintln!(
        "faults: {} changes, partition {PARTITION:?}, converged {converged_after:.1?} after the first write; \
         proxy {stats:?}; lost 0, duplicates 0, converged yes",
        2 * per_side
    );
    assert!(!a.log_text().contains("panicked") && !b.log_text().contains("panicked"));
    a.stop();
    b.stop();
    rt.block_on(proxy.stop());
}
