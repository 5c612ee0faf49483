//! The About and Partners pages in real headless Chromium (WebDriver, as
//! `tests/e2e/web_browser.rs`): Partners at desktop and phone width with a
//! child and a field map set, About with a freshly created one-time code,
//! and the navigation's inbox count rising live through `/events` (server-
//! sent events and `/static/live.js`) when the partner shares a record,
//! without reloading the page. Screenshots go to `docs/screenshots/`.

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

/// The text of the element with `id` in a DOM serialisation.
fn text_of(source: &str, id: &str) -> Option<String> {
    let at = source.find(&format!("id=\"{id}\""))?;
    let rest = &source[at..];
    let rest = &rest[rest.find('>')? + 1..];
    Some(rest[..rest.find('<')?].trim().to_string())
}

#[test]
fn chromium_shows_about_and_partners_and_the_inbox_count_updates_live() {
    let mut a = Instance::governed("Acme");
    let mut g = Instance::governed("Globex");
    Instance::pair(&a, &g);
    let addr = enable_console(&a);
    add_account(&a, "ada", "admin", PW);
    a.start();
    g.start();
    wait_console(addr);
    a.cli_ok(&[
        "partner",
        "set",
        "Globex",
        "--child",
        "true",
        "--map",
        "level=grade",
    ]);
    g.cli_ok(&["share", "add", "Acme", "--all", "--access", "operator"]);
    wait_for(
        "Acme and Globex to connect",
        Duration::from_secs(60),
        || {
            a.cli_json(&["partners"])["partners"][0]["connected"]
                .as_bool()
                .filter(|c| *c)
        },
    );

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
        std::fs::write(shots.join(format!("{name}.png")), &png).expect("write screenshot");
        saved.push(format!("{name}.png ({} KiB)", png.len() / 1024));
    };
    b.goto(&format!("{base}/login"));
    b.type_into("#name", "ada");
    b.type_into("#password", PW);
    b.click("main button[type=submit]");
    wait_for("Home after sign-in", Duration::from_secs(20), || {
        b.source().contains("Audit log").then_some(())
    });

    // Partners: live status applied by the script (it marks the page).
    b.goto(&format!("{base}/partners"));
    wait_for("live updates on Partners", Duration::from_secs(20), || {
        b.source().contains("data-live=\"on\"").then_some(())
    });
    let src = b.source();
    assert_eq!(text_of(&src, "children").as_deref(), Some("Globex"));
    assert!(src.contains("custom.level") && src.contains("Revoke"));
    shot("partners");
    b.window_size(390, 844);
    shot("partners-phone");
    b.window_size(1280, 900);

    // About: create a one-time code; the page shows it once.
    b.goto(&format!("{base}/about"));
    // Any free port: the default (the sync port + 1) may be taken here.
    b.clear("#listen");
    b.type_into("#listen", "127.0.0.1:0");
    b.click("form[action='/about/invite'] button[type=submit]");
    wait_for("the one-time code", Duration::from_secs(20), || {
        text_of(&b.source(), "invite-code").filter(|c| c.split('-').count() == 3)
    });
    shot("about");

    // The inbox count in the navigation rises without a reload.
    b.goto(&format!("{base}/incoming"));
    wait_for("live updates on Incoming", Duration::from_secs(20), || {
        b.source().contains("data-live=\"on\"").then_some(())
    });
    assert_eq!(text_of(&b.source(), "nav-inbox").as_deref(), Some(""));
    let url = b.url();
    let t_put = Instant::now();
    g.put("contact", &["--set", "first_name=Grace"]);
    wait_for(
        "the nav inbox count to show 1",
        Duration::from_secs(60),
        || (text_of(&b.source(), "nav-inbox").as_deref() == Some("1")).then_some(()),
    );
    let live_ms = t_put.elapsed().as_millis();
    assert_eq!(b.url(), url, "the page was not reloaded");
    // The table itself is only refreshed by a reload (pages work without JS).
    assert!(b.source().contains("Nothing waiting."));
    drop(b);
    drop(driver);
    eprintln!(
        "web browser partners: About with a code, Partners at 1280px and 390px; nav inbox count updated live {live_ms} ms after the partner's write; screenshots {}; {:.1}s",
        saved.join(", "),
        t0.elapsed().as_secs_f64()
    );
    a.stop();
    g.stop();
}
