//! Organisation identities and keys: the long-term x25519 key pair, the
//! OrgId derived from it, certificate fingerprints, and pair-key derivation.
//!
//! STUB: signatures agreed; bodies to be written.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::model::OrgId;

/// Errors of key handling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The peer's public key is a low-order point: the shared secret would be all zeros.
    #[error("the partner's public key is invalid (low-order point); re-import its bundle")]
    WeakPublicKey,
    /// A pair key was requested with ourselves.
    #[error("cannot derive a pair key with our own organisation")]
    SelfPairing,
}

/// An organisation's x25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrgPublicKey(pub [u8; 32]);

impl fmt::Debug for OrgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OrgPublicKey({})",
            data_encoding::HEXLOWER.encode(&self.0[..8])
        )
    }
}

impl OrgPublicKey {
    /// The OrgId of an organisation whose genesis (epoch 0) key is this one:
    /// BLAKE3 in derive-key mode with context "orgsync 2024 org id v1".
    pub fn org_id(&self) -> OrgId {
        todo!()
    }
}

/// An organisation's long-term x25519 key pair. The secret is zeroized on
/// drop and never printed.
pub struct OrgKeyPair {
    _private: (),
}

impl OrgKeyPair {
    /// A fresh key pair from the OS RNG.
    pub fn generate() -> Self {
        todo!()
    }
    /// Rebuilds a key pair from its 32 secret bytes.
    pub fn from_secret_bytes(_bytes: &[u8; 32]) -> Self {
        todo!()
    }
    /// The secret bytes, for writing to a 0600 file; zeroized when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        todo!()
    }
    /// The public half.
    pub fn public(&self) -> OrgPublicKey {
        todo!()
    }
    /// Pair keys with a partner for a key epoch.
    pub fn pair_keys(
        &self,
        _local: OrgId,
        _peer: OrgId,
        _peer_public: &OrgPublicKey,
        _epoch: u32,
    ) -> Result<PairKeys, IdentityError> {
        todo!()
    }
}

impl fmt::Debug for OrgKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OrgKeyPair(<secret>)")
    }
}

/// A 32-byte symmetric key for one direction of a pair; zeroized on drop,
/// never printed.
pub struct DirectionKey(pub(crate) Zeroizing<[u8; 32]>);

impl DirectionKey {
    /// Wraps raw key bytes (tests and key import).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DirectionKey(Zeroizing::new(bytes))
    }
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DirectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DirectionKey(<secret>)")
    }
}

/// The keys two organisations share for one epoch: one subkey to seal what
/// we send, one to open what we receive. The partner's `send` is our `recv`.
#[derive(Debug)]
pub struct PairKeys {
    /// Key epoch.
    pub epoch: u32,
    /// Our organisation.
    pub local: OrgId,
    /// The partner organisation.
    pub peer: OrgId,
    /// Seals envelopes we send.
    pub send: DirectionKey,
    /// Opens envelopes we receive.
    pub recv: DirectionKey,
}

/// SHA-256 fingerprint of an instance's TLS certificate (DER), shown to
/// people as groups they can compare aloud.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);
