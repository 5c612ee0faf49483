//! The messages of the sync protocol (ALPN `orgsync/1`).
//!
//! Each message travels as one frame (see [`crate::codec`]). Change batches
//! and blob chunks travel sealed in an [`Envelope`](crate::envelope::SealedEnvelope);
//! their plaintext types ([`ChangeBatch`], [`BlobChunk`]) are defined here too.
//!
//! Streams: one bidirectional control stream per connection carries
//! [`Message::Hello`], [`Message::Ack`], [`Message::BlobRequest`],
//! [`Message::Error`] and pings; one ordered stream per direction carries
//! [`Message::Changes`]; blob transfers use streams of their own so a large
//! file never delays records. Which message goes on which stream is given by
//! [`Message::channel`].

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError, MAX_BLOB_CHUNK, MAX_FRAME_LEN};
use crate::envelope::SealedEnvelope;
use crate::model::{
    FieldKey, InstanceId, ObjectId, OrgId, SequencedChange, Value, MAX_FIELD_NAME_LEN, MAX_TEXT_LEN,
};

/// The newest protocol version this build speaks.
///
/// - **1**: the first release's protocol.
/// - **2**: a Ping is answered with [`Message::ClockPong`], which carries
///   the answering side's wall clock, so each side can estimate the clock
///   skew of its partner; a version-2 session probes the clock as soon as
///   it is established. Every other message is the same as in version 1.
///
/// The version is chosen per connection from both [`Hello`]s (the highest
/// version both ranges contain), so a daemon of this build syncs with one
/// of the previous release; a daemon can be held to an older range
/// (`[sync] min_protocol_version` / `max_protocol_version`).
pub const PROTOCOL_VERSION: u16 = 2;
/// The oldest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// The first protocol version whose Pings are answered with
/// [`Message::ClockPong`] instead of [`Message::Pong`].
pub const CLOCK_PONG_VERSION: u16 = 2;
/// Largest wall-clock reading a [`ClockPong`] may carry: the 48-bit
/// millisecond range of [`crate::clock::Timestamp`] (year 10889).
pub const MAX_CLOCK_MS: u64 = (1 << 48) - 1;
/// ALPN identifier of the sync protocol.
pub const ALPN: &[u8] = b"orgsync/1";

/// Feature bit: the sender can transfer blobs (résumé files).
pub const FEATURE_BLOBS: u64 = 1 << 0;
/// The sender makes the receiver its mirror (another copy of the same
/// organisation). Features are negotiated as the intersection, so a session
/// has this bit only when both sides said so, before any change flows.
pub const FEATURE_MIRROR: u64 = 1 << 1;

/// Every message of the sync protocol.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum Message {
    /// First message on a connection, sent by both sides.
    Hello(Hello),
    /// A sealed [`ChangeBatch`] (stream kind `Changes`).
    Changes(SealedEnvelope),
    /// The receiver has durably applied every change up to `up_to_seq`.
    Ack(Ack),
    /// Ask the peer for a blob's content from an offset.
    BlobRequest(BlobRequest),
    /// A sealed [`BlobChunk`] (stream kind `Blob`).
    BlobChunk(SealedEnvelope),
    /// The sender has sent the whole blob.
    BlobDone(BlobDone),
    /// A protocol error; the sender closes the connection after it.
    Error(ErrorMessage),
    /// Liveness probe; answered with [`Message::Pong`] carrying the same nonce.
    Ping(u64),
    /// Answer to [`Message::Ping`].
    Pong(u64),
    /// A sharing-governance control message (see [`crate::share`]), on
    /// the control stream; appended last so older encodings are unchanged.
    Share(crate::share::ShareFrame),
    /// Answer to [`Message::Ping`] from protocol version 2 on
    /// ([`CLOCK_PONG_VERSION`]): the nonce and the answering side's wall
    /// clock. Appended last so version-1 encodings are unchanged; never
    /// sent on a version-1 session.
    ClockPong(ClockPong),
}

/// Answer to a ping carrying the sender's wall clock (protocol version 2).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ClockPong {
    /// The nonce of the [`Message::Ping`] answered.
    pub nonce: u64,
    /// The answering side's wall clock when it answered, in milliseconds
    /// since the Unix epoch (at most [`MAX_CLOCK_MS`]).
    pub unix_ms: u64,
}

/// Which stream of a connection a message belongs on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Channel {
    /// The control stream.
    Control,
    /// This direction's change stream.
    Changes,
    /// The stream of the transfer of one blob, by its BLAKE3 hash.
    Blob([u8; 32]),
}

impl Message {
    /// The stream this message travels on.
    ///
    /// Blob chunks carry their hash only inside the envelope, so the caller
    /// that sealed them passes it: use [`Channel::Blob`] for
    /// `BlobChunk`/`BlobDone` when the hash is known; this method returns
    /// `Control` for them only when it cannot tell.
    pub fn channel(&self) -> Channel {
        match self {
            Message::Changes(_) => Channel::Changes,
            Message::BlobDone(d) => Channel::Blob(d.hash),
            _ => Channel::Control,
        }
    }

    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Changes(_) => "changes",
            Message::Ack(_) => "ack",
            Message::BlobRequest(_) => "blob-request",
            Message::BlobChunk(_) => "blob-chunk",
            Message::BlobDone(_) => "blob-done",
            Message::Error(_) => "error",
            Message::Ping(_) => "ping",
            Message::Pong(_) => "pong",
            Message::Share(_) => "share",
            Message::ClockPong(_) => "clock-pong",
        }
    }
}

/// The opening message of each side.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// Oldest protocol version the sender speaks.
    pub min_version: u16,
    /// Newest protocol version the sender speaks.
    pub max_version: u16,
    /// The sender's organisation.
    pub org: OrgId,
    /// The sender's instance.
    pub instance: InstanceId,
    /// The sender's current key epoch.
    pub epoch: u32,
    /// Feature bits (`FEATURE_*`).
    pub features: u64,
    /// The sender's durable cursor for changes *from the receiver*: every
    /// change up to this sequence has been applied; send from the next one.
    pub applied_up_to: u64,
}

/// Plaintext of a [`Message::Changes`] envelope: consecutive changes of the
/// sender's log.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ChangeBatch {
    /// The changes, in strictly increasing `seq` order.
    #[serde(deserialize_with = "deserialize_changes")]
    pub changes: Vec<SequencedChange>,
    /// The sender's log head when the batch was made (for lag reporting).
    pub log_head: u64,
}

/// Acknowledgement of durably applied changes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Ack {
    /// Every change up to and including this sequence is durable at the receiver.
    pub up_to_seq: u64,
}

/// Request for a blob's content.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BlobRequest {
    /// BLAKE3 hash of the content.
    pub hash: [u8; 32],
    /// First byte wanted (resume point of an interrupted transfer).
    pub offset: u64,
    /// The object (résumé) that references the blob, for the sender's
    /// policy check: a blob is only sent if the object it belongs to is.
    pub object: ObjectId,
}

/// Plaintext of a [`Message::BlobChunk`] envelope.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BlobChunk {
    /// BLAKE3 hash of the whole content.
    pub hash: [u8; 32],
    /// Offset of `data` in the content.
    pub offset: u64,
    /// Size of the whole content.
    pub total_len: u64,
    /// The bytes (at most [`crate::codec::MAX_BLOB_CHUNK`]).
    #[serde(with = "crate::codec::bytes")]
    pub data: Vec<u8>,
}

/// End of a blob transfer.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BlobDone {
    /// BLAKE3 hash of the content.
    pub hash: [u8; 32],
    /// Size of the whole content.
    pub total_len: u64,
}

/// Machine-readable reason of an [`ErrorMessage`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ErrorCode {
    /// No protocol version in common.
    VersionMismatch,
    /// A frame or message could not be decoded or broke a bound.
    Malformed,
    /// An envelope failed to open (wrong key, tampered, replayed, wrong receiver).
    BadEnvelope,
    /// The peer's key epoch is not accepted.
    BadEpoch,
    /// A message arrived that the protocol does not allow at this point.
    Unexpected,
    /// The requested blob is not available to this peer.
    BlobUnavailable,
    /// The peer is not (or no longer) a partner.
    NotPaired,
    /// Anything else.
    Internal,
}

/// A protocol error reported to the peer before closing.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// The reason.
    pub code: ErrorCode,
    /// Human-readable detail (bounded like any string).
    pub message: String,
}

// ---------------------------------------------------------------------------
// Bounds and validation
// ---------------------------------------------------------------------------

/// Most changes in one [`ChangeBatch`].
pub const MAX_CHANGES_PER_BATCH: usize = 4096;
/// Most field writes in one change.
pub const MAX_FIELDS_PER_CHANGE: usize = 512;
/// Longest [`ErrorMessage::message`], in bytes.
pub const MAX_ERROR_MESSAGE_LEN: usize = 1024;
/// Largest envelope ciphertext in a [`Message::Changes`] or
/// [`Message::BlobChunk`]. Any ciphertext that fits in a frame is below it;
/// the bound also holds for messages built locally, before framing.
pub const MAX_CIPHERTEXT_LEN: usize = MAX_FRAME_LEN;

/// Preallocate at most this many changes from a batch's length prefix: the
/// prefix is untrusted, so the vector grows only as changes actually decode.
const CHANGES_PREALLOC: usize = 32;

fn deserialize_changes<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<SequencedChange>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<SequencedChange>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence of changes")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(CHANGES_PREALLOC));
            while let Some(c) = seq.next_element()? {
                out.push(c);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Visitor)
}

/// A message broke a protocol bound. Each variant names the bound; the
/// message it was found in is given by [`CodecError::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// `Hello.min_version > Hello.max_version`.
    #[error("hello: version range {min}..={max} is empty (min_version above max_version)")]
    VersionRange {
        /// `min_version` sent.
        min: u16,
        /// `max_version` sent.
        max: u16,
    },
    /// An envelope's ciphertext is larger than [`MAX_CIPHERTEXT_LEN`].
    #[error("{message}: envelope ciphertext of {len} bytes exceeds the limit of {max}")]
    CiphertextTooLarge {
        /// `changes` or `blob-chunk`.
        message: &'static str,
        /// Ciphertext length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An error message's text is longer than [`MAX_ERROR_MESSAGE_LEN`].
    #[error("error message: text of {len} bytes exceeds the limit of {max}")]
    ErrorMessageTooLong {
        /// Text length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A change batch holds more than [`MAX_CHANGES_PER_BATCH`] changes.
    #[error("change batch: {count} changes exceed the limit of {max}")]
    TooManyChanges {
        /// Changes in the batch.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Sequences in a change batch do not strictly increase from 1 upwards.
    #[error("change batch: change {index} has seq {seq}, not above the previous seq {previous} (sequences start at 1 and strictly increase)")]
    SequenceNotIncreasing {
        /// Index of the change in the batch.
        index: usize,
        /// Its sequence.
        seq: u64,
        /// The sequence before it (0 for the first change).
        previous: u64,
    },
    /// The batch's `log_head` is below the sequence of a change in it.
    #[error("change batch: log_head {log_head} is below the last change's seq {last_seq}")]
    LogHeadBehind {
        /// `log_head` sent.
        log_head: u64,
        /// Sequence of the batch's last change.
        last_seq: u64,
    },
    /// A change writes more than [`MAX_FIELDS_PER_CHANGE`] fields.
    #[error("change batch: change seq {seq} of object {object} writes {count} fields, more than the limit of {max}")]
    TooManyFields {
        /// Sequence of the change.
        seq: u64,
        /// The object changed.
        object: ObjectId,
        /// Fields written.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A field name is longer than [`MAX_FIELD_NAME_LEN`].
    #[error("change batch: change seq {seq} of object {object} has a field name of {len} bytes, more than the limit of {max}")]
    FieldNameTooLong {
        /// Sequence of the change.
        seq: u64,
        /// The object changed.
        object: ObjectId,
        /// Name length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A text or choice value is longer than [`MAX_TEXT_LEN`].
    #[error("change batch: change seq {seq} of object {object}, field {field}: text of {len} bytes exceeds the limit of {max}")]
    TextTooLong {
        /// Sequence of the change.
        seq: u64,
        /// The object changed.
        object: ObjectId,
        /// The field (its name is within bounds: names are checked first).
        field: String,
        /// Text length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A number value is NaN or infinite.
    #[error(
        "change batch: change seq {seq} of object {object}, field {field}: numbers must be finite"
    )]
    NonFiniteNumber {
        /// Sequence of the change.
        seq: u64,
        /// The object changed.
        object: ObjectId,
        /// The field.
        field: String,
    },
    /// A clock pong carries a wall clock beyond [`MAX_CLOCK_MS`].
    #[error("clock-pong: wall clock of {unix_ms} ms is beyond the limit of {max} ms")]
    ClockOutOfRange {
        /// The reading sent.
        unix_ms: u64,
        /// The limit.
        max: u64,
    },
    /// A governance control message breaks a bound.
    #[error(transparent)]
    Share(#[from] crate::share::ShareWireError),
    /// A blob chunk carries more than [`MAX_BLOB_CHUNK`] bytes.
    #[error("blob chunk: {len} bytes of data exceed the limit of {max}")]
    BlobChunkTooLarge {
        /// Data length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A blob chunk reaches past the end of its blob.
    #[error(
        "blob chunk: {len} bytes at offset {offset} reach past the blob's total length {total_len}"
    )]
    BlobChunkOutOfRange {
        /// Offset of the chunk.
        offset: u64,
        /// Data length.
        len: usize,
        /// Total blob length announced.
        total_len: u64,
    },
}

impl Message {
    /// Checks every protocol bound that can be checked without keys or
    /// session state. [`crate::codec::decode_frame`] calls it on every
    /// message received and [`crate::codec::encode_frame`] on every message
    /// sent. Sealed contents are checked after opening, by
    /// [`decode_change_batch`] / [`decode_blob_chunk`].
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Message::Hello(h) if h.min_version > h.max_version => Err(WireError::VersionRange {
                min: h.min_version,
                max: h.max_version,
            }),
            Message::Changes(env) | Message::BlobChunk(env)
                if env.ciphertext.len() > MAX_CIPHERTEXT_LEN =>
            {
                Err(WireError::CiphertextTooLarge {
                    message: self.name(),
                    len: env.ciphertext.len(),
                    max: MAX_CIPHERTEXT_LEN,
                })
            }
            Message::Error(e) if e.message.len() > MAX_ERROR_MESSAGE_LEN => {
                Err(WireError::ErrorMessageTooLong {
                    len: e.message.len(),
                    max: MAX_ERROR_MESSAGE_LEN,
                })
            }
            Message::Share(f) => Ok(f.validate()?),
            Message::ClockPong(p) if p.unix_ms > MAX_CLOCK_MS => Err(WireError::ClockOutOfRange {
                unix_ms: p.unix_ms,
                max: MAX_CLOCK_MS,
            }),
            _ => Ok(()),
        }
    }
}

impl ErrorMessage {
    /// An error message whose text is cut (at a character boundary) to
    /// [`MAX_ERROR_MESSAGE_LEN`], so it always passes validation.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE_LEN {
            let mut cut = MAX_ERROR_MESSAGE_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        ErrorMessage { code, message }
    }
}

impl ChangeBatch {
    /// Checks the batch's bounds: number of changes, strictly increasing
    /// sequences from 1, `log_head` not behind, fields per change, field
    /// name and text lengths, finite numbers.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.changes.len() > MAX_CHANGES_PER_BATCH {
            return Err(WireError::TooManyChanges {
                count: self.changes.len(),
                max: MAX_CHANGES_PER_BATCH,
            });
        }
        let mut previous = 0u64;
        for (index, sc) in self.changes.iter().enumerate() {
            if sc.seq <= previous {
                return Err(WireError::SequenceNotIncreasing {
                    index,
                    seq: sc.seq,
                    previous,
                });
            }
            previous = sc.seq;
            validate_change(sc)?;
        }
        if self.log_head < previous {
            return Err(WireError::LogHeadBehind {
                log_head: self.log_head,
                last_seq: previous,
            });
        }
        Ok(())
    }
}

fn validate_change(sc: &SequencedChange) -> Result<(), WireError> {
    let change = &sc.change;
    let (seq, object) = (sc.seq, change.id);
    if change.fields.len() > MAX_FIELDS_PER_CHANGE {
        return Err(WireError::TooManyFields {
            seq,
            object,
            count: change.fields.len(),
            max: MAX_FIELDS_PER_CHANGE,
        });
    }
    for (key, state) in &change.fields {
        let name_len = match key {
            FieldKey::Std(n) | FieldKey::Custom(n) => n.len(),
            FieldKey::Flag(_) => 0,
        };
        if name_len > MAX_FIELD_NAME_LEN {
            return Err(WireError::FieldNameTooLong {
                seq,
                object,
                len: name_len,
                max: MAX_FIELD_NAME_LEN,
            });
        }
        match &state.value {
            Some(Value::Text(s) | Value::Choice(s)) if s.len() > MAX_TEXT_LEN => {
                return Err(WireError::TextTooLong {
                    seq,
                    object,
                    field: key.to_string(),
                    len: s.len(),
                    max: MAX_TEXT_LEN,
                })
            }
            Some(Value::Number(n)) if !n.is_finite() => {
                return Err(WireError::NonFiniteNumber {
                    seq,
                    object,
                    field: key.to_string(),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

impl BlobChunk {
    /// Checks the chunk's size and that it lies within the blob.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.data.len() > MAX_BLOB_CHUNK {
            return Err(WireError::BlobChunkTooLarge {
                len: self.data.len(),
                max: MAX_BLOB_CHUNK,
            });
        }
        let in_range = match self.offset.checked_add(self.data.len() as u64) {
            Some(end) => end <= self.total_len,
            None => false,
        };
        if !in_range {
            return Err(WireError::BlobChunkOutOfRange {
                offset: self.offset,
                len: self.data.len(),
                total_len: self.total_len,
            });
        }
        Ok(())
    }
}

/// Name of a [`ChangeBatch`] in [`CodecError::Invalid`].
pub const CHANGE_BATCH_NAME: &str = "change-batch";
/// Name of a [`BlobChunk`] in [`CodecError::Invalid`].
pub const BLOB_CHUNK_NAME: &str = "blob-chunk";

/// Decodes and validates the plaintext of an opened [`Message::Changes`]
/// envelope. Never panics; allocation bounded as for [`codec::decode`].
pub fn decode_change_batch(bytes: &[u8]) -> Result<ChangeBatch, CodecError> {
    let batch: ChangeBatch = codec::decode(bytes)?;
    batch.validate().map_err(|source| CodecError::Invalid {
        message: CHANGE_BATCH_NAME,
        source,
    })?;
    Ok(batch)
}

/// Decodes and validates the plaintext of an opened [`Message::BlobChunk`]
/// envelope. Never panics; allocation bounded as for [`codec::decode`].
pub fn decode_blob_chunk(bytes: &[u8]) -> Result<BlobChunk, CodecError> {
    let chunk: BlobChunk = codec::decode(bytes)?;
    chunk.validate().map_err(|source| CodecError::Invalid {
        message: BLOB_CHUNK_NAME,
        source,
    })?;
    Ok(chunk)
}

/// proptest strategies for every message and its parts, producing values
/// that pass validation. Test-only (shared with the session's tests); to
/// expose it to other crates or fuzzers, put it behind a `testing` feature.
#[cfg(test)]
pub mod testing {
    use std::collections::BTreeMap;

    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    use super::*;
    use crate::clock::Timestamp;
    use crate::envelope::{EnvelopeHeader, StreamKind};
    use crate::model::{Change, Date, FieldState, Kind, Version};

    /// Any organisation id.
    pub fn org_id() -> impl Strategy<Value = OrgId> {
        any::<[u8; 32]>().prop_map(OrgId)
    }

    /// Any instance id.
    pub fn instance_id() -> impl Strategy<Value = InstanceId> {
        any::<u64>().prop_map(InstanceId)
    }

    /// Any object id (not necessarily a valid UUIDv7: the wire does not care).
    pub fn object_id() -> impl Strategy<Value = ObjectId> {
        any::<[u8; 16]>().prop_map(ObjectId)
    }

    /// Any kind.
    pub fn kind() -> impl Strategy<Value = Kind> {
        proptest::sample::select(Kind::ALL.to_vec())
    }

    /// Any field version.
    pub fn version() -> impl Strategy<Value = Version> {
        (any::<u64>(), instance_id()).prop_map(|(t, instance)| Version {
            hlc: Timestamp(t),
            instance,
        })
    }

    /// Any valid value: finite numbers, text within bounds (mostly short,
    /// including non-ASCII).
    pub fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            ".{0,24}".prop_map(Value::Text),
            any::<f64>()
                .prop_filter("finite", |n| n.is_finite())
                .prop_map(Value::Number),
            any::<i64>().prop_map(Value::Integer),
            (1u16..=9999, 1u8..=12, 1u8..=28)
                // Day 1..=28 exists in every month of every year.
                .prop_map(|(y, m, d)| Value::Date(Date::new(y, m, d).expect("valid date"))),
            any::<bool>().prop_map(Value::Bool),
            "[a-z]{0,12}".prop_map(Value::Choice),
            object_id().prop_map(Value::Ref),
            any::<[u8; 32]>().prop_map(Value::Hash),
        ]
    }

    /// Any field key with a name within bounds.
    pub fn field_key() -> impl Strategy<Value = FieldKey> {
        prop_oneof![
            "[a-z_]{1,16}".prop_map(FieldKey::Std),
            ".{1,16}".prop_map(FieldKey::Custom),
            object_id().prop_map(FieldKey::Flag),
        ]
    }

    /// Any change within bounds (up to 6 fields).
    pub fn change() -> impl Strategy<Value = Change> {
        (
            object_id(),
            kind(),
            btree_map(
                field_key(),
                (version(), proptest::option::of(value()))
                    .prop_map(|(version, value)| FieldState { version, value }),
                0..6,
            ),
            proptest::option::of(version()),
        )
            .prop_map(|(id, kind, fields, deleted)| Change {
                id,
                kind,
                fields,
                deleted,
            })
    }

    /// Any valid batch: up to 8 changes with strictly increasing sequences
    /// from 1 and a log head at or after the last one.
    pub fn change_batch() -> impl Strategy<Value = ChangeBatch> {
        (vec((1u64..1000, change()), 0..8), 0u64..1000).prop_map(|(changes, head_gap)| {
            let mut seq = 0;
            let changes: Vec<SequencedChange> = changes
                .into_iter()
                .map(|(gap, change)| {
                    seq += gap;
                    SequencedChange { seq, change }
                })
                .collect();
            ChangeBatch {
                changes,
                log_head: seq + head_gap,
            }
        })
    }

    /// Any valid blob chunk (short data).
    pub fn blob_chunk() -> impl Strategy<Value = BlobChunk> {
        (
            any::<[u8; 32]>(),
            any::<u32>(),
            vec(any::<u8>(), 0..64),
            any::<u32>(),
        )
            .prop_map(|(hash, offset, data, extra)| {
                let offset = u64::from(offset);
                BlobChunk {
                    hash,
                    offset,
                    total_len: offset + data.len() as u64 + u64::from(extra),
                    data,
                }
            })
    }

    /// Any sealed envelope (random bytes, not a real seal).
    pub fn sealed_envelope() -> impl Strategy<Value = SealedEnvelope> {
        (
            (
                any::<u8>(),
                org_id(),
                org_id(),
                any::<u32>(),
                any::<[u8; 8]>(),
            ),
            prop_oneof![Just(StreamKind::Changes), Just(StreamKind::Blob)],
            any::<u64>(),
            any::<[u8; 24]>(),
            vec(any::<u8>(), 0..128),
        )
            .prop_map(
                |(
                    (version, sender, receiver, epoch, key_id),
                    stream,
                    sequence,
                    nonce,
                    ciphertext,
                )| SealedEnvelope {
                    header: EnvelopeHeader {
                        version,
                        sender,
                        receiver,
                        epoch,
                        key_id,
                        stream,
                        sequence,
                    },
                    nonce,
                    ciphertext,
                },
            )
    }

    /// Any error code.
    pub fn error_code() -> impl Strategy<Value = ErrorCode> {
        proptest::sample::select(vec![
            ErrorCode::VersionMismatch,
            ErrorCode::Malformed,
            ErrorCode::BadEnvelope,
            ErrorCode::BadEpoch,
            ErrorCode::Unexpected,
            ErrorCode::BlobUnavailable,
            ErrorCode::NotPaired,
            ErrorCode::Internal,
        ])
    }

    /// Any valid hello.
    pub fn hello() -> impl Strategy<Value = Hello> {
        (
            any::<(u16, u16)>(),
            org_id(),
            instance_id(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |((a, b), org, instance, epoch, features, applied_up_to)| Hello {
                    min_version: a.min(b),
                    max_version: a.max(b),
                    org,
                    instance,
                    epoch,
                    features,
                    applied_up_to,
                },
            )
    }

    /// Any valid message, every variant equally likely.
    pub fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            hello().prop_map(Message::Hello),
            sealed_envelope().prop_map(Message::Changes),
            any::<u64>().prop_map(|up_to_seq| Message::Ack(Ack { up_to_seq })),
            (any::<[u8; 32]>(), any::<u64>(), object_id()).prop_map(|(hash, offset, object)| {
                Message::BlobRequest(BlobRequest {
                    hash,
                    offset,
                    object,
                })
            }),
            sealed_envelope().prop_map(Message::BlobChunk),
            (any::<[u8; 32]>(), any::<u64>())
                .prop_map(|(hash, total_len)| Message::BlobDone(BlobDone { hash, total_len })),
            (error_code(), ".{0,64}")
                .prop_map(|(code, message)| Message::Error(ErrorMessage { code, message })),
            any::<u64>().prop_map(Message::Ping),
            any::<u64>().prop_map(Message::Pong),
            crate::share::testing::frame().prop_map(Message::Share),
            (any::<u64>(), 0..=MAX_CLOCK_MS)
                .prop_map(|(nonce, unix_ms)| Message::ClockPong(ClockPong { nonce, unix_ms })),
        ]
    }

    /// A realistic contact change (6 fields, 262 bytes encoded), for
    /// measurements and corpus seeds.
    pub fn sample_contact_change(seq: u64) -> SequencedChange {
        let version = |n: u64| Version {
            hlc: Timestamp::new(1_730_000_000_000 + seq, n as u16),
            instance: InstanceId(0x1234_5678_9abc_def0),
        };
        let text = |s: &str| Some(Value::Text(s.to_string()));
        let mut fields = BTreeMap::new();
        let mut put = |name: &str, value: Option<Value>| {
            let n = fields.len() as u64;
            fields.insert(
                FieldKey::Std(name.into()),
                FieldState {
                    version: version(n),
                    value,
                },
            );
        };
        put("first_name", text("Margo"));
        put("last_name", text("Duchêne"));
        put("email", text("md@example.org"));
        put("phone", text("+33123456789"));
        put("role", text("staff"));
        put("organization", Some(Value::Ref(ObjectId([7; 16]))));
        let mut id = [0x01u8; 16];
        id[8..].copy_from_slice(&seq.to_be_bytes());
        SequencedChange {
            seq,
            change: Change {
                id: ObjectId(id),
                kind: Kind::Contact,
                fields,
                deleted: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    use super::testing::*;
    use super::*;

    #[test]
    fn clock_pong_beyond_the_clock_range_is_refused_both_ways() {
        let ok = Message::ClockPong(ClockPong {
            nonce: 1,
            unix_ms: MAX_CLOCK_MS,
        });
        let frame = codec::encode_frame(&ok).expect("in range");
        assert_eq!(
            codec::decode_frame(&frame).expect("decodes"),
            Some((ok, frame.len()))
        );
        let bad = Message::ClockPong(ClockPong {
            nonce: 1,
            unix_ms: MAX_CLOCK_MS + 1,
        });
        let err = codec::encode_frame(&bad).expect_err("refused when sending");
        assert!(err.to_string().contains("wall clock"), "{err}");
        // A peer that sends one anyway is refused when decoding.
        let mut forged = frame.clone();
        let payload = codec::encode(&bad).expect("plain encode has no bounds");
        forged.truncate(codec::FRAME_HEADER_LEN);
        forged.extend_from_slice(&payload);
        let len = (forged.len() - 4) as u32;
        forged[..4].copy_from_slice(&len.to_be_bytes());
        let err = codec::decode_frame(&forged).expect_err("refused when receiving");
        assert!(matches!(
            err,
            CodecError::Invalid {
                source: WireError::ClockOutOfRange { .. },
                ..
            }
        ));
    }
    use crate::model::FieldState;

    fn batch_of(changes: Vec<SequencedChange>) -> ChangeBatch {
        let log_head = changes.last().map_or(0, |c| c.seq);
        ChangeBatch { changes, log_head }
    }

    fn one_field(seq: u64, key: FieldKey, value: Value) -> SequencedChange {
        let mut sc = sample_contact_change(seq);
        let version = sc
            .change
            .fields
            .values()
            .next()
            .expect("sample has fields")
            .version;
        sc.change.fields.clear();
        sc.change.fields.insert(
            key,
            FieldState {
                version,
                value: Some(value),
            },
        );
        sc
    }

    fn invalid(e: CodecError) -> WireError {
        match e {
            CodecError::Invalid { source, .. } => source,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_message_round_trips_through_codec(msg in message()) {
            prop_assert_eq!(msg.validate(), Ok(()));
            let bytes = codec::encode(&msg).unwrap();
            prop_assert_eq!(codec::encoded_len(&msg).unwrap(), bytes.len());
            prop_assert_eq!(codec::decode::<Message>(&bytes).unwrap(), msg);
        }

        #[test]
        fn change_batches_round_trip(batch in change_batch()) {
            let bytes = codec::encode(&batch).unwrap();
            prop_assert_eq!(decode_change_batch(&bytes).unwrap(), batch);
        }

        #[test]
        fn blob_chunks_round_trip(chunk in blob_chunk()) {
            let bytes = codec::encode(&chunk).unwrap();
            prop_assert_eq!(decode_blob_chunk(&bytes).unwrap(), chunk);
        }

        #[test]
        fn arbitrary_bytes_never_panic_plaintext_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_change_batch(&bytes);
            let _ = decode_blob_chunk(&bytes);
        }

        #[test]
        fn mutated_batches_never_panic(batch in change_batch(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = codec::encode(&batch).unwrap();
            for (at, b) in flips {
                let n = bytes.len();
                bytes[at % n] = b;
            }
            if let Ok(decoded) = decode_change_batch(&bytes) {
                prop_assert_eq!(decoded.validate(), Ok(()));
            }
        }
    }

    #[test]
    fn hello_with_inverted_versions_is_refused() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut h = hello().new_tree(&mut runner).unwrap().current();
        h.min_version = 3;
        h.max_version = 2;
        assert_eq!(
            Message::Hello(h).validate(),
            Err(WireError::VersionRange { min: 3, max: 2 })
        );
    }

    #[test]
    fn oversized_ciphertext_is_refused() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut env = sealed_envelope().new_tree(&mut runner).unwrap().current();
        env.ciphertext = vec![0; MAX_CIPHERTEXT_LEN + 1];
        assert_eq!(
            Message::BlobChunk(env.clone()).validate(),
            Err(WireError::CiphertextTooLarge {
                message: "blob-chunk",
                len: MAX_CIPHERTEXT_LEN + 1,
                max: MAX_CIPHERTEXT_LEN
            })
        );
        assert!(matches!(
            Message::Changes(env).validate(),
            Err(WireError::CiphertextTooLarge {
                message: "changes",
                ..
            })
        ));
    }

    #[test]
    fn long_error_message_is_refused_and_new_truncates() {
        let text = "é".repeat(MAX_ERROR_MESSAGE_LEN); // 2 bytes each
        let msg = Message::Error(ErrorMessage {
            code: ErrorCode::Internal,
            message: text.clone(),
        });
        assert_eq!(
            msg.validate(),
            Err(WireError::ErrorMessageTooLong {
                len: 2 * MAX_ERROR_MESSAGE_LEN,
                max: MAX_ERROR_MESSAGE_LEN
            })
        );
        let cut = ErrorMessage::new(ErrorCode::Internal, text);
        assert_eq!(cut.message.len(), MAX_ERROR_MESSAGE_LEN);
        assert_eq!(Message::Error(cut).validate(), Ok(()));
    }

    #[test]
    fn too_many_changes_is_refused() {
        let changes = (1..=MAX_CHANGES_PER_BATCH as u64 + 1)
            .map(sample_contact_change)
            .collect();
        let bytes = codec::encode(&batch_of(changes)).unwrap();
        assert_eq!(
            invalid(decode_change_batch(&bytes).unwrap_err()),
            WireError::TooManyChanges {
                count: MAX_CHANGES_PER_BATCH + 1,
                max: MAX_CHANGES_PER_BATCH
            }
        );
        let ok = (1..=MAX_CHANGES_PER_BATCH as u64)
            .map(sample_contact_change)
            .collect();
        assert!(decode_change_batch(&codec::encode(&batch_of(ok)).unwrap()).is_ok());
    }

    #[test]
    fn sequences_must_start_at_one_and_increase() {
        let zero = batch_of(vec![sample_contact_change(0)]);
        assert_eq!(
            zero.validate(),
            Err(WireError::SequenceNotIncreasing {
                index: 0,
                seq: 0,
                previous: 0
            })
        );
        let dup = batch_of(vec![sample_contact_change(5), sample_contact_change(5)]);
        assert_eq!(
            dup.validate(),
            Err(WireError::SequenceNotIncreasing {
                index: 1,
                seq: 5,
                previous: 5
            })
        );
        let down = batch_of(vec![sample_contact_change(5), sample_contact_change(4)]);
        assert!(matches!(
            down.validate(),
            Err(WireError::SequenceNotIncreasing {
                index: 1,
                seq: 4,
                previous: 5
            })
        ));
    }

    #[test]
    fn log_head_behind_is_refused() {
        let mut b = batch_of(vec![sample_contact_change(1), sample_contact_change(9)]);
        b.log_head = 8;
        assert_eq!(
            b.validate(),
            Err(WireError::LogHeadBehind {
                log_head: 8,
                last_seq: 9
            })
        );
        b.log_head = 9;
        assert_eq!(b.validate(), Ok(()));
    }

    #[test]
    fn too_many_fields_is_refused() {
        let mut sc = sample_contact_change(1);
        let state = sc.change.fields.values().next().unwrap().clone();
        for i in 0..=MAX_FIELDS_PER_CHANGE {
            sc.change
                .fields
                .insert(FieldKey::Custom(format!("f{i}")), state.clone());
        }
        let count = sc.change.fields.len();
        let object = sc.change.id;
        assert_eq!(
            batch_of(vec![sc]).validate(),
            Err(WireError::TooManyFields {
                seq: 1,
                object,
                count,
                max: MAX_FIELDS_PER_CHANGE
            })
        );
    }

    #[test]
    fn long_field_name_is_refused() {
        let name = "n".repeat(MAX_FIELD_NAME_LEN + 1);
        let sc = one_field(1, FieldKey::Custom(name), Value::Bool(true));
        let object = sc.change.id;
        assert_eq!(
            batch_of(vec![sc]).validate(),
            Err(WireError::FieldNameTooLong {
                seq: 1,
                object,
                len: MAX_FIELD_NAME_LEN + 1,
                max: MAX_FIELD_NAME_LEN
            })
        );
        let at_limit = one_field(
            1,
            FieldKey::Std("n".repeat(MAX_FIELD_NAME_LEN)),
            Value::Bool(true),
        );
        assert_eq!(batch_of(vec![at_limit]).validate(), Ok(()));
    }

    #[test]
    fn long_text_and_choice_are_refused() {
        for value in [
            Value::Text("x".repeat(MAX_TEXT_LEN + 1)),
            Value::Choice("x".repeat(MAX_TEXT_LEN + 1)),
        ] {
            let sc = one_field(3, FieldKey::Std("notes".into()), value);
            let object = sc.change.id;
            let bytes = codec::encode(&batch_of(vec![sc])).unwrap();
            assert_eq!(
                invalid(decode_change_batch(&bytes).unwrap_err()),
                WireError::TextTooLong {
                    seq: 3,
                    object,
                    field: "notes".into(),
                    len: MAX_TEXT_LEN + 1,
                    max: MAX_TEXT_LEN
                }
            );
        }
        let ok = one_field(
            3,
            FieldKey::Std("notes".into()),
            Value::Text("x".repeat(MAX_TEXT_LEN)),
        );
        assert_eq!(batch_of(vec![ok]).validate(), Ok(()));
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        for n in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let sc = one_field(2, FieldKey::Std("amount".into()), Value::Number(n));
            let object = sc.change.id;
            let bytes = codec::encode(&batch_of(vec![sc])).unwrap();
            let err = decode_change_batch(&bytes).unwrap_err();
            assert!(err.to_string().contains("change-batch"), "{err}");
            assert_eq!(
                invalid(err),
                WireError::NonFiniteNumber {
                    seq: 2,
                    object,
                    field: "amount".into()
                }
            );
        }
    }

    #[test]
    fn blob_chunk_bounds() {
        let big = BlobChunk {
            hash: [0; 32],
            offset: 0,
            total_len: u64::MAX,
            data: vec![0; codec::MAX_BLOB_CHUNK + 1],
        };
        let bytes = codec::encode(&big).unwrap();
        assert_eq!(
            invalid(decode_blob_chunk(&bytes).unwrap_err()),
            WireError::BlobChunkTooLarge {
                len: codec::MAX_BLOB_CHUNK + 1,
                max: codec::MAX_BLOB_CHUNK
            }
        );
        let past_end = BlobChunk {
            hash: [0; 32],
            offset: 10,
            total_len: 12,
            data: vec![1, 2, 3],
        };
        assert_eq!(
            past_end.validate(),
            Err(WireError::BlobChunkOutOfRange {
                offset: 10,
                len: 3,
                total_len: 12
            })
        );
        let overflow = BlobChunk {
            offset: u64::MAX,
            total_len: u64::MAX,
            ..past_end.clone()
        };
        assert!(matches!(
            overflow.validate(),
            Err(WireError::BlobChunkOutOfRange { .. })
        ));
        let exact = BlobChunk {
            total_len: 13,
            ..past_end
        };
        assert_eq!(exact.validate(), Ok(()));
    }

    /// `codec::bytes` must not change the encoding of a `Vec<u8>` field.
    #[test]
    fn bytes_helper_is_wire_compatible() {
        #[derive(Serialize)]
        struct Plain {
            hash: [u8; 32],
            offset: u64,
            total_len: u64,
            data: Vec<u8>,
        }
        for len in [0usize, 1, 250, 251, 300, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let chunk = BlobChunk {
                hash: [9; 32],
                offset: 5,
                total_len: 5 + len as u64,
                data: data.clone(),
            };
            let plain = Plain {
                hash: [9; 32],
                offset: 5,
                total_len: 5 + len as u64,
                data,
            };
            let bytes = codec::encode(&chunk).unwrap();
            assert_eq!(bytes, codec::encode(&plain).unwrap());
            assert_eq!(decode_blob_chunk(&bytes).unwrap(), chunk);
        }
    }

    #[test]
    fn hostile_change_count_fails_fast() {
        // ChangeBatch { changes: <len 2^60>, ... } then nothing.
        let mut bytes = vec![0xFD];
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let start = std::time::Instant::now();
        let err = decode_change_batch(&bytes).unwrap_err();
        assert!(matches!(err, CodecError::Truncated { .. }), "{err:?}");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }
}
