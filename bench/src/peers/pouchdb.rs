//! PouchDB (LevelDB adapter) served by express-pouchdb: two servers on
//! loopback, PouchDB's live replication A -> B in a third process, and the
//! workload of `bench/peers/load.js` (the same 200,000 records of 262 B as
//! orgsync's scenario 1; single changes timed to B's `_changes` feed as in
//! scenario 2).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::child::{wait_for, Proc};

/// The replicator's `batch_size`: the writer's batch, as orgsync's
/// scenario 1 writes 1,000 at a time (PouchDB's default of 100 halves its
/// rate).
pub const BATCH_SIZE: u32 = 1_000;

/// What is missing to measure PouchDB, if anything.
pub fn missing(scripts: &Path) -> Option<String> {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("no `node` in PATH".into());
    }
    for package in ["pouchdb", "express-pouchdb", "express"] {
        let manifest = scripts
            .join("node_modules")
            .join(package)
            .join("package.json");
        if !manifest.exists() {
            return Some(format!("no {}", manifest.display()));
        }
    }
    None
}

/// The installed versions, e.g. "PouchDB 9.0.0 + express-pouchdb 4.2.0".
pub fn versions(scripts: &Path) -> Result<String> {
    let version = |package: &str| -> Result<String> {
        let path = scripts
            .join("node_modules")
            .join(package)
            .join("package.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let manifest: serde_json::Value = serde_json::from_str(&text)?;
        manifest["version"]
            .as_str()
            .map(String::from)
            .with_context(|| format!("no version in {}", path.display()))
    };
    Ok(format!(
        "PouchDB {} + express-pouchdb {}",
        version("pouchdb")?,
        version("express-pouchdb")?
    ))
}

/// What `load.js` prints.
#[derive(Deserialize)]
pub struct Measured {
    /// Bytes of JSON per record.
    pub record_len: usize,
    /// Seconds the writes to A took.
    pub write_secs: f64,
    /// Seconds from the first write on A until B held every record.
    pub secs: f64,
    /// Single-change latencies, write on A to B's `_changes` feed (ms).
    pub latency_ms: Vec<f64>,
}

/// Runs the workload: `records` contacts, then `samples` single changes
/// after `warmup` untimed ones. Every process is stopped on return.
pub fn measure(
    scripts: &Path,
    root: &Path,
    records: u64,
    samples: usize,
    warmup: usize,
    deadline: Instant,
) -> Result<Measured> {
    let mut a = server(scripts, root, "A")?;
    let mut b = server(scripts, root, "B")?;
    let port_a = server_port(&mut a, root, "A", deadline)?;
    let port_b = server_port(&mut b, root, "B", deadline)?;
    let url_a = format!("http://127.0.0.1:{port_a}/bench");
    let url_b = format!("http://127.0.0.1:{port_b}/bench");

    let log = root.join("replicate.log");
    let mut cmd = Command::new("node");
    cmd.arg(scripts.join("replicate.js"))
        .arg(&url_a)
        .arg(&url_b)
        .arg(BATCH_SIZE.to_string())
        .current_dir(root);
    let mut replicator = Proc::spawn("PouchDB replicator", cmd, &log, false)?;
    wait_for("PouchDB's replication A -> B to start", deadline, || {
        replicator.check_running()?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        Ok(text.contains("replicating").then_some(()))
    })?;

    let out = root.join("load.json");
    let mut cmd = Command::new("node");
    cmd.arg(scripts.join("load.js"))
        .arg(&url_a)
        .arg(&url_b)
        .arg(records.to_string())
        .arg(samples.to_string())
        .arg(warmup.to_string())
        .current_dir(root);
    // Its progress lines go to our stderr, so a deadline names its step.
    let mut load = Proc::spawn("PouchDB workload (load.js)", cmd, &out, true)?;
    let step = format!("PouchDB: {records} contacts and {samples} single changes A -> B");
    // The wait also notices a replicator or server that died.
    let status = wait_for(&step, deadline, || {
        for p in [&mut replicator, &mut a, &mut b] {
            p.check_running()?;
        }
        load.try_wait()
    })?;
    if !status.success() {
        bail!("load.js failed ({status}); its error is above on stderr");
    }
    let text = std::fs::read_to_string(&out)?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("load.js printed no result: {text:?}"))?;
    let measured: Measured = serde_json::from_str(line).context("load.js's result")?;
    if measured.latency_ms.len() != samples || measured.secs <= 0.0 {
        bail!("load.js's result is incomplete: {line}");
    }
    Ok(measured)
}

/// Starts `node server.js root/name`.
fn server(scripts: &Path, root: &Path, name: &str) -> Result<Proc> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    let mut cmd = Command::new("node");
    cmd.arg(scripts.join("server.js"))
        .arg(&dir)
        .current_dir(&dir);
    Proc::spawn(
        &format!("PouchDB server {name}"),
        cmd,
        &root.join(format!("server-{name}.log")),
        false,
    )
}

/// The port server `name` listens on, once it accepts connections.
fn server_port(p: &mut Proc, root: &Path, name: &str, deadline: Instant) -> Result<u16> {
    let file = root.join(name).join("port");
    let deadline = deadline.min(Instant::now() + Duration::from_secs(60));
    wait_for(
        &format!("PouchDB server {name} to listen"),
        deadline,
        || {
            p.check_running()?;
            match std::fs::read_to_string(&file) {
                Ok(s) => Ok(Some(s.trim().parse().with_context(|| {
                    format!("{} holds {s:?}, not a port", file.display())
                })?)),
                Err(_) => Ok(None),
            }
        },
    )
}
