//! The whole sans-IO pipeline through the `orgsync` facade, as two instances
//! would run it: sender encodes a change batch, seals it under the pair key,
//! frames it; receiver decodes the frame in arbitrary pieces, opens the
//! envelope, validates the batch and merges it. No sockets: the bytes are
//! handed over in memory, which is exactly what the protocol crate promises.

use std::collections::BTreeMap;

use orgsync::protocol::clock::{Clock, DEFAULT_MAX_DRIFT_MS};
use orgsync::protocol::codec::{self, FrameDecoder};
use orgsync::protocol::envelope::{self, EnvelopeError, ReplayGuard, StreamKind};
use orgsync::protocol::identity::OrgKeyPair;
use orgsync::protocol::merge;
use orgsync::protocol::model::{
    Change, FieldKey, FieldState, InstanceId, Kind, Object, ObjectId, SequencedChange, Value,
    Version,
};
use orgsync::protocol::wire::{self, ChangeBatch, Message};

fn contact(clock: &mut Clock, instance: InstanceId, wall_ms: u64, name: &str) -> Change {
    let version = Version {
        hlc: clock.now(wall_ms),
        instance,
    };
    let mut fields = BTreeMap::new();
    for (k, v) in [
        ("name", name.to_string()),
        ("email", format!("{name}@example.org")),
    ] {
        fields.insert(
            FieldKey::Std(k.into()),
            FieldState {
                version,
                value: Some(Value::Text(v)),
            },
        );
    }
    Change {
        id: ObjectId::new_v7(wall_ms),
        kind: Kind::Contact,
        fields,
        deleted: None,
    }
}

#[test]
fn batch_travels_sealed_in_frames_and_merges_on_the_other_side() {
    let (a, b) = (OrgKeyPair::generate(), OrgKeyPair::generate());
    let (a_id, b_id) = (a.public().org_id(), b.public().org_id());
    let a_keys = a.pair_keys(a_id, b_id, &b.public(), 0).unwrap();
    let b_keys = b.pair_keys(b_id, a_id, &a.public(), 0).unwrap();

    let mut clock = Clock::new(DEFAULT_MAX_DRIFT_MS);
    let instance = InstanceId::random();
    let changes: Vec<SequencedChange> = (1..=50u64)
        .map(|seq| SequencedChange {
            seq,
            change: contact(
                &mut clock,
                instance,
                1_767_225_600_000 + seq,
                &format!("person{seq}"),
            ),
        })
        .collect();

    // Sender: two batches, each sealed with the sequence of its last change.
    let mut wire_bytes = Vec::new();
    for chunk in changes.chunks(25) {
        let batch = ChangeBatch {
            changes: chunk.to_vec(),
            log_head: 50,
        };
        let sealed = envelope::seal(
            &a_keys,
            StreamKind::Changes,
            chunk.last().unwrap().seq,
            &codec::encode(&batch).unwrap(),
        );
        wire_bytes.extend(codec::encode_frame(&Message::Changes(sealed)).unwrap());
    }

    // Receiver: bytes arrive in odd-sized pieces.
    let mut decoder = FrameDecoder::new();
    let mut guard = ReplayGuard::new(0);
    let mut store: BTreeMap<ObjectId, Object> = BTreeMap::new();
    let mut envelopes = Vec::new();
    for piece in wire_bytes.chunks(997) {
        decoder.push(piece).unwrap();
        while let Some(msg) = decoder.next_message().unwrap() {
            let Message::Changes(sealed) = msg else {
                panic!("unexpected {}", msg.name())
            };
            guard.check(&sealed.header).unwrap();
            let plain = envelope::open(&b_keys, &sealed).unwrap();
            guard.accept(sealed.header.sequence);
            let batch = wire::decode_change_batch(&plain).unwrap();
            for sc in &batch.changes {
                let merged = merge::apply_change(store.remove(&sc.change.id), &sc.change).unwrap();
                store.insert(sc.change.id, merged);
            }
            envelopes.push(sealed);
        }
    }

    assert_eq!(envelopes.len(), 2);
    assert_eq!(store.len(), 50);
    for sc in &changes {
        let obj = &store[&sc.change.id];
        assert_eq!(
            obj.fields, sc.change.fields,
            "object {} arrived intact",
            sc.change.id
        );
    }
    // Replaying the first envelope is refused; applying its changes again
    // would change nothing anyway.
    assert!(matches!(
        guard.check(&envelopes[0].header),
        Err(EnvelopeError::Replayed { .. })
    ));
    // An envelope from A opened as if A were the receiver is refused.
    assert!(envelope::open(&a_keys, &envelopes[0]).is_err());
}
