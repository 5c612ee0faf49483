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

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// ALPN identifier of the sync protocol.
pub const ALPN: &[u8] = b"orgsync/1";

/// Feature bit: the sender can transfer blobs (résumé files).
pub const FEATURE_BLOBS: u64 = 1 << 0;

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
const CHANGES_PREALLOC: usize = 256;

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
