//! Support for end-to-end tests that run the real binaries (`orgsyncd`,
//! `orgsync`, `orgsync-keytool`) on loopback in temporary directories.
//!
//! The binaries belong to other packages of the workspace, so Cargo does not
//! hand their paths to this crate's tests; [`bin`] builds them once (a no-op
//! when they are fresh) into the same target directory and profile as the
//! running test.

#![allow(dead_code)] // each test file uses a different part of this module

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
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "orgsync-daemon", "-p", "orgsync-keytool", "--bins"])
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

/// A loopback UDP port that was free a moment ago.
pub fn free_port() -> u16 {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    sock.local_addr().expect("local addr").port()
}

/// Polls `cond` every few milliseconds until it returns `Some`, or panics
/// with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command to completion, capturing its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("spawning a binary")
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
        let mut child = self.0.take()?;
        // std only sends SIGKILL; kill(1) sends the SIGTERM a sysadmin would.
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
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
