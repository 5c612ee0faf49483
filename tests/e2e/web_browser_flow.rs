//! The main web-console scenario, in real headless Chromium (WebDriver,
//! `/usr/bin/chromedriver`) against two real paired `orgsyncd` daemons on
//! loopback: Acme's admin signs in with password and TOTP code and shares a
//! flag with Globex from the Outgoing tab; Globex's admin (also password and
//! TOTP) approves one record into a local flag, links one to an existing
//! record and rejects one from the Incoming tab, and Globex's store holds
//! exactly what `orgsync inbox approve/--link/reject` make (tests/e2e/governance.rs);
//! a share with terms releases nothing until the terms are accepted in the
//! Home page's dialog. Then, over plain HTTP: a viewer sees no buttons and
//! its POSTs are refused, a forged cross-site POST and a POST without the
//! CSRF token are refused, and ten wrong passwords lock the login.
//! Screenshots: docs/screenshots/{login,incoming,terms,home}.png.

use crate::support;
use crate::support::web as web_client;
use crate::support::webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use support::{wait_for, Instance};
use web_client::{
    add_account, audit_who, enable_console, inbox_ids, received, wait_console, Browser, From,
};
use webdriver::{Driver, Session};

const PW: &str = "correct horse battery staple";
const SYNC: Duration = Duration::from_secs(60);
const PAGE: Duration = Duration::from_secs(20);

fn shots_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&d).expect("docs/screenshots");
    d
}

fn shot(b: &Session, name: &str) -> usize {
    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(shots_dir().join(format!("{name}.png")), &png).expect("write screenshot");
    png.len() / 1024
}

/// Waits until the page source contains `text`.
fn wait_text(b: &Session, what: &str, text: &str) {
    wait_for(what, PAGE, || b.source().contains(text).then_some(()));
}

/// The account's TOTP secret, turned on with `orgsync admin totp NAME`.
fn totp_secret(inst: &Instance, name: &str) -> String {
    inst.cli_json(&["admin", "totp", name])["secret"]
        .as_str()
        .expect("secret")
        .to_string()
}

/// Signs in at `base` in the browser with the password, then the current
/// code of `secret`; asserts Home is shown.
fn sign_in_with_totp(b: &Session, base: &str, name: &str, secret: &str) {
    b.goto(&format!("{base}/"));
    assert!(
        b.url().ends_with("/login"),
        "not sent to login: {}",
        b.url()
    );
    b.type_into("#name", name);
    b.type_into("#password", PW);
    b.click("button[type=submit]");
    wait_text(b, "the code form", "id=\"code\"");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let code = orgsync_daemon::web::totp::code_at(secret, now).expect("code");
    b.type_into("#code", &format!("{code:06}"));
    b.click("main button[type=submit]");
    wait_text(b, "Home after sign-in", "Audit log");
}

fn get(inst: &Instance, id: &str) -> Option<Json> {
    let out = inst.cli(&["get", id, "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("get --json"))
}

#[test]
fn two_consoles_share_decide_accept_terms_and_refuse_what_they_must() {
    let t0 = Instant::now();
    let mut a = Instance::governed("Acme");
    let mut g = Instance::governed("Globex");
    Instance::pair(&a, &g);
    let a_addr = enable_console(&a);
    let g_addr = enable_console(&g);
    add_account(&a, "ada", "admin", PW);
    add_account(&g, "gil", "admin", PW);
    add_account(&g, "hal", "admin", PW);
    add_account(&g, "val", "viewer", PW);
    let ada_secret = totp_secret(&a, "ada");
    let gil_secret = totp_secret(&g, "gil");
    a.start();
    g.start();
    wait_console(a_addr);
    wait_console(g_addr);
    let contact = |first: &str, flag: &str| {
        a.put(
            "contact",
            &[
                "--set",
                &format!("first_name={first}"),
                "--set",
                &format!("email={}@acme.example", first.to_lowercase()),
                "--flag",
                flag,
            ],
        )
    };
    let vip = a.put("flag", &["--set", "name=VIP"]);
    let press = a.put("flag", &["--set", "name=Press"]);
    let ann = contact("Ann", &vip);
    let bob = contact("Bob", &vip);
    let cyd = contact("Cyd", &vip);
    let dee = contact("Dee", &press);
    // Globex's own flag and record, to land in and to link to.
    let partners = g.put("flag", &["--set", "name=Partners"]);
    let robert = g.put(
        "contact",
        &[
            "--set",
            "first_name=Robert",
            "--set",
            "email=rob@globex.example",
        ],
    );
    let g_acct = g.account();
    // Two hosts (127.0.0.1 and localhost) so the two consoles' cookies stay apart.
    let a_base = format!("http://{a_addr}");
    let g_base = format!("http://localhost:{}", g_addr.port());

    let ready_at = t0.elapsed();
    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile dir");
    let b = driver.session(profile.path());
    b.window_size(1280, 900);
    let browser_at = t0.elapsed();
    let mut sizes = Vec::new();

    // Acme's admin: password and TOTP, then Share VIP with Globex.
    b.goto(&format!("{a_base}/"));
    sizes.push(("login", shot(&b, "login")));
    sign_in_with_totp(&b, &a_base, "ada", &ada_secret);
    b.goto(&format!(
        "{a_base}/outgoing?flag={vip}&action=share#checklist"
    ));
    b.click(&format!("#p-{g_acct}"));
    b.click("#checklist button[type=submit]");
    wait_text(&b, "the share saved", "role=\"status\"");
    let given = a.cli_json(&["share", "list"])["given"].clone();
    assert_eq!(given.as_array().map(Vec::len), Some(1), "{given}");

    // Globex: the three contacts and the flag wait in the inbox.
    let mut want = vec![ann.clone(), bob.clone(), cyd.clone(), vip.clone()];
    want.sort();
    wait_for("VIP's records in Globex's inbox", SYNC, || {
        (inbox_ids(&g) == want).then_some(())
    });
    let shared_at = t0.elapsed();

    // Globex's admin decides in the Incoming tab: Ann approved into
    // Partners, Bob linked to Robert (found with the search), Cyd rejected.
    sign_in_with_totp(&b, &g_base, "gil", &gil_secret);
    b.goto(&format!("{g_base}/incoming"));
    wait_text(&b, "the inbox table", "Incoming records");
    b.type_into("#q", "Robert");
    b.click("form[role=search] button");
    wait_text(&b, "the link candidates", "1 local record(s) match");
    let pick = |select: &str, value: &str| {
        b.click(&format!("select[name='{select}'] option[value='{value}']"))
    };
    pick(&format!("status-{ann}"), "approved");
    pick(&format!("flag-{ann}"), &partners);
    pick(&format!("status-{bob}"), "approved");
    pick(&format!("link-{bob}"), &robert);
    pick(&format!("status-{cyd}"), "rejected");
    sizes.push(("incoming", shot(&b, "incoming")));
    b.click("button[name=op][value=save]");
    wait_text(
        &b,
        "the decisions saved",
        "Saved: 1 approved, 1 linked, 1 rejected.",
    );

    // The store holds what the CLI's approve / --link / reject make.
    let ann_obj = get(&g, &ann).expect("Ann approved as a new record, same id");
    assert_eq!(ann_obj["fields"]["email"], "ann@acme.example");
    assert!(
        ann_obj["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == partners.as_str())),
        "Ann is not in the local flag Partners: {ann_obj}"
    );
    let rob_obj = get(&g, &robert).expect("Robert");
    assert_eq!(rob_obj["fields"]["email"], "bob@acme.example", "{rob_obj}");
    assert!(
        get(&g, &bob).is_none(),
        "a linked record appeared under its own id"
    );
    assert!(get(&g, &cyd).is_none(), "a rejected record appeared");
    assert_eq!(
        inbox_ids(&g),
        vec![vip.clone()],
        "only the flag still waits"
    );
    for action in ["inbox.approve", "inbox.link", "inbox.reject"] {
        assert_eq!(audit_who(&g, action), vec!["gil"], "{action}");
    }
    // The Approved filter lists both kept records, Rejected lists Cyd.
    b.goto(&format!("{g_base}/incoming?show=rejected"));
    assert!(b.source().contains(&cyd), "Cyd not under Rejected");
    b.goto(&format!("{g_base}/incoming?show=approved"));
    let approved = b.source();
    assert!(approved.contains("approved as a new record") && approved.contains(&robert));

    // A share with terms: nothing released until Globex accepts them.
    b.goto(&format!("{a_base}/outgoing"));
    b.click("#rule_type option[value=flag]");
    b.type_into("#rule_value", &press);
    b.type_into("#terms", "Data stays in the EU; erase on request.");
    b.type_into("#label", "Press list");
    b.click("form[action='/outgoing/share'] button[type=submit]");
    wait_text(&b, "the terms share saved", "role=\"status\"");
    wait_for("the terms to reach Globex", SYNC, || {
        received(&g)
            .iter()
            .any(|s| s["terms"].as_str().is_some_and(|t| t.contains("EU")))
            .then_some(())
    });
    let head = a.log_head();
    wait_for("Globex to acknowledge Acme's log", SYNC, || {
        (a.acked_by("Globex") >= head).then_some(())
    });
    assert!(
        !inbox_ids(&g).contains(&dee) && get(&g, &dee).is_none(),
        "data released before the terms were accepted"
    );
    b.goto(&format!("{g_base}/"));
    b.click("a[href^='/?terms=']");
    wait_text(&b, "the terms dialog", "<dialog open");
    assert!(b.source().contains("Data stays in the EU"));
    sizes.push(("terms", shot(&b, "terms")));
    b.click("#agree");
    b.click("#terms-dialog button[type=submit]");
    wait_text(&b, "the terms accepted", "Terms of Press list accepted");
    wait_for("Dee released once the terms are accepted", SYNC, || {
        inbox_ids(&g).contains(&dee).then_some(())
    });
    assert_eq!(audit_who(&g, "terms.accept"), vec!["gil"]);
    let released_at = t0.elapsed();
    b.goto(&format!("{g_base}/"));
    wait_text(&b, "Home", "terms accepted by gil");
    sizes.push(("home", shot(&b, "home")));
    drop(b);
    drop(driver);

    // A viewer: no buttons, and its POSTs are refused.
    let before = g.digest();
    let mut val = Browser::new(g_addr);
    val.sign_in("val", PW);
    let inc = val.get("/incoming");
    assert!(inc.body.contains(&vip), "the viewer sees the waiting flag");
    assert!(
        !inc.body.contains("<button") || !inc.body.contains("name=\"op\""),
        "{}",
        inc.body
    );
    assert!(!inc.body.contains(">Save<") && !inc.body.contains("<select"));
    let home = val.get("/");
    assert!(!home.body.contains(">Reject<") && !home.body.contains("Redeem"));
    let vcsrf = inc.csrf();
    let share_id = received(&g)[0]["id"].as_str().expect("id").to_string();
    for (path, form) in [
        ("/incoming", vec![(format!("status-{vip}"), "approved")]),
        (&*format!("/shares/{share_id}/reject"), vec![]),
    ] {
        let mut f: Vec<(&str, &str)> = vec![("csrf", &vcsrf)];
        f.extend(form.iter().map(|(k, v)| (k.as_str(), *v)));
        let r = val.post(path, &f, From::SameOrigin);
        assert_eq!(r.status, 403, "viewer POST {path}: {}", r.body);
    }
    // An admin's session, but a forged cross-site POST, and one without the token.
    let mut hal = Browser::new(g_addr);
    hal.sign_in("hal", PW);
    let csrf = hal.get("/incoming").csrf();
    let key = format!("status-{vip}");
    let forged = hal.post(
        "/incoming",
        &[("csrf", &csrf), (&key, "approved")],
        From::Origin("http://evil.example"),
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    let tokenless = hal.post("/incoming", &[(&key, "approved")], From::SameOrigin);
    assert_eq!(tokenless.status, 403, "{}", tokenless.body);
    assert!(inbox_ids(&g).contains(&vip), "a refused POST decided");
    assert_eq!(g.digest(), before, "a refused POST changed the store");
    let refused = audit_who(&g, "web.refused");
    assert!(
        refused.iter().filter(|w| *w == "val").count() == 2
            && refused.iter().filter(|w| *w == "hal").count() == 2,
        "{refused:?}"
    );

    // Ten wrong passwords lock ada's login; the right one is then refused.
    let mut eve = Browser::new(a_addr);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let csrf = eve.get("/login").csrf();
        let r = eve.post(
            "/login",
            &[("csrf", &csrf), ("name", "ada"), ("password", "guess")],
            From::SameOrigin,
        );
        statuses.push(r.status);
    }
    assert!(statuses[..9].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[9], 429, "the tenth failure locks: {statuses:?}");
    let csrf = eve.get("/login").csrf();
    let r = eve.post(
        "/login",
        &[("csrf", &csrf), ("name", "ada"), ("password", PW)],
        From::SameOrigin,
    );
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("Too many failed sign-ins"), "{}", r.body);
    assert!(r.header("location").is_none());

    eprintln!(
        "web browser flow: Chromium, 2 daemons (ready with data at {:.1}s, browser up at {:.1}s); flag shared from Outgoing reached the inbox at {:.1}s; 1 approved into a local flag, 1 linked, 1 rejected in one Save; terms share released only after the dialog ({:.1}s); viewer 2 POSTs 403, forged + tokenless 403, store unchanged; 10 wrong passwords -> 429, right one refused; screenshots {}; total {:.1}s",
        ready_at.as_secs_f64(),
        browser_at.as_secs_f64(),
        shared_at.as_secs_f64(),
        released_at.as_secs_f64(),
        sizes
            .iter()
            .map(|(n, k)| format!("{n}.png {k} KiB"))
            .collect::<Vec<_>>()
            .join(", "),
        t0.elapsed().as_secs_f64()
    );
    Instance::stop_all(&mut [&mut a, &mut g], Duration::from_secs(10));
}
