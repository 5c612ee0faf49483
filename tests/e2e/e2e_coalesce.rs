//! End-to-end: the log sends each object's latest state once. A edits one
//! contact ten times while B is away; when B comes back, one change is
//! sent and applied for it (counted by both daemons' metrics), and B holds
//! every field of the ten edits.

use crate::support;

use std::time::{Duration, Instant};

use support::{wait_for, Instance};

const EDITS: usize = 10;

#[test]
fn ten_edits_of_one_object_before_a_partner_connects_arrive_as_one_change() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    Instance::pair(&a, &b);
    a.start();
    b.start();
    let ada = a.put("contact", &["--set", "first_name=Ada"]);
    a.wait_synced(Duration::from_secs(60));
    b.stop();

    let head_before = a.log_head();
    let sent_before = a.metric("orgsync_changes_sent_total");
    for i in 1..=EDITS {
        a.cli_ok(&[
            "set",
            &ada,
            "--set",
            &format!("last_name=Lovelace {i}"),
            "--custom",
            &format!("step{i}=done"),
        ]);
    }
    assert_eq!(a.log_head(), head_before + EDITS as u64);

    let started = Instant::now();
    b.start();
    a.wait_synced(Duration::from_secs(60));
    let synced = started.elapsed();
    let sent = a.metric("orgsync_changes_sent_total") - sent_before;
    // B restarted, so its counter counts this catch-up only.
    let applied = wait_for("B's applied count", Duration::from_secs(30), || {
        let n = b.metric("orgsync_changes_applied_total");
        (n > 0).then_some(n)
    });
    assert_eq!(
        sent, 1,
        "A sent {sent} changes for one object edited {EDITS} times"
    );
    assert_eq!(applied, 1, "B applied {applied} changes");

    let objects = b.objects();
    let on_b = objects
        .iter()
        .find(|o| o["id"] == ada.as_str())
        .unwrap_or_else(|| panic!("Ada not on B: {objects:?}"));
    let text = on_b.to_string();
    assert!(text.contains(&format!("Lovelace {EDITS}")), "{text}");
    for i in 1..=EDITS {
        assert!(
            text.contains(&format!("step{i}")),
            "step{i} missing: {text}"
        );
    }
    assert_eq!(b.digest(), a.digest());
    eprintln!(
        "coalescing: {EDITS} edits of one object while the partner was away -> {sent} change sent, {applied} applied, synced {:.0} ms after the partner started",
        synced.as_secs_f64() * 1000.0
    );
    a.stop();
    b.stop();
}
