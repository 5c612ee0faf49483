//! The scenarios of issue 5, each against real daemons: two (or more)
//! whole orgsync instances started in this process (separate instance
//! directories, stores and QUIC endpoints talking over loopback).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use orgsync_daemon::api::attach_resume_file;
use orgsync_daemon::client::Client;
use orgsync_daemon::store::BlobState;
use orgsync_protocol::model::{FieldKey, Value};
use rand_core::{OsRng, RngCore};
use serde_json::json;

use crate::baseline::percentile;
use crate::cluster::{self, contact, pair, wait_applied, wait_connected, Node};
use crate::report::Row;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Two fresh paired instances, both started (with their API sockets if `api`)
/// and connected.
async fn started_pair(api: bool) -> Result<(tempfile::TempDir, Node, Node)> {
    let root = tempfile::tempdir()?;
    let mut a = Node::create(root.path(), "Acme")?;
    let mut b = Node::create(root.path(), "Globex")?;
    pair(&a, &b)?;
    a.start(api).await?;
    b.start(api).await?;
    wait_connected(&a, &b.org, CONNECT_TIMEOUT).await?;
    wait_connected(&b, &a.org, CONNECT_TIMEOUT).await?;
    Ok((root, a, b))
}

/// Writes `n` contacts on `node` in batches of `batch` (each durable on
/// return). Returns the log head after the last write.
async fn write_contacts(node: &Node, start: u64, n: u64, batch: u64) -> Result<u64> {
    let store = node.daemon().store();
    let mut i = start;
    while i < start + n {
        let k = batch.min(start + n - i);
        store.write((i..i + k).map(contact).collect()).await?;
        i += k;
    }
    Ok(store.log_head())
}

/// Scenario 1: sustained replication of 262-byte contacts A→B, durable on
/// B. A writes `n` contacts in batches of 1,000 while B receives; the clock
/// runs from A's first write until A's `acked_by_peer` cursor for B (only
/// moved after B has applied durably) reaches A's log head.
pub async fn replication(n: u64, sled_baseline: f64) -> Result<Vec<Row>> {
    let (_root, mut a, mut b) = started_pair(false).await?;
    let start = Instant::now();
    let head = write_contacts(&a, 0, n, 1_000).await?;
    let written = start.elapsed();
    let store = a.daemon().store().clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    while store.cursor(&b.org)?.acked_by_peer < head {
        if Instant::now() > deadline {
            bail!("B did not ack {head} changes in time");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    // B's own cursor says the same, durably.
    wait_applied(&b, &a.org, head, Duration::from_millis(1), CONNECT_TIMEOUT).await?;
    let len = cluster::logged_change_len(&a)?;
    eprintln!(
        "replication: {n} contacts ({len} B each as logged) written on A in {:.2} s, acked by B after {secs:.2} s",
        written.as_secs_f64()
    );
    a.stop().await;
    b.stop().await;
    let rate = n as f64 / secs;
    let pass = rate >= 0.6 * sled_baseline && rate >= 30_000.0;
    Ok(vec![
        Row::info(
            "1 replication: A's local write rate meanwhile",
            "objects/s",
            n as f64 / written.as_secs_f64(),
        ),
        Row {
            scenario: "1 replication A->B, durable on B".into(),
            metric: "objects/s".into(),
            value: rate,
            baseline: Some(sled_baseline),
            target: ">= 0.6x and >= 30000".into(),
            pass: Some(pass),
        },
    ])
}

/// Scenario 2: `n` changes one at a time through A's local API (HTTP over
/// the unix socket, a new connection per request as the CLI does), each
/// timed until B's API event stream (`GET /v1/events`) reports it. B emits
/// the event once the change is durable on B; A answers the POST once it
/// is durable on A.
pub async fn latency(n: usize, rtt_p50: f64, rtt_p99: f64) -> Result<Vec<Row>> {
    let (_root, mut a, mut b) = started_pair(true).await?;
    let client_a = Client::new(&a.dir);
    let client_b = Client::new(&b.dir);
    let mut events = client_b.events(None).await?;
    let mut samples = Vec::with_capacity(n);
    let warmup = 20;
    for i in 0..n + warmup {
        let t = Instant::now();
        let created = client_a
            .create(&json!({
                "kind": "contact",
                "fields": {
                    "first_name": format!("Latency{i:06}"),
                    "email": format!("latency{i:06}@example.org"),
                },
            }))
            .await?;
        let id = created["id"]
            .as_str()
            .context("no id in answer")?
            .to_string();
        loop {
            let ev = tokio::time::timeout(CONNECT_TIMEOUT, events.next())
                .await
                .context("no event from B")??
                .context("B's event stream ended")?;
            if ev["id"].as_str() == Some(id.as_str()) {
                break;
            }
        }
        if i >= warmup {
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    drop(events);
    a.stop().await;
    b.stop().await;
    let p50 = percentile(&mut samples, 0.50);
    let p99 = percentile(&mut samples, 0.99);
    let max = percentile(&mut samples, 1.0);
    Ok(vec![
        Row {
            scenario: "2 latency API write A -> event on B, p50".into(),
            metric: "ms".into(),
            value: p50,
            baseline: Some(rtt_p50 / 1e3),
            target: "<= 1 ms".into(),
            pass: Some(p50 <= 1.0),
        },
        Row {
            scenario: "2 latency API write A -> event on B, p99".into(),
            metric: "ms".into(),
            value: p99,
            baseline: Some(rtt_p99 / 1e3),
            target: "<= 5 ms".into(),
            pass: Some(p99 <= 5.0),
        },
        Row::info("2 latency API write A -> event on B, max", "ms", max),
    ])
}

/// Scenario 3: a résumé file of `size` bytes A→B. The file is stored in
/// A's blob directory first (not timed: that is the local attach); the
/// clock runs from writing the Resume object on A until B's blob index
/// says the content is complete (hash verified, fsynced, renamed).
pub async fn resume_file(size: usize, quinn_aead_mbps: f64) -> Result<Vec<Row>> {
    let (root, mut a, mut b) = started_pair(false).await?;
    let path = root.path().join("resume.pdf");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut chunk = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            OsRng.fill_bytes(&mut chunk);
            let n = left.min(chunk.len());
            f.write_all(&chunk[..n])?;
            left -= n;
        }
        f.flush()?;
    }
    let store_a = a.daemon().store().clone();
    let contact_edit = contact(42);
    let contact_id = contact_edit.id;
    store_a.write(vec![contact_edit]).await?;
    let edit = attach_resume_file(&store_a, contact_id, &path, None)
        .await
        .map_err(|e| anyhow::anyhow!("attach: {e}"))?;
    let hash = match edit
        .fields
        .iter()
        .find(|(k, _)| matches!(k, FieldKey::Std(name) if name == "hash"))
        .and_then(|(_, v)| v.clone())
    {
        Some(Value::Hash(h)) => h,
        _ => bail!("resume edit has no hash"),
    };
    std::fs::remove_file(&path)?;
    let store_b = b.daemon().store().clone();
    let start = Instant::now();
    store_a.write(vec![edit]).await?;
    let deadline = start + Duration::from_secs(600);
    loop {
        if let Some(e) = store_b.blob(&hash)? {
            if e.state == BlobState::Complete {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("résumé did not arrive in time");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let got = store_b.blob_files().size(&hash)?.unwrap_or(0);
    if got != size as u64 {
        bail!("B holds {got} bytes of a {size}-byte résumé");
    }
    a.stop().await;
    b.stop().await;
    let mbps = size as f64 / secs / 1e6;
    Ok(vec![Row {
        scenario: format!("3 resume file {} MiB A->B", size >> 20),
        metric: "MB/s".into(),
        value: mbps,
        baseline: Some(quinn_aead_mbps),
        target: ">= 0.7x".into(),
        pass: Some(mbps >= 0.7 * quinn_aead_mbps),
    }])
}

/// Samples this process's RSS every 50 ms until stopped; keeps the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(cluster::rss_bytes()));
        let thread = std::thread::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(cluster::rss_bytes(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        RssSampler { stop, peak, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed).max(cluster::rss_bytes())
    }
}

/// Scenarios 4 and 5: A holds `n` objects (written before B exists, not
/// timed); B is created, paired with A and started; the clock runs from
/// B's start until B has durably applied A's whole log. RSS of this
/// process (both daemons live in it) is sampled throughout; then, unless
/// `idle` is zero, both stay idle that long and RSS is read again.
pub async fn initial_sync(n: u64, idle: Duration) -> Result<Vec<Row>> {
    let root = tempfile::tempdir()?;
    let mut a = Node::create(root.path(), "Acme")?;
    let mut b = Node::create(root.path(), "Globex")?;
    a.start(false).await?;
    let t = Instant::now();
    let head = write_contacts(&a, 0, n, 10_000).await?;
    eprintln!(
        "initial-sync: {n} contacts written on A in {:.1} s; pairing a fresh B",
        t.elapsed().as_secs_f64()
    );
    pair(&a, &b)?;
    let rss_start = cluster::rss_bytes();
    let sampler = RssSampler::start();
    let start = Instant::now();
    b.start(false).await?;
    let mut last_print = Instant::now();
    let store_b = b.daemon().store().clone();
    loop {
        let applied = store_b.cursor(&a.org)?.applied_from_peer;
        if applied >= head {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "initial-sync: {applied}/{head} after {:.1} s",
                start.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        if start.elapsed() > Duration::from_secs(900) {
            bail!("initial sync not done after 900 s ({applied}/{head})");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let peak = sampler.finish();
    let rss_done = cluster::rss_bytes();
    let mut rows = vec![Row {
        scenario: format!("4 initial sync of {n} objects to a fresh partner"),
        metric: "s".into(),
        value: secs,
        baseline: None,
        target: if n >= 1_000_000 {
            "<= 30 s".into()
        } else {
            format!("<= {:.1} s (30 s per 1M)", 30.0 * n as f64 / 1e6)
        },
        pass: Some(secs <= 30.0 * (n as f64 / 1e6).max(1e-3)),
    }];
    rows.push(Row::info(
        "4 initial sync rate",
        "objects/s",
        n as f64 / secs,
    ));
    const MIB: f64 = 1024.0 * 1024.0;
    rows.push(Row {
        scenario: "5 memory: peak RSS during 4 (both daemons, one process)".into(),
        metric: "MiB".into(),
        value: peak as f64 / MIB,
        baseline: None,
        target: "<= 512 MiB".into(),
        pass: Some(peak as f64 <= 512.0 * MIB),
    });
    rows.push(Row::info(
        "5 memory: RSS when 4 began",
        "MiB",
        rss_start as f64 / MIB,
    ));
    rows.push(Row::info(
        "5 memory: RSS when 4 ended",
        "MiB",
        rss_done as f64 / MIB,
    ));
    if !idle.is_zero() {
        eprintln!("memory: idle for {} s...", idle.as_secs());
        tokio::time::sleep(idle).await;
        let rss_idle = cluster::rss_bytes();
        rows.push(Row {
            scenario: format!("5 memory: RSS after {} s idle", idle.as_secs()),
            metric: "MiB".into(),
            value: rss_idle as f64 / MIB,
            baseline: Some(rss_start as f64 / MIB),
            target: "<= 1.2x start".into(),
            pass: Some(rss_idle as f64 <= 1.2 * rss_start as f64),
        });
    }
    a.stop().await;
    b.stop().await;
    Ok(rows)
}
