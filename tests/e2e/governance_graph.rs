//! Sharing graphs end to end with real daemons (issues "Governance you can
//! trust" and "A ring of shares replicates forever"): two-way `--all`
//! shares, a ring of three, a mesh of four and two mirrors plus a share.
//! Each checks that nothing of an owner is lost, that every copy equals its
//! owner's version, that partners cannot edit each other's records, and
//! that the system goes quiet: within 10 s of the last write every partner
//! has acknowledged everything and `changes_sent` stops growing.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value as Json;
use support::{canonical, wait_for, Instance};

const SYNC: Duration = Duration::from_secs(60);
/// How long the counters must stay still to call the system quiet.
const QUIET: Duration = Duration::from_secs(10);

/// Governed instances, started, every pair in `pairs` paired.
fn start(names: &[&str], pairs: &[(usize, usize)]) -> Vec<Instance> {
    let mut all: Vec<Instance> = names.iter().map(|n| Instance::governed(n)).collect();
    for &(i, j) in pairs {
        Instance::pair(&all[i], &all[j]);
    }
    for inst in &mut all {
        inst.start();
    }
    all
}

/// `from` shares everything with `to` as an operator share; `to`
/// auto-approves what `from` sends.
fn share_all(from: &Instance, to: &Instance) {
    from.cli_ok(&["share", "add", &to.name, "--all", "--access", "operator"]);
    to.cli_ok(&["inbox", "policy", &from.name, "auto"]);
}

fn get(inst: &Instance, id: &str) -> Option<Json> {
    let out = inst.cli(&["get", id, "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("get --json"))
}

/// Waits until every instance of `holders` has `id` exactly as `owner` has
/// it; on timeout says what each side holds and the holder's audit tail.
fn wait_replicas(owner: &Instance, id: &str, holders: &[&Instance]) {
    for h in holders {
        let deadline = Instant::now() + SYNC;
        loop {
            let want = get(owner, id).map(|o| canonical(&o));
            let got = get(h, id).map(|o| canonical(&o));
            if want.is_some() && got == want {
                break;
            }
            if Instant::now() > deadline {
                let audit = h.cli_ok(&["audit"]);
                let tail: Vec<&str> = audit.lines().rev().take(15).collect();
                panic!(
                    "{}'s copy of {id} never equalled {}'s:\n  owner: {want:?}\n  copy:  {got:?}\n\
                     {}'s audit (newest first):\n{}",
                    h.name,
                    owner.name,
                    h.name,
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn sent(inst: &Instance) -> u64 {
    inst.metric("orgsync_changes_sent_total")
}

/// Quiescence: within 10 s every partner of every instance has
/// acknowledged its whole log, then `changes_sent` does not move for
/// [`QUIET`] (a storm would make it grow).
fn assert_quiet(all: &[Instance]) {
    let start = Instant::now();
    for inst in all {
        wait_for(
            &format!("{}'s partners to acknowledge everything", inst.name),
            Duration::from_secs(10),
            || {
                let s = inst.status();
                let busy: Vec<String> = s["partners"]
                    .as_array()
                    .expect("partners")
                    .iter()
                    .filter(|p| p["not_acked"].as_u64() != Some(0))
                    .map(|p| format!("{}: {}", p["name"], p["not_acked"]))
                    .collect();
                busy.is_empty().then_some(())
            },
        );
    }
    let before: Vec<u64> = all.iter().map(sent).collect();
    let until = Instant::now() + QUIET;
    while Instant::now() < until {
        for (inst, b) in all.iter().zip(&before) {
            let now = sent(inst);
            assert_eq!(
                now, *b,
                "{} kept sending after the last write ({b} -> {now} changes)",
                inst.name
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "quiet {:.1?} after the checks began; changes sent {:?}",
        start.elapsed(),
        before
    );
}

/// Runs `orgsync set ID --set FIELD=VALUE`, which must be refused as a
/// replica edit.
fn assert_replica_refused(inst: &Instance, id: &str, owner: &str) {
    let out = inst.cli(&["set", id, "--set", "email=hijack@example.org"]);
    let err = support::stderr(&out);
    assert!(!out.status.success(), "{} edited a replica", inst.name);
    assert!(
        err.contains(&format!("belongs to {owner}"))
            && err.contains("link it to one of your records"),
        "{}: {err}",
        inst.name
    );
}

#[test]
fn two_way_all_shares_keep_each_owners_records() {
    let all = start(&["Acme", "Globex"], &[(0, 1)]);
    let (a, b) = (&all[0], &all[1]);
    share_all(a, b);
    share_all(b, a);
    let ada = a.put(
        "contact",
        &["--set", "first_name=Ada", "--set", "email=ada@a.example"],
    );
    let bob = b.put("contact", &["--set", "first_name=Bob"]);
    wait_replicas(a, &ada, &[b]);
    wait_replicas(b, &bob, &[a]);
    // Neither withdrew nor erased the other's record (the reported bug).
    assert!(get(a, &ada).is_some(), "Acme lost its own contact");
    assert!(get(b, &bob).is_some(), "Globex lost its own contact");
    // B cannot edit A's record; A's edit reaches B.
    assert_replica_refused(b, &ada, "Acme");
    a.cli_ok(&["set", &ada, "--set", "email=ada@edit-a.example"]);
    wait_replicas(a, &ada, &[b]);
    assert_quiet(&all);
    assert_eq!(a.metric("orgsync_governance_refused_total"), 0);
    assert_eq!(b.metric("orgsync_changes_refused_total"), 0);
}

#[test]
fn a_ring_of_shares_goes_quiet() {
    // A -> B, B -> A, B -> C, C -> A, every share --all operator, auto.
    let all = start(&["Acme", "Globex", "Initech"], &[(0, 1), (1, 2), (0, 2)]);
    let (a, b, c) = (&all[0], &all[1], &all[2]);
    share_all(a, b);
    share_all(b, a);
    share_all(b, c);
    share_all(c, a);
    let ada = a.put("contact", &["--set", "first_name=ada"]);
    let bea = b.put("contact", &["--set", "first_name=bea"]);
    let cyd = c.put("contact", &["--set", "first_name=cyd"]);
    // Ada reaches B directly and C through B's re-share.
    wait_replicas(a, &ada, &[b, c]);
    wait_replicas(b, &bea, &[a, c]);
    wait_replicas(c, &cyd, &[a]);
    // C's edit of A's contact is refused; A's own edit goes round once.
    assert_replica_refused(c, &ada, "Acme");
    a.cli_ok(&["set", &ada, "--set", "email=ada@edit-a.example"]);
    wait_replicas(a, &ada, &[b, c]);
    for (owner, id) in [(a, &ada), (b, &bea), (c, &cyd)] {
        assert!(
            get(owner, id).is_some(),
            "{} lost its own contact",
            owner.name
        );
    }
    assert_quiet(&all);
}

#[test]
fn a_mesh_of_four_sharing_everything_converges_and_goes_quiet() {
    let names = ["Acme", "Globex", "Initech", "Umbrella"];
    let pairs: Vec<(usize, usize)> = (0..4)
        .flat_map(|i| (i + 1..4).map(move |j| (i, j)))
        .collect();
    let all = start(&names, &pairs);
    for i in 0..4 {
        for j in 0..4 {
            if i != j {
                share_all(&all[i], &all[j]);
            }
        }
    }
    let ids: Vec<String> = all
        .iter()
        .map(|inst| inst.put("contact", &["--set", &format!("first_name={}", inst.name)]))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let others: Vec<&Instance> = (0..4).filter(|j| *j != i).map(|j| &all[j]).collect();
        wait_replicas(&all[i], id, &others);
    }
    assert_quiet(&all);
    let digests: Vec<(usize, String)> = all.iter().map(|i| i.digest()).collect();
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "copies differ: {digests:?}"
    );
    assert_eq!(digests[0].0, 4);
}

#[test]
fn two_mirrors_and_a_share() {
    // Acme runs two instances (mirrors of each other); Acme shares with Globex.
    let all = start(&["Acme", "AcmeBackup", "Globex"], &[(0, 1), (0, 2), (1, 2)]);
    let (a, a2, g) = (&all[0], &all[1], &all[2]);
    // One side alone enables nothing.
    a.cli_ok(&["partner", "set", "AcmeBackup", "--mirror", "true"]);
    let early = a2.put("contact", &["--set", "first_name=Early"]);
    wait_for("Acme to see AcmeBackup's mirror frame", SYNC, || {
        let s = a.cli_json(&["partner", "settings"]);
        let state = s["partners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "AcmeBackup")
            .map(|p| p["mirror"].as_str().unwrap_or_default().to_string());
        (state.as_deref() == Some("waiting for the partner")).then_some(())
    });
    a2.wait_synced(SYNC);
    assert!(get(a, &early).is_none(), "a one-sided mirror carried data");
    a2.cli_ok(&["partner", "set", "Acme", "--mirror", "true"]);
    // Now both ways, including what was written before.
    wait_replicas(a2, &early, &[a]);
    share_all(a, g);
    let ada = a.put("contact", &["--set", "first_name=Ada"]);
    wait_replicas(a, &ada, &[a2, g]);
    wait_replicas(a2, &early, &[g]);
    // Either copy of Acme may edit the other's records; Globex may not.
    a2.cli_ok(&["set", &ada, "--set", "email=ada@backup.example"]);
    a.cli_ok(&["set", &early, "--set", "email=early@acme.example"]);
    wait_replicas(a, &ada, &[a2, g]);
    wait_replicas(a2, &early, &[a, g]);
    assert_replica_refused(g, &ada, "Acme");
    assert_quiet(&all);
}

#[test]
fn revocation_erases_downstream_only() {
    let all = start(&["Acme", "Globex", "Initech"], &[(0, 1), (1, 2), (0, 2)]);
    let (a, b, c) = (&all[0], &all[1], &all[2]);
    share_all(a, b);
    share_all(b, c);
    let ada = a.put("contact", &["--set", "first_name=Ada"]);
    let bea = b.put("contact", &["--set", "first_name=Bea"]);
    wait_replicas(a, &ada, &[b, c]);
    wait_replicas(b, &bea, &[c]);
    let share = a.cli_json(&["share", "list"])["given"][0]["id"]
        .as_str()
        .expect("share id")
        .to_string();
    a.cli_ok(&["share", "revoke", &share]);
    wait_for("Ada to be erased at Globex and Initech", SYNC, || {
        (get(b, &ada).is_none() && get(c, &ada).is_none()).then_some(())
    });
    // Nothing of the owners is lost: Acme keeps Ada, Initech keeps Bea.
    assert!(get(a, &ada).is_some(), "the owner lost its record");
    wait_replicas(b, &bea, &[c]);
    assert_quiet(&all);
}
