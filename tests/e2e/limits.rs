//! End-to-end: a paired partner cannot exhaust the daemon's memory, disk
//! or processes (issue 13, part 2).
//!
//! Acme (a real `orgsyncd`, with small `[limits]`) is paired with Globex
//! (an honest daemon) and with Mallory (and Trudy), rogues built from real
//! paired identities (see `support/rogue.rs`) that flood Acme: change
//! batches ignoring the ack window, thousands of governance frames, blobs
//! announced over the cap or streamed past their announced length,
//! thousands of inbox offers, hundreds of share requests, a webhook storm.
//! Each flood checks that Acme's memory stays bounded (peak RSS of the
//! daemon process, `/proc/PID/status` VmHWM), that nothing lands on disk
//! past a cap, that Globex keeps syncing meanwhile, that refusals are
//! logged, audited and told to the rogue, and that stored data is
//! unchanged; each prints one summary line for the README.

use crate::support;
use crate::support::rogue;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use orgsync_protocol::model::ObjectId;
use orgsync_protocol::share::{Request, Selection, Selector, ShareBody, ShareFrame, ShareId};
use orgsync_protocol::wire::{Ack, BlobRequest, Message};
use rogue::{blob_chunk, contacts_batch, now_ms, resume_batch, seal_changes, Rogue, RogueConn};
use support::{wait_for, Instance};

const STEP: Duration = Duration::from_secs(60);
/// How long a flood runs at most (it also ends when everything is sent).
const FLOOD: Duration = Duration::from_secs(6);

/// Appends a `[limits]` section to `inst`'s orgsync.toml (before start).
fn set_limits(inst: &Instance, limits: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(inst.dir.join("orgsync.toml"))
        .expect("orgsync.toml");
    writeln!(f, "\n[limits]\n{limits}").expect("write orgsync.toml");
}

/// The pid of `inst`'s running orgsyncd (found by its `--dir` argument).
fn daemon_pid(inst: &Instance) -> u32 {
    let dir = inst.dir.to_string_lossy().to_string();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("orgsyncd")) && args.contains(&dir) {
            return pid;
        }
    }
    panic!("{}'s orgsyncd is not running", inst.name)
}

/// (peak RSS, current RSS) of process `pid` in MiB (VmHWM, VmRSS).
fn memory_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Bytes of every file under `dir`, recursively.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn blobs_dir(inst: &Instance) -> PathBuf {
    inst.dir.join("blobs")
}

/// `inst`'s audit entries about `partner` since `since_ms` (Unix ms):
/// (action, detail).
fn audit(inst: &Instance, partner: &str, since_ms: u64) -> Vec<(String, String)> {
    let since = since_ms.to_string();
    inst.cli_json(&["audit", "--partner", partner, "--since", &since])["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until `inst` audited `action` about `partner` with `needle` in its
/// detail, since `since_ms`; that detail.
fn wait_audit(inst: &Instance, partner: &str, action: &str, needle: &str, since_ms: u64) -> String {
    wait_for(
        &format!("{} to audit {action} ({needle})", inst.name),
        STEP,
        || {
            audit(inst, partner, since_ms)
                .into_iter()
                .find(|(a, d)| a == action && d.contains(needle))
                .map(|(_, d)| d)
        },
    )
}

/// Waits until `from` logged a line with every one of `needles` after byte
/// `offset`.
fn logged(inst: &Instance, offset: usize, needles: &[&str]) -> String {
    wait_for(&format!("{} to log {needles:?}", inst.name), STEP, || {
        inst.log_text()
            .get(offset..)?
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
    })
}

/// The rogue received a governance refusal over `limit`; its reason.
fn told(conn: &RogueConn<'_>, limit: &str) -> String {
    let prefix = format!("limit {limit}:");
    conn.wait_received(&format!("a refusal for {limit}"), STEP, |m| match m {
        Message::Share(ShareFrame {
            body: ShareBody::Refused { reason },
            ..
        }) if reason.starts_with(&prefix) => Some(reason.clone()),
        _ => None,
    })
}

/// Waits until Acme acknowledged the rogue's changes up to `seq`.
fn wait_acked(conn: &RogueConn<'_>, seq: u64) {
    conn.wait_received(&format!("an ack up to {seq}"), STEP, |m| match m {
        Message::Ack(Ack { up_to_seq }) if *up_to_seq >= seq => Some(()),
        _ => None,
    });
}

/// Globex writes a record and Acme receives it within the step: the
/// honest partner keeps syncing. How long it took.
fn honest_sync(a: &Instance, b: &Instance, tag: &str) -> Duration {
    let start = Instant::now();
    let id = b.put("contact", &["--set", &format!("first_name=Honest {tag}")]);
    wait_for(
        &format!("Globex's record {tag} to reach Acme"),
        STEP,
        || a.cli(&["get", &id]).status.success().then_some(()),
    );
    start.elapsed()
}

/// Lets `flood` run until it has sent everything or [`FLOOD`] passed,
/// while Globex syncs a record; returns how long the honest record took.
fn during(flood: &rogue::Flood, a: &Instance, b: &Instance, tag: &str) -> Duration {
    // The flood is under way before the honest write.
    wait_for("the flood to start", STEP, || {
        (flood.sent() > 0).then_some(())
    });
    let honest = honest_sync(a, b, tag);
    let start = Instant::now();
    while !flood.is_finished() && start.elapsed() < FLOOD {
        std::thread::sleep(Duration::from_millis(50));
    }
    honest
}

fn request_frame(id: u64) -> Message {
    Message::Share(ShareFrame {
        id,
        body: ShareBody::Request(Request {
            request: ShareId::random(),
            wants: Selection {
                rules: vec![Selector::All],
            },
            suggested: None,
            note: format!("request {id}"),
        }),
    })
}

/// Floods of batches and governance frames, blobs over the cap or past
/// their announced length, and blob requests only to the source partner.
#[test]
fn floods_of_batches_frames_and_blobs_are_bounded() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    let mallory = Instance::new("Mallory");
    let trudy = Instance::new("Trudy");
    Instance::pair(&a, &b);
    Instance::pair(&a, &mallory);
    Instance::pair(&a, &trudy);
    set_limits(
        &a,
        "max_blob_bytes = 1048576\nmax_queued_frames = 16\nmax_queued_batches = 1",
    );
    a.start();
    b.start();
    honest_sync(&a, &b, "before the floods");
    let pid = daemon_pid(&a);
    let a_addr = SocketAddr::from(([127, 0, 0, 1], a.port));
    let rogue = Rogue::new(&mallory.dir, "Acme", a_addr);
    let mut seq = 0u64;

    // 1. Change batches ignoring the ack window: 1.6 MB each, written as
    //    fast as QUIC lets the rogue, never waiting for an ack.
    {
        let started = Instant::now();
        let conn = rogue.connect();
        let (base_peak, base_rss) = memory_mib(pid);
        let keys = rogue.keys(rogue.current_epoch());
        // Many small changes: applying them is what is slow, so a backlog
        // builds (sealing and opening large payloads would be the
        // bottleneck of a debug build instead).
        let per_batch = 2_000u64;
        let batches = 1_000u64;
        let first = seq + 1;
        seq += per_batch * batches;
        let stalls_before = a.metric("orgsync_partner_stalls_total");
        let flood = conn.flood_uni((0..batches).map(move |i| {
            let from = first + i * per_batch;
            let plain = contacts_batch(from, per_batch, 64, 7);
            Message::Changes(seal_changes(&keys, from + per_batch - 1, &plain))
        }));
        let honest = during(&flood, &a, &b, "during a batch flood");
        // On a loaded machine the rogue (a debug build) may need longer
        // than FLOOD to outpace Acme's applier: keep flooding until Acme
        // holds it back once, or the flood ends, or a minute has passed.
        let more = Instant::now();
        while a.metric("orgsync_partner_stalls_total") == stalls_before
            && !flood.is_finished()
            && more.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let (peak, rss) = memory_mib(pid);
        let sent = flood.sent();
        drop(flood);
        let stalls = a.metric("orgsync_partner_stalls_total") - stalls_before;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "limits ({secs:.1} s): batch flood: {sent} batches of {per_batch} changes sent in {FLOOD:?} max, \
             ignoring acks; Acme held back {stalls} times (max_queued_batches 1); \
             peak RSS {peak} MiB (before {base_peak} MiB, RSS {base_rss} -> {rss} MiB); \
             Globex's record arrived in {} ms",
            honest.as_millis()
        );
        assert!(
            stalls > 0,
            "the applier queue never filled: no backpressure"
        );
        assert!(
            (sent as u64) < batches,
            "the rogue wrote all {batches} batches: nothing held it back"
        );
        assert!(
            peak < base_peak.max(base_rss) + 400,
            "Acme's peak RSS grew from {base_peak} to {peak} MiB"
        );
        drop(conn);
    }

    // 2. Thousands of governance frames (each is audited and flushed when
    //    handled), written without waiting for their acks.
    {
        let started = Instant::now();
        let conn = rogue.connect();
        let (base_peak, _) = memory_mib(pid);
        // 4 KB each: 80 MB if nothing held the rogue back.
        let n = 20_000u64;
        let stalls_before = a.metric("orgsync_partner_stalls_total");
        let flood = conn.flood_uni((1..=n).map(|id| {
            Message::Share(ShareFrame {
                id,
                body: ShareBody::Refused {
                    reason: format!("flood {id} {}", "y".repeat(4000)),
                },
            })
        }));
        // Globex's governance frames are handled meanwhile: each partner
        // has its own queue (one behind 20,000 of Mallory's would wait).
        wait_for("the flood to start", STEP, || {
            (flood.sent() > 0).then_some(())
        });
        let asked = Instant::now();
        let req = b.cli_json(&[
            "request",
            "send",
            "Acme",
            "--want",
            "all",
            "--note",
            "during a flood",
        ]);
        let req_id = req["id"].as_str().expect("request id").to_string();
        wait_for("Globex's request to reach Acme", STEP, || {
            a.cli_json(&["request", "list"])["requests"]
                .as_array()?
                .iter()
                .any(|r| r["id"] == req_id.as_str())
                .then_some(())
        });
        let gov_latency = asked.elapsed();
        let honest = during(&flood, &a, &b, "during a frame flood");
        let (peak, _) = memory_mib(pid);
        let sent = flood.sent();
        drop(flood);
        let stalls = a.metric("orgsync_partner_stalls_total") - stalls_before;
        let delivered = conn
            .received()
            .iter()
            .filter(|m| {
                matches!(
                    m,
                    Message::Share(ShareFrame {
                        body: ShareBody::Delivered(_),
                        ..
                    })
                )
            })
            .count();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "limits ({secs:.1} s): governance frame flood: {sent} of {n} frames written, {delivered} handled and acked, \
             window 16 (max_queued_frames); Acme held back {stalls} times; peak RSS {peak} MiB \
             (before {base_peak} MiB); Globex's record arrived in {} ms, its share request in {} ms",
            honest.as_millis(),
            gov_latency.as_millis()
        );
        assert!(
            gov_latency < Duration::from_secs(15),
            "Globex's governance frame waited {gov_latency:?} behind Mallory's flood"
        );
        assert!(stalls > 0, "the frame window never filled: no backpressure");
        assert!(
            (sent as u64) < n,
            "the rogue wrote all {n} frames: nothing held it back"
        );
        assert!(
            peak < base_peak + 400,
            "Acme's peak RSS grew from {base_peak} to {peak} MiB"
        );
        drop(conn);
    }

    // 3. A résumé announcing a blob over the cap: refused before any byte
    //    is written; never asked for.
    let big_hash = *blake3::hash(b"over the cap").as_bytes();
    {
        let (since, started) = (now_ms(), Instant::now());
        let conn = rogue.connect();
        let blobs_before = dir_bytes(&blobs_dir(&a));
        let id = ObjectId::new_v7(now_ms());
        seq += 1;
        let plain = resume_batch(id, big_hash, 2 << 20, seq, 7);
        conn.send_uni(&[Message::Changes(seal_changes(conn.keys(), seq, &plain))]);
        wait_acked(&conn, seq);
        let detail = wait_audit(&a, "Mallory", "limit.refused", "max_blob_bytes", since);
        let reason = told(&conn, "max_blob_bytes");
        let asked = conn.received().iter().any(
            |m| matches!(m, Message::BlobRequest(BlobRequest { hash, .. }) if *hash == big_hash),
        );
        let blobs_after = dir_bytes(&blobs_dir(&a));
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "limits ({secs:.1} s): blob announced at 2 MiB over a 1 MiB cap: refused before writing \
             (blobs dir {blobs_before} -> {blobs_after} bytes, asked: {asked}); audit: {detail}; \
             the rogue was told: {reason}"
        );
        assert!(!asked, "Acme asked for a blob over the cap");
        assert_eq!(
            blobs_before, blobs_after,
            "bytes of a refused blob were written"
        );
        drop(conn);
    }

    // 4. A blob streamed past the length its résumé announced: the
    //    transfer is cut off before the chunk is written, the partial file
    //    removed and the connection closed.
    let short_hash = *blake3::hash(b"announced short").as_bytes();
    {
        let (since, started) = (now_ms(), Instant::now());
        let conn = rogue.connect();
        let from = a.log_text().len();
        let id = ObjectId::new_v7(now_ms());
        seq += 1;
        let plain = resume_batch(id, short_hash, 64 * 1024, seq, 7);
        conn.send_uni(&[Message::Changes(seal_changes(conn.keys(), seq, &plain))]);
        conn.wait_received("a request for the blob", STEP, |m| match m {
            Message::BlobRequest(BlobRequest { hash, .. }) if *hash == short_hash => Some(()),
            _ => None,
        });
        // 512 KiB (under the cap) where 64 KiB were announced, in 64 KiB chunks.
        let total = 512 * 1024u64;
        let chunks: Vec<Message> = (0..8u64)
            .map(|i| blob_chunk(conn.keys(), short_hash, i * 65536, total, vec![7u8; 65536]))
            .collect();
        conn.send_uni(&chunks);
        let closed = conn.closed(STEP);
        let line = logged(&a, from, &["announced", "aborted"]);
        let detail = wait_audit(
            &a,
            "Mallory",
            "limit.refused",
            "partial file removed",
            since,
        );
        let partial = blobs_dir(&a).join("partial").join(hex(&short_hash));
        let stored = blobs_dir(&a).join(hex(&short_hash));
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "limits ({secs:.1} s): blob streamed past its announced length (512 KiB sent, 64 KiB announced): \
             connection closed ({}), partial file present: {}, blob stored: {}; audit: {detail}",
            closed.reason,
            partial.exists(),
            stored.exists()
        );
        assert!(
            !partial.exists(),
            "the refused partial file is still on disk"
        );
        assert!(!stored.exists(), "the refused blob was stored");
        assert!(line.contains("Mallory"), "{line}");
    }

    // 5. Missing blobs are asked only of the partner the object came
    //    from: Trudy (another mirror) connects and sends a batch; its ack
    //    comes after anything Acme asks at the start of the session, and
    //    no request for Mallory's blob came before it. Mallory, the
    //    source, is asked again when it reconnects.
    {
        let started = Instant::now();
        let trudy_rogue = Rogue::new(&trudy.dir, "Acme", a_addr);
        let conn = trudy_rogue.connect();
        let id = ObjectId::new_v7(now_ms());
        let plain = rogue::contact_batch(id, "Trudy's", 1, 9);
        conn.send_uni(&[Message::Changes(seal_changes(conn.keys(), 1, &plain))]);
        wait_acked(&conn, 1);
        let asked_trudy = conn
            .received()
            .iter()
            .filter(|m| matches!(m, Message::BlobRequest(_)))
            .count();
        drop(conn);
        let conn = rogue.connect();
        conn.wait_received("Acme to ask the source again", STEP, |m| match m {
            Message::BlobRequest(BlobRequest { hash, .. }) if *hash == short_hash => Some(()),
            _ => None,
        });
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "limits ({secs:.1} s): missing blob asked of its source only: Trudy (another partner) got {asked_trudy} blob requests, \
             Mallory (the source) was asked again on reconnect"
        );
        assert_eq!(
            asked_trudy, 0,
            "Acme asked a partner the object did not come from"
        );
        drop(conn);
    }

    // 6. The cap holds for a local attach-resume too: refused before
    //    anything is copied.
    {
        let contact = a.put("contact", &["--set", "first_name=Local"]);
        let big = a.dir.join("big-cv.pdf");
        std::fs::write(&big, vec![0u8; 2 << 20]).expect("write a 2 MiB file");
        let blobs_before = dir_bytes(&blobs_dir(&a));
        let out = a.cli(&["attach-resume", &contact, big.to_str().expect("utf-8 path")]);
        let err = support::stderr(&out);
        let blobs_after = dir_bytes(&blobs_dir(&a));
        eprintln!(
            "limits: local attach-resume of 2 MiB over a 1 MiB cap: refused ({}), blobs dir {blobs_before} -> {blobs_after} bytes",
            err.trim()
        );
        assert!(!out.status.success(), "a résumé over the cap was attached");
        assert!(err.contains("limits.max_blob_bytes"), "{err}");
        assert_eq!(
            blobs_before, blobs_after,
            "bytes of a refused résumé were stored"
        );
    }

    honest_sync(&a, &b, "after the floods");
    let mut all = [&mut a, &mut b];
    Instance::stop_all(&mut all, Duration::from_secs(30));
}

/// Inbox offers, share requests and a webhook storm over their caps.
#[test]
fn inbox_requests_and_webhooks_are_capped() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    let mallory = Instance::new("Mallory");
    Instance::pair(&a, &b);
    Instance::pair(&a, &mallory);
    let hooks = a.dir.join("hooks.log");
    std::fs::write(
        a.dir.join("governance.toml"),
        format!(
            "mirror_all_partners = true\nwebhook = \"echo start $(date +%s%N) >> {0}; sleep 0.3; echo end $(date +%s%N) >> {0}\"\n",
            hooks.display()
        ),
    )
    .expect("governance.toml");
    set_limits(
        &a,
        "max_inbox_items = 200\nmax_open_requests = 20\nwebhook_concurrency = 2\nwebhook_per_minute = 10",
    );
    a.start();
    b.start();
    honest_sync(&a, &b, "before the floods");
    let pid = daemon_pid(&a);
    let a_addr = SocketAddr::from(([127, 0, 0, 1], a.port));
    let rogue = Rogue::new(&mallory.dir, "Acme", a_addr);
    // Not a mirror: its new records wait in Acme's inbox.
    let conn = rogue.connect_as_partner();

    // 1. 2,000 inbox offers (20 batches of 100 new contacts) over a cap of 200.
    {
        let (since, started) = (now_ms(), Instant::now());
        let (base_peak, _) = memory_mib(pid);
        let digest = a.digest();
        let refused_before = a.metric("orgsync_limits_refused_total");
        let n = 2_000u64;
        let keys = rogue.keys(rogue.current_epoch());
        let frames: Vec<Message> = (0..20u64)
            .map(|i| {
                let from = i * 100 + 1;
                let plain = contacts_batch(from, 100, 32, 7);
                Message::Changes(seal_changes(&keys, from + 99, &plain))
            })
            .collect();
        let flood = conn.flood_uni(frames.into_iter());
        let honest = during(&flood, &a, &b, "during an inbox flood");
        wait_acked(&conn, n);
        drop(flood);
        let refused = a.metric("orgsync_limits_refused_total") - refused_before;
        let detail = wait_audit(&a, "Mallory", "limit.refused", "max_inbox_items", since);
        let audited = audit(&a, "Mallory", since)
            .iter()
            .filter(|(act, d)| act == "limit.refused" && d.contains("max_inbox_items"))
            .count();
        let reason = told(&conn, "max_inbox_items");
        let (peak, _) = memory_mib(pid);
        // Globex's record is the only new object.
        let (objects, _) = a.digest();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "limits ({secs:.1} s): inbox flood: {n} offers, {} held (max_inbox_items 200), {refused} refused \
             ({audited} audit entry, rogue told: {reason}); objects {} -> {objects}; \
             peak RSS {peak} MiB (before {base_peak}); Globex's record arrived in {} ms; audit: {detail}",
            n - refused,
            digest.0,
            honest.as_millis()
        );
        // Exactly the cap was held: every offer over it is refused.
        assert_eq!(
            refused,
            n - 200,
            "offers over the cap were held (or under it refused)"
        );
        assert_eq!(
            audited, 1,
            "one audit entry per minute, not one per refusal"
        );
        assert_eq!(objects, digest.0 + 1, "a refused offer became an object");
    }

    // 2. 300 share requests over a cap of 20 open ones.
    {
        let (since, started) = (now_ms(), Instant::now());
        let refused_before = a.metric("orgsync_limits_refused_total");
        let n = 300u64;
        let flood = conn.flood_uni((1..=n).map(request_frame));
        conn.wait_received("the last request to be handled", STEP, |m| match m {
            Message::Share(ShareFrame {
                body: ShareBody::Delivered(id),
                ..
            }) if *id == n => Some(()),
            _ => None,
        });
        drop(flood);
        let open = a.cli_json(&["request", "list"])["requests"]
            .as_array()
            .map_or(0, |r| r.len());
        let refused = a.metric("orgsync_limits_refused_total") - refused_before;
        let detail = wait_audit(&a, "Mallory", "limit.refused", "max_open_requests", since);
        let reason = told(&conn, "max_open_requests");
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "limits ({secs:.1} s): share request flood: {n} requests, {open} stored (max_open_requests 20), \
             {refused} refused; rogue told: {reason}; audit: {detail}"
        );
        assert_eq!(open, 20, "more (or fewer) requests stored than the cap");
        assert_eq!(refused, n - 20);
    }

    // 3. A webhook storm: 400 "received" replies to a share Acme gave
    //    Mallory, each a notification.
    {
        let started = Instant::now();
        let obj = a.put("contact", &["--set", "first_name=Shared"]);
        a.cli_ok(&[
            "share", "add", "Mallory", "--object", &obj, "--access", "operator",
        ]);
        let share: ShareId = a.cli_json(&["share", "list"])["given"]
            .as_array()
            .and_then(|g| g.first())
            .and_then(|s| s["id"].as_str())
            .and_then(|s| s.parse().ok())
            .expect("the share given to Mallory");
        let n = 400u64;
        let skipped_before = a.metric("orgsync_webhooks_skipped_total");
        let first = 1_000u64;
        let flood = conn.flood_uni((first..first + n).map(move |id| {
            Message::Share(ShareFrame {
                id,
                body: ShareBody::Received { share, objects: 1 },
            })
        }));
        conn.wait_received("the last reply to be handled", STEP, |m| match m {
            Message::Share(ShareFrame {
                body: ShareBody::Delivered(id),
                ..
            }) if *id == first + n - 1 => Some(()),
            _ => None,
        });
        drop(flood);
        // Every started hook finishes (0.3 s each).
        let lines = wait_for("the webhooks to finish", STEP, || {
            let text = std::fs::read_to_string(&hooks).unwrap_or_default();
            let starts = text.lines().filter(|l| l.starts_with("start")).count();
            let ends = text.lines().filter(|l| l.starts_with("end")).count();
            (starts > 0 && starts == ends).then_some(text)
        });
        let mut events: Vec<(u128, i32)> = lines
            .lines()
            .filter_map(|l| {
                let (what, at) = l.split_once(' ')?;
                Some((
                    at.trim().parse().ok()?,
                    if what == "start" { 1 } else { -1 },
                ))
            })
            .collect();
        events.sort();
        let (mut running, mut most) = (0i32, 0i32);
        for (_, d) in &events {
            running += d;
            most = most.max(running);
        }
        let runs = events.iter().filter(|(_, d)| *d == 1).count() as u64;
        let skipped = a.metric("orgsync_webhooks_skipped_total") - skipped_before;
        let from = 0;
        let warning = logged(&a, from, &["webhook rate limit reached"]);
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "limits ({secs:.1} s): webhook storm: {n} notifications, {runs} processes run (webhook_per_minute 10), \
             at most {most} at once (webhook_concurrency 2), {skipped} skipped and counted; one warning: {}",
            !warning.is_empty()
        );
        assert!(runs <= 10, "{runs} webhook processes in a minute");
        assert!(most <= 2, "{most} webhook processes at once");
        assert_eq!(runs + skipped, n, "every notification is run or counted");
    }

    drop(conn);
    honest_sync(&a, &b, "after the floods");
    let mut all = [&mut a, &mut b];
    Instance::stop_all(&mut all, Duration::from_secs(30));
}
