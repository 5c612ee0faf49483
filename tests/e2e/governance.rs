//! End-to-end sharing governance with three real daemons (A = Acme,
//! B = Globex, C = Initech) on loopback: selective sharing, the inbox,
//! share requests, access types on re-share, revocation with erase
//! acknowledgements, terms and share codes.

use crate::support;

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

fn refused_args(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Runs a command that must fail as bad input (exit 2) saying `why`.
fn refused<S: AsRef<str>>(inst: &Instance, args: &[S], why: &str) {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let args = args.as_slice();
    let out = inst.cli(args);
    let err = support::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "orgsync {args:?}: {err}");
    assert!(
        err.contains(why),
        "orgsync {args:?} said {err:?}, not {why:?}"
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

    // Ada leaves the selection (unshare): B's approved copy stays, no
    // longer updated; only a revoke erases.
    a.cli_ok(&["set", &ada, "--remove-flag", &vip]);
    wait_for("B to hear that Ada was withdrawn", SYNC, || {
        audit_actions(&b, Some("Acme"))
            .iter()
            .any(|(a, d)| a == "share.withdrawn" && d.contains("1 approved copy(ies) kept"))
            .then_some(())
    });
    assert!(
        exists(&b, &ada),
        "an approved copy was removed by an unshare"
    );

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

fn request_of(inst: &Instance, id: &str) -> Json {
    inst.cli_json(&["request", "list"])["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{} has no request {id}", inst.name))
        .clone()
}

fn wait_status(inst: &Instance, id: &str, status: &str) {
    wait_for(
        &format!("request {id} to be {status} on {}", inst.name),
        SYNC,
        || (request_of(inst, id)["status"] == status).then_some(()),
    );
}

fn history(inst: &Instance, id: &str) -> Vec<String> {
    request_of(inst, id)["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["status"].as_str().expect("status").to_string())
        .collect()
}

/// The id of the share `owner` gives `partner` that holds `object`.
fn given_share(owner: &Instance, rule: &str) -> String {
    owner.cli_json(&["share", "list"])["given"]
        .as_array()
        .expect("given")
        .iter()
        .find(|s| {
            s["rules"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == rule))
        })
        .unwrap_or_else(|| panic!("{} gives no share with rule {rule}", owner.name))["id"]
        .as_str()
        .expect("id")
        .to_string()
}

#[test]
fn share_requests_go_through_every_status_on_both_sides() {
    let (a, b, _c) = trio();
    let school = a.put(
        "organization",
        &["--set", "name=Lycée Ampère", "--set", "category=school"],
    );
    let teacher = a.put(
        "contact",
        &[
            "--set",
            "first_name=Marie",
            "--set",
            &format!("organization={school}"),
        ],
    );
    let outsider = a.put("contact", &["--set", "first_name=Paul"]);

    // B asks for the school with its contacts.
    let want = format!("organization:{school}");
    let req = b.cli_json(&[
        "request",
        "send",
        "Acme",
        "--want",
        &want,
        "--suggest",
        &want,
        "--note",
        "job fair",
    ]);
    let id = req["id"].as_str().expect("request id").to_string();
    assert_eq!(req["status"], "requested");
    wait_status(&b, &id, "to-evaluate");
    assert_eq!(request_of(&a, &id)["status"], "to-evaluate");
    assert_eq!(request_of(&a, &id)["role"], "owner");
    assert_eq!(request_of(&a, &id)["note"], "job fair");

    // An illegal move is refused by the state machine: a request still to
    // evaluate cannot be revoked through its share (it has none) nor
    // approved twice; approving it once is fine.
    let preview = a.cli_json(&["request", "preview", &id, "--level", &want]);
    let mut shown: Vec<String> = preview["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    shown.sort();
    let mut expected = vec![school.clone(), teacher.clone()];
    expected.sort();
    assert_eq!(
        shown, expected,
        "the preview shows exactly what will be sent"
    );
    assert!(!shown.contains(&outsider));

    a.cli_ok(&[
        "request", "approve", &id, "--level", &want, "--access", "manager",
    ]);
    let again = a.cli(&[
        "request", "approve", &id, "--level", &want, "--access", "manager",
    ]);
    assert!(!again.status.success());
    assert!(
        support::stderr(&again).contains("cannot go from"),
        "{}",
        support::stderr(&again)
    );
    // B receives the data (in its inbox), reports it: processed on both sides.
    wait_inbox(&b, &[&school, &teacher]);
    wait_status(&a, &id, "processed");
    wait_status(&b, &id, "processed");
    assert_eq!(request_of(&b, &id)["access"], "manager");
    assert_eq!(request_of(&b, &id)["level"], want.as_str());

    // Revoked within 72 hours of processing: allowed for a manager share.
    let share = request_of(&a, &id)["share"]
        .as_str()
        .expect("share")
        .to_string();
    a.cli_ok(&["share", "revoke", &share]);
    wait_status(&b, &id, "revoked");
    assert_eq!(request_of(&a, &id)["status"], "revoked");
    // The copies waiting at B are erased and the erase acknowledged to A.
    wait_inbox(&b, &[]);
    wait_audit(&a, "erase.acked", "erased 2 copy(ies)");

    let full = [
        "requested",
        "to-evaluate",
        "approved",
        "preparing",
        "available",
        "processed",
        "revoked",
    ];
    assert_eq!(history(&a, &id), full);
    assert_eq!(history(&b, &id), full);

    // A second request is rejected: both sides say so.
    let req2 = b.cli_json(&[
        "request",
        "send",
        "Acme",
        "--want",
        &format!("object:{outsider}"),
    ]);
    let id2 = req2["id"].as_str().unwrap().to_string();
    wait_status(&a, &id2, "to-evaluate");
    a.cli_ok(&["request", "reject", &id2, "--reason", "not shared outside"]);
    wait_status(&b, &id2, "rejected");
    assert_eq!(request_of(&b, &id2)["reason"], "not shared outside");
    assert_eq!(history(&b, &id2), ["requested", "to-evaluate", "rejected"]);
    // Rejected is final.
    let late = a.cli(&[
        "request",
        "approve",
        &id2,
        "--level",
        &format!("object:{outsider}"),
        "--access",
        "on-loan",
    ]);
    assert!(!late.status.success());
    assert!(
        support::stderr(&late).contains("final"),
        "{}",
        support::stderr(&late)
    );
}

#[test]
fn access_types_terms_codes_and_revocation() {
    let (mut a, b, c) = trio();
    let put = |first: &str| a.put("contact", &["--set", &format!("first_name={first}")]);
    let (lent, sub, managed, termed, coded, expiring) = (
        put("Lent"),
        put("Sub"),
        put("Managed"),
        put("Termed"),
        put("Coded"),
        put("Expiring"),
    );

    // On loan: B may not pass it on; its daemon says why.
    a.cli_ok(&[
        "share", "add", "Globex", "--object", &lent, "--access", "on-loan",
    ]);
    // Subcontractor: only to a partner B marks as subcontractor.
    a.cli_ok(&[
        "share",
        "add",
        "Globex",
        "--object",
        &sub,
        "--access",
        "subcontractor",
    ]);
    // Manager: revocable only within 72 hours after processing.
    a.cli_ok(&[
        "share", "add", "Globex", "--object", &managed, "--access", "manager",
    ]);
    wait_inbox(&b, &[&lent, &sub, &managed]);
    b.cli_ok(&["inbox", "approve", &lent, &sub, &managed, "--as-new"]);

    let to_c = |id: &str, access: &str| {
        refused_args(&[
            "share", "add", "Initech", "--object", id, "--access", access,
        ])
    };
    refused(
        &b,
        &to_c(&lent, "on-loan"),
        "on loan: it may not be re-shared",
    );
    refused(
        &b,
        &to_c(&sub, "subcontractor"),
        "only to a partner marked as subcontractor",
    );
    b.cli_ok(&["partner", "set", "Initech", "--subcontractor", "true"]);
    b.cli_ok(&[
        "share",
        "add",
        "Initech",
        "--object",
        &sub,
        "--access",
        "subcontractor",
    ]);
    wait_inbox(&c, &[&sub]);
    c.cli_ok(&["inbox", "approve", &sub]);
    assert!(exists(&c, &sub));
    wait_acked(&b, "Initech");
    assert!(!exists(&c, &lent), "on-loan data reached C");

    // Revoking the subcontractor share erases B's copy and C's re-shared
    // copy; C's ack travels back through B to A's audit log.
    let sub_share = given_share(&a, &format!("object:{sub}"));
    a.cli_ok(&["share", "revoke", &sub_share]);
    wait_for("the copies at B and C to be erased", SYNC, || {
        (!exists(&b, &sub) && !exists(&c, &sub)).then_some(())
    });
    wait_audit(&a, "erase.acked", "1 onward erase(s) acknowledged");
    wait_audit(&b, "erase.forward", "re-shared object(s) to erase");
    wait_audit(&c, "erase.done", "1 copy(ies) erased");

    // Terms: nothing is released until B's admin accepts them.
    let dpa = b.dir.parent().unwrap().join("dpa.txt");
    std::fs::write(&dpa, "Data stays in the EU; erase on request.").unwrap();
    a.cli_ok(&[
        "share",
        "add",
        "Globex",
        "--object",
        &termed,
        "--terms",
        dpa.to_str().unwrap(),
    ]);
    let termed_share = given_share(&a, &format!("object:{termed}"));
    wait_for("the terms to reach B", SYNC, || {
        let list = b.cli_json(&["share", "list"]);
        list["received"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| {
                s["id"] == termed_share.as_str()
                    && s["terms"].as_str().is_some_and(|t| t.contains("EU"))
            })
            .then_some(())
    });
    wait_acked(&a, "Globex");
    assert!(
        !inbox_ids(&b).contains(&termed),
        "data released before the terms were accepted"
    );
    b.cli_ok(&["share", "accept-terms", &termed_share, "--by", "alice"]);
    wait_inbox(&b, &[&termed]);
    wait_audit(&a, "terms.accepted", "data released");
    let accepted = audit_actions(&b, Some("Acme"));
    assert!(accepted.iter().any(|(a, _)| a == "terms.accept"));

    // A share code works once.
    let code_of = |object: &str| {
        let out = a.cli_json(&[
            "share", "add", "--code", "--valid", "1h", "--object", object,
        ]);
        out["code"].as_str().expect("code").to_string()
    };
    let code = code_of(&coded);
    let expiring_code = code_of(&expiring);
    b.cli_ok(&["share", "redeem", "Acme", &code]);
    wait_inbox(&b, &[&termed, &coded]);
    c.cli_ok(&["share", "redeem", "Acme", &code]);
    wait_audit(&c, "redeem.refused", "already used");
    assert!(!inbox_ids(&c).contains(&coded));

    // B reports the manager share received: it is processed.
    wait_for("the manager share to be processed", SYNC, || {
        let list = a.cli_json(&["share", "list"]);
        list["given"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| {
                s["rules"][0] == format!("object:{managed}").as_str() && s["processed_ms"].is_u64()
            })
            .then_some(())
    });

    // 73 hours later (injected clock, not a sleep).
    a.stop();
    a.start_with_env(&[("ORGSYNC_CLOCK_OFFSET_SECS", "262800")]);
    let managed_share = given_share(&a, &format!("object:{managed}"));
    refused(&a, &["share", "revoke", &managed_share], "72 hours");
    assert!(exists(&b, &managed), "a refused revocation erased data");
    // An on-loan share stays revocable any time.
    let lent_share = given_share(&a, &format!("object:{lent}"));
    a.cli_ok(&["share", "revoke", &lent_share]);
    wait_for("the lent copy at B to be erased", SYNC, || {
        (!exists(&b, &lent)).then_some(())
    });
    // The second code has expired by now.
    b.cli_ok(&["share", "redeem", "Acme", &expiring_code]);
    wait_audit(&b, "redeem.refused", "expired");
    assert!(!inbox_ids(&b).contains(&expiring));
}

fn plain(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_uppercase()
}

fn pending_fps(inst: &Instance) -> Vec<String> {
    inst.cli_json(&["partner", "pending"])["pending"]
        .as_array()
        .expect("pending")
        .iter()
        .map(|p| plain(p["fingerprint"].as_str().expect("fingerprint")))
        .collect()
}

#[test]
fn pending_instances_are_accepted_after_the_fingerprint_check_or_dismissed() {
    let mut a = Instance::governed("Acme");
    let mut d = Instance::governed("Dyna");
    let mut e = Instance::governed("Evil");
    // D and E know A; A knows neither: they wait in A's pending list.
    d.trust(&a);
    e.trust(&a);
    a.start();
    d.start();
    e.start();
    let (fp_d, fp_e) = (d.fingerprint(), e.fingerprint());
    wait_for("D and E to be pending at A", SYNC, || {
        let fps = pending_fps(&a);
        (fps.contains(&plain(&fp_d)) && fps.contains(&plain(&fp_e))).then_some(())
    });
    let root = a.dir.parent().unwrap().to_path_buf();
    let bundle = |inst: &Instance| {
        let path = root.join(format!("{}.bundle", inst.name));
        inst.keytool(&["export", "-o", path.to_str().unwrap()]);
        path
    };
    let (d_bundle, e_bundle) = (bundle(&d), bundle(&e));
    // E's bundle does not carry D's fingerprint: refused.
    let e_path = e_bundle.to_str().unwrap();
    refused(
        &a,
        &["partner", "accept", &fp_d, "--bundle", e_path],
        "is not the pending peer's",
    );
    let out = a.cli_ok(&[
        "partner",
        "accept",
        &fp_d,
        "--bundle",
        d_bundle.to_str().unwrap(),
    ]);
    assert!(out.contains("paired with Dyna"), "{out}");
    wait_for("A and D to connect", SYNC, || {
        let partners = a.cli_json(&["partners"]);
        partners["partners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Dyna" && p["state"] == "paired" && p["connected"] == true)
            .then_some(())
    });
    a.cli_ok(&["partner", "dismiss", &fp_e]);
    let left = pending_fps(&a);
    assert!(
        !left.contains(&plain(&fp_e)),
        "a dismissed peer is still listed"
    );
    assert!(
        !left.contains(&plain(&fp_d)),
        "an accepted peer is still pending"
    );
    let actions: Vec<String> = audit_actions(&a, None)
        .into_iter()
        .map(|(x, _)| x)
        .collect();
    assert!(actions.contains(&"partner.accept".to_string()));
    assert!(actions.contains(&"partner.dismiss".to_string()));
}

/// Issue 16 item 5: a contact flagged after the share exists goes with
/// its own log entry, once: A's log grows by one entry per contact (no
/// re-log), A sends each once, and B applies each once (nothing arrives
/// twice), as an announced copy under the share.
#[test]
fn contacts_flagged_after_the_share_go_once_with_their_own_entry() {
    const N: usize = 30;
    let mut a = Instance::governed("Acme");
    let mut b = Instance::governed("Globex");
    Instance::pair(&a, &b);
    a.start();
    b.start();
    b.cli_ok(&["inbox", "policy", "Acme", "auto"]);
    let vip = a.put("flag", &["--set", "name=VIP"]);
    a.cli_ok(&[
        "share", "add", "Globex", "--flag", &vip, "--access", "operator",
    ]);
    wait_for("the flag on B", SYNC, || exists(&b, &vip).then_some(()));
    wait_acked(&a, "Globex");
    let head = a.log_head();
    let sent = a.metric("orgsync_changes_sent_total");
    let applied = b.metric("orgsync_changes_applied_total");
    let started = std::time::Instant::now();
    let ids: Vec<String> = (0..N)
        .map(|i| {
            a.put(
                "contact",
                &["--set", &format!("first_name=P{i}"), "--flag", &vip],
            )
        })
        .collect();
    let last = ids.last().expect("contacts written");
    wait_for("the last flagged contact on B", SYNC, || {
        exists(&b, last).then_some(())
    });
    wait_for("every flagged contact on B", SYNC, || {
        ids.iter().all(|id| exists(&b, id)).then_some(())
    });
    let took = started.elapsed();
    wait_acked(&a, "Globex");
    let entries = a.log_head() - head;
    let sent = a.metric("orgsync_changes_sent_total") - sent;
    let applied = b.metric("orgsync_changes_applied_total") - applied;
    eprintln!(
        "flagged after the share: {N} contacts, {entries} log entries on A, {sent} sent, {applied} applied on arrival on B ({} held until announced), {} ms",
        N as u64 - applied.min(N as u64),
        took.as_millis()
    );
    assert_eq!(entries, N as u64, "one log entry each: none re-logged");
    assert_eq!(sent, N as u64, "each sent once");
    // Those that overtook their announcement were held, then approved
    // from the inbox (not counted as applied); none arrived twice.
    assert!(applied <= N as u64, "{applied} applied on B");
    assert_eq!(
        b.metric("orgsync_changes_unchanged_total"),
        0,
        "nothing arrived twice"
    );
    assert_eq!(a.metric("orgsync_share_check_errors_total"), 0);
    for id in &ids {
        assert!(
            field(&b, id, "fields", "first_name").is_some(),
            "{id} whole on B"
        );
    }
}
