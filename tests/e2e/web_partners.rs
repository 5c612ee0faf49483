//! End-to-end tests of the web console's About and Partners pages and its
//! live-updates stream, against real `orgsyncd` daemons on loopback:
//! - a one-time code created on Acme's About page and joined from Globex's
//!   About page pairs the two daemons; records then flow, and Globex's
//!   `/events` stream reports the arrival (inbox count, then the change);
//! - children, subcontractors and field maps set on the Partners page show
//!   in `orgsync partner settings`; a partner is revoked through the
//!   confirmation step; viewers see no control and their POSTs get 403.

use crate::support;
use crate::support::sse;
use crate::support::web as web_client;

use std::time::{Duration, Instant};

use serde_json::Value as Json;
use sse::Sse;
use support::{wait_for, Instance};
use web_client::{add_account, audit_who, enable_console, wait_console, Browser, From};

const PW: &str = "correct horse battery staple";
const SYNC: Duration = Duration::from_secs(60);

/// The text of the element with `id` (up to its first `<`).
fn text_of(body: &str, id: &str) -> String {
    let at = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in:\n{body}"));
    let rest = &body[at..];
    let rest = &rest[rest.find('>').expect("tag end") + 1..];
    rest[..rest.find('<').expect("text end")].trim().to_string()
}

fn partner<'a>(list: &'a Json, name: &str) -> Option<&'a Json> {
    list["partners"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

fn cookie(b: &Browser) -> String {
    b.cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn code_pairing_through_about_pages_then_records_flow_and_stream_live() {
    let t0 = Instant::now();
    let mut a = Instance::governed("Acme");
    let mut b = Instance::governed("Globex");
    let addr_a = enable_console(&a);
    let addr_b = enable_console(&b);
    add_account(&a, "ada", "admin", PW);
    add_account(&a, "vic", "viewer", PW);
    add_account(&b, "bob", "admin", PW);
    a.start();
    b.start();
    wait_console(addr_a);
    wait_console(addr_b);

    // A viewer sees the identity but no form, and its POST is refused.
    let mut vic = Browser::new(addr_a);
    vic.sign_in("vic", PW);
    let vpage = vic.get("/about");
    assert_eq!(vpage.status, 200);
    assert!(vpage.body.contains(&a.account()), "{}", vpage.body);
    assert!(!vpage.body.contains("/about/invite"), "{}", vpage.body);
    let vcsrf = vpage.csrf();
    let r = vic.post(
        "/about/invite",
        &[
            ("csrf", &vcsrf),
            ("listen", "127.0.0.1:0"),
            ("minutes", "5"),
        ],
        From::SameOrigin,
    );
    assert_eq!(r.status, 403, "{}", r.body);

    // Acme's admin creates the code; bad input is refused next to its field.
    let mut ada = Browser::new(addr_a);
    ada.sign_in("ada", PW);
    let csrf = ada.get("/about").csrf();
    let bad = ada.post(
        "/about/invite",
        &[("csrf", &csrf), ("listen", "127.0.0.1:0"), ("minutes", "0")],
        From::SameOrigin,
    );
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("id=\"err-minutes\""), "{}", bad.body);
    let page = ada.post(
        "/about/invite",
        &[("csrf", &csrf), ("listen", "127.0.0.1:0"), ("minutes", "5")],
        From::SameOrigin,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    let code = text_of(&page.body, "invite-code");
    let connect = text_of(&page.body, "invite-connect");
    assert_eq!(code.split('-').count(), 3, "{code}");
    // Shown once: a reload of About no longer carries it.
    let again = ada.get("/about");
    assert!(!again.body.contains(&code), "the code was shown twice");
    assert!(
        again.body.contains("An invitation is waiting"),
        "{}",
        again.body
    );

    // Globex's admin joins: a wrong account number first, then right.
    let mut bob = Browser::new(addr_b);
    bob.sign_in("bob", PW);
    let bcsrf = bob.get("/about").csrf();
    let bad = bob.post(
        "/about/join",
        &[
            ("csrf", &bcsrf),
            ("connect", &connect),
            ("account", "not-an-account"),
            ("code", &code),
        ],
        From::SameOrigin,
    );
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("id=\"err-account\""), "{}", bad.body);
    assert!(!bad.body.contains(&code), "the code was echoed back");
    let t_join = Instant::now();
    let r = bob.post(
        "/about/join",
        &[
            ("csrf", &bcsrf),
            ("connect", &connect),
            ("account", &a.account()),
            ("code", &code),
        ],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        r.header("location")
            .unwrap_or("")
            .contains("Paired%20with%20Acme"),
        "{:?}",
        r.header("location")
    );
    let join_ms = t_join.elapsed().as_millis();
    wait_for("Acme to list Globex as paired", SYNC, || {
        partner(&a.cli_json(&["partners"]), "Globex")
            .filter(|p| p["state"] == "paired")
            .map(|_| ())
    });
    wait_for("both sides to connect", SYNC, || {
        partner(&a.cli_json(&["partners"]), "Globex")
            .filter(|p| p["connected"] == true)
            .map(|_| ())
    });
    let connected_ms = t_join.elapsed().as_millis();
    // The invitation's state is updated by its listener task once the
    // exchange is over, which can come after partners.toml lists Globex.
    wait_for("About to show the invitation paired", SYNC, || {
        ada.get("/about")
            .body
            .contains("paired with Globex")
            .then_some(())
    });
    // The code never reaches a log or the audit.
    assert!(!a.log_text().contains(&code) && !b.log_text().contains(&code));
    assert!(!a.cli_ok(&["audit"]).contains(&code));
    assert_eq!(audit_who(&a, "partner.invite"), vec!["ada"]);
    assert_eq!(audit_who(&a, "partner.pair"), vec!["ada"]);
    assert_eq!(audit_who(&b, "partner.pair"), vec!["bob"]);

    // Records flow, and Globex's live stream reports each arrival.
    let sse = Sse::open(addr_b, &cookie(&bob));
    assert_eq!(sse.status, 200);
    assert!(sse.content_type.starts_with("text/event-stream"));
    let first = sse.wait("first status", Duration::from_secs(10), |n, _| {
        n == "status"
    });
    assert_eq!(first["inbox"], 0, "{first}");
    a.cli_ok(&["share", "add", "Globex", "--all", "--access", "operator"]);
    let t_put = Instant::now();
    a.put("contact", &["--set", "first_name=Ann"]);
    let s = sse.wait("inbox count 1", SYNC, |n, v| {
        n == "status" && v["inbox"] == 1
    });
    let inbox_ms = t_put.elapsed().as_millis();
    assert!(s["partners"][0]["account"] == a.account(), "{s}");
    // The nav count is on every page without JS too.
    assert!(bob.get("/").body.contains("id=\"nav-inbox\">1<"));
    b.cli_ok(&["inbox", "policy", "Acme", "auto"]);
    let t_put = Instant::now();
    let id = a.put("contact", &["--set", "first_name=Bea"]);
    let ev = sse.wait("the change from Acme", SYNC, |n, v| {
        n == "change" && v["id"] == id.as_str()
    });
    let change_ms = t_put.elapsed().as_millis();
    // Governance applies approved records as its own writes: the event
    // names the record Acme wrote, whatever the origin says.
    assert_eq!(ev["kind"], "contact", "{ev}");
    let origin = ev["origin"].as_str().unwrap_or("?").to_string();

    // Without a session the stream is refused.
    let anon = Sse::open(addr_b, "");
    assert_eq!(anon.status, 401);
    drop(sse);
    let stops = Instance::stop_all(&mut [&mut a, &mut b], Duration::from_secs(10));
    eprintln!(
        "web_partners pairing: join answered in {join_ms} ms, connected {connected_ms} ms after join; \
         SSE inbox count {inbox_ms} ms after the write, SSE change event {change_ms} ms after the write (origin {origin}); \
         stops {stops:?}; total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn partners_page_sets_roles_and_field_maps_and_revokes_with_confirmation() {
    let t0 = Instant::now();
    let mut a = Instance::governed("Acme");
    let mut b = Instance::governed("Globex");
    Instance::pair(&a, &b);
    let addr = enable_console(&a);
    add_account(&a, "ada", "admin", PW);
    add_account(&a, "vic", "viewer", PW);
    a.start();
    b.start();
    wait_console(addr);
    let acct = b.account();
    let settings = |inst: &Instance| {
        partner(&inst.cli_json(&["partner", "settings"]), "Globex")
            .cloned()
            .expect("Globex settings")
    };

    let mut ada = Browser::new(addr);
    ada.sign_in("ada", PW);
    let page = ada.get("/partners");
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&format!("data-account=\"{acct}\"")));
    assert!(page.body.contains("id=\"sync-progress\""));
    let csrf = page.csrf();

    // Child and subcontractor through the page show in the CLI listing.
    let r = ada.post(
        "/partners/settings",
        &[
            ("csrf", &csrf),
            ("partner", &acct),
            ("child", "yes"),
            ("subcontractor", "yes"),
        ],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let s = settings(&a);
    assert_eq!(
        (s["child"].clone(), s["subcontractor"].clone()),
        (true.into(), true.into()),
        "{s}"
    );
    assert_eq!(text_of(&ada.get("/partners").body, "children"), "Globex");

    // A field map: a bad name is refused next to its field, nothing stored.
    let bad = ada.post(
        "/partners/map/add",
        &[
            ("csrf", &csrf),
            ("partner", &acct),
            ("theirs", "level"),
            ("ours", "no spaces!"),
        ],
        From::SameOrigin,
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body.contains(&format!("id=\"err-ours-{acct}\"")),
        "{}",
        bad.body
    );
    assert_eq!(settings(&a)["field_map"], serde_json::json!({}));
    let r = ada.post(
        "/partners/map/add",
        &[
            ("csrf", &csrf),
            ("partner", &acct),
            ("theirs", "level"),
            ("ours", "grade"),
        ],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        settings(&a)["field_map"],
        serde_json::json!({"level": "grade"})
    );

    // A viewer sees the settings, no control; every POST is refused 403.
    let mut vic = Browser::new(addr);
    vic.sign_in("vic", PW);
    let vpage = vic.get("/partners");
    assert!(vpage.body.contains("custom.level"), "{}", vpage.body);
    for control in ["/partners/settings", "/partners/map/", "/partners/revoke"] {
        assert!(!vpage.body.contains(control), "viewer sees {control}");
    }
    let vcsrf = vpage.csrf();
    for (path, form) in [
        ("/partners/settings", vec![("partner", acct.as_str())]),
        (
            "/partners/map/remove",
            vec![("partner", &acct), ("theirs", "level")],
        ),
        (
            "/partners/revoke",
            vec![("partner", &acct), ("confirm", "yes")],
        ),
    ] {
        let mut f = vec![("csrf", vcsrf.as_str())];
        f.extend(form);
        let r = vic.post(path, &f, From::SameOrigin);
        assert_eq!(r.status, 403, "{path}: {}", r.body);
    }
    assert_eq!(
        vic.get(&format!("/partners/revoke?partner={acct}")).status,
        403
    );
    let s = settings(&a);
    assert_eq!(s["child"], true);
    assert_eq!(s["field_map"], serde_json::json!({"level": "grade"}));
    assert_eq!(audit_who(&a, "web.refused").len(), 3);

    // Remove the map.
    let r = ada.post(
        "/partners/map/remove",
        &[("csrf", &csrf), ("partner", &acct), ("theirs", "level")],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(settings(&a)["field_map"], serde_json::json!({}));

    // Revoke: the confirmation step, a POST without the tick changes nothing.
    wait_for("Globex to connect", SYNC, || {
        partner(&a.cli_json(&["partners"]), "Globex")
            .filter(|p| p["connected"] == true)
            .map(|_| ())
    });
    let confirm = ada.get(&format!("/partners/revoke?partner={acct}"));
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("id=\"confirm\""), "{}", confirm.body);
    let r = ada.post(
        "/partners/revoke",
        &[("csrf", &csrf), ("partner", &acct)],
        From::SameOrigin,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        partner(&a.cli_json(&["partners"]), "Globex").expect("Globex")["state"],
        "paired"
    );
    let t_revoke = Instant::now();
    let r = ada.post(
        "/partners/revoke",
        &[("csrf", &csrf), ("partner", &acct), ("confirm", "yes")],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let keytool: Json = serde_json::from_str(&a.keytool(&["list", "--json"])).expect("list");
    assert_eq!(keytool[0]["state"], "revoked", "{keytool}");
    wait_for("Globex to be disconnected and revoked", SYNC, || {
        partner(&a.cli_json(&["partners"]), "Globex")
            .filter(|p| p["state"] == "revoked" && p["connected"] == false)
            .map(|_| ())
    });
    let revoke_ms = t_revoke.elapsed().as_millis();
    assert_eq!(audit_who(&a, "partner.revoke"), vec!["ada"]);
    let after = ada.get("/partners");
    assert!(!after
        .body
        .contains(&format!("/partners/revoke?partner={acct}")));
    let stops = Instance::stop_all(&mut [&mut a, &mut b], Duration::from_secs(10));
    eprintln!(
        "web_partners settings: roles, 2 field-map changes, 3 viewer refusals; revoke to disconnected {revoke_ms} ms; stops {stops:?}; total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
