//! Helpers for the end-to-end tests: run the real `orgsync-keytool` binary
//! on temp dirs and loopback, read its output line by line with deadlines,
//! and kill whatever was started.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use orgsync_keytool::{InstanceDir, Partner};
use orgsync_protocol::envelope::{self, StreamKind};

pub const BIN: &str = env!("CARGO_BIN_EXE_orgsync-keytool");
/// Generous: the machine is shared and slow.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("ORGSYNC_DIR").arg("--dir").arg(dir);
    c
}

/// Runs a command to completion with stdin closed.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    cmd(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run orgsync-keytool")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and asserts success.
pub fn ok(dir: &Path, args: &[&str]) -> Output {
    let o = run(dir, args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}\n{}",
        stdout(&o),
        stderr(&o)
    );
    o
}

/// Runs and asserts exit code 1; returns stderr.
pub fn fails(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{args:?} should fail: {}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

/// `init` an instance named `org` at `root/name`.
pub fn init(root: &Path, name: &str, org: &str, listen: &str) -> PathBuf {
    let dir = root.join(name);
    ok(&dir, &["init", "--org", org, "--listen", listen]);
    dir
}

pub fn account(dir: &Path) -> String {
    let o = ok(dir, &["show", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("show --json");
    v["account_number"].as_str().expect("account").to_string()
}

pub fn partners(dir: &Path) -> Vec<Partner> {
    InstanceDir::new(dir)
        .load_partners()
        .expect("load partners")
}

/// Both sides derive the same pair keys: what one seals the other opens,
/// both ways, and a third party's keys do not open it.
pub fn assert_pair_keys_agree(a: &Path, b: &Path) {
    let (da, db) = (InstanceDir::new(a), InstanceDir::new(b));
    let (ia, ib) = (da.load_identity().unwrap(), db.load_identity().unwrap());
    let pa = da.load_partners().unwrap();
    let pb = db.load_partners().unwrap();
    let b_at_a = pa
        .iter()
        .find(|p| p.org_id == ib.org_id)
        .expect("B is A's partner");
    let a_at_b = pb
        .iter()
        .find(|p| p.org_id == ia.org_id)
        .expect("A is B's partner");
    let epoch = ia.pair_epoch(b_at_a);
    assert_eq!(epoch, ib.pair_epoch(a_at_b), "pair epochs differ");
    let ka = ia.pair_keys(b_at_a, epoch).unwrap();
    let kb = ib.pair_keys(a_at_b, epoch).unwrap();
    let env = envelope::seal(&ka, StreamKind::Changes, 1, b"hello from A");
    assert_eq!(envelope::open(&kb, &env).unwrap(), b"hello from A");
    let env = envelope::seal(&kb, StreamKind::Blob, 7, b"hello from B");
    assert_eq!(envelope::open(&ka, &env).unwrap(), b"hello from B");
    // A's own receive key cannot open what A sent (directions differ).
    let env = envelope::seal(&ka, StreamKind::Changes, 2, b"x");
    assert!(envelope::open(&ka, &env).is_err());
}

/// A running child process whose output lines arrive on channels; killed on
/// drop.
pub struct Running {
    pub child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    pub out_seen: Vec<String>,
    pub err_seen: Vec<String>,
}

fn pump(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    pub fn spawn(dir: &Path, args: &[&str]) -> Running {
        let mut child = cmd(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn orgsync-keytool");
        let out = pump(child.stdout.take().unwrap());
        let err = pump(child.stderr.take().unwrap());
        Running {
            child,
            out,
            err,
            out_seen: Vec::new(),
            err_seen: Vec::new(),
        }
    }

    /// Waits for a stdout line matching `pred`.
    pub fn wait_stdout(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.out, &mut self.out_seen, what, pred)
    }

    /// Waits for a stderr line matching `pred`.
    pub fn wait_stderr(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.err, &mut self.err_seen, what, pred)
    }

    /// Waits for the process to exit (polling with a deadline) and drains
    /// its output.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.out_seen.extend(drain(&self.out));
                self.err_seen.extend(drain(&self.err));
                return st;
            }
            assert!(Instant::now() < end, "process did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn all_stderr(&self) -> String {
        self.err_seen.join("\n")
    }
    pub fn all_stdout(&self) -> String {
        self.out_seen.join("\n")
    }
}

fn drain(rx: &Receiver<String>) -> Vec<String> {
    // The pipe closes when the process exits; collect what is left.
    let mut v = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while let Ok(l) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
        v.push(l);
    }
    v
}

fn wait_line(
    rx: &Receiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    if let Some(l) = seen.iter().find(|l| pred(l)) {
        return l.clone();
    }
    let end = Instant::now() + DEADLINE;
    loop {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                seen.push(line.clone());
                if pred(&line) {
                    return line;
                }
            }
            Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}; saw {seen:#?}"),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("output closed before {what}; saw {seen:#?}")
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A code line: `N-word-word`.
pub fn is_code(line: &str) -> bool {
    let parts: Vec<&str> = line.split('-').collect();
    parts.len() == 3
        && parts[0].parse::<u32>().is_ok()
        && parts[1..]
            .iter()
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
}

/// A started invitation with its code and address.
pub struct Invite {
    pub proc: Running,
    pub code: String,
    pub addr: String,
}

pub fn start_invite(dir: &Path, extra: &[&str]) -> Invite {
    let mut args = vec!["invite", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut proc = Running::spawn(dir, &args);
    let addr_line = proc.wait_stdout("the listening address", |l| l.starts_with("listening on "));
    let addr = addr_line
        .trim_start_matches("listening on ")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let code = proc.wait_stdout("the pairing code", is_code);
    Invite { proc, code, addr }
}

pub fn join(dir: &Path, addr: &str, account: &str, code: &str) -> Output {
    run(
        dir,
        &["join", "--connect", addr, "--account", account, code],
    )
}

/// Mode bits of a path.
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

pub fn chmod(p: &Path, m: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}
