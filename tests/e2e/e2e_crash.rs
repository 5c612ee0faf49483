//! End-to-end: kill -9 of the receiver in the middle of a 50,000-change
//! backlog. Every change A's status counted as acknowledged by B just before
//! the kill is on B after B restarts (checked with A stopped, so nothing can
//! be re-sent), and once A is back the stores converge.

use crate::support;

use std::collections::HashSet;
use std::time::Duration;

use support::{contacts_ndjson, Instance};

const CHANGES: usize = 50_000;

#[test]
fn receiver_killed_mid_backlog_keeps_every_acknowledged_change() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    Instance::pair(&a, &b);
    a.start();

    a.drop_file("backlog.ndjson", &contacts_ndjson("backlog", 0, CHANGES));
    assert_eq!(
        a.import_outcome("backlog.ndjson", Duration::from_secs(180)),
        "done"
    );
    let head = a.log_head();
    assert_eq!(head, CHANGES as u64);
    // Which object each log entry wrote, in log order.
    let ids = a.log_ids(head);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), CHANGES);

    // B starts and receives the backlog; kill it once part of it is acked.
    b.start();
    let acked = support::wait_for(
        "B to acknowledge part of the backlog",
        Duration::from_secs(120),
        || {
            let s = a.status();
            let acked = support::acked_in(&s, "Globex");
            (acked >= 2_000).then_some(acked)
        },
    );
    b.kill9();
    assert!(
        acked < head,
        "B acknowledged the whole backlog ({acked}) before the kill: the crash did not hit mid-backlog"
    );

    // With A stopped, B restarts from its own disk only.
    a.stop();
    b.start();
    let on_b: HashSet<String> = b
        .objects()
        .into_iter()
        .map(|o| o["id"].as_str().expect("id").to_string())
        .collect();
    let missing: Vec<(usize, &String)> = ids[..acked as usize]
        .iter()
        .enumerate()
        .filter(|(_, id)| !on_b.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of the {acked} changes acknowledged before the kill are missing on B after restart (first: seq {} {})",
        missing.len(),
        missing.first().map_or(0, |m| m.0 + 1),
        missing.first().map_or("", |m| m.1.as_str()),
    );
    eprintln!(
        "acked before kill: {acked} of {head}; on B after restart: {}",
        on_b.len()
    );

    // A comes back: the rest arrives and the stores converge.
    a.start();
    a.wait_synced(Duration::from_secs(180));
    let (na, da) = a.digest();
    let (nb, db) = b.digest();
    assert_eq!(na, CHANGES);
    assert_eq!((nb, db), (na, da), "B converged to A's objects");
    a.stop();
    b.stop();
}
