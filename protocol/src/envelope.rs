//! Envelopes: change batches and blob chunks sealed with XChaCha20-Poly1305
//! under a pair key, with the header bound as associated data.

use serde::{Deserialize, Serialize};

use crate::model::OrgId;

/// Version of the envelope format.
pub const ENVELOPE_VERSION: u8 = 1;

/// What an envelope carries; part of the authenticated header so a blob
/// chunk can never be passed off as a change batch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum StreamKind {
    /// A [`crate::wire::ChangeBatch`].
    Changes,
    /// A [`crate::wire::BlobChunk`].
    Blob,
}

/// The envelope header: authenticated, not encrypted.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct EnvelopeHeader {
    /// Envelope format version.
    pub version: u8,
    /// The sending organisation.
    pub sender: OrgId,
    /// The receiving organisation.
    pub receiver: OrgId,
    /// Key epoch of the pair key used.
    pub epoch: u32,
    /// Short public identifier of the direction key used (derived from the
    /// key, reveals nothing about it), so a wrong key is told apart from a
    /// tampered envelope.
    pub key_id: [u8; 8],
    /// What the envelope carries.
    pub stream: StreamKind,
    /// Sequence number, strictly increasing per (sender, receiver, epoch, stream).
    pub sequence: u64,
}

/// A sealed envelope as it travels and as it is stored in queues and inboxes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SealedEnvelope {
    /// The header (associated data).
    pub header: EnvelopeHeader,
    /// The 24-byte XChaCha20 nonce.
    pub nonce: [u8; 24],
    /// Ciphertext with the 16-byte Poly1305 tag appended.
    pub ciphertext: Vec<u8>,
}

use crate::identity::PairKeys;

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Placeholder until implemented.
    #[error("not implemented")]
    Todo,
}

/// Seals `plaintext` for `keys.peer` with `keys.send`.
pub fn seal(
    _keys: &PairKeys,
    _stream: StreamKind,
    _sequence: u64,
    _plaintext: &[u8],
) -> SealedEnvelope {
    todo!()
}

/// Opens an envelope sent to us (`keys.local`) by `keys.peer`.
pub fn open(_keys: &PairKeys, _env: &SealedEnvelope) -> Result<Vec<u8>, EnvelopeError> {
    todo!()
}

/// Refuses envelopes whose sequence is not greater than the last one
/// accepted on the same stream (replays and reordering by an attacker).
#[derive(Debug, Clone, Default)]
pub struct ReplayGuard {
    last: u64,
}

impl ReplayGuard {
    /// A guard that has already accepted every sequence up to `last_accepted`.
    pub fn new(last_accepted: u64) -> Self {
        ReplayGuard {
            last: last_accepted,
        }
    }
    /// The last accepted sequence.
    pub fn last(&self) -> u64 {
        self.last
    }
    /// Checks `header.sequence` without accepting it.
    pub fn check(&self, _header: &EnvelopeHeader) -> Result<(), EnvelopeError> {
        todo!()
    }
    /// Records `sequence` as accepted (call only after the envelope opened).
    pub fn accept(&mut self, sequence: u64) {
        self.last = self.last.max(sequence);
    }
}
