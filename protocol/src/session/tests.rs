use std::time::{Duration, Instant};

use super::harness::{change, keys, Pair, EPOCH, ORG_A, ORG_B};
use super::*;
use crate::wire::ChangeBatch;

const PEER_INSTANCE: InstanceId = InstanceId(0xb2);

/// A session of A with the given cursors, its Hello already taken out.
fn session_with(config: SessionConfig, cursors: Cursors, now: Instant) -> Session {
    let mut s = Session::new(config, keys(ORG_A, ORG_B), InstanceId(0xa1), cursors, now);
    let hello = s.poll_transmit().expect("hello queued");
    assert!(matches!(hello.message, Message::Hello(_)));
    assert_eq!(hello.channel, Channel::Control);
    s
}

fn session() -> Session {
    session_with(SessionConfig::default(), Cursors::default(), Instant::now())
}

fn hello_from_b(applied_up_to: u64) -> Hello {
    Hello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        org: ORG_B,
        instance: PEER_INSTANCE,
        epoch: EPOCH,
        features: FEATURE_BLOBS,
        applied_up_to,
    }
}

fn established(cursors: Cursors, peer_applied: u64) -> Session {
    let mut s = session_with(SessionConfig::default(), cursors, Instant::now());
    s.handle_message(Message::Hello(hello_from_b(peer_applied)), Instant::now())
        .expect("valid hello");
    take_clock_probe(&mut s);
    s
}

/// Takes out the clock probe a version-2 session sends once established.
fn take_clock_probe(s: &mut Session) {
    let probe = s.poll_transmit();
    assert!(
        matches!(
            probe,
            Some(Transmit {
                channel: Channel::Control,
                message: Message::Ping(_)
            })
        ),
        "clock probe expected first: {probe:?}"
    );
}

fn effects(s: &mut Session) -> Vec<Effect> {
    std::iter::from_fn(|| s.poll_effect()).collect()
}

fn transmits(s: &mut Session) -> Vec<Transmit> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

/// Asserts the session failed with an error matching `pred` and told the
/// peer `code`.
fn assert_failed(s: &mut Session, code: Option<ErrorCode>, pred: impl Fn(&SessionError) -> bool) {
    assert!(s.is_closed());
    let out = transmits(s);
    match code {
        Some(code) => {
            assert_eq!(out.len(), 1, "only the error is left to send: {out:?}");
            match &out[0].message {
                Message::Error(e) => assert_eq!(e.code, code),
                other => panic!("expected an error message, got {other:?}"),
            }
        }
        None => assert!(out.is_empty(), "{out:?}"),
    }
    let closed = effects(s)
        .into_iter()
        .find_map(|e| match e {
            Effect::Closed { error } => Some(error),
            _ => None,
        })
        .expect("closed effect");
    let error = closed.expect("closed with an error");
    assert!(pred(&error), "unexpected error {error:?}");
}

/// Seals a batch from B to A, as B's session would.
fn batch_from_b(seqs: std::ops::RangeInclusive<u64>, up_to: u64) -> Message {
    let batch = ChangeBatch {
        changes: seqs.map(|s| change(s, PEER_INSTANCE, 0)).collect(),
        log_head: up_to,
    };
    let bytes = codec::encode(&batch).expect("encodes");
    Message::Changes(envelope::seal(
        &keys(ORG_B, ORG_A),
        StreamKind::Changes,
        up_to,
        &bytes,
    ))
}

fn chunk_from_b(hash: [u8; 32], offset: u64, total_len: u64, data: Vec<u8>) -> Message {
    let end = offset + data.len() as u64;
    let chunk = BlobChunk {
        hash,
        offset,
        total_len,
        data,
    };
    let bytes = codec::encode(&chunk).expect("encodes");
    Message::BlobChunk(envelope::seal(
        &keys(ORG_B, ORG_A),
        StreamKind::Blob,
        end,
        &bytes,
    ))
}

// ---------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------

#[test]
fn hello_carries_our_identity_and_durable_cursor() {
    let cursors = Cursors {
        applied_from_peer: 42,
        acked_by_peer: 7,
        local_log_head: 9,
    };
    let mut s = Session::new(
        SessionConfig::default(),
        keys(ORG_A, ORG_B),
        InstanceId(5),
        cursors,
        Instant::now(),
    );
    let t = s.poll_transmit().expect("hello");
    assert_eq!(t.channel, Channel::Control);
    assert_eq!(
        t.message,
        Message::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            org: ORG_A,
            instance: InstanceId(5),
            epoch: EPOCH,
            features: FEATURE_BLOBS,
            applied_up_to: 42,
        })
    );
    assert_eq!(s.state(), SessionState::Handshake);
}

#[test]
fn hellos_establish_both_sides() {
    let mut p = Pair::new(SessionConfig::default());
    p.connect();
    p.settle();
    for h in [&mut p.a, &mut p.b] {
        assert!(h.session().is_established());
        assert_eq!(h.session().features(), FEATURE_BLOBS);
    }
    assert_eq!(
        p.a.established,
        vec![Effect::Established {
            peer_instance: p.b.instance,
            version: PROTOCOL_VERSION,
            features: FEATURE_BLOBS,
            peer_applied_up_to: 0,
        }]
    );
}

#[test]
fn highest_common_version_is_chosen() {
    let config = SessionConfig {
        min_version: 1,
        max_version: 4,
        ..SessionConfig::default()
    };
    let mut s = session_with(config, Cursors::default(), Instant::now());
    let mut h = hello_from_b(0);
    h.min_version = 2;
    h.max_version = 9;
    s.handle_message(Message::Hello(h), Instant::now()).unwrap();
    assert!(matches!(
        effects(&mut s)[0],
        Effect::Established { version: 4, .. }
    ));
}

#[test]
fn version_mismatch_is_refused() {
    let mut s = session();
    let mut h = hello_from_b(0);
    h.min_version = PROTOCOL_VERSION + 1;
    h.max_version = PROTOCOL_VERSION + 3;
    let err = s
        .handle_message(Message::Hello(h), Instant::now())
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::VersionMismatch {
            ours: MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION,
            theirs: PROTOCOL_VERSION + 1..=PROTOCOL_VERSION + 3,
        }
    );
    assert_failed(&mut s, Some(ErrorCode::VersionMismatch), |e| {
        matches!(e, SessionError::VersionMismatch { .. })
    });
}

#[test]
fn empty_version_range_is_malformed() {
    let mut s = session();
    let mut h = hello_from_b(0);
    h.min_version = 3;
    h.max_version = 1;
    assert!(s.handle_message(Message::Hello(h), Instant::now()).is_err());
    assert_failed(&mut s, Some(ErrorCode::Malformed), |e| {
        matches!(
            e,
            SessionError::Malformed {
                message: "hello",
                ..
            }
        )
    });
}

#[test]
fn wrong_org_is_refused() {
    let mut s = session();
    let mut h = hello_from_b(0);
    h.org = OrgId([0xcc; 32]);
    let err = s
        .handle_message(Message::Hello(h), Instant::now())
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::WrongOrg {
            expected: ORG_B,
            got: OrgId([0xcc; 32])
        }
    );
    assert_failed(&mut s, Some(ErrorCode::NotPaired), |e| {
        matches!(e, SessionError::WrongOrg { .. })
    });
}

#[test]
fn wrong_epoch_is_refused() {
    let mut s = session();
    let mut h = hello_from_b(0);
    h.epoch = EPOCH + 1;
    let err = s
        .handle_message(Message::Hello(h), Instant::now())
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::EpochMismatch {
            accepted: vec![EPOCH],
            theirs: EPOCH + 1
        }
    );
    assert_failed(&mut s, Some(ErrorCode::BadEpoch), |e| {
        matches!(e, SessionError::EpochMismatch { .. })
    });
}

#[test]
fn configured_extra_epoch_is_accepted() {
    let config = SessionConfig {
        accepted_epochs: vec![EPOCH + 1],
        ..SessionConfig::default()
    };
    let mut s = session_with(config, Cursors::default(), Instant::now());
    let mut h = hello_from_b(0);
    h.epoch = EPOCH + 1;
    s.handle_message(Message::Hello(h), Instant::now()).unwrap();
    assert!(s.is_established());
}

#[test]
fn messages_before_hello_and_second_hello_are_unexpected() {
    let mut s = session();
    let err = s
        .handle_message(Message::Ack(Ack { up_to_seq: 0 }), Instant::now())
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::Unexpected {
            message: "ack",
            state: SessionState::Handshake
        }
    );
    assert_failed(&mut s, Some(ErrorCode::Unexpected), |_| true);

    let mut s = established(Cursors::default(), 0);
    effects(&mut s);
    let err = s
        .handle_message(Message::Hello(hello_from_b(0)), Instant::now())
        .unwrap_err();
    assert!(matches!(
        err,
        SessionError::Unexpected {
            message: "hello",
            state: SessionState::Established
        }
    ));
}

#[test]
fn peer_cursor_beyond_our_log_is_refused() {
    let mut s = session_with(
        SessionConfig::default(),
        Cursors {
            local_log_head: 5,
            ..Cursors::default()
        },
        Instant::now(),
    );
    let err = s
        .handle_message(Message::Hello(hello_from_b(6)), Instant::now())
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::PeerCursorAhead {
            peer_applied: 6,
            local_head: 5
        }
    );
}

/// A session of an instance restored from a backup, head 5, that has
/// received the peer's Hello saying it applied our log up to `peer_applied`.
fn restored_meets(peer_applied: u64) -> Session {
    let config = SessionConfig {
        restored: true,
        ..SessionConfig::default()
    };
    let cursors = Cursors {
        local_log_head: 5,
        applied_from_peer: 3,
        ..Cursors::default()
    };
    let mut s = session_with(config, cursors, Instant::now());
    s.handle_message(Message::Hello(hello_from_b(peer_applied)), Instant::now())
        .expect("a restored instance accepts the hello");
    assert!(s.is_established());
    s
}

#[test]
fn restored_instance_jumps_its_head_past_a_peer_ahead() {
    let mut s = restored_meets(9);
    let fx = effects(&mut s);
    // The jump comes first: the host must move its head before anything else.
    assert_eq!(fx[0], Effect::LogJumped { from: 5, to: 9 });
    assert!(matches!(
        fx[1],
        Effect::Established {
            peer_applied_up_to: 9,
            ..
        }
    ));
    // Nothing of our log is loaded for the peer: it has it all.
    assert!(!fx.iter().any(|e| matches!(e, Effect::LoadChanges { .. })));
    // The next local change, number 10, is sent.
    s.local_log_advanced(10);
    let fx = effects(&mut s);
    assert!(
        fx.contains(&Effect::LoadChanges {
            after: 9,
            limit: SessionConfig::default().max_batch_changes
        }),
        "{fx:?}"
    );
}

#[test]
fn restored_instance_refuses_a_peer_claiming_a_cursor_beyond_any_log() {
    let config = SessionConfig {
        restored: true,
        ..SessionConfig::default()
    };
    let cursors = Cursors {
        local_log_head: 5,
        ..Cursors::default()
    };
    for lie in [MAX_LOG_SEQ + 1, u64::MAX] {
        let mut s = session_with(config.clone(), cursors, Instant::now());
        let err = s
            .handle_message(Message::Hello(hello_from_b(lie)), Instant::now())
            .expect_err("a cursor beyond any log is refused");
        assert!(
            matches!(
                err,
                SessionError::Malformed {
                    message: "hello",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!s.is_established());
        assert!(
            !effects(&mut s)
                .iter()
                .any(|e| matches!(e, Effect::LogJumped { .. })),
            "no jump on a lie"
        );
    }
    // The bound itself is still a legal (if unlikely) cursor.
    let mut s = restored_meets(MAX_LOG_SEQ);
    assert!(effects(&mut s).contains(&Effect::LogJumped {
        from: 5,
        to: MAX_LOG_SEQ
    }));
}

#[test]
fn restored_instance_with_a_peer_behind_does_not_jump() {
    let mut s = restored_meets(4);
    let fx = effects(&mut s);
    assert!(!fx.iter().any(|e| matches!(e, Effect::LogJumped { .. })));
    assert!(fx.contains(&Effect::LoadChanges {
        after: 4,
        limit: SessionConfig::default().max_batch_changes
    }));
}

#[test]
fn peer_error_closes_without_answering() {
    let mut s = established(Cursors::default(), 0);
    let err = s
        .handle_message(
            Message::Error(ErrorMessage {
                code: ErrorCode::NotPaired,
                message: "revoked".into(),
            }),
            Instant::now(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::Peer {
            code: ErrorCode::NotPaired,
            message: "revoked".into()
        }
    );
    assert_failed(&mut s, None, |e| matches!(e, SessionError::Peer { .. }));
    // Input after the close is ignored.
    assert!(s.handle_message(Message::Ping(1), Instant::now()).is_ok());
    assert!(transmits(&mut s).is_empty());
}

#[test]
fn local_close_tells_the_peer() {
    let mut s = established(Cursors::default(), 0);
    effects(&mut s);
    s.close(Some(ErrorMessage {
        code: ErrorCode::NotPaired,
        message: "partner revoked".into(),
    }));
    let out = transmits(&mut s);
    assert!(
        matches!(&out[..], [Transmit { message: Message::Error(e), .. }] if e.code == ErrorCode::NotPaired)
    );
    assert_eq!(effects(&mut s), vec![Effect::Closed { error: None }]);
    assert_eq!(s.poll_timeout(), None);
}

// ---------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------

#[test]
fn sending_resumes_after_the_peers_durable_cursor() {
    let mut s = established(
        Cursors {
            local_log_head: 10,
            acked_by_peer: 2,
            ..Cursors::default()
        },
        4,
    );
    let fx = effects(&mut s);
    assert!(matches!(
        fx[0],
        Effect::Established {
            peer_applied_up_to: 4,
            ..
        }
    ));
    // The Hello's cursor counts as an ack the host may not have persisted.
    assert_eq!(fx[1], Effect::PeerAcked { up_to_seq: 4 });
    assert_eq!(
        fx[2],
        Effect::LoadChanges {
            after: 4,
            limit: 1000
        }
    );
    assert_eq!(fx.len(), 3);
}

#[test]
fn live_change_is_loaded_at_once_and_one_load_at_a_time() {
    let mut s = established(Cursors::default(), 0);
    assert_eq!(
        effects(&mut s).len(),
        1,
        "only Established: nothing to send"
    );
    s.local_log_advanced(1);
    assert_eq!(
        effects(&mut s),
        vec![Effect::LoadChanges {
            after: 0,
            limit: 1000
        }]
    );
    s.local_log_advanced(2);
    assert!(effects(&mut s).is_empty(), "a load is already outstanding");
    s.load_result(vec![change(1, InstanceId(0xa1), 0)], 1, 2)
        .unwrap();
    // The next load follows immediately for the entry written meanwhile.
    assert_eq!(
        effects(&mut s),
        vec![Effect::LoadChanges {
            after: 1,
            limit: 1000
        }]
    );
    let out = transmits(&mut s);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].channel, Channel::Changes);
    let Message::Changes(env) = &out[0].message else {
        panic!("changes expected")
    };
    assert_eq!(env.header.sequence, 1);
    assert_eq!(env.header.stream, StreamKind::Changes);
}

#[test]
fn window_pauses_loading_until_acked() {
    let config = SessionConfig {
        max_batch_changes: 4,
        max_unacked_changes: 6,
        ..SessionConfig::default()
    };
    let cursors = Cursors {
        local_log_head: 20,
        ..Cursors::default()
    };
    let mut s = session_with(config, cursors, Instant::now());
    s.handle_message(Message::Hello(hello_from_b(0)), Instant::now())
        .unwrap();
    let me = InstanceId(0xa1);
    let load = |s: &mut Session, after: u64, n: u64| {
        let changes: Vec<_> = (after + 1..=after + n).map(|q| change(q, me, 0)).collect();
        s.load_result(changes, after + n, 20).unwrap();
    };
    let fx = effects(&mut s);
    assert_eq!(fx.last(), Some(&Effect::LoadChanges { after: 0, limit: 4 }));
    load(&mut s, 0, 4);
    // Only 2 more fit in the window.
    assert_eq!(
        effects(&mut s),
        vec![Effect::LoadChanges { after: 4, limit: 2 }]
    );
    load(&mut s, 4, 2);
    assert!(effects(&mut s).is_empty(), "window full");
    assert_eq!(s.stats().unacked, 6);
    s.handle_message(Message::Ack(Ack { up_to_seq: 4 }), Instant::now())
        .unwrap();
    assert_eq!(
        effects(&mut s),
        vec![
            Effect::PeerAcked { up_to_seq: 4 },
            Effect::LoadChanges { after: 6, limit: 4 }
        ]
    );
    // A stale ack changes nothing; an ack beyond what was sent is an error.
    s.handle_message(Message::Ack(Ack { up_to_seq: 3 }), Instant::now())
        .unwrap();
    assert!(effects(&mut s).is_empty());
    let err = s
        .handle_message(Message::Ack(Ack { up_to_seq: 7 }), Instant::now())
        .unwrap_err();
    assert_eq!(err, SessionError::AckBeyondSent { acked: 7, sent: 6 });
}

#[test]
fn large_loads_are_split_by_count_and_bytes() {
    let config = SessionConfig {
        max_batch_changes: 3,
        max_batch_bytes: 2_000,
        ..SessionConfig::default()
    };
    let mut s = session_with(
        config,
        Cursors {
            local_log_head: 7,
            ..Cursors::default()
        },
        Instant::now(),
    );
    s.handle_message(Message::Hello(hello_from_b(0)), Instant::now())
        .unwrap();
    take_clock_probe(&mut s);
    effects(&mut s);
    // Four small changes, then three of ~1.5 KB, the host ignoring the
    // limits: at most 3 per batch by count, and no more than fit 2,000
    // bytes (a small and a large one do, two large ones do not).
    let changes: Vec<_> = (1..=7)
        .map(|q| change(q, InstanceId(0xa1), if q <= 4 { 0 } else { 1_500 }))
        .collect();
    let sizes: Vec<usize> = changes
        .iter()
        .map(|c| codec::encode(&c.change).unwrap().len())
        .collect();
    assert!(sizes[..4].iter().all(|&n| n < 200), "{sizes:?}");
    assert!(
        sizes[4..].iter().all(|&n| n > 1_000 && n < 1_700),
        "{sizes:?}"
    );
    s.load_result(changes, 7, 7).unwrap();
    let seqs: Vec<u64> = transmits(&mut s)
        .into_iter()
        .map(|t| match t.message {
            Message::Changes(env) => env.header.sequence,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(seqs, vec![3, 5, 6, 7]);
}

#[test]
fn filtered_loads_advance_the_peers_cursor() {
    let mut p = Pair::new(SessionConfig::default());
    p.connect();
    p.settle();
    // A's log has 5 entries; only 2 and 4 are shared with B.
    for _ in 0..5 {
        p.a.log
            .push(change(p.a.log.len() as u64 + 1, p.a.instance, 0));
    }
    p.a.eager = false;
    p.a.session().local_log_advanced(5);
    p.pump();
    assert_eq!(p.a.pending_load, Some((0, 1000)));
    p.a.pending_load = None;
    let shared = vec![p.a.log[1].clone(), p.a.log[3].clone()];
    p.a.session().load_result(shared, 5, 5).unwrap();
    p.settle();
    assert_eq!(p.b.applied_cursor, 5);
    assert_eq!(p.b.store.keys().copied().collect::<Vec<_>>(), vec![2, 4]);
    assert_eq!(p.a.acked_by_peer, 5);
}

#[test]
fn host_misuse_is_refused_without_closing() {
    let mut s = established(Cursors::default(), 0);
    assert!(matches!(
        s.load_result(Vec::new(), 1, 1),
        Err(SessionError::Misuse(_))
    ));
    assert!(matches!(s.applied(1), Err(SessionError::Misuse(_))));
    assert!(matches!(
        s.blob_chunk_ready([1; 32], 0, 1, vec![0]),
        Err(SessionError::Misuse(_))
    ));
    assert!(s.is_established());
}

// ---------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------

#[test]
fn ack_only_after_applied_and_coalesced() {
    let mut s = established(Cursors::default(), 0);
    effects(&mut s);
    s.handle_message(batch_from_b(1..=2, 2), Instant::now())
        .unwrap();
    s.handle_message(batch_from_b(3..=5, 5), Instant::now())
        .unwrap();
    let fx = effects(&mut s);
    assert_eq!(fx.len(), 2, "both batches handed out before any is applied");
    assert!(matches!(&fx[0], Effect::Apply { changes, up_to_seq: 2 } if changes.len() == 2));
    assert!(matches!(&fx[1], Effect::Apply { changes, up_to_seq: 5 } if changes.len() == 3));
    assert!(transmits(&mut s).is_empty(), "nothing durable yet: no ack");
    s.applied(2).unwrap();
    s.applied(5).unwrap();
    let out = transmits(&mut s);
    assert_eq!(
        out,
        vec![Transmit {
            channel: Channel::Control,
            message: Message::Ack(Ack { up_to_seq: 5 })
        }],
        "one ack for both"
    );
    s.applied(5).unwrap();
    assert!(transmits(&mut s).is_empty(), "no repeated ack");
    let st = s.stats();
    assert_eq!(
        (st.received_up_to, st.applied_up_to, st.peer_log_head),
        (5, 5, 5)
    );
}

#[test]
fn ack_never_runs_ahead_of_applied() {
    let mut p = Pair::new(SessionConfig::default());
    p.b.eager = false;
    p.connect();
    p.settle();
    for _ in 0..3 {
        p.a.write(0);
    }
    p.pump();
    p.deliver_all();
    assert_eq!(p.b.pending_applies.len(), 1);
    assert_eq!(p.a.acked_by_peer, 0, "not durable at B yet");
    p.b.make_durable();
    p.pump();
    p.deliver_all();
    assert_eq!(p.a.acked_by_peer, 3);
    assert_eq!(p.a.session().stats().unacked, 0);
}

#[test]
fn duplicate_and_old_batches_are_not_reapplied() {
    let mut s = established(
        Cursors {
            applied_from_peer: 1,
            ..Cursors::default()
        },
        0,
    );
    effects(&mut s);
    // Already durable before this session.
    s.handle_message(batch_from_b(1..=1, 1), Instant::now())
        .unwrap();
    assert!(effects(&mut s).is_empty());
    s.handle_message(batch_from_b(2..=3, 3), Instant::now())
        .unwrap();
    assert_eq!(effects(&mut s).len(), 1);
    // The same batch again (duplicate) and an older one: dropped.
    s.handle_message(batch_from_b(2..=3, 3), Instant::now())
        .unwrap();
    s.handle_message(batch_from_b(2..=2, 2), Instant::now())
        .unwrap();
    assert!(effects(&mut s).is_empty());
    // Overlapping: only the new part is handed out.
    s.handle_message(batch_from_b(2..=5, 5), Instant::now())
        .unwrap();
    let fx = effects(&mut s);
    let Effect::Apply { changes, up_to_seq } = &fx[0] else {
        panic!("apply expected")
    };
    assert_eq!(*up_to_seq, 5);
    assert_eq!(
        changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert_eq!(s.stats().duplicate_batches, 3);
    assert!(s.is_established());
}

#[test]
fn tampered_envelope_is_refused_and_reported() {
    let mut s = established(Cursors::default(), 0);
    effects(&mut s);
    let Message::Changes(mut env) = batch_from_b(1..=1, 1) else {
        unreachable!()
    };
    let last = env.ciphertext.len() - 1;
    env.ciphertext[last] ^= 1;
    let err = s
        .handle_message(Message::Changes(env), Instant::now())
        .unwrap_err();
    assert!(matches!(err, SessionError::BadEnvelope(_)), "{err:?}");
    assert_failed(&mut s, Some(ErrorCode::BadEnvelope), |e| {
        matches!(e, SessionError::BadEnvelope(_))
    });
}

#[test]
fn envelope_under_the_wrong_key_is_refused() {
    let mut s = established(Cursors::default(), 0);
    effects(&mut s);
    let bytes = codec::encode(&ChangeBatch {
        changes: vec![change(1, PEER_INSTANCE, 0)],
        log_head: 1,
    })
    .unwrap();
    // Sealed by A for B: B's key, wrong direction.
    let env = envelope::seal(&keys(ORG_A, ORG_B), StreamKind::Changes, 1, &bytes);
    assert!(matches!(
        s.handle_message(Message::Changes(env), Instant::now()),
        Err(SessionError::BadEnvelope(_))
    ));
}

#[test]
fn batch_breaking_its_own_sequence_is_malformed() {
    let mut s = established(Cursors::default(), 0);
    effects(&mut s);
    // Change 3 inside an envelope that claims to cover only up to 2.
    let bytes = codec::encode(&ChangeBatch {
        changes: vec![change(3, PEER_INSTANCE, 0)],
        log_head: 3,
    })
    .unwrap();
    let env = envelope::seal(&keys(ORG_B, ORG_A), StreamKind::Changes, 2, &bytes);
    assert!(matches!(
        s.handle_message(Message::Changes(env), Instant::now()),
        Err(SessionError::Malformed { .. })
    ));
    // A blob chunk passed off as a change batch.
    let mut s = established(Cursors::default(), 0);
    let Message::BlobChunk(env) = chunk_from_b([1; 32], 0, 1, vec![1]) else {
        unreachable!()
    };
    assert!(matches!(
        s.handle_message(Message::Changes(env), Instant::now()),
        Err(SessionError::Malformed { .. })
    ));
}

#[test]
fn undecodable_plaintext_is_a_decode_error() {
    let mut s = established(Cursors::default(), 0);
    let env = envelope::seal(&keys(ORG_B, ORG_A), StreamKind::Changes, 1, &[0xff; 3]);
    let err = s
        .handle_message(Message::Changes(env), Instant::now())
        .unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Decode {
                what: "change batch",
                ..
            }
        ),
        "{err:?}"
    );
    assert_failed(&mut s, Some(ErrorCode::Malformed), |_| true);
}

// ---------------------------------------------------------------------
// Liveness
// ---------------------------------------------------------------------

#[test]
fn keep_alive_pings_and_idle_timeout() {
    let t0 = Instant::now();
    // Version 1: no clock probes, pings only after silence.
    let config = SessionConfig {
        idle_timeout: Duration::from_secs(30),
        keep_alive_interval: Duration::from_secs(10),
        max_version: 1,
        ..SessionConfig::default()
    };
    let mut s = session_with(config, Cursors::default(), t0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    s.handle_message(Message::Hello(hello_from_b(0)), t0)
        .unwrap();
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    s.handle_timeout(t0 + Duration::from_secs(10));
    let out = transmits(&mut s);
    let [Transmit {
        message: Message::Ping(nonce),
        ..
    }] = out[..]
    else {
        panic!("ping expected: {out:?}")
    };
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    // The peer answers pings too.
    s.handle_message(Message::Ping(77), t0 + Duration::from_secs(11))
        .unwrap();
    assert_eq!(
        transmits(&mut s)[0].message,
        Message::Pong(77),
        "peer pings are answered"
    );
    s.handle_message(Message::Pong(nonce), t0 + Duration::from_secs(12))
        .unwrap();
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(22)));
    // Silence: a ping, then the timeout.
    s.handle_timeout(t0 + Duration::from_secs(22));
    assert!(matches!(transmits(&mut s)[0].message, Message::Ping(_)));
    s.handle_timeout(t0 + Duration::from_secs(41));
    assert!(!s.is_closed(), "30 s after the pong at 12 s, not before");
    s.handle_timeout(t0 + Duration::from_secs(42));
    assert_failed(&mut s, None, |e| {
        matches!(
            e,
            SessionError::Timeout {
                state: SessionState::Established,
                ..
            }
        )
    });
}

#[test]
fn handshake_times_out() {
    let t0 = Instant::now();
    let mut s = session_with(SessionConfig::default(), Cursors::default(), t0);
    s.handle_timeout(t0 + Duration::from_secs(29));
    assert!(!s.is_closed());
    s.handle_timeout(t0 + Duration::from_secs(30));
    assert_failed(&mut s, None, |e| {
        matches!(
            e,
            SessionError::Timeout {
                state: SessionState::Handshake,
                ..
            }
        )
    });
}

// ---------------------------------------------------------------------
// Blobs
// ---------------------------------------------------------------------

fn blob(len: usize) -> (Vec<u8>, [u8; 32]) {
    let content: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let hash = *blake3::hash(&content).as_bytes();
    (content, hash)
}

#[test]
fn blob_transfers_in_chunks_and_resumes_after_disconnect() {
    let mut p = Pair::new(SessionConfig::default());
    let (content, hash) = blob(10_500);
    p.b.blobs.insert(hash, content.clone());
    p.b.serve_chunk = 1_000;
    p.connect();
    p.settle();
    let object = ObjectId([9; 16]);
    p.a.session().request_blob(hash, 0, object).unwrap();
    p.pump();
    // The request reaches B, which queues all chunks; deliver four of them.
    p.deliver(0, 0).unwrap().unwrap();
    for _ in 0..4 {
        p.deliver(1, 0).unwrap().unwrap();
    }
    assert_eq!(p.a.partial[&hash].len(), 4_000);
    assert!(p.b.session().poll_transmit().is_none());
    let blob_channel = p.links[1]
        .queues
        .iter()
        .any(|(c, q)| *c == Channel::Blob(hash) && !q.is_empty());
    assert!(blob_channel, "chunks travel on the blob's own stream");
    // Disconnect; the temp file survives; resume from its length.
    p.cut(0, 0);
    p.connect();
    p.settle();
    let have = p.a.partial[&hash].len() as u64;
    p.a.session().request_blob(hash, have, object).unwrap();
    p.pump();
    p.settle();
    assert_eq!(p.a.blobs.get(&hash), Some(&content), "verified by BLAKE3");
    assert!(p.a.corrupt.is_empty());
    assert!(p.a.partial.is_empty());
    assert!(p.a.session().is_established() && p.b.session().is_established());
}

#[test]
fn corrupt_blob_fails_the_hosts_hash_check() {
    let mut p = Pair::new(SessionConfig::default());
    let (mut content, hash) = blob(3_000);
    content[100] ^= 1;
    p.b.blobs.insert(hash, content);
    p.connect();
    p.settle();
    p.a.session()
        .request_blob(hash, 0, ObjectId([1; 16]))
        .unwrap();
    p.pump();
    p.settle();
    assert_eq!(p.a.corrupt, vec![hash]);
    assert!(!p.a.blobs.contains_key(&hash));
}

#[test]
fn blob_request_for_everything_already_held_completes_at_once() {
    let mut p = Pair::new(SessionConfig::default());
    let (content, hash) = blob(2_000);
    p.b.blobs.insert(hash, content.clone());
    p.connect();
    p.settle();
    p.a.partial.insert(hash, content.clone());
    p.a.session()
        .request_blob(hash, 2_000, ObjectId([1; 16]))
        .unwrap();
    p.pump();
    p.settle();
    assert_eq!(p.a.blobs.get(&hash), Some(&content));
}

#[test]
fn blob_unavailable_is_not_fatal() {
    let mut p = Pair::new(SessionConfig::default());
    p.connect();
    p.settle();
    let hash = [4; 32];
    p.a.session()
        .request_blob(hash, 0, ObjectId([1; 16]))
        .unwrap();
    p.pump();
    p.settle();
    assert_eq!(p.a.unavailable, vec![hash]);
    assert!(p.a.session().is_established() && p.b.session().is_established());
    // Changes still flow.
    p.b.write(0);
    p.pump();
    p.settle();
    assert_eq!(p.a.applied_cursor, 1);
}

#[test]
fn blob_chunk_out_of_order_is_refused() {
    let mut s = established(Cursors::default(), 0);
    let (content, hash) = blob(3_000);
    s.request_blob(hash, 0, ObjectId([1; 16])).unwrap();
    s.handle_message(
        chunk_from_b(hash, 0, 3_000, content[..1_000].to_vec()),
        Instant::now(),
    )
    .unwrap();
    // Skips 1000..2000.
    let err = s
        .handle_message(
            chunk_from_b(hash, 2_000, 3_000, content[2_000..].to_vec()),
            Instant::now(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::BlobOutOfOrder {
            hash,
            expected: 1_000,
            got: 2_000
        }
    );
    assert_failed(&mut s, Some(ErrorCode::Malformed), |e| {
        matches!(e, SessionError::BlobOutOfOrder { .. })
    });
}

#[test]
fn replayed_blob_chunk_is_refused() {
    let mut s = established(Cursors::default(), 0);
    let (content, hash) = blob(2_000);
    s.request_blob(hash, 0, ObjectId([1; 16])).unwrap();
    let first = chunk_from_b(hash, 0, 2_000, content[..1_000].to_vec());
    s.handle_message(first.clone(), Instant::now()).unwrap();
    assert!(matches!(
        s.handle_message(first, Instant::now()),
        Err(SessionError::BlobOutOfOrder {
            expected: 1_000,
            got: 0,
            ..
        })
    ));
}

#[test]
fn unrequested_or_incomplete_blobs_are_refused() {
    let mut s = established(Cursors::default(), 0);
    assert!(matches!(
        s.handle_message(chunk_from_b([2; 32], 0, 1, vec![1]), Instant::now()),
        Err(SessionError::BlobNotRequested { .. })
    ));
    let mut s = established(Cursors::default(), 0);
    s.request_blob([3; 32], 0, ObjectId([1; 16])).unwrap();
    s.handle_message(chunk_from_b([3; 32], 0, 10, vec![1; 4]), Instant::now())
        .unwrap();
    assert!(matches!(
        s.handle_message(
            Message::BlobDone(BlobDone {
                hash: [3; 32],
                total_len: 10
            }),
            Instant::now()
        ),
        Err(SessionError::BlobOutOfOrder {
            expected: 4,
            got: 10,
            ..
        })
    ));
}

#[test]
fn blob_chunk_beyond_total_len_is_refused() {
    let mut s = established(Cursors::default(), 0);
    s.request_blob([3; 32], 0, ObjectId([1; 16])).unwrap();
    assert!(matches!(
        s.handle_message(chunk_from_b([3; 32], 0, 2, vec![1; 4]), Instant::now()),
        Err(SessionError::Decode {
            what: "blob chunk",
            ..
        })
    ));
}

#[test]
fn blob_requests_are_bounded() {
    let config = SessionConfig {
        max_blob_transfers: 1,
        ..SessionConfig::default()
    };
    let mut s = session_with(config, Cursors::default(), Instant::now());
    s.handle_message(Message::Hello(hello_from_b(0)), Instant::now())
        .unwrap();
    let req = |h: u8| {
        Message::BlobRequest(BlobRequest {
            hash: [h; 32],
            offset: 0,
            object: ObjectId([h; 16]),
        })
    };
    s.handle_message(req(1), Instant::now()).unwrap();
    assert!(effects(&mut s).contains(&Effect::ReadBlob {
        hash: [1; 32],
        offset: 0,
        object: ObjectId([1; 16])
    }));
    assert_eq!(
        s.handle_message(req(2), Instant::now()).unwrap_err(),
        SessionError::TooManyBlobTransfers { limit: 1 }
    );
}

#[test]
fn blobs_need_the_feature() {
    let mut s = session();
    let mut h = hello_from_b(0);
    h.features = 0;
    s.handle_message(Message::Hello(h), Instant::now()).unwrap();
    assert!(matches!(
        s.request_blob([1; 32], 0, ObjectId([1; 16])),
        Err(SessionError::Misuse(_))
    ));
    assert!(matches!(
        s.handle_message(
            Message::BlobRequest(BlobRequest {
                hash: [1; 32],
                offset: 0,
                object: ObjectId([1; 16])
            }),
            Instant::now()
        ),
        Err(SessionError::Unexpected {
            message: "blob-request",
            ..
        })
    ));
}

#[test]
fn blob_chunks_yield_to_changes() {
    let mut s = established(
        Cursors {
            local_log_head: 1,
            ..Cursors::default()
        },
        0,
    );
    effects(&mut s);
    s.handle_message(
        Message::BlobRequest(BlobRequest {
            hash: [1; 32],
            offset: 0,
            object: ObjectId([1; 16]),
        }),
        Instant::now(),
    )
    .unwrap();
    s.blob_chunk_ready([1; 32], 0, 3, vec![1, 2, 3]).unwrap();
    s.load_result(vec![change(1, InstanceId(0xa1), 0)], 1, 1)
        .unwrap();
    let channels: Vec<Channel> = transmits(&mut s).into_iter().map(|t| t.channel).collect();
    assert_eq!(
        channels,
        vec![
            Channel::Changes,
            Channel::Blob([1; 32]),
            Channel::Blob([1; 32])
        ]
    );
}

#[test]
fn batches_overtaking_the_hello_are_held_until_it_arrives() {
    let mut s = session();
    // The changes stream is not ordered with the control stream.
    s.handle_message(batch_from_b(1..=2, 2), Instant::now())
        .unwrap();
    assert!(
        effects(&mut s).is_empty(),
        "nothing before the hello is checked"
    );
    s.handle_message(Message::Hello(hello_from_b(0)), Instant::now())
        .unwrap();
    let fx = effects(&mut s);
    assert!(matches!(fx[0], Effect::Established { .. }));
    assert!(matches!(&fx[1], Effect::Apply { changes, up_to_seq: 2 } if changes.len() == 2));

    // A batch held back is still checked once the hello is in.
    let mut s = session();
    let Message::Changes(mut env) = batch_from_b(1..=1, 1) else {
        unreachable!()
    };
    env.ciphertext[0] ^= 1;
    s.handle_message(Message::Changes(env), Instant::now())
        .unwrap();
    assert!(matches!(
        s.handle_message(Message::Hello(hello_from_b(0)), Instant::now()),
        Err(SessionError::BadEnvelope(_))
    ));
}

// ---------------------------------------------------------------------
// Protocol versions
// ---------------------------------------------------------------------

/// A fixed wall clock for the clock-skew tests (1 000 000 ms).
fn fixed_wall() -> u64 {
    1_000_000
}

fn hello_with_versions(min: u16, max: u16) -> Hello {
    Hello {
        min_version: min,
        max_version: max,
        ..hello_from_b(0)
    }
}

fn established_version(fx: &[Effect]) -> Option<u16> {
    fx.iter().find_map(|e| match e {
        Effect::Established { version, .. } => Some(*version),
        _ => None,
    })
}

#[test]
fn the_highest_common_version_is_chosen() {
    for ((min, max), want) in [((1, 1), 1), ((1, 2), 2), ((2, 2), 2), ((1, 9), 2)] {
        let mut s = session();
        s.handle_message(
            Message::Hello(hello_with_versions(min, max)),
            Instant::now(),
        )
        .unwrap();
        assert_eq!(
            established_version(&effects(&mut s)),
            Some(want),
            "peer {min}..={max}"
        );
        assert_eq!(s.stats().version, Some(want));
    }
    // A daemon held to version 1 chooses 1 even with a version-2 peer.
    let config = SessionConfig {
        max_version: 1,
        ..SessionConfig::default()
    };
    let mut s = session_with(config, Cursors::default(), Instant::now());
    s.handle_message(Message::Hello(hello_with_versions(1, 2)), Instant::now())
        .unwrap();
    assert_eq!(established_version(&effects(&mut s)), Some(1));
}

#[test]
fn version_1_sessions_speak_version_1_only() {
    let mut s = session();
    s.handle_message(Message::Hello(hello_with_versions(1, 1)), Instant::now())
        .unwrap();
    assert!(transmits(&mut s).is_empty(), "no clock probe on version 1");
    s.handle_message(Message::Ping(9), Instant::now()).unwrap();
    assert_eq!(transmits(&mut s)[0].message, Message::Pong(9));
    assert_eq!(s.stats().clock_skew_ms, None);
    // A clock pong is not part of version 1.
    let err = s
        .handle_message(
            Message::ClockPong(ClockPong {
                nonce: 1,
                unix_ms: 5,
            }),
            Instant::now(),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        SessionError::Unexpected {
            message: "clock-pong",
            ..
        }
    ));
}

#[test]
fn version_2_probes_the_clock_and_estimates_the_skew() {
    let t0 = Instant::now();
    let config = SessionConfig {
        wall_clock: WallClock(fixed_wall),
        clock_probe_interval: Duration::from_secs(60),
        keep_alive_interval: Duration::from_secs(10),
        ..SessionConfig::default()
    };
    let mut s = session_with(config, Cursors::default(), t0);
    s.handle_message(Message::Hello(hello_with_versions(1, 2)), t0)
        .unwrap();
    let out = transmits(&mut s);
    let [Transmit {
        message: Message::Ping(nonce),
        ..
    }] = out[..]
    else {
        panic!("a clock probe at once: {out:?}")
    };
    // Pings of the peer are answered with our clock.
    s.handle_message(Message::Ping(77), t0).unwrap();
    assert_eq!(
        transmits(&mut s)[0].message,
        Message::ClockPong(ClockPong {
            nonce: 77,
            unix_ms: 1_000_000
        })
    );
    // The partner is 5 s ahead; its answer took 200 ms round trip, so it
    // read its clock 100 ms before the answer arrived.
    let answer = Message::ClockPong(ClockPong {
        nonce,
        unix_ms: 1_005_000,
    });
    s.handle_message(answer, t0 + Duration::from_millis(200))
        .unwrap();
    let stats = s.stats();
    assert_eq!(stats.clock_skew_ms, Some(5_100));
    assert_eq!(stats.clock_round_trip, Some(Duration::from_millis(200)));
    // A stale or unknown nonce changes nothing.
    s.handle_message(
        Message::ClockPong(ClockPong {
            nonce: nonce + 5,
            unix_ms: 0,
        }),
        t0 + Duration::from_millis(300),
    )
    .unwrap();
    assert_eq!(s.stats().clock_skew_ms, Some(5_100));
    // Traffic keeps the connection alive, yet the clock is probed again
    // after the probe interval.
    for sec in 1..=60 {
        let now = t0 + Duration::from_secs(sec);
        s.handle_message(Message::Ack(Ack { up_to_seq: 0 }), now)
            .unwrap();
        s.handle_timeout(now);
    }
    let probes = transmits(&mut s)
        .into_iter()
        .filter(|t| matches!(t.message, Message::Ping(_)))
        .count();
    assert_eq!(probes, 1, "one probe 60 s after the first");
}

#[test]
fn no_common_version_is_refused_naming_both_ranges() {
    let config = SessionConfig {
        min_version: 2,
        ..SessionConfig::default()
    };
    let mut s = session_with(config, Cursors::default(), Instant::now());
    let err = s
        .handle_message(Message::Hello(hello_with_versions(1, 1)), Instant::now())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no common protocol version: this instance speaks protocol 2..=2, the peer speaks 1..=1"
    );
    assert_failed(&mut s, Some(ErrorCode::VersionMismatch), |e| {
        matches!(e, SessionError::VersionMismatch { ours, theirs }
            if *ours == (2..=2) && *theirs == (1..=1))
    });
}

#[test]
fn encoded_loads_send_the_given_bytes_in_one_envelope_per_batch() {
    for version in [1, 2] {
        let config = SessionConfig {
            max_version: version,
            max_batch_changes: 4,
            ..SessionConfig::default()
        };
        let mut s = session_with(
            config,
            Cursors {
                local_log_head: 10,
                ..Cursors::default()
            },
            Instant::now(),
        );
        s.handle_message(Message::Hello(hello_from_b(0)), Instant::now())
            .unwrap();
        transmits(&mut s);
        effects(&mut s);
        // Stored objects (their encodings, as a store keeps them), every
        // other entry left out by the host's policy.
        let changes: Vec<SequencedChange> = (1..=10)
            .filter(|q| q % 2 == 0)
            .map(|q| change(q, InstanceId(0xa1), 40))
            .collect();
        let stored: Vec<(u64, Vec<u8>)> = changes
            .iter()
            .map(|c| {
                let obj = crate::model::Object {
                    id: c.change.id,
                    kind: c.change.kind,
                    fields: c.change.fields.clone(),
                    deleted: c.change.deleted,
                };
                (c.seq, codec::encode(&obj).unwrap())
            })
            .collect();
        s.load_result_encoded(&stored, 10, 10).unwrap();
        let envelopes: Vec<SealedEnvelope> = transmits(&mut s)
            .into_iter()
            .filter_map(|t| match t.message {
                Message::Changes(env) => Some(env),
                _ => None,
            })
            .collect();
        // 5 changes, at most 4 a batch: two envelopes, one AEAD call each.
        assert_eq!(envelopes.len(), 2, "version {version}");
        assert_eq!(envelopes[0].header.sequence, 8);
        assert_eq!(envelopes[1].header.sequence, 10);
        let b_keys = keys(ORG_B, ORG_A);
        let first = envelope::open(&b_keys, &envelopes[0]).unwrap();
        let second = envelope::open(&b_keys, &envelopes[1]).unwrap();
        // Byte for byte what encoding the decoded batch gives (version 1's
        // plaintext), and it decodes to the changes.
        let want = |changes: &[SequencedChange]| {
            codec::encode(&ChangeBatch {
                changes: changes.to_vec(),
                log_head: 10,
            })
            .unwrap()
        };
        assert_eq!(first, want(&changes[..4]), "version {version}");
        assert_eq!(second, want(&changes[4..]), "version {version}");
        assert_eq!(decode_change_batch(&first).unwrap().changes, changes[..4]);
    }
}
