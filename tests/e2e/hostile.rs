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

use crate::support;
use crate::support::rogue;

use std::net::SocketAddr;
use std::time::Duration;

use orgsync_protocol::model::ObjectId;
use orgsync_protocol::share::{AccessType, Grant, ShareBody, ShareId};
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
        // Acme mirrors every partner (the test rig's governance.toml); Mallory
        // offers it too in its Hello, so its own new records apply without
        // a share.
        wait_for("Acme to mirror Mallory", STEP, || {
            let s = a.cli_json(&["partner", "settings"]);
            s["partners"]
                .as_array()?
                .iter()
                .any(|p| p["name"] == "Mallory" && p["mirror"] == "active")
                .then_some(())
        });
        let id = ObjectId::new_v7(now_ms());
        let env = seal_changes(conn.keys(), 1, &contact_batch(id, "Genuine once", 1, 7));
        let applied = || a.metric("orgsync_changes_applied_total");
        let before = applied();
        conn.send_uni(&[Message::Changes(env.clone())]);
        wait_for("the genuine batch to be applied", STEP, || {
            has(&a, id).then_some(())
        });
        wait_for("the applied count to include it", STEP, || {
            (applied() > before).then_some(())
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
        // The applier counts a batch just after the store makes it
        // visible: wait for the count to catch up with the markers seen.
        wait_for("the applied count to include both markers", STEP, || {
            (applied() >= before + 3).then_some(())
        });
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

/// The id of the share listed under `side` ("given" or "received") whose
/// partner is `partner`.
fn share_with(inst: &Instance, side: &str, partner: &str) -> String {
    let list = inst.cli_json(&["share", "list"]);
    list[side]
        .as_array()
        .expect("shares")
        .iter()
        .find(|s| s["partner"]["name"] == partner)
        .and_then(|s| s["id"].as_str())
        .unwrap_or_else(|| panic!("no {side} share with {partner} in {list}"))
        .to_string()
}

fn refusals(inst: &Instance) -> Vec<String> {
    inst.cli_json(&["audit"])["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "authority.refused")
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A paired partner is authenticated, not trusted: every governance frame
/// and every change Mallory sends about objects and shares that are not
/// hers is refused with a recorded reason, and Acme's data is unchanged.
#[test]
fn a_partner_cannot_touch_what_is_not_its_own() {
    let mut a = Instance::governed("Acme");
    let mut b = Instance::governed("Globex");
    let mallory = Instance::governed("Mallory"); // never started
    Instance::pair(&a, &b);
    Instance::pair(&a, &mallory);
    a.start();
    b.start();
    // Globex shares with Acme; Acme shares with Globex; Acme lends one
    // record to Mallory (so Mallory is a real share recipient too).
    b.cli_ok(&["share", "add", "Acme", "--all", "--access", "operator"]);
    a.cli_ok(&["inbox", "policy", "Globex", "auto"]);
    let gx = b.put("contact", &["--set", "first_name=Gina"]);
    let own = a.put("contact", &["--set", "first_name=Olga"]);
    // With terms Globex has not accepted: nothing flows, so Globex itself
    // never reports it received (only a forgery could).
    let dpa = a.dir.parent().unwrap().join("dpa.txt");
    std::fs::write(&dpa, "Data stays in the EU.").unwrap();
    a.cli_ok(&[
        "share",
        "add",
        "Globex",
        "--all",
        "--access",
        "on-loan",
        "--terms",
        dpa.to_str().unwrap(),
    ]);
    a.cli_ok(&[
        "share", "add", "Mallory", "--object", &own, "--access", "on-loan",
    ]);
    wait_for("Gina's copy at Acme", STEP, || {
        a.cli(&["get", &gx]).status.success().then_some(())
    });
    let from_globex: ShareId = share_with(&a, "received", "Globex").parse().unwrap();
    let to_globex: ShareId = share_with(&a, "given", "Globex").parse().unwrap();
    let before = a.digest();
    let gx_id: ObjectId = gx.parse().unwrap();
    let own_id: ObjectId = own.parse().unwrap();

    let a_addr = SocketAddr::from(([127, 0, 0, 1], a.port));
    let rogue = Rogue::new(&mallory.dir, "Acme", a_addr);
    let mut conn = rogue.connect();
    let mine = ShareId([0x4d; 16]);
    let frames: Vec<(&str, ShareBody)> = vec![
        (
            "withdraw under Globex's share",
            ShareBody::Withdraw {
                share: from_globex,
                objects: vec![gx_id, own_id],
            },
        ),
        (
            "erase under Globex's share",
            ShareBody::Erase {
                share: from_globex,
                objects: vec![gx_id, own_id],
                revoked: true,
            },
        ),
        (
            "",
            ShareBody::Grant(Grant {
                share: mine,
                access: AccessType::Operator,
                terms: None,
                label: "mine".into(),
                request: None,
            }),
        ),
        (
            "offer Acme's own record as Acme's",
            ShareBody::Objects {
                share: mine,
                owner: org_of(&a),
                added: vec![own_id],
            },
        ),
        (
            "offer Globex's copy again (launder)",
            ShareBody::Objects {
                share: mine,
                owner: org_of(&b),
                added: vec![gx_id],
            },
        ),
        (
            "withdraw under its own share",
            ShareBody::Withdraw {
                share: mine,
                objects: vec![own_id, gx_id],
            },
        ),
        (
            "erase under its own share",
            ShareBody::Erase {
                share: mine,
                objects: vec![own_id, gx_id],
                revoked: true,
            },
        ),
        (
            "received for Globex's share",
            ShareBody::Received {
                share: to_globex,
                objects: 1,
            },
        ),
        (
            "erase-ack for Globex's share",
            ShareBody::EraseAck {
                share: to_globex,
                erased: 1,
                onward: 0,
            },
        ),
        (
            "terms accepted for Globex's share",
            ShareBody::TermsAccepted {
                share: to_globex,
                by: "admin".into(),
                at_ms: now_ms(),
            },
        ),
    ];
    let attacks = frames.iter().filter(|(w, _)| !w.is_empty()).count();
    // Changes to Acme's own record and to Globex's copy (one stream, in
    // order, as a daemon sends its log).
    let own_change = seal_changes(conn.keys(), 1, &contact_batch(own_id, "Hijacked", 1, 7));
    let gx_change = seal_changes(conn.keys(), 2, &contact_batch(gx_id, "Hijacked", 2, 7));
    conn.send_uni(&[Message::Changes(own_change), Message::Changes(gx_change)]);
    wait_for("the two changes to be counted as refused", STEP, || {
        (a.metric("orgsync_changes_refused_total") == 2).then_some(())
    });
    for (i, (_, body)) in frames.into_iter().enumerate() {
        conn.send_share(i as u64 + 1, body);
    }
    // A replay of an old frame id is not handled again.
    conn.send_share(
        1,
        ShareBody::Erase {
            share: from_globex,
            objects: vec![gx_id],
            revoked: true,
        },
    );

    let deadline = std::time::Instant::now() + STEP;
    let why = loop {
        let r = refusals(&a);
        if r.len() >= attacks + 2 {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {} attacks refused: {r:#?}\naudit:\n{}\nlog:\n{}",
            r.len(),
            attacks + 2,
            a.cli_ok(&["audit"]),
            a.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    for want in [
        "was not given to us by this partner",
        "offered as ours",
        "already held from another source",
        "belongs to this organisation",
        "was not given to this partner",
    ] {
        assert!(
            why.iter().any(|w| w.contains(want)),
            "no refusal says {want:?}: {why:#?}"
        );
    }
    assert_eq!(
        why.len(),
        attacks + 2,
        "each attack refused once (the replay not at all): {why:#?}"
    );
    assert_eq!(a.digest(), before, "Acme's stored data changed");
    let given = a.cli_json(&["share", "list"])["given"].clone();
    let g = given
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == to_globex.to_string().as_str())
        .unwrap()
        .clone();
    assert!(
        g["processed_ms"].is_null(),
        "a forged Received counted: {g}"
    );
    assert!(
        g["erase_acked_ms"].is_null(),
        "a forged EraseAck counted: {g}"
    );
    assert!(
        g["terms_accepted"].is_null(),
        "a forged terms acceptance released data: {g}"
    );
    for w in &why {
        eprintln!("refused: {w}");
    }
    drop(conn);
    a.stop();
    b.stop();
}

/// The organisation of an instance.
fn org_of(inst: &Instance) -> orgsync_protocol::model::OrgId {
    inst.account().parse().expect("account number")
}
