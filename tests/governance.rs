//! End-to-end sharing governance with three real daemons (A = Acme,
//! B = Globex, C = Initech) on loopback: selective sharing, the inbox,
//! share requests, access types on re-share, revocation with erase
//! acknowledgements, terms and share codes.

mod support;

use std::time::Duration;

use serde_json::Value as Json;
use support::{wait_for, Instance};

const SYNC: Duration = Duration::from_secs(60);

/// Three governed instances, paired A–B, A–C and B–C, started.
fn trio() -> (Instance, Instance, Instance) {
    let mut a = Instance::governed("Acme");
    let mut b = Instance::governed("Globex");
    let mut c = Instance::governed("Initech");
    Instance::pair(&a, &b);
    Instance::pair(&a, &c);
    Instance::pair(&b, &c);
    a.start();
    b.start();
    c.start();
    (a, b, c)
}

fn inbox_ids(inst: &Instance) -> Vec<String> {
    inst.cli_json(&["inbox", "list"])["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect()
}

/// Waits until `inst`'s inbox holds exactly `ids` (any order).
fn wait_inbox(inst: &Instance, ids: &[&str]) {
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    wait_for(
        &format!("{}'s inbox to hold {want:?}", inst.name),
        SYNC,
        || {
            let mut got = inbox_ids(inst);
            got.sort();
            (got == want).then_some(())
        },
    );
}

fn field(inst: &Instance, id: &str, section: &str, name: &str) -> Option<Json> {
    let out = inst.cli(&["get", id, "--json"]);
    if !out.status.success() {
        return None;
    }
    let v: Json = serde_json::from_slice(&out.stdout).ok()?;
    let f = v[section][name].clone();
    (!f.is_null()).then_some(f)
}

fn wait_field(inst: &Instance, id: &str, section: &str, name: &str, want: &str) {
    wait_for(
        &format!("{section}.{name} of {id} on {} to be {want}", inst.name),
        SYNC,
        || {
            (field(inst, id, section, name)
                .as_ref()
                .and_then(Json::as_str)
                == Some(want))
            .then_some(())
        },
    );
}

fn exists(inst: &Instance, id: &str) -> bool {
    inst.cli(&["get", id]).status.success()
}

/// Waits until `partner` has acknowledged all of `inst`'s log: everything
/// `inst` had to offer has been through the policy for that partner.
fn wait_acked(inst: &Instance, partner: &str) {
    let head = inst.log_head();
    wait_for(
        &format!("{partner} to acknowledge {}'s log up to {head}", inst.name),
        SYNC,
        || (inst.acked_by(partner) >= head).then_some(()),
    );
}

fn audit_actions(inst: &Instance, partner: Option<&str>) -> Vec<(String, String)> {
    let mut args = vec!["audit"];
    if let Some(p) = partner {
        args.extend(["--partner", p]);
    }
    inst.cli_json(&args)["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn wait_audit(inst: &Instance, action: &str, detail_contains: &str) {
    wait_for(
        &format!("{} to audit {action} ({detail_contains})", inst.name),
        SYNC,
        || {
            audit_actions(inst, None)
                .iter()
                .any(|(a, d)| a == action && d.contains(detail_contains))
                .then_some(())
        },
    );
}

#[test]
fn flagged_contacts_reach_only_b_and_its_admin_decides() {
    let (a, b, c) = trio();
    let vip = a.put("flag", &["--set", "name=VIP"]);
    let contact = |first: &str, flagged: bool| {
        let mut args = vec![
            "--set".to_string(),
            format!("first_name={first}"),
            "--set".to_string(),
            format!("email={}@acme.example", first.to_lowercase()),
            "--custom".to_string(),
            "level=senior".to_string(),
        ];
        if flagged {
            args.extend(["--flag".to_string(), vip.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        a.put("contact", &args)
    };
    let ada = contact("Ada", true);
    let bob = contact("Bob", true);
    let cyd = contact("Cyd", true);
    let dan = contact("Dan", false);
    // B's own contact, which Bob will be linked to.
    let local = b.put(
        "contact",
        &["--set", "first_name=Robert", "--custom", "grade=junior"],
    );
    b.cli_ok(&["partner", "set", "Acme", "--map", "level=grade"]);

    // Nothing is shared yet: B and C acknowledge A's whole log, get nothing.
    wait_acked(&a, "Globex");
    wait_acked(&a, "Initech");
    assert!(inbox_ids(&b).is_empty(), "B got data before any share");

    let out = a.cli_ok(&[
        "share", "add", "Globex", "--flag", &vip, "--access", "operator",
    ]);
    assert!(out.contains("4 object(s) sent"), "{out}");
    // The three flagged contacts and the flag, whole, wait in B's inbox.
    wait_inbox(&b, &[&ada, &bob, &cyd, &vip]);
    let items = b.cli_json(&["inbox", "list"]);
    let ada_item = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == ada.as_str())
        .unwrap()
        .clone();
    assert_eq!(ada_item["object"]["fields"]["email"], "ada@acme.example");
    assert_eq!(ada_item["object"]["custom"]["level"], "senior");
    assert_eq!(ada_item["partner"]["name"], "Acme");

    // C receives nothing: it acknowledged all of A's log, sharing included.
    wait_acked(&a, "Initech");
    assert_eq!(c.objects().len(), 0, "C received objects");
    assert!(inbox_ids(&c).is_empty(), "C's inbox is not empty");

    // B's admin: Ada as new, Bob linked to the local contact, Cyd rejected.
    b.cli_ok(&["inbox", "approve", &ada, "--as-new"]);
    b.cli_ok(&["inbox", "approve", &bob, "--link", &local]);
    b.cli_ok(&["inbox", "reject", &cyd]);
    assert_eq!(
        field(&b, &ada, "fields", "email").unwrap(),
        "ada@acme.example"
    );
    assert_eq!(
        field(&b, &local, "fields", "email").unwrap(),
        "bob@acme.example"
    );
    // Custom field mapped by B's field map for A: level -> grade.
    assert_eq!(field(&b, &local, "custom", "grade").unwrap(), "senior");
    assert!(
        !exists(&b, &bob),
        "a linked object must not appear under its own id"
    );
    assert!(!exists(&b, &cyd), "a rejected object appeared");
    assert!(!inbox_ids(&b).contains(&cyd));

    // Later updates: Cyd's first (rejected), then Bob's (linked), then Ada's.
    a.cli_ok(&["set", &cyd, "--set", "phone=+331"]);
    a.cli_ok(&[
        "set",
        &bob,
        "--set",
        "email=robert@acme.example",
        "--custom",
        "level=lead",
    ]);
    a.cli_ok(&["set", &ada, "--set", "phone=+332"]);
    wait_field(&b, &ada, "fields", "phone", "+332");
    wait_field(&b, &local, "fields", "email", "robert@acme.example");
    wait_field(&b, &local, "custom", "grade", "lead");
    // Cyd's update came before Ada's in A's log, so it was decided on already.
    assert!(!exists(&b, &cyd), "a rejected object's update appeared");
    assert!(
        !inbox_ids(&b).contains(&cyd),
        "a rejected object is back in the inbox"
    );
    assert!(!exists(&b, &dan));

    // Ada leaves the selection: B's copy is withdrawn.
    a.cli_ok(&["set", &ada, "--remove-flag", &vip]);
    wait_for("Ada's copy at B to be withdrawn", SYNC, || {
        (!exists(&b, &ada)).then_some(())
    });

    // Every decision is in B's audit log, about A.
    let actions: Vec<String> = audit_actions(&b, Some("Acme"))
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    for want in [
        "inbox.approve",
        "inbox.link",
        "inbox.reject",
        "share.granted",
        "share.withdrawn",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} missing from {actions:?}"
        );
    }
    // The owner learnt that B received the share.
    wait_audit(&a, "share.received", "received");
    // C's audit knows nothing of these shares.
    assert!(audit_actions(&c, Some("Acme")).is_empty());
}
