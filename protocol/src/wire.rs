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

use crate::envelope::SealedEnvelope;
use crate::model::{InstanceId, ObjectId, OrgId, SequencedChange};

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
