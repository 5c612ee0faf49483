//! Support for end-to-end tests that run the real binaries (`orgsyncd`,
//! `orgsync`, `orgsync-keytool`) on loopback in temporary directories.
//!
//! The binaries belong to other packages of the workspace, so Cargo does not
//! hand their paths to this crate's tests; [`bin`] builds them once (a no-op
//! when they are fresh) into the same target directory and profile as the
//! running test.

pub mod rogue;
pub mod sse;
pub mod web;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The path of one of the workspace's binaries, built on first use.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // current_exe = <target>/<profile>/deps/<test>-<hash>
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "orgsync-daemon",
            "-p",
            "orgsync-keytool",
            "--bins",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for the binaries");
        assert!(status.success(), "building the binaries failed");
        profile_dir
    });
    dir.join(name)
}

/// A loopback port, free for both UDP and TCP a moment ago, that no other
/// test of this process is given.
///
/// Every test runs in one binary, so a port picked by binding port 0 and
/// letting go was often handed straight to another test's socket (the
/// kernel gives bind-to-0 the ports of its ephemeral range, 32768–60999
/// on Linux) before the daemon bound it: "Address already in use". Ports
/// come instead from below that range, in turn, starting at an offset of
/// the process id so two test processes rarely meet; one still taken (by
/// another process) is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000; // up to 32000, below the ephemeral range
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN)
}

/// Polls `cond` every few milliseconds until it returns `Some`, or panics
/// with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let end = start + timeout;
    loop {
        if let Some(v) = cond() {
            if std::env::var_os("ORGSYNC_TRACE_WAITS").is_some() {
                eprintln!("[{:>6} ms] {what}", start.elapsed().as_millis());
            }
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command to completion, capturing its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .expect("spawning a binary")
}

/// Output's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Output's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a
/// failing test never leaves a daemon behind.
pub struct Guard(pub Option<Child>);

impl Guard {
    /// Asks the process to stop with SIGTERM and waits for it; returns its
    /// exit status, or `None` if it had to be killed after `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.sigterm();
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(status) = self.try_exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill9();
        None
    }

    /// Sends SIGTERM without waiting (see [`Guard::try_exited`]).
    pub fn sigterm(&self) {
        if let Some(child) = &self.0 {
            // std only sends SIGKILL; kill(1) sends the SIGTERM a sysadmin would.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// The exit status if the process has exited (it is reaped and
    /// forgotten then), `None` while it runs.
    pub fn try_exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.0.as_mut()?.try_wait().ok().flatten()?;
        self.0 = None;
        Some(status)
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---------------------------------------------------------------------------
// Instances: one orgsync instance directory and its daemon
// ---------------------------------------------------------------------------

use std::fs::OpenOptions;
use std::io::Write as _;

use serde_json::Value as Json;

/// How long a daemon may take to start answering on its API socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One orgsync instance: a directory made by `orgsync-keytool init` in a
/// temporary directory, and (when started) its `orgsyncd`, whose stderr goes
/// to `<tmp>/orgsyncd.log` (appended across restarts, printed when the test
/// fails).
pub struct Instance {
    /// Display name (also the organisation's name).
    pub name: String,
    /// The instance directory.
    pub dir: PathBuf,
    /// The UDP port the daemon listens on.
    pub port: u16,
    log: PathBuf,
    daemon: Guard,
    starts: u32,
    // Last: removed after the daemon is killed.
    _tmp: tempfile::TempDir,
}

impl Instance {
    /// Creates an instance named `name` listening on a free loopback port,
    /// with quick reconnects so restarts in tests are noticed fast.
    pub fn new(name: &str) -> Instance {
        let inst = Instance::governed(name);
        // Tests of sync itself: every partner gets everything, as before
        // sharing governance.
        std::fs::write(
            inst.dir.join("governance.toml"),
            "mirror_all_partners = true\n",
        )
        .expect("write governance.toml");
        inst
    }

    /// Like [`Instance::new`], but sharing follows governance: a partner
    /// receives nothing until a share selects something for it.
    pub fn governed(name: &str) -> Instance {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("e2e-{name}-"))
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().join("inst");
        let port = free_port();
        let out = run(Command::new(bin("orgsync-keytool"))
            .arg("--dir")
            .arg(&dir)
            .args(["init", "--org", name, "--listen"])
            .arg(format!("127.0.0.1:{port}")));
        assert!(
            out.status.success(),
            "keytool init {name}: {}",
            stderr(&out)
        );
        let mut cfg = OpenOptions::new()
            .append(true)
            .open(dir.join("orgsync.toml"))
            .expect("orgsync.toml");
        writeln!(
            cfg,
            "\n[sync]\nreconnect_min_ms = 100\nreconnect_max_ms = 1000"
        )
        .expect("write orgsync.toml");
        Instance {
            name: name.to_string(),
            log: tmp.path().join("orgsyncd.log"),
            dir,
            port,
            daemon: Guard(None),
            starts: 0,
            _tmp: tmp,
        }
    }

    /// Runs `orgsync-keytool --dir DIR ARGS`, asserting success; its stdout.
    pub fn keytool(&self, args: &[&str]) -> String {
        let out = run(Command::new(bin("orgsync-keytool"))
            .arg("--dir")
            .arg(&self.dir)
            .args(args));
        assert!(
            out.status.success(),
            "{}: keytool {args:?} failed: {}",
            self.name,
            stderr(&out)
        );
        stdout(&out)
    }

    /// This instance's certificate fingerprint as shown by `keytool show`.
    pub fn fingerprint(&self) -> String {
        let v: Json =
            serde_json::from_str(&self.keytool(&["show", "--json"])).expect("show --json");
        v["cert_fingerprint"]
            .as_str()
            .expect("cert_fingerprint")
            .to_string()
    }

    /// This instance's account number.
    pub fn account(&self) -> String {
        let v: Json =
            serde_json::from_str(&self.keytool(&["show", "--json"])).expect("show --json");
        v["account_number"]
            .as_str()
            .expect("account_number")
            .to_string()
    }

    /// Imports `other`'s bundle (exported by `other`) into this instance:
    /// this instance now trusts `other`, not the reverse.
    pub fn trust(&self, other: &Instance) {
        let bundle = self._tmp.path().join(format!("{}.bundle", other.name));
        let b = bundle.to_str().expect("utf-8 path");
        other.keytool(&["export", "-o", b]);
        self.keytool(&["import", b, "--yes"]);
    }

    /// Pairs two instances both ways (export / import on each side).
    pub fn pair(a: &Instance, b: &Instance) {
        a.trust(b);
        b.trust(a);
    }

    /// Starts `orgsyncd` and waits until `orgsync status` answers.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// [`Instance::start`] with extra environment variables for the daemon
    /// (e.g. `ORGSYNC_CLOCK_OFFSET_SECS` to shift the governance clock).
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.daemon.0.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log");
        writeln!(log, "===== start #{} =====", self.starts).expect("write log");
        let child = Command::new(bin("orgsyncd"))
            .arg("--dir")
            .arg(&self.dir)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("ORGSYNC_DIR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn orgsyncd");
        self.daemon = Guard(Some(child));
        let name = self.name.clone();
        wait_for(&format!("{name}'s daemon to answer"), START_TIMEOUT, || {
            if let Some(child) = self.daemon.0.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{name}'s orgsyncd exited early ({status}):\n{}",
                        self.log_text()
                    );
                }
            }
            self.cli(&["status", "--json"])
                .status
                .success()
                .then_some(())
        });
    }

    /// Whether the daemon was started and not stopped since.
    pub fn is_running(&self) -> bool {
        self.daemon.0.is_some()
    }

    /// Stops the daemon with SIGTERM; asserts it exits cleanly and in time.
    pub fn stop(&mut self) {
        let status = self.daemon.terminate(Duration::from_secs(30));
        match status {
            Some(s) => assert!(
                s.success(),
                "{}'s orgsyncd exited with {s}:\n{}",
                self.name,
                self.log_tail()
            ),
            None => panic!(
                "{}'s orgsyncd did not stop within 30 s of SIGTERM",
                self.name
            ),
        }
    }

    /// Sends SIGTERM to the daemons of `instances` all at once and waits
    /// for every one to exit, polling them together; asserts each exits
    /// successfully within `limit` (with its log otherwise) and returns how
    /// long each took, from the signal to its exit being seen (10 ms
    /// resolution), by name.
    pub fn stop_all(instances: &mut [&mut Instance], limit: Duration) -> Vec<(String, Duration)> {
        let sent = Instant::now();
        for i in instances.iter() {
            assert!(i.daemon.0.is_some(), "{} is not running", i.name);
            i.daemon.sigterm();
        }
        let mut took: Vec<Option<Duration>> = vec![None; instances.len()];
        loop {
            for (i, t) in instances.iter_mut().zip(took.iter_mut()) {
                if t.is_some() {
                    continue;
                }
                if let Some(status) = i.daemon.try_exited() {
                    *t = Some(sent.elapsed());
                    assert!(
                        status.success(),
                        "{}'s orgsyncd exited with {status} on SIGTERM:\n{}",
                        i.name,
                        i.log_tail()
                    );
                }
            }
            if took.iter().all(Option::is_some) {
                break;
            }
            if sent.elapsed() > limit {
                let late: Vec<&str> = instances
                    .iter()
                    .zip(&took)
                    .filter(|(_, t)| t.is_none())
                    .map(|(i, _)| i.name.as_str())
                    .collect();
                let first = instances
                    .iter()
                    .zip(&took)
                    .find(|(_, t)| t.is_none())
                    .map(|(i, _)| i.log_tail())
                    .unwrap_or_default();
                panic!(
                    "still running {limit:?} after SIGTERM: {late:?}; the first one's log:\n{first}"
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        instances
            .iter()
            .zip(took)
            .map(|(i, t)| (i.name.clone(), t.unwrap_or_default()))
            .collect()
    }

    /// Kills the daemon with SIGKILL (a crash).
    pub fn kill9(&mut self) {
        assert!(self.daemon.0.is_some(), "{} is not running", self.name);
        self.daemon.kill9();
    }

    /// The daemon's log so far (every start).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 60 lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Runs `orgsync --dir DIR ARGS`.
    pub fn cli(&self, args: &[&str]) -> Output {
        run(Command::new(bin("orgsync"))
            .arg("--dir")
            .arg(&self.dir)
            .args(args)
            .env_remove("ORGSYNC_DIR"))
    }

    /// Runs `orgsync --dir DIR ARGS`, asserting success; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{}: orgsync {args:?} failed ({}): {}\n--- daemon log ---\n{}",
            self.name,
            out.status,
            stderr(&out),
            self.log_tail()
        );
        stdout(&out)
    }

    /// Runs a read command with `--json` and parses its output.
    pub fn cli_json(&self, args: &[&str]) -> Json {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.cli_ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("orgsync {args:?} --json: {e}: {text}"))
    }

    /// Creates an object with `orgsync put KIND ARGS`; returns its id.
    pub fn put(&self, kind: &str, args: &[&str]) -> String {
        let mut all = vec!["put", kind];
        all.extend_from_slice(args);
        self.cli_ok(&all).trim().to_string()
    }

    /// `orgsync status --json`.
    pub fn status(&self) -> Json {
        self.cli_json(&["status"])
    }

    /// The local log head.
    pub fn log_head(&self) -> u64 {
        self.status()["log_head"].as_u64().expect("log_head")
    }

    /// From `status`: how much of our log `partner` has acknowledged
    /// (log head minus its `not_acked`).
    pub fn acked_by(&self, partner: &str) -> u64 {
        let s = self.status();
        acked_in(&s, partner)
    }

    /// `orgsync wait-synced --timeout SECS s`, asserting success.
    pub fn wait_synced(&self, timeout: Duration) {
        self.cli_ok(&[
            "wait-synced",
            "--timeout",
            &format!("{}s", timeout.as_secs()),
        ]);
    }

    /// Every object (`orgsync list --json`).
    pub fn objects(&self) -> Vec<Json> {
        match self.cli_json(&["list"]) {
            Json::Array(v) => v,
            other => panic!("list --json gave {other}"),
        }
    }

    /// The number of objects and a BLAKE3 digest of all of them (sorted by
    /// id, keys sorted), for convergence checks.
    pub fn digest(&self) -> (usize, String) {
        digest_of(&self.objects())
    }

    /// Writes a file into the drop folder the way a careful writer does:
    /// under a dotted temporary name, then renamed into place.
    pub fn drop_file(&self, name: &str, content: &[u8]) {
        let import = self.import_dir();
        std::fs::create_dir_all(&import).expect("import dir");
        let tmp = import.join(format!(".{name}.writing"));
        std::fs::write(&tmp, content).expect("write drop file");
        std::fs::rename(&tmp, import.join(name)).expect("rename drop file");
    }

    /// `DIR/import`.
    pub fn import_dir(&self) -> PathBuf {
        self.dir.join("import")
    }

    /// Waits until drop file `name` has been moved to `done/` or `failed/`;
    /// returns which.
    pub fn import_outcome(&self, name: &str, timeout: Duration) -> &'static str {
        let import = self.import_dir();
        wait_for(
            &format!("{name} to be ingested by {}", self.name),
            timeout,
            || {
                if import.join("done").join(name).exists() {
                    Some("done")
                } else if import.join("failed").join(name).exists() {
                    Some("failed")
                } else {
                    None
                }
            },
        )
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.daemon.kill9();
        if std::thread::panicking() {
            eprintln!(
                "===== {}'s orgsyncd log ({}) =====\n{}",
                self.name,
                self.dir.display(),
                self.log_tail()
            );
        }
    }
}

/// The value of counter or gauge `name` in Prometheus text (0 when absent).
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

impl Instance {
    /// The daemon's metric `name` (from `orgsync metrics`; 0 when absent).
    pub fn metric(&self, name: &str) -> u64 {
        metric(&self.cli_ok(&["metrics"]), name)
    }
}

/// Acknowledged count for `partner` in a `status --json` answer.
pub fn acked_in(status: &Json, partner: &str) -> u64 {
    let head = status["log_head"].as_u64().expect("log_head");
    let p = status["partners"]
        .as_array()
        .expect("partners")
        .iter()
        .find(|p| p["name"] == partner)
        .unwrap_or_else(|| panic!("no partner {partner} in {status}"));
    head - p["not_acked"].as_u64().expect("not_acked")
}

/// A JSON value with object keys sorted, as compact text.
pub fn canonical(v: &Json) -> String {
    orgsync_daemon::backup::canonical(v)
}

/// Count and BLAKE3 digest of a set of objects, independent of order (the
/// same digest a backup's manifest records).
pub fn digest_of(objects: &[Json]) -> (usize, String) {
    orgsync_daemon::backup::digest_json(objects)
}

/// Custom field `name` of every object, as text (objects without it skipped).
pub fn custom_values(objects: &[Json], name: &str) -> Vec<String> {
    objects
        .iter()
        .filter_map(|o| o["custom"].get(name))
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .collect()
}

/// A running `orgsync watch --json`: its events, one JSON value a line,
/// read on a thread; the process is killed when this is dropped.
pub struct Watch {
    _child: Guard,
    rx: std::sync::mpsc::Receiver<Json>,
}

impl Watch {
    /// The next event, or a panic naming `what` after `timeout`.
    pub fn next(&self, what: &str, timeout: Duration) -> Json {
        self.rx.recv_timeout(timeout).unwrap_or_else(|e| {
            panic!("no event from orgsync watch ({what}) within {timeout:?}: {e}")
        })
    }
}

impl Instance {
    /// Starts `orgsync watch --json` (with `--after SEQ` when given).
    pub fn watch(&self, after: Option<u64>) -> Watch {
        use std::io::BufRead;
        let mut cmd = Command::new(bin("orgsync"));
        cmd.arg("--dir").arg(&self.dir).args(["watch", "--json"]);
        if let Some(seq) = after {
            cmd.args(["--after", &seq.to_string()]);
        }
        let mut child = cmd
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
                let v: Json = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("watch printed a non-JSON line {line:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Watch {
            _child: Guard(Some(child)),
            rx,
        }
    }

    /// The ids of local log entries `1..=head`, in log order, read from
    /// `orgsync watch --after 0`.
    pub fn log_ids(&self, head: u64) -> Vec<String> {
        let watch = self.watch(Some(0));
        let mut ids = Vec::with_capacity(head as usize);
        while (ids.len() as u64) < head {
            let ev = watch.next("replay of the local log", Duration::from_secs(60));
            let seq = ev["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("replayed event without seq: {ev}"));
            assert_eq!(seq, ids.len() as u64 + 1, "log replay out of order: {ev}");
            ids.push(ev["id"].as_str().expect("event id").to_string());
        }
        ids
    }
}

/// NDJSON of `n` contacts numbered `from..from+n` in custom field `n`
/// (with a `batch` custom field), one `POST /v1/objects` body a line.
pub fn contacts_ndjson(batch: &str, from: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 120);
    for i in from..from + n {
        let line = serde_json::json!({
            "kind": "contact",
            "fields": {"first_name": format!("Person {i}"), "email": format!("p{i}@example.org")},
            "custom": {"n": i.to_string(), "batch": batch},
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}
