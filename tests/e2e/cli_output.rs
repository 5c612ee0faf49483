//! `orgsync --output json|table|csv` on real daemons: every command that
//! lists records prints the same records in the three formats (the CSV read
//! back with a CSV reader, the table as a header line and one line per
//! record), `--json` is `--output json`, CSV cells are neutralised like
//! `orgsync export`'s, and a bad format is refused naming the allowed ones.

use crate::support;
use crate::support::web as web_client;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use support::{bin, stderr, stdout, wait_for, Instance};

const SYNC: Duration = Duration::from_secs(60);

/// A formula a spreadsheet would run if the cell were not neutralised.
const FORMULA: &str = "=HYPERLINK(\"http://evil.example\",\"click\")";

/// What one command printed in each format.
struct Shapes {
    json: Json,
    csv_headers: Vec<String>,
    csv_rows: Vec<Vec<String>>,
}

fn cli_text(inst: &Instance, args: &[&str]) -> String {
    let started = Instant::now();
    let out = inst.cli(args);
    assert!(
        out.status.success(),
        "{}: orgsync {args:?} failed ({}): {}",
        inst.name,
        out.status,
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "orgsync {args:?} took {:?}",
        started.elapsed()
    );
    text
}

fn with(args: &[&str], extra: &[&str]) -> Vec<String> {
    args.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn run_with(inst: &Instance, args: &[&str], extra: &[&str]) -> String {
    let all = with(args, extra);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    cli_text(inst, &refs)
}

/// Runs `args` in the three formats (`--output` after the command, and
/// before it for json) and checks that they agree: `items(json)` are the
/// records; the CSV has one row per record whose column `col` holds each
/// record's `key`; the table has the same header and one line per record,
/// starting with the record's first cell. Returns the parsed shapes.
fn check(
    inst: &Instance,
    args: &[&str],
    items: impl Fn(&Json) -> Vec<Json>,
    key: &str,
    col: &str,
    at_least: usize,
) -> Shapes {
    let what = format!("{}: orgsync {}", inst.name, args.join(" "));
    // json: --output json after the command, before it, and --json agree.
    // Records are compared by key across runs: live fields (attempts,
    // lag, times) may move between two runs.
    let parse = |text: &str| -> Json {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: json: {e}\n{text}"))
    };
    let json_text = run_with(inst, args, &["--output", "json"]);
    let json = parse(&json_text);
    let records = items(&json);
    assert!(
        records.len() >= at_least,
        "{what}: {} record(s), expected at least {at_least}: {json_text}",
        records.len()
    );
    let keys_of = |v: &Json| -> Vec<String> {
        items(v)
            .iter()
            .map(|r| match &r[key] {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    };
    let keys = keys_of(&json);
    let mut before = vec!["--output", "json"];
    before.extend_from_slice(args);
    assert_eq!(
        keys_of(&parse(&cli_text(inst, &before))),
        keys,
        "{what}: --output before the command"
    );
    assert_eq!(
        keys_of(&parse(&run_with(inst, args, &["--json"]))),
        keys,
        "{what}: --json is --output json"
    );

    // csv: a header row, one row per record, every cell quoted.
    let csv_text = run_with(inst, args, &["--output", "csv"]);
    for line in csv_text.lines() {
        assert!(
            line.starts_with('"') && line.ends_with('"'),
            "{what}: unquoted CSV cell in {line:?}"
        );
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(csv_text.as_bytes());
    let csv_headers: Vec<String> = reader
        .headers()
        .unwrap_or_else(|e| panic!("{what}: csv header: {e}"))
        .iter()
        .map(str::to_string)
        .collect();
    let csv_rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| {
            r.unwrap_or_else(|e| panic!("{what}: csv row: {e}\n{csv_text}"))
                .iter()
                .map(str::to_string)
                .collect()
        })
        .collect();
    assert_eq!(
        csv_rows.len(),
        records.len(),
        "{what}: csv rows vs json records:\n{csv_text}"
    );
    let c = csv_headers
        .iter()
        .position(|h| h == col)
        .unwrap_or_else(|| panic!("{what}: no {col} column in {csv_headers:?}"));
    let csv_keys: Vec<String> = csv_rows.iter().map(|r| r[c].clone()).collect();
    assert_eq!(csv_keys, keys, "{what}: csv {col} column vs json {key}");

    // table: the default and --output table are the same text; the header
    // line carries the CSV's column names, then one line per record.
    let table = run_with(inst, args, &["--output", "table"]);
    let default = cli_text(inst, args);
    let first_words = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split("  ").next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        first_words(&default),
        first_words(&table),
        "{what}: table is the default:\n{default}\n---\n{table}"
    );
    let lines: Vec<&str> = table.lines().collect();
    let header_at = lines
        .iter()
        .position(|l| {
            let mut rest = *l;
            csv_headers.iter().all(|h| match rest.find(h.as_str()) {
                Some(i) => {
                    rest = &rest[i + h.len()..];
                    true
                }
                None => false,
            })
        })
        .unwrap_or_else(|| panic!("{what}: no header line {csv_headers:?} in\n{table}"));
    let rows: Vec<&str> = lines[header_at + 1..]
        .iter()
        .take_while(|l| !l.is_empty())
        .copied()
        .collect();
    assert_eq!(
        rows.len(),
        records.len(),
        "{what}: table lines vs json records:\n{table}"
    );
    for (line, row) in rows.iter().zip(&csv_rows) {
        // The first cell, as the table shows it (no ' prefix, - when empty).
        let first = match row[0].as_str() {
            "" => "-",
            s => s.strip_prefix('\'').unwrap_or(s),
        };
        assert!(
            line.starts_with(first),
            "{what}: table line {line:?} does not start with {first:?}"
        );
    }
    eprintln!(
        "cli output: {what}: {} record(s), {} column(s), same in json, csv and table",
        records.len(),
        csv_headers.len()
    );
    Shapes {
        json,
        csv_headers,
        csv_rows,
    }
}

fn list_of(field: &'static str) -> impl Fn(&Json) -> Vec<Json> {
    move |v: &Json| v[field].as_array().cloned().unwrap_or_default()
}

/// Given then received shares, as `share list` prints them.
fn shares(v: &Json) -> Vec<Json> {
    let mut all = list_of("given")(v);
    all.extend(list_of("received")(v));
    all
}

fn cell<'a>(shapes: &'a Shapes, row: usize, col: &str) -> &'a str {
    let c = shapes
        .csv_headers
        .iter()
        .position(|h| h == col)
        .unwrap_or_else(|| panic!("no {col} column"));
    &shapes.csv_rows[row][c]
}

/// `orgsync watch --after 0 --output csv` up to the row of change `head`.
fn watch_csv(inst: &Instance, head: u64) -> String {
    use std::io::BufRead;
    let mut child = Command::new(bin("orgsync"))
        .arg("--dir")
        .arg(&inst.dir)
        .args(["watch", "--after", "0", "--output", "csv"])
        .env_remove("ORGSYNC_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn orgsync watch");
    let out = child.stdout.take().expect("watch stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    let last = format!("\"{head}\",");
    loop {
        let line = rx.recv_timeout(SYNC).unwrap_or_else(|e| {
            let _ = child.kill();
            panic!("watch --output csv: no row for change {head}: {e}\n{text}")
        });
        text.push_str(&line);
        text.push('\n');
        if line.starts_with(&last) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn every_listing_prints_the_same_records_as_json_csv_and_table() {
    let started = Instant::now();
    let mut a = Instance::governed("Acme");
    let mut b = Instance::governed("Globex");
    // Knows Acme; Acme does not know it: it waits in Acme's pending list.
    let mut c = Instance::governed("Initech");
    Instance::pair(&a, &b);
    c.trust(&a);
    a.start();
    b.start();
    c.start();

    let ada = a.put(
        "contact",
        &[
            "--set",
            &format!("first_name={FORMULA}"),
            "--set",
            "last_name=Lovelace, \"the first\"",
            "--set",
            "email=ada@example.org",
            "--custom",
            "level=-3",
        ],
    );
    a.put(
        "contact",
        &["--set", "first_name=Grace", "--set", "last_name=Hopper"],
    );
    a.put(
        "organization",
        &["--set", "name=Acme Labs", "--set", "city=Paris"],
    );
    a.cli_ok(&["share", "add", "Globex", "--kind", "contact"]);
    b.cli_ok(&["request", "send", "Acme", "--want", "kind:organization"]);
    web_client::add_account(&a, "ada", "admin", "correct horse battery staple 42");
    web_client::add_account(&a, "bob", "viewer", "correct horse battery staple 42");
    wait_for("two contacts in Globex's inbox", SYNC, || {
        (list_of("items")(&b.cli_json(&["inbox", "list"])).len() >= 2).then_some(())
    });
    wait_for("Globex's request at Acme", SYNC, || {
        (!list_of("requests")(&a.cli_json(&["request", "list"])).is_empty()).then_some(())
    });
    wait_for("Initech pending at Acme", SYNC, || {
        (!list_of("pending")(&a.cli_json(&["partner", "pending"])).is_empty()).then_some(())
    });
    wait_for("Acme and Globex connected", SYNC, || {
        list_of("partners")(&a.status())
            .iter()
            .any(|p| p["name"] == "Globex" && p["connected"] == true)
            .then_some(())
    });
    let setup = started.elapsed();

    // list: the formula is data in JSON, neutralised text in CSV.
    let listed = check(
        &a,
        &["list"],
        |v| v.as_array().cloned().unwrap_or_default(),
        "id",
        "ID",
        3,
    );
    let row = listed
        .csv_rows
        .iter()
        .position(|r| r[0] == ada)
        .expect("Ada's row");
    assert!(
        cell(&listed, row, "SUMMARY").starts_with(&format!("'{FORMULA}")),
        "not neutralised: {:?}",
        cell(&listed, row, "SUMMARY")
    );
    check(
        &a,
        &["list", "organization"],
        |v| v.as_array().cloned().unwrap_or_default(),
        "id",
        "ID",
        1,
    );

    // get: one row per field; quotes and commas survive the CSV round trip,
    // numbers-as-text starting with - are neutralised like export's.
    let fields = |v: &Json| {
        let mut rows = vec![
            serde_json::json!({"name": "id"}),
            serde_json::json!({"name": "kind"}),
        ];
        for (section, prefix) in [("fields", ""), ("custom", "custom.")] {
            for k in v[section].as_object().into_iter().flatten().map(|m| m.0) {
                rows.push(serde_json::json!({ "name": format!("{prefix}{k}") }));
            }
        }
        for _ in v["flags"].as_array().into_iter().flatten() {
            rows.push(serde_json::json!({"name": "flag"}));
        }
        rows
    };
    let got = check(&a, &["get", &ada], fields, "name", "FIELD", 6);
    let value = |field: &str| {
        let i = got
            .csv_rows
            .iter()
            .position(|r| r[0] == field)
            .unwrap_or_else(|| panic!("no {field} row"));
        got.csv_rows[i][1].clone()
    };
    assert_eq!(value("first_name"), format!("'{FORMULA}"));
    assert_eq!(value("last_name"), "Lovelace, \"the first\"");
    assert_eq!(
        got.json["fields"]["last_name"], "Lovelace, \"the first\"",
        "json unchanged"
    );
    assert_eq!(value("custom.level"), "'-3");
    assert_eq!(got.json["fields"]["first_name"], FORMULA);

    check(&a, &["partners"], list_of("partners"), "name", "PARTNER", 1);
    let status = check(&a, &["status"], list_of("partners"), "name", "PARTNER", 1);
    assert_eq!(cell(&status, 0, "CONNECTED"), "yes");
    let inbox = check(&b, &["inbox", "list"], list_of("items"), "id", "ID", 2);
    assert!(
        inbox.csv_rows.iter().all(|r| r[1] == "Acme"),
        "FROM column: {:?}",
        inbox.csv_rows
    );
    let given = check(&a, &["share", "list"], shares, "id", "SHARE", 1);
    assert_eq!(cell(&given, 0, "DIRECTION"), "given");
    assert_eq!(cell(&given, 0, "RULES"), "kind:contact");
    let received = check(&b, &["share", "list"], shares, "id", "SHARE", 1);
    assert!(
        received.csv_rows.iter().any(|r| r[0] == "received"),
        "{:?}",
        received.csv_rows
    );
    check(
        &a,
        &["request", "list"],
        list_of("requests"),
        "id",
        "REQUEST",
        1,
    );
    check(
        &b,
        &["request", "list"],
        list_of("requests"),
        "id",
        "REQUEST",
        1,
    );
    check(&a, &["audit"], list_of("entries"), "action", "ACTION", 2);
    let admins = check(
        &a,
        &["admin", "list"],
        list_of("accounts"),
        "name",
        "NAME",
        2,
    );
    assert_eq!(
        admins.csv_rows,
        vec![
            vec!["ada".to_string(), "admin".into(), "off".into()],
            vec!["bob".to_string(), "viewer".into(), "off".into()],
        ]
    );
    check(
        &a,
        &["partner", "pending"],
        list_of("pending"),
        "fingerprint",
        "FINGERPRINT",
        1,
    );
    check(
        &a,
        &["partner", "settings"],
        list_of("partners"),
        "name",
        "PARTNER",
        1,
    );

    // watch streams: a header, then one CSV row per change, the same
    // changes as the JSON events.
    let head = a.log_head();
    let csv_watch = watch_csv(&a, head);
    let mut reader = csv::Reader::from_reader(csv_watch.as_bytes());
    assert_eq!(
        reader.headers().expect("watch header"),
        vec!["SEQ", "ORIGIN", "KIND", "ID", "DELETED"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("watch row")).collect();
    let from_csv: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r[0].to_string(), r[3].to_string()))
        .collect();
    let events = a.watch(Some(0));
    let mut from_json = Vec::new();
    loop {
        let ev = events.next("replay of the local log", SYNC);
        from_json.push((
            ev["seq"].to_string(),
            ev["id"].as_str().unwrap_or("").to_string(),
        ));
        if ev["seq"] == head {
            break;
        }
    }
    assert_eq!(
        from_csv, from_json,
        "watch csv vs watch --json:\n{csv_watch}"
    );
    assert!(rows.iter().all(|r| &r[1] == "local" && &r[4] == "false"));
    eprintln!(
        "cli output: Acme: orgsync watch --after 0 --output csv: header and {} change(s) up to seq {head}, same as --json",
        rows.len()
    );

    // doctor: a report, not a table; its CSV has one row per JSON finding.
    let doctor_json: Json = serde_json::from_str(&run_with(&a, &["doctor"], &["--output", "json"]))
        .expect("doctor json");
    let doctor_csv = a.cli(&["doctor", "--output", "csv"]);
    let mut reader = csv::Reader::from_reader(doctor_csv.stdout.as_slice());
    let headers: Vec<String> = reader
        .headers()
        .expect("doctor csv header")
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(headers, ["STATUS", "CHECK", "DETAIL", "FIX"]);
    let checks: Vec<String> = reader
        .records()
        .map(|r| r.expect("doctor csv row")[1].to_string())
        .collect();
    let want: Vec<String> = doctor_json
        .as_array()
        .expect("doctor findings")
        .iter()
        .map(|f| f["check"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(checks, want, "doctor csv vs json");

    // Confirmations: JSON with json, their sentence otherwise.
    let put = a.cli_ok(&[
        "--output",
        "json",
        "put",
        "contact",
        "--set",
        "first_name=Alan",
    ]);
    let put: Json = serde_json::from_str(&put).expect("put json");
    assert_eq!(put["fields"]["first_name"], "Alan");
    let id = put["id"].as_str().expect("id");
    let deleted = a.cli_ok(&["delete", id, "--output", "csv"]);
    assert_eq!(deleted.trim(), format!("deleted {id}"), "csv confirmation");
    let id = a.cli_ok(&[
        "put",
        "contact",
        "--set",
        "first_name=Alan",
        "--output",
        "table",
    ]);
    assert!(
        id.lines().count() == 1 && !id.contains('{') && id.trim().len() == 36,
        "table confirmation is the id alone: {id:?}"
    );

    let took = started.elapsed();
    eprintln!(
        "cli output: 3 daemons, setup {:.1} s, every listing checked in 3 formats in {:.1} s",
        setup.as_secs_f64(),
        (took - setup).as_secs_f64()
    );
    c.stop();
    b.stop();
    a.stop();
}

#[test]
fn a_bad_output_format_is_refused_naming_the_allowed_ones() {
    for args in [
        &["--dir", "/nonexistent", "--output", "xml", "list"][..],
        &["--dir", "/nonexistent", "list", "--output", "yaml"][..],
        &[
            "--dir",
            "/nonexistent",
            "share",
            "list",
            "--output",
            "JSON ",
        ][..],
    ] {
        let out = support::run(Command::new(bin("orgsync")).args(args));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("invalid value") && err.contains("[possible values: table, json, csv]"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(stdout(&out), "", "{args:?} printed to stdout");
    }
    let out = support::run(Command::new(bin("orgsync")).args([
        "--dir",
        "/nonexistent",
        "--json",
        "list",
        "--output",
        "csv",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--json means --output json"),
        "{}",
        stderr(&out)
    );
    // A command whose --output is its file still takes the format first.
    let out = support::run(Command::new(bin("orgsync")).args([
        "--dir",
        "/nonexistent",
        "--output",
        "csv",
        "export",
        "--partner",
        "Acme",
        "--format",
        "csv",
        "--output",
        "out",
    ]));
    assert_eq!(out.status.code(), Some(4), "no daemon: {}", stderr(&out));
    eprintln!("cli output: bad --output values refused with exit 2 and the allowed values");
}
