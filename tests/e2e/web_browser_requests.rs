//! The Requests, Records and Export pages driven by real headless Chromium
//! through WebDriver on the consoles of two paired daemons: Globex's admin
//! files a share request, Acme's admin evaluates it (level, preview,
//! access) and approves it, both consoles show it processed; Globex's
//! Records show the received records with their owner and its Export page
//! downloads the CSV (audited). Screenshots go to
//! `docs/screenshots/{requests,records,export}.png`.

use crate::support;
use crate::support::web as web_client;
use crate::support::webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{wait_for, Instance};
use web_client::{add_account, enable_console, wait_console};
use webdriver::{Driver, Session};

const PW: &str = "correct horse battery staple";
const WAIT: Duration = Duration::from_secs(60);

fn shots_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&d).expect("docs/screenshots");
    d
}

fn sign_in(b: &Session, base: &str, name: &str) {
    b.goto(&format!("{base}/login"));
    b.type_into("#name", name);
    b.type_into("#password", PW);
    b.click("main button[type=submit]");
    wait_for("Home after sign-in", Duration::from_secs(20), || {
        b.source().contains("Audit log").then_some(())
    });
}

/// Reloads `url` until its source contains `text`.
fn wait_page(b: &Session, url: &str, text: &str) {
    wait_for(&format!("{text:?} on {url}"), WAIT, || {
        b.goto(url);
        b.source().contains(text).then_some(())
    });
}

#[test]
fn chromium_files_evaluates_and_approves_a_share_request_on_two_consoles() {
    let mut a = Instance::governed("Acme");
    let mut g = Instance::governed("Globex");
    Instance::pair(&a, &g);
    let a_addr = enable_console(&a);
    let g_addr = enable_console(&g);
    add_account(&a, "ada", "admin", PW);
    add_account(&g, "gus", "admin", PW);
    a.start();
    g.start();
    wait_console(a_addr);
    wait_console(g_addr);
    let school = a.put(
        "organization",
        &[
            "--set",
            "name=Lycee Ampere",
            "--set",
            "category=school",
            "--set",
            "city=Lyon",
        ],
    );
    for (first, last, level) in [("Marie", "Curie", "senior"), ("Paul", "Langevin", "junior")] {
        a.put(
            "contact",
            &[
                "--set",
                &format!("first_name={first}"),
                "--set",
                &format!("last_name={last}"),
                "--set",
                &format!("email={}@ampere.example", first.to_lowercase()),
                "--set",
                &format!("organization={school}"),
                "--custom",
                &format!("level={level}"),
            ],
        );
    }
    let t0 = Instant::now();
    let driver = Driver::start();
    let (pa, pg) = (
        tempfile::tempdir().expect("profile"),
        tempfile::tempdir().expect("profile"),
    );
    let (ba, bg) = (driver.session(pa.path()), driver.session(pg.path()));
    ba.window_size(1280, 900);
    bg.window_size(1280, 900);
    let (base_a, base_g) = (format!("http://{a_addr}"), format!("http://{g_addr}"));
    sign_in(&ba, &base_a, "ada");
    sign_in(&bg, &base_g, "gus");
    let shots = shots_dir();
    let mut saved = Vec::new();
    let mut shot = |b: &Session, name: &str| {
        let png = b.screenshot();
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        std::fs::write(shots.join(format!("{name}.png")), &png).expect("write screenshot");
        saved.push(format!("{name}.png ({} KiB)", png.len() / 1024));
    };

    // Globex files the request from its Requests page.
    bg.goto(&format!("{base_g}/requests"));
    bg.click("#want_type option[value=organization]");
    bg.type_into("#want_value", &school);
    bg.click("#suggest_type option[value=organization]");
    bg.type_into("#suggest_value", &school);
    bg.type_into("#note", "Job fair in Lyon: the school and its teachers");
    bg.click("form[action='/requests/new'] button[type=submit]");
    wait_for("the request sent", Duration::from_secs(20), || {
        bg.source().contains("sent to Acme").then_some(())
    });
    let id = g.cli_json(&["request", "list"])["requests"][0]["id"]
        .as_str()
        .expect("request id")
        .to_string();

    // Acme evaluates: the Evaluate button, the suggested level prefilled,
    // manager access, Preview, then Approve.
    wait_page(&ba, &format!("{base_a}/requests"), ">Evaluate<");
    ba.click(&format!("a[href='/requests/{id}']"));
    wait_for("the evaluation form", Duration::from_secs(20), || {
        ba.source().contains("id=\"level_value\"").then_some(())
    });
    ba.click("#access option[value=manager]");
    ba.click("form[aria-labelledby=eval] button[type=submit]");
    wait_for("the preview", Duration::from_secs(20), || {
        ba.source()
            .contains("3 record(s) would be sent at level organization:")
            .then_some(())
    });
    let src = ba.source();
    assert!(
        src.contains("Marie Curie") && src.contains("custom.level") && src.contains("Lycee Ampere"),
        "the preview shows the records and their fields"
    );
    // The whole evaluation page in view: status, history, preview.
    let preview_url = format!(
        "{base_a}/requests/{id}?level_type=organization&level_value={school}&access=manager"
    );
    ba.goto(&preview_url);
    ba.window_size(1280, 1900);
    shot(&ba, "requests");
    ba.window_size(1280, 900);
    ba.click(&format!(
        "form[action='/requests/{id}/approve'] button[type=submit]"
    ));
    wait_for("approved", Duration::from_secs(20), || {
        ba.source().contains("Approved: the share is").then_some(())
    });
    let approved = Instant::now();

    // Both consoles show it processed, with the whole history.
    wait_page(
        &bg,
        &format!("{base_g}/requests/{id}"),
        "data-status=\"processed\"",
    );
    wait_page(
        &ba,
        &format!("{base_a}/requests/{id}"),
        "data-status=\"processed\"",
    );
    let processed = approved.elapsed();
    for s in [
        "Requested",
        "To evaluate",
        "Approved",
        "Available",
        "Processed",
    ] {
        assert!(
            bg.source().contains(&format!("<li>{s} "))
                || ba.source().contains(&format!("<li>{s} ")),
            "{s} in the history"
        );
    }

    // Globex keeps what arrived; Records show it with its owner.
    g.cli_ok(&["inbox", "approve", "--all-from", "Acme"]);
    bg.goto(&format!("{base_g}/records?kind=contact"));
    let src = bg.source();
    assert!(
        src.contains("Marie Curie") && src.contains("Acme (share ") && src.contains("junior"),
        "received contacts with their owner on Records"
    );
    bg.type_into("#q", "langevin");
    bg.click("form[role=search] button[type=submit]");
    wait_for("the search result", Duration::from_secs(20), || {
        let s = bg.source();
        (s.contains("Paul Langevin") && !s.contains("Marie Curie")).then_some(())
    });
    bg.goto(&format!("{base_g}/records?kind=contact"));
    shot(&bg, "records");

    // Export: the CSV button downloads, and the download is audited.
    bg.goto(&format!("{base_g}/export"));
    assert!(
        bg.source().contains("contact.csv"),
        "the export lists the contacts"
    );
    shot(&bg, "export");
    bg.click("button[aria-label='Download contact.csv']");
    wait_for("the download in Globex's audit log", WAIT, || {
        g.cli_json(&["audit"])["entries"]
            .as_array()?
            .iter()
            .any(|e| e["action"] == "export.download" && e["who"] == "gus")
            .then_some(())
    });

    drop(ba);
    drop(bg);
    drop(driver);
    let stops = Instance::stop_all(&mut [&mut a, &mut g], Duration::from_secs(20));
    eprintln!(
        "browser requests: filed, evaluated, approved and processed on both consoles in {:.1} s (processed {:.0} ms after approval); screenshots {}; stops {stops:?}",
        t0.elapsed().as_secs_f64(),
        processed.as_secs_f64() * 1000.0,
        saved.join(", ")
    );
}
