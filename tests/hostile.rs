//! End-to-end: hostile peers against a real `orgsyncd`.
//!
//! Acme (the daemon under test) is paired with Globex (an honest daemon)
//! and with Mallory, a rogue built from a real paired identity that speaks
//! real QUIC with pinned certificates and the real session Hello, then
//! sends crafted input (see `support/rogue.rs`). For each misbehaviour the
//! test checks that Acme refuses it with a logged reason, closes only that
//! connection, keeps syncing with Globex, and stores nothing the rogue sent.
//! An unpaired instance and Mallory after revocation are refused at the
//! TLS handshake.

#[path = "support/rogue.rs"]
mod rogue;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use orgsync_protocol::model::ObjectId;
use orgsync_protocol::wire::Message;
use rogue::{contact_batch, now_ms, seal_changes, Rogue};
use support::{wait_for, Instance};

const STEP: Duration = Duration::from_secs(60);

/// Waits until Acme's log, after byte `from`, has a line with every one of
/// `needles`; returns that line.
fn logged(a: &Instance, from: usize, needles: &[&str]) -> String {
    wait_for(&format!("Acme to log {needles:?}"), STEP, || {
        let log = a.log_text();
        log.get(from..)?
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
    })
}

/// Globex writes a record and Acme receives it: Acme still serves its
/// honest partner.
fn still_serves(a: &Instance, b: &Instance, tag: &str) {
    let id = b.put("contact", &["--set", &format!("first_name=Honest {tag}")]);
    wait_for(
        &format!("Globex's record {tag} to reach Acme"),
        STEP,
        || a.cli(&["get", &id]).status.success().then_some(()),
    );
}

fn has(a: &Instance, id: ObjectId) -> bool {
    a.cli(&["get", &id.to_string()]).status.success()
}

#[test]
fn hostile_peers_are_refused_and_the_daemon_keeps_serving() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    let mallory = Instance::new("Mallory"); // never started: the rogue uses its identity
    Instance::pair(&a, &b);
    Instance::pair(&a, &mallory);
    mallory.trust(&b); // so Mallory can seal envelopes for Globex
    a.start();
    b.start();
    let a_addr = SocketAddr::from(([127, 0, 0, 1], a.port));
    let rogue = Rogue::new(&mallory.dir, "Acme", a_addr);
    let mut never_stored: Vec<(&str, ObjectId)> = Vec::new();
    let mut outcomes: Vec<String> = Vec::new();
    // Records a paired partner may legitimately write (applied on Acme,
    // not forwarded to Globex: partner changes stay out of Acme's log).
    let mut genuine: Vec<ObjectId> = Vec::new();

    // 1. An envelope sealed for another organisation (Globex).
    {
        let from = a.log_text().len();
        let conn = rogue.connect();
        let id = ObjectId::new_v7(now_ms());
        let for_globex = rogue.keys_for(&rogue.partner(&mallory.dir, "Globex"));
        let env = seal_changes(&for_globex, 1, &contact_batch(id, "For Globex", 1, 7));
        conn.send_uni(&[Message::Changes(env)]);
        let closed = conn.closed(STEP);
        let line = logged(&a, from, &["Mallory", "envelope refused"]);
        outcomes.push(format!(
            "sealed for another org: {line} / rogue saw {closed:?}"
        ));
        never_stored.push(("sealed for Globex", id));
        still_serves(&a, &b, "after a misaddressed envelope");
    }

    // 2. A tampered envelope (one ciphertext bit flipped).
    {
        let from = a.log_text().len();
        let conn = rogue.connect();
        let id = ObjectId::new_v7(now_ms());
        let mut env = seal_changes(conn.keys(), 1, &contact_batch(id, "Tampered", 1, 7));
        env.ciphertext[3] ^= 0x20;
        conn.send_uni(&[Message::Changes(env)]);
        let closed = conn.closed(STEP);
        let line = logged(&a, from, &["Mallory", "envelope refused"]);
        outcomes.push(format!("tampered envelope: {line} / rogue saw {closed:?}"));
        never_stored.push(("tampered", id));
        still_serves(&a, &b, "after a tampered envelope");
    }

    // 3. A replayed envelope: a genuine batch is applied once; the same
    //    envelope again, on the same connection and on a new one, is
    //    dropped unopened (its sequence is at or below the durable cursor)
    //    and applies nothing. Each replay is followed on the same stream by
    //    a fresh batch (a marker): once the marker is stored, the replay
    //    before it has been handled.
    {
        let conn = rogue.connect();
        let id = ObjectId::new_v7(now_ms());
        let env = seal_changes(conn.keys(), 1, &contact_batch(id, "Genuine once", 1, 7));
        let applied = || a.metric("orgsync_changes_applied_total");
        let before = applied();
        conn.send_uni(&[Message::Changes(env.clone())]);
        wait_for("the genuine batch to be applied", STEP, || {
            has(&a, id).then_some(())
        });
        assert_eq!(applied(), before + 1, "the genuine change applied once");
        let head = a.log_head();
        let mut seq = 1;
        let mut replay_then_marker = |conn: &rogue::RogueConn<'_>| {
            seq += 1;
            let marker = ObjectId::new_v7(now_ms());
            let m = seal_changes(conn.keys(), seq, &contact_batch(marker, "Marker", seq, 7));
            conn.send_uni(&[Message::Changes(env.clone()), Message::Changes(m)]);
            wait_for("the marker after a replay", STEP, || {
                has(&a, marker).then_some(())
            });
            genuine.push(marker);
        };
        replay_then_marker(&conn);
        assert!(conn.is_open(), "a replay is dropped, not a reason to close");
        drop(conn);
        let again = rogue.connect();
        replay_then_marker(&again);
        assert_eq!(
            applied(),
            before + 3,
            "a replayed envelope was applied (only the genuine batch and two markers may be)"
        );
        assert_eq!(
            a.log_head(),
            head,
            "partner changes never enter Acme's own log"
        );
        genuine.push(id);
        outcomes.push(
            "replayed envelope (same and new connection): dropped unopened, applied 0 times".into(),
        );
    }

    // 4. A malformed frame (garbage after a valid header).
    {
        let from = a.log_text().len();
        let conn = rogue.connect();
        let mut garbage = vec![0, 0, 0, 40, 1];
        garbage.extend((0..39u8).map(|i| i.wrapping_mul(97) ^ 0xa5));
        conn.send_uni_raw(&garbage);
        let closed = conn.closed(STEP);
        let line = logged(&a, from, &["Mallory", "bad stream from partner"]);
        outcomes.push(format!("malformed frame: {line} / rogue saw {closed:?}"));
        still_serves(&a, &b, "after a malformed frame");
    }

    // 5. An oversized frame: a length prefix of 16 MiB (the limit is 8 MiB),
    //    refused as soon as the header arrives.
    {
        let from = a.log_text().len();
        let conn = rogue.connect();
        let mut huge = (16u32 << 20).to_be_bytes().to_vec();
        huge.push(1);
        huge.extend_from_slice(&[0u8; 1024]);
        conn.send_uni_raw(&huge);
        let closed = conn.closed(STEP);
        let line = logged(
            &a,
            from,
            &["Mallory", "bad stream from partner", "exceeds the limit"],
        );
        outcomes.push(format!("oversized frame: {line} / rogue saw {closed:?}"));
        still_serves(&a, &b, "after an oversized frame");
    }

    // 6. A flood of streams: QUIC grants the rogue a bounded number of
    //    concurrent streams (the rest wait for credit that never comes while
    //    they are held open), and Acme keeps serving Globex meanwhile.
    {
        let conn = rogue.connect();
        let ping = orgsync_protocol::codec::encode_frame(&Message::Ping(1)).expect("ping");
        let opened = conn.flood_streams(1_000, &ping);
        // 64: the daemon's QUIC limit of concurrent uni streams.
        assert!(
            opened <= 64,
            "Acme let the rogue hold {opened} streams open at once"
        );
        still_serves(&a, &b, "during a stream flood");
        outcomes.push(format!(
            "stream flood: {opened} of 1000 streams opened before flow control stopped the rogue"
        ));
        drop(conn);
    }

    // 7. An envelope from an old epoch: Mallory rotates its key, Acme
    //    imports the new bundle, and Mallory seals with its epoch-0 key.
    {
        mallory.keytool(&["rotate"]);
        let from = a.log_text().len();
        a.trust(&mallory);
        logged(&a, from, &["partners reloaded"]);
        let rotated = Rogue::new(&mallory.dir, "Acme", a_addr);
        assert_eq!(rotated.current_epoch(), 1);
        let from = a.log_text().len();
        let conn = rotated.connect();
        let id = ObjectId::new_v7(now_ms());
        let old = rotated.keys(0);
        let env = seal_changes(&old, 10, &contact_batch(id, "Old epoch", 10, 7));
        conn.send_uni(&[Message::Changes(env)]);
        let closed = conn.closed(STEP);
        let line = logged(&a, from, &["Mallory", "envelope refused"]);
        outcomes.push(format!("old-epoch envelope: {line} / rogue saw {closed:?}"));
        never_stored.push(("old epoch", id));
        still_serves(&a, &b, "after an old-epoch envelope");

        // 8. Mallory revoked, then reconnecting: refused at the handshake.
        let fp = mallory.fingerprint();
        let from = a.log_text().len();
        a.keytool(&["revoke", "Mallory"]);
        logged(&a, from, &["partners reloaded"]);
        let reason = rotated.expect_refused(STEP);
        let line = logged(&a, from, &["refused handshake", "revoked", &fp]);
        outcomes.push(format!("revoked partner: {line} / rogue saw {reason}"));
    }

    // 9. An unpaired instance (it trusts Acme, Acme does not know it).
    {
        let stranger = Instance::new("Stranger");
        stranger.trust(&a);
        let fp = stranger.fingerprint();
        let from = a.log_text().len();
        let r = Rogue::new(&stranger.dir, "Acme", a_addr);
        let reason = r.expect_refused(STEP);
        let line = logged(&a, from, &["refused handshake", &fp]);
        outcomes.push(format!("unpaired instance: {line} / rogue saw {reason}"));
    }

    // Nothing the rogue sent in a refused envelope is stored; Acme and
    // Globex agree on everything.
    for (what, id) in &never_stored {
        assert!(!has(&a, *id), "Acme stored the {what} record {id}");
    }
    a.wait_synced(STEP);
    b.wait_synced(STEP);
    let genuine: Vec<String> = genuine.iter().map(ToString::to_string).collect();
    let on_a: Vec<serde_json::Value> = a
        .objects()
        .into_iter()
        .filter(|o| !genuine.iter().any(|g| o["id"] == g.as_str()))
        .collect();
    assert_eq!(
        support::digest_of(&on_a),
        b.digest(),
        "Acme (without Mallory's genuine records) and Globex converged"
    );
    assert!(
        !a.log_text().contains("panicked"),
        "Acme panicked:\n{}",
        a.log_tail()
    );
    for o in &outcomes {
        eprintln!("hostile: {o}");
    }
    a.stop();
    b.stop();
}
