//! End-to-end tests of the web admin console against real `orgsyncd`
//! daemons on loopback, over plain HTTP/1.1: sign-in with password and
//! TOTP, CSRF and cross-site refusals, viewers, the login lock, and a
//! pending peer paired through the Partners page, audited under the admin's
//! name.

use crate::support;
use crate::support::web as web_client;

use std::time::{Duration, Instant};

use support::{wait_for, Instance};
use web_client::{
    add_account, enable_console, inbox_ids, set_password, wait_console, Browser, From,
};

const PW: &str = "correct horse battery staple";
const SYNC: Duration = Duration::from_secs(60);

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn audit(inst: &Instance) -> Vec<serde_json::Value> {
    inst.cli_json(&["audit"])["entries"]
        .as_array()
        .expect("entries")
        .clone()
}

fn pending_fps(inst: &Instance) -> Vec<String> {
    inst.cli_json(&["partner", "pending"])["pending"]
        .as_array()
        .expect("pending")
        .iter()
        .filter_map(|p| p["fingerprint"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn sign_in_with_password_then_totp_and_a_code_is_used_once() {
    let mut a = Instance::governed("Acme");
    let addr = enable_console(&a);
    add_account(&a, "ada", "admin", PW);
    let out = a.cli_json(&["admin", "totp", "ada"]);
    let secret = out["secret"].as_str().expect("secret").to_string();
    assert!(out["uri"]
        .as_str()
        .expect("uri")
        .starts_with("otpauth://totp/orgsync:ada?secret="));
    a.start();
    wait_console(addr);
    let t0 = Instant::now();

    let mut b = Browser::new(addr);
    // Not signed in: every page leads to the login.
    assert_eq!(b.get("/").status, 303);
    let login = b.get("/login");
    assert_eq!(login.status, 200);
    let cookie = login
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let anon_id = b.cookies["orgsync_session"].clone();
    let r = b.post(
        "/login",
        &[("csrf", &login.csrf()), ("name", "ada"), ("password", PW)],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/login"));
    // A new session id at each stage (no fixation).
    assert_ne!(b.cookies["orgsync_session"], anon_id);
    // Password alone does not open the console.
    assert_eq!(b.get("/").status, 303);
    let stage2 = b.get("/login");
    assert!(stage2.body.contains("authenticator"), "{}", stage2.body);
    let csrf = stage2.csrf();
    let now = unix_secs();
    let good = orgsync_daemon::web::totp::code_at(&secret, now).expect("code");
    let wrong = format!("{:06}", (good + 1) % 1_000_000);
    let r = b.post(
        "/login/totp",
        &[("csrf", &csrf), ("code", &wrong)],
        From::SameOrigin,
    );
    assert_eq!(r.status, 401, "a wrong code must be refused: {}", r.body);
    let code = format!("{good:06}");
    let r = b.post(
        "/login/totp",
        &[("csrf", &csrf), ("code", &code)],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/"));
    let home = b.get("/");
    assert_eq!(home.status, 200);
    assert!(
        home.body.contains("Audit log") && home.body.contains("web.login"),
        "{}",
        home.body
    );
    let about = b.get("/about");
    assert!(
        about.body.contains(&a.account()),
        "About shows the account number"
    );
    assert!(
        about.body.contains(&a.fingerprint()),
        "About shows the fingerprint"
    );

    // The same code again, in a fresh browser: refused (replay).
    let mut c = Browser::new(addr);
    let login = c.get("/login");
    let r = c.post(
        "/login",
        &[("csrf", &login.csrf()), ("name", "ada"), ("password", PW)],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303);
    let csrf = c.get("/login").csrf();
    let r = c.post(
        "/login/totp",
        &[("csrf", &csrf), ("code", &code)],
        From::SameOrigin,
    );
    let replay_refused = r.status == 401;
    // The step may have moved on meanwhile; the code is then stale anyway.
    assert!(
        replay_refused,
        "a used code must not sign in again: {}",
        r.status
    );
    assert_eq!(c.get("/").status, 303);

    let log = audit(&a);
    let logins = log
        .iter()
        .filter(|e| e["action"] == "web.login" && e["who"] == "ada")
        .count();
    assert_eq!(logins, 1, "{log:?}");
    eprintln!(
        "web sign-in: password+TOTP ok, wrong code 401, replayed code 401, password alone no access; {logins} login audited; {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    a.stop();
}

#[test]
fn forged_and_viewer_posts_are_refused_and_an_accept_is_audited_under_the_admin() {
    let mut a = Instance::governed("Acme");
    let mut d = Instance::governed("Dyno");
    let addr = enable_console(&a);
    add_account(&a, "ada", "admin", PW);
    add_account(&a, "vic", "viewer", PW);
    // Dyno knows Acme; Acme does not know Dyno: Dyno waits in Acme's pending list.
    d.trust(&a);
    a.start();
    d.start();
    wait_console(addr);
    let fp_d = d.fingerprint();
    wait_for("Dyno to be pending at Acme", SYNC, || {
        pending_fps(&a).contains(&fp_d).then_some(())
    });
    let bundle_path = d.dir.join("dyno.bundle");
    d.keytool(&["export", "-o", bundle_path.to_str().expect("utf-8")]);
    let bundle = std::fs::read_to_string(&bundle_path).expect("bundle");
    let partners_file = a.dir.join("partners.toml");
    let before = std::fs::read(&partners_file).unwrap_or_default();

    let mut ada = Browser::new(addr);
    ada.sign_in("ada", PW);
    let page = ada.get("/partners");
    assert!(
        page.body.contains(&fp_d) && page.body.contains("Accept and pair"),
        "{}",
        page.body
    );
    let csrf = page.csrf();
    let accept = |csrf: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("fingerprint", fp_d.clone()),
            ("bundle", bundle.clone()),
            ("checked", "yes".to_string()),
        ]
    };
    let post = |b: &mut Browser, fields: Vec<(&str, String)>, from: From<'_>| {
        let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        b.post("/partners/pending/accept", &refs, from)
    };
    let mut refusals = Vec::new();
    // 1. No CSRF token.
    let mut no_token = accept(&csrf);
    no_token.remove(0);
    let r = post(&mut ada, no_token, From::SameOrigin);
    refusals.push(("no CSRF token", r.status));
    assert!(r.body.contains("CSRF"), "{}", r.body);
    // 2. A wrong token.
    let r = post(&mut ada, accept(&"0".repeat(64)), From::SameOrigin);
    refusals.push(("wrong CSRF token", r.status));
    // 3. A forged cross-site POST (even with the right token, as if stolen).
    let r = post(&mut ada, accept(&csrf), From::Origin("http://evil.example"));
    refusals.push(("cross-site Origin", r.status));
    assert!(r.body.contains("another site"), "{}", r.body);
    // 4. Neither Origin nor Referer.
    let r = post(&mut ada, accept(&csrf), From::Nothing);
    refusals.push(("no Origin/Referer", r.status));
    // 5. A viewer: sees the pending peer but no button, and the POST is refused.
    let mut vic = Browser::new(addr);
    vic.sign_in("vic", PW);
    let vpage = vic.get("/partners");
    assert!(vpage.body.contains(&fp_d), "a viewer sees the pending peer");
    assert!(
        !vpage.body.contains("Accept and pair") && !vpage.body.contains(">Dismiss<"),
        "{}",
        vpage.body
    );
    let vcsrf = vpage.csrf();
    let r = post(&mut vic, accept(&vcsrf), From::SameOrigin);
    refusals.push(("viewer", r.status));
    assert!(r.body.contains("Viewer accounts"), "{}", r.body);
    for (what, status) in &refusals {
        assert_eq!(*status, 403, "{what} must be refused 403");
    }
    assert_eq!(
        std::fs::read(&partners_file).unwrap_or_default(),
        before,
        "partners.toml unchanged"
    );
    assert!(
        pending_fps(&a).contains(&fp_d),
        "still pending after the refusals"
    );
    let refused_audited = audit(&a)
        .iter()
        .filter(|e| e["action"] == "web.refused")
        .count();
    // Every refusal of a signed-in session is audited under its name.
    assert!(refused_audited >= 3, "refusals audited: {refused_audited}");

    // The admin's real accept through the page pairs Dyno, audited as ada.
    let r = post(&mut ada, accept(&csrf), From::SameOrigin);
    assert_eq!(r.status, 303, "{}", r.body);
    let done = ada.get(r.header("location").expect("location"));
    assert!(done.body.contains("Paired with Dyno"), "{}", done.body);
    assert_ne!(std::fs::read(&partners_file).unwrap_or_default(), before);
    let log = audit(&a);
    let accepted = log
        .iter()
        .find(|e| e["action"] == "partner.accept")
        .unwrap_or_else(|| panic!("no partner.accept in {log:?}"));
    assert_eq!(accepted["who"], "ada", "{accepted}");
    wait_for("Dyno to leave the pending list", SYNC, || {
        (!pending_fps(&a).contains(&fp_d)).then_some(())
    });
    let home = ada.get("/?action=partner.accept&who=ada");
    assert!(
        home.body.contains("partner.accept"),
        "the audit filter shows the accept"
    );
    eprintln!(
        "web forgery: {} forged/viewer POSTs refused 403 ({}), {refused_audited} audited, partners.toml unchanged; admin accept paired Dyno, audited who=ada",
        refusals.len(),
        refusals.iter().map(|(w, _)| *w).collect::<Vec<_>>().join(", ")
    );
    Instance::stop_all(&mut [&mut a, &mut d], Duration::from_secs(10));
}

#[test]
fn ten_wrong_passwords_lock_the_account_and_a_foreign_host_is_refused() {
    let mut a = Instance::governed("Acme");
    let addr = enable_console(&a);
    add_account(&a, "ada", "admin", PW);
    add_account(&a, "bob", "admin", PW);
    a.start();
    wait_console(addr);
    let mut b = Browser::new(addr);
    let t0 = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..10 {
        let csrf = b.get("/login").csrf();
        let r = b.post(
            "/login",
            &[
                ("csrf", &csrf),
                ("name", "ada"),
                ("password", &format!("wrong password {i}")),
            ],
            From::SameOrigin,
        );
        statuses.push(r.status);
        if i == 9 {
            assert!(r.body.contains("locked for 15"), "{}", r.body);
        }
    }
    assert_eq!(&statuses[..9], &[401; 9], "{statuses:?}");
    assert_eq!(statuses[9], 429, "{statuses:?}");
    // The right password no longer opens the locked account.
    let csrf = b.get("/login").csrf();
    let r = b.post(
        "/login",
        &[("csrf", &csrf), ("name", "ada"), ("password", PW)],
        From::SameOrigin,
    );
    assert_eq!(r.status, 429, "locked: {}", r.body);
    assert_eq!(b.get("/").status, 303, "not signed in");
    // Another account is not locked.
    let mut other = Browser::new(addr);
    other.sign_in("bob", PW);
    assert_eq!(other.get("/").status, 200);
    // A password change ends the sessions opened with the old one.
    set_password(&a, "bob", "a brand new password");
    let after = other.get("/");
    assert_eq!(
        after.status, 303,
        "bob's old session must end: {}",
        after.body
    );
    assert_eq!(after.header("location"), Some("/login"));
    let locked = audit(&a)
        .iter()
        .filter(|e| e["action"] == "web.login.locked")
        .count();
    assert_eq!(locked, 1);
    // A request naming another host (DNS rebinding) is refused.
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    use std::io::{Read, Write};
    s.write_all(b"GET /login HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 421"), "{resp}");
    eprintln!(
        "web login lock: 9 wrong passwords 401, 10th 429 (locked 15 min), right password then 429, other account unaffected, its session ended by a password change, foreign Host 421; {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    a.stop();
}

#[test]
fn a_non_loopback_console_without_tls_refuses_to_start() {
    let a = Instance::governed("Acme");
    let mut cfg = std::fs::OpenOptions::new()
        .append(true)
        .open(a.dir.join("orgsync.toml"))
        .expect("orgsync.toml");
    use std::io::Write;
    writeln!(cfg, "\n[web]\nlisten = \"0.0.0.0:7781\"").expect("write");
    let out = support::run(
        std::process::Command::new(support::bin("orgsyncd"))
            .arg("--dir")
            .arg(&a.dir),
    );
    let err = support::stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("web.listen") && err.contains("web.tls_cert") && err.contains("web.tls_key"),
        "{err}"
    );
    eprintln!(
        "web config: non-loopback listen without TLS refused at start: {}",
        err.trim()
    );
}

#[test]
fn incoming_page_saves_approvals_and_rejections_as_the_admin() {
    let mut a = Instance::governed("Acme");
    let mut b = Instance::governed("Globex");
    Instance::pair(&a, &b);
    let addr = enable_console(&b);
    add_account(&b, "gil", "admin", PW);
    add_account(&b, "val", "viewer", PW);
    a.start();
    b.start();
    wait_console(addr);
    let vip = a.put("flag", &["--set", "name=VIP"]);
    let ada = a.put("contact", &["--set", "first_name=Ada", "--flag", &vip]);
    let bob = a.put("contact", &["--set", "first_name=Bob", "--flag", &vip]);
    let cyd = a.put("contact", &["--set", "first_name=Cyd", "--flag", &vip]);
    a.cli_ok(&["share", "add", "Globex", "--flag", &vip]);
    let mut all = vec![ada.clone(), bob.clone(), cyd.clone(), vip.clone()];
    all.sort();
    wait_for("the shared records in Globex's inbox", SYNC, || {
        (inbox_ids(&b) == all).then_some(())
    });
    let before = b.digest();

    // A viewer sees the items but no Save button, and its POST is refused.
    let mut val = Browser::new(addr);
    val.sign_in("val", PW);
    let vpage = val.get("/incoming");
    assert!(
        vpage.body.contains("Ada") && !vpage.body.contains(">Save<"),
        "{}",
        vpage.body
    );
    let vcsrf = vpage.csrf();
    let key = format!("status-{ada}");
    let r = val.post(
        "/incoming",
        &[("csrf", &vcsrf), (&key, "approved")],
        From::SameOrigin,
    );
    assert_eq!(r.status, 403);
    // A bad status value: nothing is saved.
    let mut gil = Browser::new(addr);
    gil.sign_in("gil", PW);
    let page = gil.get("/incoming");
    assert!(page.body.contains(">Save<"), "{}", page.body);
    let csrf = page.csrf();
    let r = gil.post(
        "/incoming",
        &[
            ("csrf", &csrf),
            (&key, "approved"),
            (&format!("status-{bob}"), "maybe"),
        ],
        From::SameOrigin,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(inbox_ids(&b), all, "nothing decided on a bad form");
    assert_eq!(b.digest(), before, "store unchanged after the refusals");

    // Ada approved, Bob rejected, Cyd and the flag left pending: one Save.
    let r = gil.post(
        "/incoming",
        &[
            ("csrf", &csrf),
            (&key, "approved"),
            (&format!("status-{bob}"), "rejected"),
            (&format!("status-{cyd}"), "pending"),
        ],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let done = gil.get(r.header("location").expect("location"));
    assert!(
        done.body.contains("Saved: 1 approved, 1 rejected."),
        "{}",
        done.body
    );
    let mut left = vec![cyd.clone(), vip.clone()];
    left.sort();
    assert_eq!(inbox_ids(&b), left);
    let ids: Vec<String> = b
        .objects()
        .iter()
        .filter_map(|o| o["id"].as_str().map(str::to_string))
        .collect();
    assert!(ids.contains(&ada), "Ada landed as a new record");
    assert!(!ids.contains(&bob), "Bob was rejected");
    let log = audit(&b);
    let by = |action: &str| {
        log.iter()
            .filter(|e| e["action"] == action)
            .map(|e| e["who"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(by("inbox.approve"), vec!["gil"], "{log:?}");
    assert_eq!(by("inbox.reject"), vec!["gil"], "{log:?}");
    eprintln!(
        "web incoming: 4 items; viewer POST 403, bad status 400 (store unchanged); one Save approved 1 and rejected 1 (audited who=gil), 2 left pending"
    );
    Instance::stop_all(&mut [&mut a, &mut b], Duration::from_secs(10));
}
