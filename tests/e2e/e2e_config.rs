//! End-to-end: `orgsync.toml` changes while `orgsyncd` runs. JSON logs are
//! one JSON object a line; a custom field added to the file types custom
//! values at once (no restart); a file that does not validate is reported
//! and the previous configuration stays; a changed `listen` is reported as
//! needing a restart.

use crate::support;

use std::io::Write;
use std::time::Duration;

use support::{stderr, wait_for, Instance};

fn append(inst: &Instance, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(inst.dir.join("orgsync.toml"))
        .expect("orgsync.toml");
    f.write_all(text.as_bytes())
        .expect("append to orgsync.toml");
}

/// Replaces orgsync.toml the way editors and config tools do: write a temp
/// file, rename it onto the name.
fn replace_config(inst: &Instance, text: &str) {
    let tmp = inst.dir.join("orgsync.toml.tmp");
    std::fs::write(&tmp, text).expect("write temp config");
    std::fs::rename(&tmp, inst.dir.join("orgsync.toml")).expect("rename config");
}

const T: Duration = Duration::from_secs(30);

#[test]
fn config_changes_apply_without_restart() {
    let mut a = Instance::new("Cfg");
    append(&a, "\n[log]\nformat = \"json\"\n");
    a.start();

    // JSON logs: every line of this start is one JSON object with a message.
    let log = a.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("====="))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    let mut started = false;
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
        assert!(v["level"].is_string(), "{l}");
        started |= v["fields"]["message"] == "orgsyncd started";
    }
    assert!(started, "no `orgsyncd started` line:\n{log}");

    // Without a schema, a custom value is typed by its text: accepted.
    let ada = a.put(
        "contact",
        &["--set", "first_name=Ada", "--custom", "age=forty"],
    );

    // Define `age` as an integer: the running daemon now refuses text.
    append(
        &a,
        "\n[[custom_field]]\nname = \"age\"\ntype = \"integer\"\nkind = \"contact\"\n",
    );
    let refusal = wait_for("the new custom field to apply", T, || {
        let out = a.cli(&[
            "put",
            "contact",
            "--set",
            "first_name=Bo",
            "--custom",
            "age=forty",
        ]);
        (out.status.code() == Some(2)).then(|| stderr(&out))
    });
    assert!(refusal.contains("age"), "{refusal}");
    let id = a.put("contact", &["--set", "first_name=Cy", "--custom", "age=41"]);
    let obj = a.cli_json(&["get", &id]);
    assert_eq!(obj["custom"]["age"], 41, "{obj}");

    // A file that does not validate: reported, the previous config stays.
    let good = std::fs::read_to_string(a.dir.join("orgsync.toml")).unwrap();
    let bad = good.replacen("[sync]", "[sync]\nmax_unackd = 5", 1);
    assert_ne!(bad, good, "no [sync] table in:\n{good}");
    replace_config(&a, &bad);
    wait_for("the bad file to be reported", T, || {
        a.log_text()
            .contains("keeping the previous configuration")
            .then_some(())
    });
    assert!(a.log_text().contains("sync.max_unackd"), "{}", a.log_tail());
    let out = a.cli(&[
        "put",
        "contact",
        "--set",
        "first_name=Di",
        "--custom",
        "age=x",
    ]);
    assert_eq!(out.status.code(), Some(2), "schema still in force");

    // A changed listen address only applies at the next start: said so.
    let moved = good.replacen(
        &format!("127.0.0.1:{}", a.port),
        &format!("127.0.0.1:{}", support::free_port()),
        1,
    );
    assert_ne!(moved, good, "listen line not found in:\n{good}");
    replace_config(&a, &moved);
    wait_for("the restart-only key to be reported", T, || {
        a.log_text()
            .lines()
            .any(|l| l.contains("next restart") && l.contains("listen"))
            .then_some(())
    });
    // Nothing stored was lost along the way (the polling above may have
    // stored a Bo before the field was defined; that is fine).
    let objects = a.objects();
    for want in [&ada, &id] {
        assert!(
            objects.iter().any(|o| o["id"] == want.as_str()),
            "{want} missing from {objects:?}"
        );
    }
    assert_eq!(a.cli_json(&["get", &ada])["custom"]["age"], "forty");
    a.stop();
}
