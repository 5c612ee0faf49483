//! Daemons as separate `orgsyncd` processes (the real binary), for the
//! scenarios that measure one daemon's memory: each process's RSS is read
//! from `/proc/<pid>/status`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use orgsync_daemon::client::Client;

/// The directory holding `orgsyncd` and `orgsync` built with the bench's
/// own profile. `ORGSYNC_BIN_DIR` overrides; otherwise the bench's own
/// target directory, building the two binaries there first (`cargo build
/// -p orgsync-daemon --bins`, a no-op when they are up to date) so that
/// `cargo run --release -p orgsync-bench` alone is enough.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ORGSYNC_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("bench binary has no directory")?;
    // Test harnesses run from target/<profile>/deps.
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        // Not run through cargo: use what is there.
        if dir.join("orgsyncd").exists() && dir.join("orgsync").exists() {
            return Ok(dir.to_path_buf());
        }
        bail!(
            "no orgsyncd next to {}: run the bench with `cargo run --release -p orgsync-bench`, or set ORGSYNC_BIN_DIR",
            exe.display()
        );
    };
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "orgsync-daemon", "--bins"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let status = cmd
        .env("CARGO_TARGET_DIR", dir.parent().context("no target dir")?)
        .status()
        .context("running cargo to build orgsyncd")?;
    if !status.success() {
        bail!("cargo build -p orgsync-daemon --bins failed ({status})");
    }
    Ok(dir.to_path_buf())
}

/// Gives the instance in `dir` another sled cache than orgsync.toml's
/// default when `ORGSYNC_BENCH_CACHE_MB` is set (the memory/speed
/// trade-off, e.g. `ORGSYNC_BENCH_CACHE_MB=16`): every instance the bench
/// starts, in this process or as `orgsyncd`, reads it from there.
pub(crate) fn cache_override(dir: &Path) -> Result<()> {
    let Ok(mb) = std::env::var("ORGSYNC_BENCH_CACHE_MB") else {
        return Ok(());
    };
    let mb: u64 = mb
        .parse()
        .with_context(|| format!("ORGSYNC_BENCH_CACHE_MB={mb:?} is not a number of MiB"))?;
    let p = dir.join("orgsync.toml");
    let t: String = std::fs::read_to_string(&p)?
        .lines()
        .filter(|l| !l.trim_start().starts_with("cache_capacity_mb"))
        .map(|l| format!("{l}\n"))
        .collect();
    let t = if t.contains("[store]\n") {
        t.replacen(
            "[store]\n",
            &format!("[store]\ncache_capacity_mb = {mb}\n"),
            1,
        )
    } else {
        format!("{t}\n[store]\ncache_capacity_mb = {mb}\n")
    };
    std::fs::write(&p, t)?;
    Ok(())
}

/// One running `orgsyncd` process. Killed on drop if not stopped.
pub struct Daemon {
    child: Child,
    /// Its instance directory.
    pub dir: PathBuf,
}

impl Daemon {
    /// Starts `orgsyncd --dir dir` (log to `dir/orgsyncd.log`) and waits
    /// until its local API answers.
    pub async fn spawn(bins: &Path, dir: &Path) -> Result<Daemon> {
        cache_override(dir)?;
        let log = std::fs::File::create(dir.join("orgsyncd.log"))?;
        let child = Command::new(bins.join("orgsyncd"))
            .arg("--dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting orgsyncd")?;
        let mut d = Daemon {
            child,
            dir: dir.to_path_buf(),
        };
        let client = Client::new(dir);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if client.status().await.is_ok() {
                return Ok(d);
            }
            if let Some(status) = d.child.try_wait()? {
                bail!("orgsyncd in {} exited: {status}", dir.display());
            }
            if Instant::now() > deadline {
                bail!("orgsyncd in {} did not answer in time", dir.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Current resident set size in bytes (`VmRSS`).
    pub fn rss(&self) -> u64 {
        status_kb(self.pid(), "VmRSS:") * 1024
    }

    /// Peak resident set size since start in bytes (`VmHWM`, kept by the
    /// kernel: no sampling gap).
    pub fn peak_rss(&self) -> u64 {
        status_kb(self.pid(), "VmHWM:") * 1024
    }

    /// SIGTERM, then waits (up to 60 s) for a clean exit.
    pub async fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("orgsyncd in {} did not stop", self.dir.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// Runs `orgsync --dir dir wait-synced --timeout <timeout>`, its progress
/// lines going to this process's stderr; errors unless it reports synced.
pub async fn wait_synced(bins: &Path, dir: &Path, timeout: Duration) -> Result<()> {
    let mut cmd = Command::new(bins.join("orgsync"));
    cmd.arg("--dir")
        .arg(dir)
        .arg("wait-synced")
        .arg("--timeout")
        .arg(format!("{}s", timeout.as_secs()))
        .stdin(Stdio::null());
    // wait-synced ends on its own at `timeout`.
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await?
        .context("running orgsync wait-synced")?;
    if !status.success() {
        bail!("orgsync wait-synced failed ({status})");
    }
    Ok(())
}
