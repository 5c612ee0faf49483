//! End-to-end: who accepted a share's terms on the partner's side is the
//! partner's claim, never a local actor (issue 13, part 4). A rogue Mallory
//! (a real paired identity, `support/rogue.rs`) accepts the terms of the
//! share Acme gave it, claiming `by = "admin"`, then with a name full of
//! control characters and far too long: Acme audits each acceptance with
//! the actor `partner:<Mallory's account number>` and the sanitised name in
//! `claimed_by`, and `orgsync audit` shows it as a claim.

use crate::support;
use crate::support::rogue;

use std::net::SocketAddr;
use std::time::Duration;

use orgsync_protocol::share::{ShareBody, ShareId};
use rogue::{now_ms, Rogue};
use support::{wait_for, Instance};

const STEP: Duration = Duration::from_secs(60);

fn terms_entries(a: &Instance) -> Vec<serde_json::Value> {
    a.cli_json(&["audit"])["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "terms.accepted")
        .cloned()
        .collect()
}

#[test]
fn partner_terms_acceptance_is_audited_as_its_claim() {
    let mut a = Instance::governed("Acme");
    let mallory = Instance::governed("Mallory"); // never started: the rogue is Mallory
    Instance::pair(&a, &mallory);
    a.start();
    let own = a.put("contact", &["--set", "first_name=Olga"]);
    let dpa = a.dir.parent().unwrap().join("dpa.txt");
    std::fs::write(&dpa, "Data stays in the EU.").unwrap();
    a.cli_ok(&[
        "share",
        "add",
        "Mallory",
        "--object",
        &own,
        "--access",
        "on-loan",
        "--terms",
        dpa.to_str().unwrap(),
    ]);
    let list = a.cli_json(&["share", "list"]);
    let to_mallory: ShareId = list["given"]
        .as_array()
        .expect("given")
        .iter()
        .find(|s| s["partner"]["name"] == "Mallory")
        .and_then(|s| s["id"].as_str())
        .expect("the share given to Mallory")
        .parse()
        .expect("share id");
    let mallory_account = mallory.account();

    let rogue = Rogue::new(
        &mallory.dir,
        "Acme",
        SocketAddr::from(([127, 0, 0, 1], a.port)),
    );
    let mut conn = rogue.connect();
    let long_hostile = format!(
        "admin\u{1b}[2J\r\nroot\u{202e}{}", // Under the protocol's 256-byte bound on names (longer frames are
        // invalid and refused before this point).
        "x".repeat(200)
    );
    conn.send_share(
        1,
        ShareBody::TermsAccepted {
            share: to_mallory,
            by: "admin".into(),
            at_ms: now_ms(),
        },
    );
    let long_len = long_hostile.chars().count();
    conn.send_share(
        2,
        ShareBody::TermsAccepted {
            share: to_mallory,
            by: long_hostile,
            at_ms: now_ms(),
        },
    );
    let entries = wait_for("two terms.accepted audit entries", STEP, || {
        let e = terms_entries(&a);
        (e.len() >= 2).then_some(e)
    });
    let actor = format!("partner:{mallory_account}");
    for e in &entries {
        assert_eq!(e["who"], actor.as_str(), "actor is the partner: {e}");
        assert_ne!(e["who"], "admin");
    }
    assert_eq!(entries[0]["claimed_by"], "admin");
    let claimed = entries[1]["claimed_by"].as_str().expect("claimed_by");
    assert!(
        claimed.starts_with("admin[2Jrootxxx"),
        "control characters stripped: {claimed:?}"
    );
    assert!(!claimed.chars().any(|c| c.is_control() || c == '\u{202e}'));
    assert_eq!(claimed.chars().count(), 65, "64 characters and an ellipsis");
    assert!(claimed.ends_with('…'));
    // The table shows the claim as a claim, next to the real actor.
    let table = a.cli_ok(&["audit"]);
    let row = table
        .lines()
        .find(|l| l.contains("terms.accepted"))
        .expect("terms.accepted row");
    assert!(
        row.contains(&format!("{actor} (claims \"admin\")")),
        "row: {row}"
    );
    // And the share's record says whose claim it is.
    let given = a.cli_json(&["share", "list"])["given"].clone();
    let s = given
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == to_mallory.to_string().as_str())
        .unwrap()
        .clone();
    let accepted = s["terms_accepted"].to_string();
    assert!(accepted.contains("the partner's claim"), "{accepted}");
    assert!(!accepted.contains('\u{1b}'));
    eprintln!(
        "partner claims: 2 TermsAccepted from a rogue partner (by \"admin\", by {long_len} chars with ESC/CR/LF/RLO): \
         audited as {actor}, claimed_by {:?} and a {}-char sanitised claim",
        entries[0]["claimed_by"].as_str().unwrap_or_default(),
        claimed.chars().count()
    );
    drop(conn);
    a.stop();
}
