//! The scenarios of issue 5, each against real daemons: two (or more)
//! whole orgsync instances started in this process (separate instance
//! directories, stores and QUIC endpoints talking over loopback).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use orgsync_daemon::api::attach_resume_file;
use orgsync_daemon::client::Client;
use orgsync_daemon::store::BlobState;
use orgsync_protocol::clock::Timestamp;
use orgsync_protocol::model::{
    Change, FieldKey, FieldState, InstanceId, OrgId, SequencedChange, Value, Version,
};
use rand_core::{OsRng, RngCore};
use serde_json::json;

use crate::baseline::percentile;
use crate::cluster::{self, contact, pair, wait_applied, wait_connected, Node};
use crate::cost;
use crate::keepalive::KeepAlive;
use crate::procs;
use crate::progress;
use crate::report::Row;

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Two fresh paired instances in `root`, not started.
pub(crate) fn paired(root: &std::path::Path) -> Result<(Node, Node)> {
    let a = Node::create(root, "Acme")?;
    let b = Node::create(root, "Globex")?;
    pair(&a, &b)?;
    Ok((a, b))
}

/// Starts both instances (with their API sockets if `api`) and waits until
/// they are connected.
pub(crate) async fn start_pair(a: &mut Node, b: &mut Node, api: bool) -> Result<()> {
    start_node(a, api).await?;
    start_node(b, api).await?;
    wait_connected(a, b, CONNECT_TIMEOUT).await?;
    wait_connected(b, a, CONNECT_TIMEOUT).await?;
    Ok(())
}

/// Starts `node`. On a restart, tasks of the stopped daemon may still hold
/// its store (sled's directory lock) for a moment: retries until a deadline.
async fn start_node(node: &mut Node, api: bool) -> Result<()> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match node.start(api).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("(start failed, retrying: {e:#})");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Two fresh paired instances, both started (with their API sockets if `api`) and
/// connected.
async fn started_pair(api: bool) -> Result<(tempfile::TempDir, Node, Node)> {
    let root = tempfile::tempdir()?;
    let (mut a, mut b) = paired(root.path())?;
    start_pair(&mut a, &mut b, api).await?;
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
///
/// Its cost rows (item 7 of issue 16) come first: the process's CPU
/// seconds (A and B together) and the UDP bytes of the partner connection
/// over the same interval, per change. The rate is the last row.
pub async fn replication(n: u64, sled_baseline: f64, sled_cpu: f64) -> Result<Vec<Row>> {
    let root = tempfile::tempdir()?;
    let (mut a, mut b) = paired(root.path())?;
    replication_on(&mut a, &mut b, n, sled_baseline, sled_cpu).await
}

/// Scenario 1 on two paired instances, not started yet.
pub(crate) async fn replication_on(
    a: &mut Node,
    b: &mut Node,
    n: u64,
    sled_baseline: f64,
    sled_cpu: f64,
) -> Result<Vec<Row>> {
    start_pair(a, b, false).await?;
    let cpu_before = cost::cpu_secs(None)?;
    let m = a.daemon().metrics().clone();
    let (tx_before, rx_before) = m.quic.totals();
    let payload_before = m.bytes_sent.load(std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    progress::waiting_for(format!("{} to write {n} contacts", a.name()));
    let head = write_contacts(a, 0, n, 1_000).await?;
    let written = start.elapsed();
    let store = a.daemon().store().clone();
    progress::waiting_for(format!("{} to acknowledge {head} changes", b.name()));
    let deadline = Instant::now() + Duration::from_secs(600);
    while store.cursor(&b.org)?.acked_by_peer < head {
        if Instant::now() > deadline {
            bail!("B did not ack {head} changes in time");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cost::cpu_secs(None)? - cpu_before;
    let (tx, rx) = m.quic.totals();
    let payload = m.bytes_sent.load(std::sync::atomic::Ordering::Relaxed) - payload_before;
    let per = |bytes: u64| bytes as f64 / n.max(1) as f64;
    let cost_rows = vec![
        cost::cpu_row(
            "1 cost: CPU per 100k changes, A and B (one process)".into(),
            cost::per_100k(cpu, n),
            sled_cpu,
        ),
        cost::wire_row(
            "1 cost: UDP bytes per change A->B".into(),
            per(tx - tx_before),
        ),
        Row::info(
            "1 cost: UDP bytes per change B->A (acks)",
            "B/change",
            per(rx - rx_before),
        ),
        cost::wire_row(
            "1 cost: sealed payload bytes per change A->B".into(),
            per(payload),
        ),
    ];
    eprintln!(
        "replication cost: {:.2} CPU s per 100k changes (both sides), {:.0} UDP B/change A->B, {:.0} B->A, {:.0} payload B/change",
        cost::per_100k(cpu, n),
        per(tx - tx_before),
        per(rx - rx_before),
        per(payload)
    );
    // B's own cursor says the same, durably.
    wait_applied(b, &a.org, head, Duration::from_millis(1), CONNECT_TIMEOUT).await?;
    let len = cluster::logged_change_len(a)?;
    eprintln!(
        "replication: {n} contacts ({len} B each as logged) written on A in {:.2} s, acked by B after {secs:.2} s",
        written.as_secs_f64()
    );
    a.stop().await?;
    b.stop().await?;
    let rate = n as f64 / secs;
    let pass = rate >= 0.6 * sled_baseline && rate >= 30_000.0;
    let mut rows = cost_rows;
    rows.extend([
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
    ]);
    Ok(rows)
}

/// Scenario 2: `n` changes one at a time through A's local API (HTTP over
/// the unix socket, one keep-alive connection as an application holds it), each
/// timed until B's API event stream (`GET /v1/events`) reports it. B emits
/// the event once the change is durable on B; A answers the POST once it
/// is durable on A.
pub async fn latency(n: usize, rtt_p50: f64, rtt_p99: f64) -> Result<Vec<Row>> {
    let root = tempfile::tempdir()?;
    let (mut a, mut b) = paired(root.path())?;
    latency_on(&mut a, &mut b, n, rtt_p50, rtt_p99).await
}

/// Scenario 2 on two paired instances, not started yet.
async fn latency_on(
    a: &mut Node,
    b: &mut Node,
    n: usize,
    rtt_p50: f64,
    rtt_p99: f64,
) -> Result<Vec<Row>> {
    start_pair(a, b, true).await?;
    let mut client_a = KeepAlive::connect(&a.dir).await?;
    let client_b = Client::new(&b.dir);
    let mut events = client_b.events(None).await?;
    let mut samples = Vec::with_capacity(n);
    let warmup = 20;
    progress::waiting_for(format!(
        "{n} changes through {}'s API to appear in {}'s event stream",
        a.name(),
        b.name()
    ));
    for i in 0..n + warmup {
        let t = Instant::now();
        let created = client_a
            .post(
                "/v1/objects",
                &json!({
                    "kind": "contact",
                    "fields": {
                        "first_name": format!("Latency{i:06}"),
                        "email": format!("latency{i:06}@example.org"),
                    },
                }),
            )
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
    a.stop().await?;
    b.stop().await?;
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
    progress::waiting_for(format!("the résumé to be complete on {}", b.name()));
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
    a.stop().await?;
    b.stop().await?;
    let mbps = size as f64 / secs / 1e6;
    Ok(vec![Row {
        scenario: format!("3 resume file {} MiB A->B", size >> 20),
        metric: "MB/s".into(),
        value: mbps,
        baseline: Some(quinn_aead_mbps),
        target: ">= 0.8x".into(),
        pass: Some(mbps >= 0.8 * quinn_aead_mbps),
    }])
}

/// The RSS of both processes, for the progress line (the peaks come from
/// the kernel's `VmHWM`).
fn rss_line(a: &procs::Daemon, b: &procs::Daemon) -> String {
    format!(
        "RSS A {:.0} MiB, B {:.0} MiB",
        a.rss() as f64 / MIB,
        b.rss() as f64 / MIB
    )
}

const MIB: f64 = 1024.0 * 1024.0;

/// Writes `n` contacts straight into the store of the (stopped) instance
/// in `dir`, in batches of 10,000.
async fn prefill_log(dir: &std::path::Path, n: u64) -> Result<u64> {
    let store = cluster::open_store(dir)?;
    let mut i = 0;
    while i < n {
        let k = 10_000.min(n - i);
        store.write((i..i + k).map(contact).collect()).await?;
        i += k;
    }
    let head = store.log_head();
    // Dropping the last handle flushes and releases sled's lock.
    drop(store);
    Ok(head)
}

/// Scenarios 4 and 5, with each daemon a separate `orgsyncd` process and
/// default config: A's store gets `n` contacts (written before any daemon
/// starts, not timed); A is started; B is created, paired and started; the
/// clock runs from B's start until `orgsync wait-synced` on A (progress on
/// stderr) reports that B acknowledged everything (B acks only what it
/// applied durably). Peak RSS is each process's `VmHWM`; then, unless
/// `idle` is zero, both stay idle that long and RSS is read again.
///
/// Cost rows (issue 16 item 7): each process's CPU seconds from B's start
/// until synced, per 100,000 changes, and the UDP bytes of the partner
/// connection per change (A's `/metrics`).
pub async fn initial_sync(n: u64, idle: Duration, sled: f64, sled_cpu: f64) -> Result<Vec<Row>> {
    let bins = procs::bin_dir()?;
    let root = tempfile::tempdir()?;
    let a = Node::create(root.path(), "Acme")?;
    let b = Node::create(root.path(), "Globex")?;
    let t = Instant::now();
    progress::waiting_for(format!("{n} contacts to be written into A's store"));
    let head = prefill_log(&a.dir, n).await?;
    eprintln!(
        "initial-sync: {n} contacts written into A's store in {:.1} s; starting orgsyncd A, pairing a fresh B",
        t.elapsed().as_secs_f64()
    );
    pair(&a, &b)?;
    progress::waiting_for("orgsyncd A and B to start");
    let pa = procs::Daemon::spawn(&bins, &a.dir).await?;
    let start = Instant::now();
    let pb = procs::Daemon::spawn(&bins, &b.dir).await?;
    let (a_start, b_start) = (pa.rss(), pb.rss());
    let (a_cpu0, b_cpu0) = (
        cost::cpu_secs(Some(pa.pid()))?,
        cost::cpu_secs(Some(pb.pid()))?,
    );
    progress::waiting_for(format!(
        "orgsyncd B to hold A's {head} changes (wait-synced)"
    ));
    procs::wait_synced(&bins, &a.dir, Duration::from_secs(900)).await?;
    let secs = start.elapsed().as_secs_f64();
    let (a_cpu, b_cpu) = (
        cost::cpu_secs(Some(pa.pid()))? - a_cpu0,
        cost::cpu_secs(Some(pb.pid()))? - b_cpu0,
    );
    let metrics_a = Client::new(&a.dir).get_text("/metrics").await?;
    let quic_tx = cost::counter(&metrics_a, "orgsync_quic_bytes_sent_total")?;
    let quic_rx = cost::counter(&metrics_a, "orgsync_quic_bytes_received_total")?;
    let per = |bytes: u64| bytes as f64 / n.max(1) as f64;
    eprintln!(
        "initial-sync cost: A {:.2} and B {:.2} CPU s per 100k changes; {:.0} UDP B/change A->B, {:.0} B->A",
        cost::per_100k(a_cpu, n),
        cost::per_100k(b_cpu, n),
        per(quic_tx),
        per(quic_rx)
    );
    let applied = Client::new(&b.dir).status().await?;
    eprintln!(
        "initial-sync: done in {secs:.1} s (head {head}); {}; B status: {}",
        rss_line(&pa, &pb),
        applied["partners"]
    );
    let (a_peak, b_peak) = (pa.peak_rss(), pb.peak_rss());
    let (a_done, b_done) = (pa.rss(), pb.rss());
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
    // Issue 16: the rate against raw sled group commit of the same run.
    let rate = n as f64 / secs;
    rows.push(Row {
        scenario: "4 initial sync rate".into(),
        metric: "objects/s".into(),
        value: rate,
        baseline: Some(sled),
        target: ">= 0.8x".into(),
        pass: Some(rate >= 0.8 * sled),
    });
    rows.extend([
        cost::cpu_row(
            "4 cost: CPU per 100k changes, orgsyncd A (sender)".into(),
            cost::per_100k(a_cpu, n),
            sled_cpu,
        ),
        cost::cpu_row(
            "4 cost: CPU per 100k changes, orgsyncd B (receiver)".into(),
            cost::per_100k(b_cpu, n),
            sled_cpu,
        ),
        cost::wire_row("4 cost: UDP bytes per change A->B".into(), per(quic_tx)),
        Row::info(
            "4 cost: UDP bytes per change B->A (acks)",
            "B/change",
            per(quic_rx),
        ),
    ]);
    for (who, peak) in [("A (sender)", a_peak), ("B (receiver)", b_peak)] {
        rows.push(Row {
            scenario: format!("5 memory: peak RSS of orgsyncd {who} during 4"),
            metric: "MiB".into(),
            value: peak as f64 / MIB,
            baseline: None,
            target: "<= 512 MiB".into(),
            pass: Some(peak as f64 <= 512.0 * MIB),
        });
    }
    for (who, begin, done) in [("A", a_start, a_done), ("B", b_start, b_done)] {
        rows.push(Row::info(
            &format!("5 memory: RSS of {who} when 4 began"),
            "MiB",
            begin as f64 / MIB,
        ));
        rows.push(Row::info(
            &format!("5 memory: RSS of {who} when 4 ended"),
            "MiB",
            done as f64 / MIB,
        ));
    }
    if !idle.is_zero() {
        eprintln!("memory: idle for {} s...", idle.as_secs());
        progress::waiting_for(format!("the idle {} s to pass", idle.as_secs()));
        // Before the daemons' idle trim (after 10 s without activity),
        // what an idle daemon kept without one.
        let early = Duration::from_secs(5).min(idle / 2);
        tokio::time::sleep(early).await;
        for (who, d, begin) in [("A", &pa, a_start), ("B", &pb, b_start)] {
            let now = d.rss();
            rows.push(Row {
                scenario: format!(
                    "5 memory: RSS of {who} after {} s idle (before the idle trim)",
                    early.as_secs()
                ),
                metric: "MiB".into(),
                value: now as f64 / MIB,
                baseline: Some(begin as f64 / MIB),
                target: "-".into(),
                pass: None,
            });
        }
        tokio::time::sleep(idle - early).await;
        for (who, d) in [("A", &pa), ("B", &pb)] {
            let text = Client::new(&d.dir).get_text("/metrics").await?;
            let trims = cost::counter(&text, "orgsync_idle_trims_total")?;
            rows.push(Row::info(
                &format!("5 memory: idle trims of {who} during the idle time"),
                "trims",
                trims as f64,
            ));
        }
        for (who, d, begin) in [("A", &pa, a_start), ("B", &pb, b_start)] {
            let now = d.rss();
            rows.push(Row {
                scenario: format!("5 memory: RSS of {who} after {} s idle", idle.as_secs()),
                metric: "MiB".into(),
                value: now as f64 / MIB,
                baseline: Some(begin as f64 / MIB),
                target: "<= 1.2x start".into(),
                pass: Some(now as f64 <= 1.2 * begin as f64),
            });
        }
    }
    progress::waiting_for("orgsyncd A and B to stop (SIGTERM)");
    pa.stop().await?;
    pb.stop().await?;
    Ok(rows)
}

/// Scenario 6: A writes `n` contacts (batches of 1,000) while `partners`
/// fresh partners, each a whole instance in this process, receive them.
/// Aggregate throughput is `n * partners` over the time until every
/// partner has acknowledged A's head; the slowest partner's lag is how long
/// after A's last write it finished, and its largest backlog seen.
pub async fn fan_out(n: u64, partners: usize) -> Result<Vec<Row>> {
    let root = tempfile::tempdir()?;
    let mut a = Node::create(root.path(), "Hub")?;
    let mut others = Vec::with_capacity(partners);
    for i in 0..partners {
        let b = Node::create(root.path(), &format!("Partner{i:02}"))?;
        pair(&a, &b)?;
        others.push(b);
    }
    a.start(false).await?;
    for b in &mut others {
        b.start(false).await?;
    }
    for b in &others {
        wait_connected(&a, b, CONNECT_TIMEOUT).await?;
    }
    progress::waiting_for(format!(
        "{partners} partners to acknowledge {n} contacts from the hub"
    ));
    let store = a.daemon().store().clone();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut i = 0;
            while i < n {
                let k = 1_000.min(n - i);
                store.write((i..i + k).map(contact).collect()).await?;
                i += k;
            }
            Ok::<_, anyhow::Error>(Instant::now())
        })
    };
    let start = Instant::now();
    let mut max_backlog = 0u64;
    let mut done_at = vec![None; partners];
    let deadline = start + Duration::from_secs(900);
    let mut written_at = None;
    loop {
        let head = store.log_head();
        if written_at.is_none() && writer.is_finished() {
            written_at = Some(head);
        }
        for (b, done) in others.iter().zip(done_at.iter_mut()) {
            let acked = store.cursor(&b.org)?.acked_by_peer;
            max_backlog = max_backlog.max(head.saturating_sub(acked));
            if done.is_none() && written_at.is_some() && acked >= head {
                *done = Some(Instant::now());
            }
        }
        if done_at.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() > deadline {
            bail!("fan-out: partners did not catch up in time");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let wrote_end = writer.await??;
    // Every entry is `Some` (the loop above exits only then).
    let last = done_at.iter().flatten().max().copied().unwrap_or(wrote_end);
    let secs = last.duration_since(start).as_secs_f64();
    let lag = last.saturating_duration_since(wrote_end).as_secs_f64() * 1e3;
    eprintln!("fan-out: {n} contacts to {partners} partners in {secs:.2} s");
    // Partners first: each closes a live session (quick), where after the
    // hub each would first give up dialing it.
    for mut b in others {
        b.stop().await?;
    }
    a.stop().await?;
    Ok(vec![
        Row::info(
            &format!("6 fan-out A -> {partners} partners, aggregate"),
            "objects/s",
            (n * partners as u64) as f64 / secs,
        ),
        Row::info(
            "6 fan-out: A's local write rate meanwhile",
            "objects/s",
            n as f64 / wrote_end.duration_since(start).as_secs_f64(),
        ),
        Row::info(
            "6 fan-out: slowest partner done after A's last write",
            "ms",
            lag,
        ),
        Row::info(
            "6 fan-out: largest backlog of any partner",
            "changes",
            max_backlog as f64,
        ),
    ])
}

/// A stored contact as a partner's change (versions in the past), for
/// filling a store without going through its log.
fn prefill_change(i: u64) -> SequencedChange {
    let edit = contact(10_000_000 + i);
    let version = Version {
        hlc: Timestamp::new(1_600_000_000_000 + i / 16, (i % 16) as u16),
        instance: InstanceId(7),
    };
    SequencedChange {
        seq: i + 1,
        change: Change {
            id: edit.id,
            kind: edit.kind,
            fields: edit
                .fields
                .into_iter()
                .map(|(k, value)| (k, FieldState { version, value }))
                .collect(),
            deleted: None,
        },
    }
}

/// Puts `n` objects in the store of the (stopped) instance in `dir`, as if
/// received from an unpaired partner: they are in the store, not in the
/// log, so nothing of them is sent during the measurement.
async fn prefill_objects(dir: &std::path::Path, n: u64) -> Result<()> {
    let store = cluster::open_store(dir)?;
    let source = OrgId([0xEE; 32]);
    let mut i = 0;
    while i < n {
        let k = 10_000.min(n - i);
        let batch: Vec<_> = (i..i + k).map(prefill_change).collect();
        store.apply_from_partner(source, &batch, i + k).await?;
        i += k;
    }
    drop(store);
    Ok(())
}

/// Scenario 7: scenarios 1 and 2 on a fresh pair whose two stores already
/// hold `pre` objects each, for every `pre` in `sizes`. The rows give the
/// figures per size and the change from the smallest to the largest.
pub async fn cost_growth(
    sizes: &[u64],
    replicate: u64,
    changes: usize,
    sled_baseline: f64,
    rtt: (f64, f64),
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut figures = Vec::new();
    for &pre in sizes {
        eprintln!("cost growth: {pre} objects already stored on both sides...");
        let t = Instant::now();
        let root = tempfile::tempdir()?;
        let (mut a, mut b) = paired(root.path())?;
        progress::waiting_for(format!("both stores to be filled with {pre} objects"));
        let (fa, fb) = tokio::join!(prefill_objects(&a.dir, pre), prefill_objects(&b.dir, pre));
        fa?;
        fb?;
        eprintln!("cost growth: filled in {:.1} s", t.elapsed().as_secs_f64());
        let rep = replication_on(&mut a, &mut b, replicate, sled_baseline, 0.0).await?;
        let rate = rep.last().map(|r| r.value).unwrap_or(0.0);
        // Scenario 2 on the same pair (restarted), its stores now hold
        // `pre + replicate` objects.
        let lat = latency_on(&mut a, &mut b, changes, rtt.0, rtt.1).await?;
        let p50 = lat.first().map(|r| r.value).unwrap_or(0.0);
        let p99 = lat.get(1).map(|r| r.value).unwrap_or(0.0);
        for (label, value, metric) in [
            ("replication", rate, "objects/s"),
            ("latency p50", p50, "ms"),
            ("latency p99", p99, "ms"),
        ] {
            rows.push(Row::info(
                &format!("7 growth: {label} with {pre} stored"),
                metric,
                value,
            ));
        }
        figures.push((rate, p50, p99));
    }
    if let (Some(first), Some(last)) = (figures.first(), figures.last()) {
        // Figure at the largest size next to the smallest size's as its
        // baseline: the ratio column is the growth factor.
        let (small, large) = (sizes[0], sizes[sizes.len() - 1]);
        rows.push(Row {
            scenario: format!("7 growth: replication, {large} vs {small} stored"),
            metric: "objects/s".into(),
            value: last.0,
            baseline: Some(first.0),
            target: ">= 0.8x".into(),
            pass: Some(last.0 >= 0.8 * first.0),
        });
        for (label, f, l) in [("p50", first.1, last.1), ("p99", first.2, last.2)] {
            rows.push(Row {
                scenario: format!("7 growth: latency {label}, {large} vs {small} stored"),
                metric: "ms".into(),
                value: l,
                baseline: Some(f),
                target: "<= 1.2x".into(),
                pass: Some(l <= 1.2 * f),
            });
        }
    }
    Ok(rows)
}
