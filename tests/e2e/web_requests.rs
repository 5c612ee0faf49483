//! End-to-end tests of the web console's Requests, Records and Export
//! pages against two real paired `orgsyncd` daemons on loopback: a share
//! request goes from Requested to Processed through the pages of both
//! consoles, a second one is rejected; the received records show their
//! owner on Records; the CSV downloaded from Export is the CLI export's,
//! byte for byte, and the download is audited; viewers get no form and
//! their POSTs are refused; bad form values are refused next to their
//! field with nothing stored.

use crate::support;
use crate::support::web as web_client;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::{contacts_ndjson, wait_for, Instance};
use web_client::{add_account, enable_console, inbox_ids, wait_console, Browser, From, Resp};

const PW: &str = "correct horse battery staple";
const SYNC: Duration = Duration::from_secs(60);

/// The status shown on a request's own page (its one status badge).
fn status_on(br: &mut Browser, id: &str) -> String {
    let page = br.get(&format!("/requests/{id}"));
    assert_eq!(page.status, 200, "{}", page.body);
    let at = page
        .body
        .find("data-status=\"")
        .unwrap_or_else(|| panic!("no status on the page:\n{}", page.body));
    let rest = &page.body[at + "data-status=\"".len()..];
    rest[..rest.find('"').expect("end of status")].to_string()
}

fn requests(inst: &Instance) -> Vec<serde_json::Value> {
    inst.cli_json(&["request", "list"])["requests"]
        .as_array()
        .expect("requests")
        .clone()
}

fn audit(inst: &Instance, action: &str) -> Vec<serde_json::Value> {
    inst.cli_json(&["audit"])["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

/// Asserts a form was refused with `message` next to `field`.
fn refused_at(r: &Resp, field: &str, message: &str) {
    assert_eq!(r.status, 400, "{}", r.body);
    let at = r
        .body
        .find(&format!("id=\"err-{field}\""))
        .unwrap_or_else(|| panic!("no error next to {field}:\n{}", r.body));
    let end = r.body[at..].find("</p>").map_or(r.body.len(), |e| at + e);
    assert!(
        r.body[at..end].contains(message),
        "error at {field} should say {message:?}: {}",
        &r.body[at..end]
    );
}

#[test]
fn share_request_goes_from_requested_to_processed_through_both_consoles() {
    let t0 = Instant::now();
    let mut a = Instance::governed("Acme");
    let mut b = Instance::governed("Globex");
    Instance::pair(&a, &b);
    let a_addr = enable_console(&a);
    let b_addr = enable_console(&b);
    add_account(&a, "ada", "admin", PW);
    add_account(&a, "vic", "viewer", PW);
    add_account(&b, "bob", "admin", PW);
    add_account(&b, "val", "viewer", PW);
    a.start();
    b.start();
    wait_console(a_addr);
    wait_console(b_addr);
    let acme = a.account();
    let globex = b.account();
    let school = a.put(
        "organization",
        &["--set", "name=Lycee Ampere", "--set", "category=school"],
    );
    let marie = a.put(
        "contact",
        &[
            "--set",
            "first_name=Marie",
            "--set",
            &format!("organization={school}"),
            "--custom",
            "level=senior",
        ],
    );
    // A partner's formula must reach the spreadsheet as text.
    let evil = a.put(
        "contact",
        &[
            "--set",
            "first_name==HYPERLINK(\"http://x\")",
            "--set",
            &format!("organization={school}"),
        ],
    );
    let other = a.put("contact", &["--set", "first_name=Outsider"]);

    let mut bob = Browser::new(b_addr);
    bob.sign_in("bob", PW);
    let csrf_b = bob.get("/requests").csrf();

    // Bad values: refused next to their field, nothing sent.
    let bad = |bob: &mut Browser, pairs: &[(&str, &str)]| {
        let mut form = vec![("csrf", csrf_b.as_str()), ("partner", acme.as_str())];
        form.extend_from_slice(pairs);
        bob.post("/requests/new", &form, From::SameOrigin)
    };
    let r = bad(
        &mut bob,
        &[("want_type", "organization"), ("want_value", "")],
    );
    refused_at(&r, "want_value", "Say which");
    let r = bad(
        &mut bob,
        &[("want_type", "organization"), ("want_value", "not-an-id")],
    );
    refused_at(&r, "want_value", "Not sent");
    assert!(
        r.body.contains("value=\"not-an-id\""),
        "the form keeps what was typed"
    );
    let r = bad(
        &mut bob,
        &[
            ("want_type", "organization"),
            ("want_value", &school),
            ("suggest_type", "category"),
            ("suggest_value", ""),
        ],
    );
    refused_at(&r, "suggest_value", "Say which");
    let long_note = "n".repeat(5000);
    let r = bad(
        &mut bob,
        &[
            ("want_type", "organization"),
            ("want_value", &school),
            ("note", &long_note),
        ],
    );
    refused_at(&r, "note", "at most 4096");
    let r = bob.post(
        "/requests/new",
        &[
            ("csrf", &csrf_b),
            ("partner", "Nobody"),
            ("want_type", "category"),
            ("want_value", "school"),
        ],
        From::SameOrigin,
    );
    refused_at(&r, "partner", "Not sent");
    assert!(requests(&b).is_empty(), "no request stored after refusals");
    assert!(
        requests(&a).is_empty(),
        "nothing reached the partner either"
    );

    // Globex asks for the school, suggesting the organization level.
    let sent_at = Instant::now();
    let r = bob.post(
        "/requests/new",
        &[
            ("csrf", &csrf_b),
            ("partner", &acme),
            ("want_type", "organization"),
            ("want_value", &school),
            ("suggest_type", "organization"),
            ("suggest_value", &school),
            ("note", "job fair"),
        ],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let done = bob.get(r.header("location").expect("location"));
    assert!(done.body.contains("sent to Acme"), "{}", done.body);
    let id = requests(&b)[0]["id"].as_str().expect("id").to_string();
    assert_eq!(audit(&b, "request.send")[0]["who"], "bob");

    // Acme's console shows it to evaluate; Globex's moves along with it.
    let mut ada = Browser::new(a_addr);
    ada.sign_in("ada", PW);
    wait_for("the request to evaluate at Acme", SYNC, || {
        (status_on(&mut ada, &id) == "to-evaluate").then_some(())
    });
    wait_for("Globex to see to-evaluate", SYNC, || {
        (status_on(&mut bob, &id) == "to-evaluate").then_some(())
    });
    let to_evaluate = sent_at.elapsed();
    let list = ada.get("/requests");
    assert!(
        list.body.contains("job fair") && list.body.contains(&format!("/requests/{id}\"")),
        "{}",
        list.body
    );

    // A viewer: sees the request and a preview, no form; POSTs refused.
    let mut vic = Browser::new(a_addr);
    vic.sign_in("vic", PW);
    let vlist = vic.get("/requests");
    assert!(
        vlist.body.contains("job fair")
            && !vlist.body.contains("action=\"/requests/new\"")
            && !vlist.body.contains(">Evaluate<"),
        "{}",
        vlist.body
    );
    let vprev = vic.get(&format!(
        "/requests/{id}?level_type=organization&level_value={school}&access=manager"
    ));
    assert!(
        vprev.body.contains("3 record(s) would be sent")
            && !vprev.body.contains("/approve\"")
            && !vprev.body.contains("/reject\""),
        "{}",
        vprev.body
    );
    let vcsrf = vlist.csrf();
    for (path, form) in [
        (
            format!("/requests/{id}/approve"),
            vec![
                ("csrf", vcsrf.as_str()),
                ("level_type", "organization"),
                ("level_value", school.as_str()),
                ("access", "manager"),
            ],
        ),
        (
            format!("/requests/{id}/reject"),
            vec![("csrf", vcsrf.as_str()), ("reason", "no")],
        ),
        (
            "/requests/new".to_string(),
            vec![
                ("csrf", vcsrf.as_str()),
                ("partner", globex.as_str()),
                ("want_type", "category"),
                ("want_value", "x"),
            ],
        ),
    ] {
        let r = vic.post(&path, &form, From::SameOrigin);
        assert_eq!(r.status, 403, "{path}: {}", r.body);
    }
    assert_eq!(status_on(&mut ada, &id), "to-evaluate");

    // The evaluation: the preview lists exactly the school and its two
    // contacts, with their fields; not the outsider.
    let eval = ada.get(&format!("/requests/{id}"));
    assert!(
        eval.body.contains(&format!("value=\"{school}\""))
            && eval
                .body
                .contains("<option value=\"organization\" selected"),
        "the suggested level is the starting point: {}",
        eval.body
    );
    let prev = ada.get(&format!(
        "/requests/{id}?level_type=organization&level_value={school}&access=manager"
    ));
    assert_eq!(prev.status, 200, "{}", prev.body);
    assert!(
        prev.body
            .contains("3 record(s) would be sent at level organization:")
            && prev.body.contains(&marie)
            && prev.body.contains(&evil)
            && prev.body.contains(&school)
            && !prev.body.contains(&other)
            && prev.body.contains("custom.level")
            && prev.body.contains("senior"),
        "{}",
        prev.body
    );
    // A bad level or access: said next to the field, nothing decided.
    let badprev = ada.get(&format!(
        "/requests/{id}?level_type=organization&level_value=nope&access=manager"
    ));
    refused_at(&badprev, "level_value", "nope");
    let csrf_a = prev.csrf();
    let r = ada.post(
        &format!("/requests/{id}/approve"),
        &[
            ("csrf", &csrf_a),
            ("level_type", "organization"),
            ("level_value", &school),
            ("access", "forever"),
        ],
        From::SameOrigin,
    );
    refused_at(&r, "access", "forever");
    assert_eq!(status_on(&mut ada, &id), "to-evaluate");
    assert!(
        a.cli_json(&["share", "list"])["given"]
            .as_array()
            .expect("given")
            .is_empty(),
        "no share made by the refusals"
    );

    // Approve as manager: available at once, processed once Globex has it.
    let approved_at = Instant::now();
    let r = ada.post(
        &format!("/requests/{id}/approve"),
        &[
            ("csrf", &csrf_a),
            ("level_type", "organization"),
            ("level_value", &school),
            ("access", "manager"),
            ("terms", ""),
        ],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let page = ada.get(r.header("location").expect("location"));
    assert!(
        page.body.contains("Approved: the share is"),
        "{}",
        page.body
    );
    assert_eq!(audit(&a, "request.approve")[0]["who"], "ada");
    wait_for("processed at Acme", SYNC, || {
        (status_on(&mut ada, &id) == "processed").then_some(())
    });
    wait_for("processed at Globex", SYNC, || {
        (status_on(&mut bob, &id) == "processed").then_some(())
    });
    let processed = approved_at.elapsed();
    // Both sides show the whole history.
    for (side, br) in [("Acme", &mut ada), ("Globex", &mut bob)] {
        let p = br.get(&format!("/requests/{id}"));
        let hist = &p.body[p.body.find("class=\"history\"").expect("history")..];
        let mut at = 0;
        for s in [
            "Requested",
            "To evaluate",
            "Approved",
            "Preparing",
            "Available",
            "Processed",
        ] {
            let found = hist[at..]
                .find(&format!("<li>{s} "))
                .unwrap_or_else(|| panic!("{side}: {s} missing from the history in order: {hist}"));
            at += found + 1;
        }
    }
    let mut want = vec![school.clone(), marie.clone(), evil.clone()];
    want.sort();
    wait_for("the three records in Globex's inbox", SYNC, || {
        (inbox_ids(&b) == want).then_some(())
    });

    // A second request, rejected with a reason: both sides say so.
    let r = bob.post(
        "/requests/new",
        &[
            ("csrf", &csrf_b),
            ("partner", &acme),
            ("want_type", "category"),
            ("want_value", "school"),
        ],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let id2 = requests(&b)
        .iter()
        .find(|r| r["id"] != id.as_str())
        .and_then(|r| r["id"].as_str().map(str::to_string))
        .expect("second request");
    wait_for("the second request at Acme", SYNC, || {
        (status_on(&mut ada, &id2) == "to-evaluate").then_some(())
    });
    let r = ada.post(
        &format!("/requests/{id2}/reject"),
        &[("csrf", &csrf_a), ("reason", "not the whole category")],
        From::SameOrigin,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    wait_for("rejected at Globex", SYNC, || {
        (status_on(&mut bob, &id2) == "rejected").then_some(())
    });
    let p = bob.get(&format!("/requests/{id2}"));
    assert!(p.body.contains("not the whole category"), "{}", p.body);
    // A decided request cannot be decided again.
    let r = ada.post(
        &format!("/requests/{id2}/approve"),
        &[
            ("csrf", &csrf_a),
            ("level_type", "category"),
            ("level_value", "school"),
            ("access", "on-loan"),
        ],
        From::SameOrigin,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("id=\"err-form\""), "{}", r.body);
    assert_eq!(status_on(&mut ada, &id2), "rejected");

    // Globex approves what arrived; Records shows the owner.
    b.cli_ok(&["inbox", "approve", "--all-from", "Acme"]);
    let rec = bob.get("/records?kind=contact");
    assert!(
        rec.body.contains("Marie")
            && rec.body.contains("Acme (share ")
            && rec.body.contains(", manager)")
            && rec.body.contains("senior"),
        "{}",
        rec.body
    );
    let found = bob.get("/records?kind=contact&q=MARIE");
    assert!(
        found.body.contains("Marie") && !found.body.contains("HYPERLINK"),
        "search is case-insensitive and filters: {}",
        found.body
    );
    let org = bob.get("/records?kind=organization");
    assert!(org.body.contains("Lycee Ampere"), "{}", org.body);

    // Export: the page's CSV is the CLI export's, byte for byte, and holds
    // exactly the received contacts.
    let ex = bob.get("/export");
    assert!(
        ex.body.contains("contact.csv") && ex.body.contains("Acme (2)"),
        "{}",
        ex.body
    );
    let csrf_e = ex.csrf();
    let csv = bob.post(
        "/export/download",
        &[("csrf", &csrf_e), ("partner", "all"), ("kind", "contact")],
        From::SameOrigin,
    );
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert_eq!(
        csv.header("content-disposition"),
        Some("attachment; filename=\"contact.csv\"")
    );
    let out = b.dir.join("cli-export");
    b.cli_ok(&[
        "export",
        "--partner",
        "Acme",
        "--format",
        "csv",
        "-o",
        out.to_str().expect("utf-8 path"),
    ]);
    let cli_csv = std::fs::read_to_string(out.join("contact.csv")).expect("CLI contact.csv");
    assert_eq!(
        csv.body, cli_csv,
        "the page and the CLI export the same CSV"
    );
    let ids: BTreeSet<String> = csv
        .body
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .next()
                .unwrap_or("")
                .trim_matches('"')
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([marie.clone(), evil.clone()]),
        "exactly the received contacts"
    );
    assert!(
        csv.body.contains("\"'=HYPERLINK(\"\"http://x\"\")\""),
        "formula neutralised: {}",
        csv.body
    );
    let zip = bob.post(
        "/export/download",
        &[("csrf", &csrf_e), ("partner", &acme), ("kind", "all")],
        From::SameOrigin,
    );
    assert_eq!(zip.status, 200);
    assert_eq!(zip.header("content-type"), Some("application/zip"));
    assert!(
        zip.body.starts_with("PK")
            && zip.body.contains("contact.csv")
            && zip.body.contains("organization.csv"),
        "a zip of one CSV per kind"
    );
    let bad = bob.post(
        "/export/download",
        &[("csrf", &csrf_e), ("partner", "all"), ("kind", "planet")],
        From::SameOrigin,
    );
    refused_at(&bad, "kind", "not a kind");
    // A viewer sees the records and may download (reading changes
    // nothing); the download is audited under its name.
    let mut val = Browser::new(b_addr);
    val.sign_in("val", PW);
    assert!(val.get("/records?kind=contact").body.contains("Marie"));
    let vex = val.get("/export");
    assert!(vex.body.contains("Download CSV"), "{}", vex.body);
    let vcsv = val.post(
        "/export/download",
        &[
            ("csrf", &vex.csrf()),
            ("partner", "all"),
            ("kind", "contact"),
        ],
        From::SameOrigin,
    );
    assert_eq!(vcsv.body, cli_csv);
    // Without the CSRF token a download is refused (and not audited).
    let forged = val.post(
        "/export/download",
        &[("partner", "all"), ("kind", "contact")],
        From::SameOrigin,
    );
    assert_eq!(forged.status, 403);
    let downloads = audit(&b, "export.download");
    assert_eq!(downloads.len(), 3, "{downloads:?}");
    assert_eq!(downloads.iter().filter(|e| e["who"] == "val").count(), 1);
    assert!(
        downloads
            .iter()
            .all(|e| (e["who"] == "bob" || e["who"] == "val")
                && e["partner_name"] == "Acme"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("record(s)"))),
        "{downloads:?}"
    );

    let stops = Instance::stop_all(&mut [&mut a, &mut b], Duration::from_secs(20));
    eprintln!(
        "requests: to-evaluate on both consoles {:.0} ms after sending, processed on both {:.0} ms after approval; CSV = CLI export ({} bytes); {:.1} s total; stops {stops:?}",
        to_evaluate.as_secs_f64() * 1000.0,
        processed.as_secs_f64() * 1000.0,
        cli_csv.len(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn records_page_paginates_searches_and_serves_resumes() {
    let t0 = Instant::now();
    let mut a = Instance::governed("Acme");
    let addr = enable_console(&a);
    add_account(&a, "ada", "admin", PW);
    a.start();
    wait_console(addr);
    a.drop_file("people.ndjson", &contacts_ndjson("web", 0, 120));
    assert_eq!(a.import_outcome("people.ndjson", SYNC), "done");
    let ada_id = a.put("contact", &["--set", "first_name=Ada"]);
    let cv = a.dir.join("ada cv.pdf");
    std::fs::write(&cv, b"%PDF-1.4 resume of Ada").expect("write cv");
    let resume = a
        .cli_ok(&["attach-resume", &ada_id, cv.to_str().expect("utf-8")])
        .trim()
        .to_string();

    let mut br = Browser::new(addr);
    br.sign_in("ada", PW);
    let rows = |r: &Resp| r.body.matches("data-label=\"Record\"").count();
    let next = |r: &Resp| {
        let at = r.body.find("rel=\"next\"")?;
        let start = r.body[..at].rfind("href=\"")? + "href=\"".len();
        Some(r.body[start..r.body[start..].find('"')? + start].replace("&amp;", "&"))
    };
    let mut page = br.get("/records?kind=contact");
    let mut seen = vec![rows(&page)];
    let started = Instant::now();
    while let Some(n) = next(&page) {
        page = br.get(&n);
        assert_eq!(page.status, 200, "{}", page.body);
        seen.push(rows(&page));
    }
    let paged = started.elapsed();
    assert_eq!(seen, vec![50, 50, 21], "121 contacts in pages of 50");

    let hit = br.get("/records?kind=contact&q=p77%40example");
    assert_eq!(rows(&hit), 1, "{}", hit.body);
    assert!(hit.body.contains("Person 77"), "{}", hit.body);
    let custom = br.get("/records?kind=contact&q=Person+11");
    assert_eq!(rows(&custom), 11, "Person 11 and 110..119");
    let none = br.get("/records?kind=contact&q=nobody-here");
    assert_eq!(rows(&none), 0);
    assert!(none.body.contains("No contacts match"), "{}", none.body);
    let badkind = br.get("/records?kind=planet");
    assert_eq!(badkind.status, 400);
    assert!(badkind.body.contains("id=\"err-kind\""), "{}", badkind.body);
    let badafter = br.get("/records?kind=contact&after=zzz");
    assert_eq!(badafter.status, 400);
    assert!(badafter.body.contains("id=\"err-after\""));

    // The résumé: listed with its owner and downloadable as an attachment.
    let list = br.get("/records?kind=resume");
    assert!(
        list.body.contains("ada cv.pdf")
            && list.body.contains("ours")
            && list.body.contains(&format!("/records/{resume}/file")),
        "{}",
        list.body
    );
    let file = br.get(&format!("/records/{resume}/file"));
    assert_eq!(file.status, 200);
    assert_eq!(file.body, "%PDF-1.4 resume of Ada");
    assert_eq!(
        file.header("content-disposition"),
        Some("attachment; filename=\"ada_cv.pdf\"")
    );
    let missing = br.get(&format!("/records/{ada_id}/file"));
    assert_eq!(missing.status, 404, "a contact is not a résumé");
    let garbage = br.get("/records/..%2F..%2Fetc/file");
    assert_eq!(garbage.status, 404);

    a.stop();
    eprintln!(
        "records: 121 contacts in 3 pages read in {:.0} ms; {:.1} s total",
        paged.as_secs_f64() * 1000.0,
        t0.elapsed().as_secs_f64()
    );
}
