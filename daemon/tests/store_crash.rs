//! kill -9 of a process writing to the store loses no acknowledged write.
//!
//! The test re-runs its own binary as a child that writes from several
//! tasks and prints `ACK <seq> <id>` after each write returns (the store's
//! promise: durable on return). The parent kills it with SIGKILL mid-stream,
//! reopens the store and checks that every acknowledged write is there and
//! the log has no gap.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orgsync_daemon::store::{Edit, Store};
use orgsync_protocol::model::{Kind, ObjectId, Value};

const CHILD_ENV: &str = "ORGSYNC_CRASH_CHILD_DIR";

#[test]
#[ignore = "run by kill9_loses_no_acknowledged_write as a child process"]
fn crash_child() {
    let dir = std::env::var(CHILD_ENV).expect("child needs its directory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Store::open(std::path::Path::new(&dir), 8 << 20).unwrap();
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0u64.. {
                        let edit =
                            Edit::new(ObjectId::new_v7(1_700_000_000_000 + i), Kind::Contact)
                                .set_std("first_name", Value::Text(format!("t{t}-{i}")));
                        let r = store.write(vec![edit]).await.unwrap();
                        let c = &r.changes[0];
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {} {}", c.seq, c.change.id).unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn kill9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked: Vec<(u64, ObjectId)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (seq, id) = rest.split_once(' ').unwrap();
            acked.push((seq.parse().unwrap(), id.parse().unwrap()));
        }
        if acked.len() >= 2000 || Instant::now() > deadline {
            break;
        }
    }
    // SIGKILL while the writers are still going.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        acked.len() >= 100,
        "child acknowledged only {} writes",
        acked.len()
    );

    let store = Store::open(dir.path(), 8 << 20).unwrap();
    let head = store.log_head();
    let max_acked = acked.iter().map(|(s, _)| *s).max().unwrap();
    assert!(
        head >= max_acked,
        "log head {head} below acknowledged {max_acked}"
    );
    let log = store.load_log(0, usize::MAX).unwrap();
    assert_eq!(log.len() as u64, head, "log has gaps");
    for (i, c) in log.iter().enumerate() {
        assert_eq!(c.seq, i as u64 + 1);
    }
    for (seq, id) in &acked {
        assert_eq!(
            log[*seq as usize - 1].change.id,
            *id,
            "seq {seq} holds another change"
        );
        assert!(
            store.get(*id).unwrap().is_some(),
            "object of seq {seq} lost"
        );
    }
}
