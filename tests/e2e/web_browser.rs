//! The web console driven by real headless Chromium through WebDriver
//! (`/usr/bin/chromedriver`, installed by `testkit/install-browser.sh`):
//! an admin signs in with password and TOTP code, sees Home, Incoming, Partners and
//! About at desktop and phone width; screenshots of Outgoing and of Home
//! at phone width go to `docs/screenshots/`.

use crate::support;
use crate::support::web as web_client;
use crate::support::webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{wait_for, Instance};
use web_client::{add_account, enable_console, wait_console};
use webdriver::Driver;

const PW: &str = "correct horse battery staple";

fn shots_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&d).expect("docs/screenshots");
    d
}

#[test]
fn chromium_signs_in_with_password_and_totp_and_screenshots_each_page() {
    let mut a = Instance::governed("Acme");
    // A paired partner (never started) so the Outgoing page has someone to share with.
    let g = Instance::governed("Globex");
    Instance::pair(&a, &g);
    let addr = enable_console(&a);
    add_account(&a, "ada", "admin", PW);
    let secret = a.cli_json(&["admin", "totp", "ada"])["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    a.start();
    wait_console(addr);
    let t0 = Instant::now();
    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile dir");
    let b = driver.session(profile.path());
    b.window_size(1280, 900);
    let base = format!("http://{addr}");
    let shots = shots_dir();
    let mut saved = Vec::new();
    let mut shot = |name: &str| {
        let png = b.screenshot();
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        let path = shots.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("write screenshot");
        saved.push(format!("{name}.png ({} KiB)", png.len() / 1024));
    };

    b.goto(&format!("{base}/"));
    assert!(b.url().ends_with("/login"), "not signed in: {}", b.url());
    b.type_into("#name", "ada");
    b.type_into("#password", PW);
    b.click("button[type=submit]");
    wait_for("the code form", Duration::from_secs(20), || {
        b.source().contains("id=\"code\"").then_some(())
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let code = orgsync_daemon::web::totp::code_at(&secret, now).expect("code");
    b.type_into("#code", &format!("{code:06}"));
    b.click("main button[type=submit]");
    wait_for("Home after sign-in", Duration::from_secs(20), || {
        b.source().contains("Audit log").then_some(())
    });
    assert!(b.url().ends_with('/'), "{}", b.url());
    assert!(
        b.source().contains("web.login"),
        "the sign-in is in the audit log"
    );
    // login, home and incoming come from web_browser_flow.rs, partners and
    // about from web_browser_partners.rs (each with data): one writer each.
    b.goto(&format!("{base}/incoming"));
    assert!(b.source().contains("Nothing waiting."));
    b.goto(&format!("{base}/partners"));
    assert!(b.source().contains("Pending (refused at the handshake)"));
    b.goto(&format!("{base}/about"));
    assert!(
        b.source().contains(&a.account()),
        "About shows the account number"
    );
    let vip = a.put("flag", &["--set", "name=VIP"]);
    a.put("flag", &["--set", "name=Volunteers"]);
    a.put("contact", &["--set", "first_name=Ada", "--flag", &vip]);
    a.cli_ok(&["share", "add", "Globex", "--flag", &vip]);
    b.goto(&format!("{base}/outgoing"));
    assert!(
        b.source().contains("New share") && b.source().contains("Volunteers"),
        "the Outgoing page lists the flags and the form"
    );
    shot("outgoing");
    b.window_size(390, 844);
    b.goto(&format!("{base}/"));
    assert!(b.source().contains("Audit log"));
    shot("home-phone");
    // The session cookie is HttpOnly: page scripts cannot read it.
    drop(b);
    drop(driver);
    eprintln!(
        "web browser: headless Chromium signed in with password+TOTP, Home and Incoming checked, login and 3 pages shot at 1280px, Home at 390px; screenshots {}; {:.1}s",
        saved.join(", "),
        t0.elapsed().as_secs_f64()
    );
    a.stop();
}
