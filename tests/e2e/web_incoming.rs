//! The web console's Incoming and Home pages over HTTP against two real
//! paired `orgsyncd` daemons on loopback: bad forms are refused with the
//! error next to the field and nothing decided; bulk approve into a local
//! flag and bulk reject; the Pending / Approved / Rejected filters and
//! "Show all child data"; the per-partner inbox policy; a received share
//! rejected from Home drops what it sent and sends; its terms can then no
//! longer be accepted; the share-code form.

use crate::support;
use crate::support::web as web_client;

use std::time::{Duration, Instant};

use serde_json::Value as Json;
use support::{wait_for, Instance};
use web_client::{
    add_account, audit_who, enable_console, inbox_ids, received, wait_console, Browser, From,
};

const PW: &str = "correct horse battery staple";
const SYNC: Duration = Duration::from_secs(60);

fn flags_of(inst: &Instance, id: &str) -> Vec<String> {
    let out = inst.cli(&["get", id, "--json"]);
    assert!(out.status.success(), "{id} is not in {}'s store", inst.name);
    let v: Json = serde_json::from_slice(&out.stdout).expect("json");
    v["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

fn exists(inst: &Instance, id: &str) -> bool {
    inst.cli(&["get", id]).status.success()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Two paired governed daemons, Globex with a console and the admin "gil";
/// Acme's VIP contacts (given names) shared with Globex and waiting in its
/// inbox. Returns (acme, globex, console address, VIP flag id, contact ids).
fn setup(
    names: &[&str],
) -> (
    Instance,
    Instance,
    std::net::SocketAddr,
    String,
    Vec<String>,
) {
    let mut a = Instance::governed("Acme");
    let mut g = Instance::governed("Globex");
    Instance::pair(&a, &g);
    let addr = enable_console(&g);
    add_account(&g, "gil", "admin", PW);
    a.start();
    g.start();
    wait_console(addr);
    let vip = a.put("flag", &["--set", "name=VIP"]);
    let ids: Vec<String> = names
        .iter()
        .map(|n| {
            a.put(
                "contact",
                &["--set", &format!("first_name={n}"), "--flag", &vip],
            )
        })
        .collect();
    a.cli_ok(&["share", "add", "Globex", "--flag", &vip]);
    let mut want = ids.clone();
    want.push(vip.clone());
    let want = sorted(want);
    wait_for("the VIP records in Globex's inbox", SYNC, || {
        (inbox_ids(&g) == want).then_some(())
    });
    (a, g, addr, vip, ids)
}

#[test]
fn incoming_checks_the_whole_form_decides_in_bulk_filters_and_sets_the_policy() {
    let t0 = Instant::now();
    let (mut a, mut g, addr, vip, ids) = setup(&["Ann", "Bob", "Cyd", "Dan"]);
    let (ann, bob, cyd, dan) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let partners = g.put("flag", &["--set", "name=Partners"]);
    let acct = a.account();
    let mut gil = Browser::new(addr);
    gil.sign_in("gil", PW);
    let csrf = gil.get("/incoming").csrf();
    let before = (g.digest(), inbox_ids(&g));

    // Bad forms: every problem named next to its field, nothing decided.
    let (s_ann, f_ann, s_bob, l_bob, f_cyd) = (
        format!("status-{ann}"),
        format!("flag-{ann}"),
        format!("status-{bob}"),
        format!("link-{bob}"),
        format!("flag-{cyd}"),
    );
    let r = gil.post(
        "/incoming",
        &[
            ("csrf", &csrf),
            ("op", "save"),
            (&s_ann, "rejected"),
            (&f_ann, &partners),
            (&s_bob, "approved"),
            (&l_bob, &partners),
            (&format!("status-{cyd}"), "approved"),
            (&f_cyd, "nonsense"),
        ],
        From::SameOrigin,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    for (field, says) in [
        (
            &f_ann,
            "Set the status to Approved to land the record in a flag.",
        ),
        (&l_bob, "A contact cannot be linked to a flag"),
        (&f_cyd, "is not one of this organisation"),
    ] {
        let at = r
            .body
            .find(&format!("id=\"err-{field}\""))
            .unwrap_or_else(|| panic!("no error next to {field}:\n{}", r.body));
        assert!(
            r.body[at..].contains(says),
            "{field}: {says:?} missing:\n{}",
            r.body
        );
    }
    assert!(
        r.body.contains("Nothing was saved: 3 problem(s)"),
        "{}",
        r.body
    );
    let r = gil.post(
        "/incoming",
        &[("csrf", &csrf), ("op", "approve")],
        From::SameOrigin,
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Tick at least one record"), "{}", r.body);
    assert_eq!(
        (g.digest(), inbox_ids(&g)),
        before,
        "a refused form decided"
    );

    // Bulk: Ann and Bob approved into Partners, then Cyd rejected.
    let select = gil.get("/incoming?select=all");
    assert_eq!(
        select.body.matches("value=\"yes\" checked").count(),
        5,
        "Select all ticks every row"
    );
    let (p_ann, p_bob, p_cyd) = (
        format!("pick-{ann}"),
        format!("pick-{bob}"),
        format!("pick-{cyd}"),
    );
    let r = gil.post(
        "/incoming",
        &[
            ("csrf", &csrf),
            ("op", "approve"),
            (&p_ann, "yes"),
            (&p_bob, "yes"),
            ("bulk_flag", &partners),
        ],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let done = gil.get(r.header("location").expect("location"));
    assert!(done.body.contains("Saved: 2 approved."), "{}", done.body);
    let r = gil.post(
        "/incoming",
        &[("csrf", &csrf), ("op", "reject"), (&p_cyd, "yes")],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(flags_of(&g, ann).contains(&partners) && flags_of(&g, bob).contains(&partners));
    assert!(!exists(&g, cyd));
    assert_eq!(inbox_ids(&g), sorted(vec![dan.clone(), vip.clone()]));
    assert_eq!(audit_who(&g, "inbox.approve"), ["gil", "gil"]);
    assert_eq!(audit_who(&g, "inbox.reject"), ["gil"]);

    // Filters.
    let approved = gil.get("/incoming?show=approved").body;
    assert!(approved.contains(ann.as_str()) && approved.contains(bob.as_str()));
    assert!(!approved.contains(cyd.as_str()) && !approved.contains(dan.as_str()));
    let rejected = gil.get("/incoming?show=rejected").body;
    assert!(rejected.contains(cyd.as_str()) && !rejected.contains(ann.as_str()));
    let pending = gil.get("/incoming").body;
    assert!(pending.contains(dan.as_str()) && !pending.contains(&p_ann));
    // Show all child data: Acme is not a child account until marked so.
    let children = gil.get("/incoming?from=children").body;
    assert!(
        children.contains("Nothing waiting.") && !children.contains(dan.as_str()),
        "{children}"
    );
    g.cli_ok(&["partner", "set", "Acme", "--child", "true"]);
    let children = gil.get("/incoming?from=children").body;
    assert!(children.contains(dan.as_str()), "{children}");

    // Policy: a bad mode is refused; auto approves what waits, as the CLI does.
    let r = gil.post(
        "/incoming/policy",
        &[("csrf", &csrf), ("partner", &acct), ("mode", "sometimes")],
        From::SameOrigin,
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("is not a policy"), "{}", r.body);
    let r = gil.post(
        "/incoming/policy",
        &[("csrf", &csrf), ("partner", &acct), ("mode", "auto")],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        inbox_ids(&g).is_empty(),
        "auto-approve left records waiting"
    );
    assert!(exists(&g, dan));
    let settings = g.cli_json(&["partner", "settings"]);
    assert_eq!(settings["partners"][0]["inbox"], "auto", "{settings}");
    assert!(audit_who(&g, "partner.settings").contains(&"gil".to_string()));
    eprintln!(
        "web incoming: 5 waiting; a 3-error form refused with each error at its field (store unchanged); bulk 2 approved into a flag, 1 rejected; filters and child data right; policy auto approved the 2 left; {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    Instance::stop_all(&mut [&mut a, &mut g], Duration::from_secs(10));
}

#[test]
fn home_rejects_a_received_share_refuses_its_terms_and_redeems_codes() {
    let t0 = Instant::now();
    let (mut a, mut g, addr, _vip, ids) = setup(&["Ann"]);
    let ann = &ids[0];
    let plain = received(&g)[0]["id"].as_str().expect("id").to_string();
    let press = a.put("flag", &["--set", "name=Press"]);
    let dee = a.put("contact", &["--set", "first_name=Dee", "--flag", &press]);
    let dpa = a.dir.parent().expect("parent").join("dpa.txt");
    std::fs::write(&dpa, "Data stays in the EU.").expect("terms file");
    a.cli_ok(&[
        "share",
        "add",
        "Globex",
        "--flag",
        &press,
        "--terms",
        dpa.to_str().expect("utf-8"),
    ]);
    let termed = wait_for("the terms share at Globex", SYNC, || {
        received(&g)
            .iter()
            .find(|s| s["terms"].as_str().is_some())
            .and_then(|s| s["id"].as_str().map(str::to_string))
    });
    let mut gil = Browser::new(addr);
    gil.sign_in("gil", PW);
    let home = gil.get("/");
    assert!(home.body.contains("Accept…") && home.body.contains(">Reject<"));
    let csrf = home.csrf();

    // The dialog's box must be ticked: refused next to it, nothing accepted.
    let dialog = gil.get(&format!("/?terms={termed}"));
    assert!(dialog.body.contains("<dialog open") && dialog.body.contains("Data stays in the EU."));
    let r = gil.post(
        &format!("/shares/{termed}/accept-terms"),
        &[("csrf", &csrf)],
        From::SameOrigin,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("id=\"err-agree\"") && r.body.contains("<dialog open"));
    assert!(received(&g).iter().all(|s| s["terms_accepted"].is_null()));

    // Reject the plain share: Ann leaves the inbox, later updates are dropped.
    let r = gil.post(
        &format!("/shares/{plain}/reject"),
        &[("csrf", &csrf)],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let home = gil.get(r.header("location").expect("location"));
    assert!(home.body.contains("rejected by gil"), "{}", home.body);
    assert!(!inbox_ids(&g).contains(ann) && !exists(&g, ann));
    a.cli_ok(&["set", ann, "--set", "phone=+331"]);
    let head = a.log_head();
    wait_for("Globex to acknowledge Ann's update", SYNC, || {
        (a.acked_by("Globex") >= head).then_some(())
    });
    assert!(
        !inbox_ids(&g).contains(ann),
        "a rejected share's update came back"
    );
    assert_eq!(audit_who(&g, "share.reject"), ["gil"]);
    // Ann and the VIP flag waited under that share: both rejected.
    assert_eq!(audit_who(&g, "inbox.reject"), ["gil", "gil"]);
    let again = gil.post(
        &format!("/shares/{plain}/reject"),
        &[("csrf", &csrf)],
        From::SameOrigin,
    );
    assert_eq!(again.status, 400);
    assert!(
        again.body.contains("already rejected, by gil"),
        "{}",
        again.body
    );

    // Reject the terms share: its terms can no longer be accepted, nothing released.
    let r = gil.post(
        &format!("/shares/{termed}/reject"),
        &[("csrf", &csrf)],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let r = gil.post(
        &format!("/shares/{termed}/accept-terms"),
        &[("csrf", &csrf), ("agree", "yes")],
        From::SameOrigin,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("was rejected by gil"), "{}", r.body);
    assert!(!inbox_ids(&g).contains(&dee) && !exists(&g, &dee));

    // Share codes: errors next to the fields, then a real code is redeemed.
    let r = gil.post(
        "/shares/redeem",
        &[("csrf", &csrf), ("partner", &a.account()), ("code", "")],
        From::SameOrigin,
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("id=\"err-code\"") && r.body.contains("Enter the share code"));
    let r = gil.post(
        "/shares/redeem",
        &[("csrf", &csrf), ("partner", "Nobody"), ("code", "ABCD")],
        From::SameOrigin,
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("id=\"err-partner\""), "{}", r.body);
    let eve = a.put("contact", &["--set", "first_name=Eve"]);
    let code = a.cli_json(&["share", "add", "--code", "--valid", "1h", "--object", &eve])["code"]
        .as_str()
        .expect("code")
        .to_string();
    let r = gil.post(
        "/shares/redeem",
        &[("csrf", &csrf), ("partner", &a.account()), ("code", &code)],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    wait_for("Eve released by the code", SYNC, || {
        inbox_ids(&g).contains(&eve).then_some(())
    });
    assert_eq!(audit_who(&g, "code.redeem"), ["gil"]);
    eprintln!(
        "web home: terms refused without the tick; 2 received shares rejected (waiting record dropped, later update dropped, terms then refused); code form errors at their fields, a real code released its record; {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    Instance::stop_all(&mut [&mut a, &mut g], Duration::from_secs(10));
}
