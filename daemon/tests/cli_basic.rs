//! The real `orgsync` binary against an in-process API server: output,
//! `--json`, and exit codes (2 bad input, 3 not found, 4 daemon not running).

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::TestServer;
use serde_json::Value as Json;

/// Runs `orgsync --dir DIR ARGS` off the async workers and returns its output.
async fn orgsync(dir: &Path, args: &[&str]) -> Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_orgsync"))
            .arg("--dir")
            .arg(&dir)
            .args(&args)
            .env_remove("ORGSYNC_DIR")
            .output()
            .expect("run orgsync")
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_not_running_is_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["status"][..],
        &["list"],
        &["get", "0190a1b2-0000-7000-8000-000000000000"],
    ] {
        let o = orgsync(dir.path(), args).await;
        assert_eq!(code(&o), 4, "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("orgsyncd is not running for"), "{err}");
        assert!(err.contains("api.sock"), "{err}");
        assert!(err.contains("start it with `orgsyncd --dir"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_through_the_cli() {
    let srv = TestServer::start().await;
    let dir = srv.path();
    let o = orgsync(
        &dir,
        &[
            "put",
            "organization",
            "--set",
            "name=Acme",
            "--custom",
            "seats:=40",
        ],
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let org = stdout(&o);
    let o = orgsync(
        &dir,
        &[
            "put",
            "contact",
            "--set",
            "first_name=Ada",
            "--set",
            &format!("organization={org}"),
            "--custom",
            "level=senior",
        ],
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ada = stdout(&o);
    assert_eq!(ada.len(), 36, "prints the id: {ada}");

    let o = orgsync(&dir, &["get", &ada, "--json"]).await;
    assert_eq!(code(&o), 0);
    let obj: Json = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(obj["fields"]["first_name"], "Ada");
    assert_eq!(obj["custom"]["level"], "senior");
    let o = orgsync(&dir, &["get", &org]).await;
    assert!(stdout(&o).contains("custom.seats  40"), "{}", stdout(&o));

    let o = orgsync(
        &dir,
        &[
            "set",
            &ada,
            "--set",
            "email=ada@example.org",
            "--unset",
            "custom.level",
        ],
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = orgsync(&dir, &["list", "contact", "--json"]).await;
    let list: Json = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["fields"]["email"], "ada@example.org");
    assert!(list[0]["custom"].get("level").is_none());
    let o = orgsync(&dir, &["list"]).await;
    let table = stdout(&o);
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");

    // Résumés.
    let cv = dir.join("cv.txt");
    std::fs::write(&cv, b"curriculum").unwrap();
    let o = orgsync(&dir, &["attach-resume", &ada, cv.to_str().unwrap()]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let resume = stdout(&o);
    let out = dir.join("out.txt");
    let o = orgsync(&dir, &["get-resume", &resume, "-o", out.to_str().unwrap()]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), b"curriculum");

    let o = orgsync(&dir, &["delete", &ada]).await;
    assert_eq!(code(&o), 0);
    let o = orgsync(&dir, &["get", &ada]).await;
    assert_eq!(code(&o), 3, "deleted is not found: {}", stderr(&o));

    let o = orgsync(&dir, &["status"]).await;
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("Test Org"));
    let o = orgsync(&dir, &["status", "--json"]).await;
    let status: Json = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(status["log_head"].as_u64().unwrap() >= 5);
    let o = orgsync(&dir, &["partners", "--json"]).await;
    assert_eq!(code(&o), 0);
    let o = orgsync(&dir, &["wait-synced", "--timeout", "5s"]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = orgsync(&dir, &["metrics"]).await;
    assert!(stdout(&o).contains("orgsync_changes_written_total"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_2_and_not_found_is_3() {
    let srv = TestServer::start().await;
    let dir = srv.path();
    let missing = "0190a1b2-0000-7000-8000-000000000000";
    let bad: [&[&str]; 8] = [
        &["put", "widget", "--set", "name=x"],
        &["put", "contact", "--set", "shoe=44"],
        &["put", "contact", "--set", "first_name"],
        &["put", "contact", "--custom", "age:=[1"],
        &["get", "not-an-id"],
        &["frobnicate"],
        &["wait-synced", "--timeout", "soon"],
        &["attach-resume", missing, "/nonexistent/file.pdf"],
    ];
    for args in bad {
        let o = orgsync(&dir, args).await;
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty());
    }
    let o = orgsync(&dir, &["put", "transaction", "--set", "date=31/12/2024"]).await;
    assert!(
        stderr(&o).contains("date"),
        "the message names the field: {}",
        stderr(&o)
    );
    for args in [
        &["get", missing][..],
        &["delete", missing],
        &["set", missing, "--set", "name=x"],
        &["get-resume", missing, "-o", "/tmp/never"],
    ] {
        let o = orgsync(&dir, args).await;
        assert_eq!(code(&o), 3, "{args:?}: {}", stderr(&o));
    }
    // No directory at all.
    let o = tokio::task::spawn_blocking(|| {
        Command::new(env!("CARGO_BIN_EXE_orgsync"))
            .arg("status")
            .env_remove("ORGSYNC_DIR")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(code(&o), 2);
    // Every subcommand's help has an example.
    for sub in [
        "put",
        "set",
        "get",
        "list",
        "delete",
        "attach-resume",
        "get-resume",
        "partners",
        "status",
        "watch",
        "wait-synced",
        "metrics",
    ] {
        let o = orgsync(&dir, &[sub, "--help"]).await;
        assert_eq!(code(&o), 0);
        assert!(
            stdout(&o).contains("Example"),
            "{sub} --help has no example"
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_one_line_per_change() {
    let srv = TestServer::start().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_orgsync"))
        .arg("--dir")
        .arg(srv.path())
        .args(["watch", "--after", "0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    // Lines as they come; the watch replays the log (`--after 0`), where
    // an object written twice before the replay reads it appears once, at
    // its latest write: so the edit is made only after the creation's
    // line has arrived.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = |what: &str| {
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("watch printed no line for {what} in 20 s: {e}"))
    };
    let created = srv
        .client
        .create(&serde_json::json!({"kind": "contact", "fields": {"first_name": "Ada"}}))
        .await
        .unwrap();
    let first = next_line("the creation");
    srv.client
        .update(
            created["id"].as_str().unwrap(),
            &serde_json::json!({"fields": {"email": "a@b.c"}}),
        )
        .await
        .unwrap();
    let second = next_line("the edit");
    child.kill().unwrap();
    child.wait().unwrap();
    for (line, seq) in [(first, 1), (second, 2)] {
        let ev: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(ev["seq"], seq);
        assert_eq!(ev["id"], created["id"]);
        assert_eq!(ev["origin"], "local");
    }
    srv.stop().await;
}
