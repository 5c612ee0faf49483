//! End-to-end: offline catch-up. B is stopped, A takes 10,000 changes (one
//! NDJSON file in its drop folder), B comes back: every change arrives,
//! none is applied twice, and both stores hold the same objects.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use support::{contacts_ndjson, custom_values, Instance};

const CHANGES: usize = 10_000;

#[test]
fn offline_partner_catches_up_on_10000_changes_once_each() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    Instance::pair(&a, &b);
    a.start();
    b.start();

    // Some history first, so the catch-up starts mid-log.
    a.put(
        "contact",
        &["--set", "first_name=Before", "--custom", "batch=before"],
    );
    a.wait_synced(Duration::from_secs(60));
    assert_eq!(b.digest(), a.digest());

    // B goes away; A takes 10,000 changes.
    b.stop();
    let head_before = a.log_head();
    a.drop_file("backlog.ndjson", &contacts_ndjson("backlog", 0, CHANGES));
    assert_eq!(
        a.import_outcome("backlog.ndjson", Duration::from_secs(120)),
        "done"
    );
    let head = a.log_head();
    assert_eq!(
        head - head_before,
        CHANGES as u64,
        "one log entry per imported record"
    );
    assert_eq!(
        a.acked_by("Globex"),
        head_before,
        "B, offline, acknowledged none of the backlog"
    );

    // To see every change B applies (the event stream only carries changes
    // applied while it is connected), A is stopped too, B comes back and is
    // watched, then A comes back.
    a.stop();
    b.start();
    // The watcher is subscribed once it reports a local write (replayed
    // from the log if it was written before the watcher connected).
    let watch = b.watch(Some(b.log_head()));
    let marker = b.put("contact", &["--set", "first_name=Marker"]);
    let ev = watch.next("B's own marker", Duration::from_secs(30));
    assert_eq!(ev["id"], marker.as_str());
    assert_eq!(ev["origin"], "local");
    a.start();

    let account_a = a.account();
    let mut seen: HashMap<String, u32> = HashMap::new();
    while seen.len() < CHANGES {
        let ev = watch.next(
            &format!("change {} of the backlog on B", seen.len() + 1),
            Duration::from_secs(120),
        );
        assert!(
            ev.get("lagged").is_none(),
            "the watcher fell behind, events were missed: {ev}"
        );
        assert_eq!(ev["origin"], account_a.as_str(), "unexpected event {ev}");
        *seen
            .entry(ev["id"].as_str().expect("id").to_string())
            .or_default() += 1;
    }
    a.wait_synced(Duration::from_secs(60));
    b.wait_synced(Duration::from_secs(60));
    // A final change from A goes through the same ordered stream: any
    // backlog change applied a second time would show up before it.
    let last = a.put("contact", &["--set", "first_name=Last"]);
    loop {
        let ev = watch.next("A's last change on B", Duration::from_secs(60));
        assert!(ev.get("lagged").is_none(), "the watcher fell behind: {ev}");
        let id = ev["id"].as_str().expect("id").to_string();
        if id == last {
            break;
        }
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "changes applied more than once on B: {twice:?}"
    );
    assert_eq!(seen.len(), CHANGES, "B applied exactly the backlog");

    a.wait_synced(Duration::from_secs(60));
    let (na, da) = a.digest();
    let (nb, db) = b.digest();
    assert_eq!(na, CHANGES + 3, "backlog + before + marker + last");
    assert_eq!((nb, db), (na, da), "B holds exactly A's objects");
    let objects = b.objects();
    let mut ns: Vec<usize> = custom_values(&objects, "n")
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    ns.sort_unstable();
    assert_eq!(
        ns,
        (0..CHANGES).collect::<Vec<_>>(),
        "every numbered record once"
    );
    a.stop();
    b.stop();
}
