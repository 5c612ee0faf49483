//! Protocol version 1 stays byte-identical: the bytes this build encodes
//! for v1 messages and change batches equal fixtures captured from `main`
//! before protocol version 2 was added (commit 6982a30). Regenerate only
//! deliberately: `ORGSYNC_WRITE_FIXTURES=1 cargo test -p orgsync-protocol
//! --test wire_v1_fixture` (then the test proves nothing for that run).

use std::collections::BTreeMap;
use std::path::PathBuf;

use orgsync_protocol::clock::Timestamp;
use orgsync_protocol::codec;
use orgsync_protocol::envelope::{EnvelopeHeader, SealedEnvelope, StreamKind};
use orgsync_protocol::model::{
    Change, Date, FieldKey, FieldState, InstanceId, Kind, ObjectId, OrgId, SequencedChange, Value,
    Version,
};
use orgsync_protocol::wire::{Ack, ChangeBatch, Hello, Message};

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Compares `bytes` with the fixture `name` (or writes it when asked to).
fn check(name: &str, bytes: &[u8]) {
    let path = fixture_path(name);
    if std::env::var_os("ORGSYNC_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, bytes).expect("write fixture");
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(
        bytes,
        &want[..],
        "{name}: v1 bytes differ from the fixture captured from main"
    );
}

fn version(ms: u64, instance: u64) -> Version {
    Version {
        hlc: Timestamp::new(ms, 7),
        instance: InstanceId(instance),
    }
}

/// Changes covering every value type, a tombstone, a flag and a deletion.
pub fn sample_changes() -> Vec<SequencedChange> {
    let mut contact = BTreeMap::new();
    contact.insert(
        FieldKey::Std("name".into()),
        FieldState {
            version: version(1_764_000_000_000, 0xa1),
            value: Some(Value::Text("Ada Lovelace — résumé".into())),
        },
    );
    contact.insert(
        FieldKey::Custom("score".into()),
        FieldState {
            version: version(1_764_000_000_001, 0xa1),
            value: Some(Value::Number(12.5)),
        },
    );
    contact.insert(
        FieldKey::Custom("age".into()),
        FieldState {
            version: version(1_764_000_000_002, 0xb2),
            value: Some(Value::Integer(-36)),
        },
    );
    contact.insert(
        FieldKey::Std("birthday".into()),
        FieldState {
            version: version(1_764_000_000_003, 0xa1),
            value: Some(Value::Date(Date::new(1815, 12, 10).expect("date"))),
        },
    );
    contact.insert(
        FieldKey::Custom("active".into()),
        FieldState {
            version: version(1_764_000_000_004, 0xa1),
            value: Some(Value::Bool(true)),
        },
    );
    contact.insert(
        FieldKey::Custom("level".into()),
        FieldState {
            version: version(1_764_000_000_005, 0xa1),
            value: Some(Value::Choice("senior".into())),
        },
    );
    contact.insert(
        FieldKey::Std("email".into()),
        FieldState {
            version: version(1_764_000_000_006, 0xa1),
            value: None,
        },
    );
    contact.insert(
        FieldKey::Flag(ObjectId([0x5f; 16])),
        FieldState {
            version: version(1_764_000_000_007, 0xb2),
            value: Some(Value::Bool(true)),
        },
    );
    let deleted = Change {
        id: ObjectId([0x22; 16]),
        kind: Kind::Organization,
        fields: BTreeMap::new(),
        deleted: Some(version(1_764_000_000_100, 0xa1)),
    };
    vec![
        SequencedChange {
            seq: 3,
            change: Change {
                id: ObjectId([0x11; 16]),
                kind: Kind::Contact,
                fields: contact,
                deleted: None,
            },
        },
        SequencedChange {
            seq: 300,
            change: deleted,
        },
    ]
}

fn sample_hello() -> Hello {
    Hello {
        min_version: 1,
        max_version: 1,
        org: OrgId([0xaa; 32]),
        instance: InstanceId(0xa1),
        epoch: 3,
        features: 3,
        applied_up_to: 70_000,
    }
}

#[test]
fn v1_change_batch_plaintext_equals_main() {
    let batch = ChangeBatch {
        changes: sample_changes(),
        log_head: 301,
    };
    check(
        "v1_change_batch.bin",
        &codec::encode(&batch).expect("encode"),
    );
}

#[test]
fn v1_control_frames_equal_main() {
    let mut frames = Vec::new();
    for msg in [
        Message::Hello(sample_hello()),
        Message::Ping(5),
        Message::Pong(5),
        Message::Ack(Ack { up_to_seq: 300 }),
        Message::Changes(SealedEnvelope {
            header: EnvelopeHeader {
                version: 1,
                sender: OrgId([0xaa; 32]),
                receiver: OrgId([0xbb; 32]),
                epoch: 3,
                key_id: [9; 8],
                stream: StreamKind::Changes,
                sequence: 300,
            },
            nonce: [4; 24],
            ciphertext: vec![0xc3; 40],
        }),
    ] {
        frames.extend(codec::encode_frame(&msg).expect("frame"));
    }
    check("v1_frames.bin", &frames);
}

/// The batch a version-1 session of this build seals for the sample
/// changes, given as stored bytes (the sender's fast path), opens to
/// exactly the plaintext `main` encoded.
#[test]
fn v1_session_batch_from_stored_bytes_equals_main() {
    use std::time::Instant;

    use orgsync_protocol::envelope;
    use orgsync_protocol::identity::{DirectionKey, PairKeys};
    use orgsync_protocol::model::Object;
    use orgsync_protocol::session::{Cursors, Effect, Session, SessionConfig};

    let (a, b) = (OrgId([0xaa; 32]), OrgId([0xbb; 32]));
    let pair = |local: OrgId, peer: OrgId, send: u8, recv: u8| PairKeys {
        epoch: 3,
        local,
        peer,
        send: DirectionKey::from_bytes([send; 32]),
        recv: DirectionKey::from_bytes([recv; 32]),
    };
    let config = SessionConfig {
        max_version: 1,
        ..SessionConfig::default()
    };
    let cursors = Cursors {
        local_log_head: 301,
        ..Cursors::default()
    };
    let now = Instant::now();
    let mut s = Session::new(config, pair(a, b, 1, 2), InstanceId(0xa1), cursors, now);
    let mut peer_hello = sample_hello();
    peer_hello.org = b;
    peer_hello.applied_up_to = 2;
    s.handle_message(Message::Hello(peer_hello), now)
        .expect("hello");
    while let Some(e) = s.poll_effect() {
        if let Effect::Established { version, .. } = e {
            assert_eq!(version, 1);
        }
    }
    let stored: Vec<(u64, Vec<u8>)> = sample_changes()
        .into_iter()
        .map(|c| {
            let obj = Object {
                id: c.change.id,
                kind: c.change.kind,
                fields: c.change.fields,
                deleted: c.change.deleted,
            };
            (c.seq, codec::encode(&obj).expect("encode object"))
        })
        .collect();
    s.load_result_encoded(&stored, 301, 301).expect("load");
    let env = std::iter::from_fn(|| s.poll_transmit())
        .find_map(|t| match t.message {
            Message::Changes(env) => Some(env),
            _ => None,
        })
        .expect("a change batch");
    let plain = envelope::open(&pair(b, a, 2, 1), &env).expect("opens");
    check("v1_change_batch.bin", &plain);
}
