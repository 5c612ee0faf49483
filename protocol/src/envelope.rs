//! Envelopes: change batches and blob chunks sealed with XChaCha20-Poly1305
//! under a pair key, with the header bound as associated data.
//!
//! # Associated data
//!
//! The AAD is the header in a fixed, explicit layout ([`HEADER_LEN`] bytes,
//! integers big-endian), independent of the wire codec so that a codec change
//! can never silently change what is authenticated:
//!
//! ```text
//! offset len field
//!      0   1 version
//!      1  32 sender OrgId
//!     33  32 receiver OrgId
//!     65   4 epoch (u32 BE)
//!     69   8 key_id
//!     77   1 stream (1 = Changes, 2 = Blob)
//!     78   8 sequence (u64 BE)
//!     86  42 zeros (AAD only; not part of [`EnvelopeHeader::to_bytes`])
//! ```
//!
//! The AAD is padded to [`AAD_LEN`] = 128 bytes, a multiple of 64, because
//! poly1305's AVX2 backend only stays on its 4-blocks-at-a-time path when
//! the associated data is a whole number of 64-byte groups; with the bare
//! 86-byte header every message block took the slow path (measured: seal and
//! open 12-15% slower than raw AEAD at 64 KiB).
//!
//! # Nonces
//!
//! Nonces are 24 bytes: a 16-byte prefix drawn from the OS RNG once per
//! process, then a 64-bit per-process counter (big-endian). Within a process
//! the counter makes every nonce distinct; across processes (restarts, or
//! several instances of one organisation sharing its keys) the random
//! 128-bit prefixes collide with negligible probability. This replaces a
//! getrandom call per envelope, which cost more than sealing a small batch
//! (see `benches/envelope.rs`).
//!
//! # Checks on open
//!
//! [`open`] checks, in order: version, receiver, sender, epoch, key id (in
//! constant time), ciphertext length, then the AEAD tag, each failure with its
//! own [`EnvelopeError`] variant so an operator can tell a misconfiguration
//! (wrong partner, stale epoch, other keys) from an attack (tampering).
//! Replay is checked separately by [`ReplayGuard`], because only the caller
//! knows the last sequence it accepted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::identity::{DirectionKey, PairKeys};
use crate::model::OrgId;

/// Version of the envelope format.
pub const ENVELOPE_VERSION: u8 = 1;
/// Length of the fixed-layout header (the AAD).
pub const HEADER_LEN: usize = 86;
/// Length of the associated data: the header padded with zeros.
pub const AAD_LEN: usize = 128;
/// Length of the XChaCha20 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag appended to the ciphertext.
pub const TAG_LEN: usize = 16;

/// What an envelope carries; part of the authenticated header so a blob
/// chunk can never be passed off as a change batch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum StreamKind {
    /// A [`crate::wire::ChangeBatch`].
    Changes,
    /// A [`crate::wire::BlobChunk`].
    Blob,
}

impl StreamKind {
    /// The byte of this kind in the header layout.
    pub fn to_byte(self) -> u8 {
        match self {
            StreamKind::Changes => 1,
            StreamKind::Blob => 2,
        }
    }

    /// The kind of a header byte, if it names one.
    pub fn from_byte(b: u8) -> Option<StreamKind> {
        match b {
            1 => Some(StreamKind::Changes),
            2 => Some(StreamKind::Blob),
            _ => None,
        }
    }
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

impl EnvelopeHeader {
    /// The fixed layout described in the module doc.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = self.version;
        out[1..33].copy_from_slice(&self.sender.0);
        out[33..65].copy_from_slice(&self.receiver.0);
        out[65..69].copy_from_slice(&self.epoch.to_be_bytes());
        out[69..77].copy_from_slice(&self.key_id);
        out[77] = self.stream.to_byte();
        out[78..86].copy_from_slice(&self.sequence.to_be_bytes());
        out
    }

    /// The associated data: [`Self::to_bytes`] padded with zeros to
    /// [`AAD_LEN`] bytes (see the module doc for why).
    pub fn aad(&self) -> [u8; AAD_LEN] {
        let mut out = [0u8; AAD_LEN];
        out[..HEADER_LEN].copy_from_slice(&self.to_bytes());
        out
    }

    /// Parses the fixed layout. Every byte string of the right length parses
    /// except one with an unknown stream byte.
    pub fn from_bytes(bytes: &[u8; HEADER_LEN]) -> Result<EnvelopeHeader, EnvelopeError> {
        let stream = StreamKind::from_byte(bytes[77])
            .ok_or(EnvelopeError::UnknownStream { found: bytes[77] })?;
        let mut sender = [0u8; 32];
        sender.copy_from_slice(&bytes[1..33]);
        let mut receiver = [0u8; 32];
        receiver.copy_from_slice(&bytes[33..65]);
        let mut epoch = [0u8; 4];
        epoch.copy_from_slice(&bytes[65..69]);
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&bytes[69..77]);
        let mut sequence = [0u8; 8];
        sequence.copy_from_slice(&bytes[78..86]);
        Ok(EnvelopeHeader {
            version: bytes[0],
            sender: OrgId(sender),
            receiver: OrgId(receiver),
            epoch: u32::from_be_bytes(epoch),
            key_id,
            stream,
            sequence: u64::from_be_bytes(sequence),
        })
    }
}

/// A sealed envelope as it travels and as it is stored in queues and inboxes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SealedEnvelope {
    /// The header (associated data).
    pub header: EnvelopeHeader,
    /// The 24-byte XChaCha20 nonce.
    pub nonce: [u8; 24],
    /// Ciphertext with the 16-byte Poly1305 tag appended.
    #[serde(with = "crate::codec::bytes")]
    pub ciphertext: Vec<u8>,
}

fn fmt_key_id(id: &[u8; 8]) -> String {
    data_encoding::HEXLOWER.encode(id)
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The envelope uses a format version this build does not read.
    #[error("envelope format version {found} is not supported (this build reads version {supported}); upgrade orgsync")]
    Version {
        /// Version in the header.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// The envelope is addressed to another organisation.
    #[error("envelope is addressed to organisation {found}, not to us ({expected})")]
    WrongReceiver {
        /// Receiver named in the header.
        found: OrgId,
        /// Our organisation.
        expected: OrgId,
    },
    /// The envelope claims another sender than the partner it came from.
    #[error(
        "envelope claims to come from organisation {found}, but this connection is with {expected}"
    )]
    WrongSender {
        /// Sender named in the header.
        found: OrgId,
        /// The partner we share the keys with.
        expected: OrgId,
    },
    /// The envelope was sealed under another key epoch.
    #[error("envelope was sealed under key epoch {found}, but we use epoch {expected} with this partner; a key rotation has not reached both sides")]
    WrongEpoch {
        /// Epoch in the header.
        found: u32,
        /// Our epoch with this partner.
        expected: u32,
    },
    /// Same partner and epoch, but sealed under a different key: the two
    /// sides derived different pair keys (mismatched key pairs).
    #[error("envelope was sealed under another key (key id {}, ours is {}); the partner's public key on file does not match its key pair, re-import its bundle", fmt_key_id(.found), fmt_key_id(.expected))]
    WrongKey {
        /// Key id in the header.
        found: [u8; 8],
        /// Key id of our receiving key.
        expected: [u8; 8],
    },
    /// The ciphertext is shorter than the authentication tag.
    #[error(
        "envelope ciphertext is {len} bytes, shorter than the {TAG_LEN}-byte authentication tag"
    )]
    TooShort {
        /// Ciphertext length found.
        len: usize,
    },
    /// Authentication failed: the header, nonce or ciphertext was altered.
    #[error("envelope failed authentication: it was altered in transit or storage")]
    Tampered,
    /// The sequence number is not above the last accepted one.
    #[error(
        "envelope sequence {sequence} was already accepted (last accepted {last}); replay refused"
    )]
    Replayed {
        /// Sequence in the header.
        sequence: u64,
        /// Last accepted sequence on that stream.
        last: u64,
    },
    /// A header byte string names no known stream kind.
    #[error("envelope header names unknown stream kind {found}")]
    UnknownStream {
        /// The stream byte found.
        found: u8,
    },
    /// The plaintext exceeds what XChaCha20-Poly1305 can seal (256 GiB).
    #[error("payload of {len} bytes is too large to seal")]
    TooLong {
        /// Plaintext length.
        len: usize,
    },
}

/// The next nonce: per-process random prefix || per-process counter.
fn next_nonce() -> [u8; NONCE_LEN] {
    static PREFIX: OnceLock<[u8; 16]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut p = [0u8; 16];
        if OsRng.try_fill_bytes(&mut p).is_err() {
            // No OS RNG: the prefix only needs to differ between processes
            // sealing under the same key (it is not secret), so fall back to
            // hashing what tells processes apart.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let mut h = blake3::Hasher::new_derive_key("orgsync 2024 nonce prefix fallback v1");
            h.update(&now.to_le_bytes());
            h.update(&std::process::id().to_le_bytes());
            h.update(&(&p as *const _ as usize).to_le_bytes());
            p.copy_from_slice(&h.finalize().as_bytes()[..16]);
        }
        p
    });
    // 2^64 seals per process cannot happen, so the counter never wraps.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..16].copy_from_slice(prefix);
    nonce[16..].copy_from_slice(&n.to_be_bytes());
    nonce
}

fn cipher(key: &DirectionKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.as_bytes().into())
}

/// Seals `plaintext` for `keys.peer` with `keys.send`.
///
/// The header (sender = `keys.local`, receiver = `keys.peer`, epoch, key id,
/// stream, sequence) is authenticated, the plaintext is encrypted; every call
/// uses a fresh nonce.
///
/// # Panics
/// Only if `plaintext` is over 256 GiB (the XChaCha20-Poly1305 limit); use
/// [`try_seal`] for unbounded input.
pub fn seal(
    keys: &PairKeys,
    stream: StreamKind,
    sequence: u64,
    plaintext: &[u8],
) -> SealedEnvelope {
    match try_seal(keys, stream, sequence, plaintext) {
        Ok(env) => env,
        // Payloads are bounded by the codec (MAX_FRAME_LEN, 8 MiB), far below
        // the limit; reaching this is a caller bug, not bad input.
        Err(e) => panic!("envelope::seal: {e}"),
    }
}

/// [`seal`], refusing plaintexts over the AEAD limit instead of panicking.
#[inline]
pub fn try_seal(
    keys: &PairKeys,
    stream: StreamKind,
    sequence: u64,
    plaintext: &[u8],
) -> Result<SealedEnvelope, EnvelopeError> {
    let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
    buf.extend_from_slice(plaintext);
    try_seal_owned(keys, stream, sequence, buf)
}

/// [`try_seal`] of a plaintext the caller gives away: it is encrypted in
/// place (one AEAD call, no copy) and becomes the envelope's ciphertext,
/// so a sender that builds a batch in a buffer seals it without copying it.
/// Reserve [`TAG_LEN`] spare bytes in `plaintext` to avoid a reallocation.
pub fn try_seal_owned(
    keys: &PairKeys,
    stream: StreamKind,
    sequence: u64,
    mut plaintext: Vec<u8>,
) -> Result<SealedEnvelope, EnvelopeError> {
    let header = EnvelopeHeader {
        version: ENVELOPE_VERSION,
        sender: keys.local,
        receiver: keys.peer,
        epoch: keys.epoch,
        key_id: keys.send.key_id(),
        stream,
        sequence,
    };
    let nonce = next_nonce();
    let len = plaintext.len();
    let tag = cipher(&keys.send)
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), &header.aad(), &mut plaintext)
        .map_err(|_| EnvelopeError::TooLong { len })?;
    plaintext.extend_from_slice(&tag);
    Ok(SealedEnvelope {
        header,
        nonce,
        ciphertext: plaintext,
    })
}

/// Checks everything but the AEAD tag; see the module doc for the order.
fn check_header(keys: &PairKeys, env: &SealedEnvelope) -> Result<(), EnvelopeError> {
    let h = &env.header;
    if h.version != ENVELOPE_VERSION {
        return Err(EnvelopeError::Version {
            found: h.version,
            supported: ENVELOPE_VERSION,
        });
    }
    if h.receiver != keys.local {
        return Err(EnvelopeError::WrongReceiver {
            found: h.receiver,
            expected: keys.local,
        });
    }
    if h.sender != keys.peer {
        return Err(EnvelopeError::WrongSender {
            found: h.sender,
            expected: keys.peer,
        });
    }
    if h.epoch != keys.epoch {
        return Err(EnvelopeError::WrongEpoch {
            found: h.epoch,
            expected: keys.epoch,
        });
    }
    let expected = keys.recv.key_id();
    if !bool::from(h.key_id.ct_eq(&expected)) {
        return Err(EnvelopeError::WrongKey {
            found: h.key_id,
            expected,
        });
    }
    if env.ciphertext.len() < TAG_LEN {
        return Err(EnvelopeError::TooShort {
            len: env.ciphertext.len(),
        });
    }
    Ok(())
}

/// Opens an envelope sent to us (`keys.local`) by `keys.peer`.
///
/// Returns the plaintext only if every header check passes and the tag
/// authenticates header, nonce and ciphertext under `keys.recv`. Does not
/// check replay: pair it with a [`ReplayGuard`].
#[inline]
pub fn open(keys: &PairKeys, env: &SealedEnvelope) -> Result<Vec<u8>, EnvelopeError> {
    check_header(keys, env)?;
    let (body, tag) = env.ciphertext.split_at(env.ciphertext.len() - TAG_LEN);
    decrypt(keys, &env.header, &env.nonce, body.to_vec(), tag)
}

/// Decrypts `body` (a checked envelope's ciphertext without its `tag`) in
/// place. The tag is verified before anything is decrypted, so on failure
/// nothing decrypted leaves.
fn decrypt(
    keys: &PairKeys,
    header: &EnvelopeHeader,
    nonce: &[u8; 24],
    mut body: Vec<u8>,
    tag: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    cipher(&keys.recv)
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &header.aad(),
            &mut body,
            Tag::from_slice(tag),
        )
        .map_err(|_| EnvelopeError::Tampered)?;
    Ok(body)
}

/// [`open`] of an envelope the caller gives away: the ciphertext is
/// decrypted in place and becomes the plaintext (no copy), so a large blob
/// chunk is opened without a second buffer. Same checks as [`open`]; on
/// failure the envelope is consumed and nothing decrypted is returned.
#[inline]
pub fn open_owned(keys: &PairKeys, env: SealedEnvelope) -> Result<Vec<u8>, EnvelopeError> {
    check_header(keys, &env)?;
    let SealedEnvelope {
        header,
        nonce,
        ciphertext: mut buf,
    } = env;
    let body_len = buf.len() - TAG_LEN;
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&buf[body_len..]);
    buf.truncate(body_len);
    decrypt(keys, &header, &nonce, buf, &tag)
}

/// Refuses envelopes whose sequence is not greater than the last one
/// accepted on the same stream (replays and reordering by an attacker).
///
/// A fresh guard has accepted sequence 0, so streams start at 1.
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
    /// Checks `header.sequence` without accepting it: refused with
    /// [`EnvelopeError::Replayed`] unless it is above [`Self::last`].
    pub fn check(&self, header: &EnvelopeHeader) -> Result<(), EnvelopeError> {
        if header.sequence <= self.last {
            return Err(EnvelopeError::Replayed {
                sequence: header.sequence,
                last: self.last,
            });
        }
        Ok(())
    }
    /// Records `sequence` as accepted (call only after the envelope opened).
    pub fn accept(&mut self, sequence: u64) {
        self.last = self.last.max(sequence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::OrgKeyPair;
    use proptest::prelude::*;

    fn pair() -> (PairKeys, PairKeys) {
        let a = OrgKeyPair::from_secret_bytes(&[1; 32]);
        let b = OrgKeyPair::from_secret_bytes(&[2; 32]);
        let (ida, idb) = (a.public().org_id(), b.public().org_id());
        (
            a.pair_keys(ida, idb, &b.public(), 3).unwrap(),
            b.pair_keys(idb, ida, &a.public(), 3).unwrap(),
        )
    }

    #[test]
    fn round_trip() {
        let (a, b) = pair();
        for len in [0usize, 1, 262, 70_000] {
            let msg: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let env = seal(&a, StreamKind::Changes, 7, &msg);
            assert_eq!(env.ciphertext.len(), len + TAG_LEN);
            assert_eq!(env.header.sender, a.local);
            assert_eq!(env.header.receiver, b.local);
            assert_eq!(open(&b, &env).unwrap(), msg);
            // The sender cannot open its own envelope: directions differ.
            assert!(open(&a, &env).is_err());
        }
    }

    #[test]
    fn nonces_are_unique() {
        let (a, _) = pair();
        let e1 = seal(&a, StreamKind::Changes, 1, b"x");
        let e2 = seal(&a, StreamKind::Changes, 1, b"x");
        assert_ne!(e1.nonce, e2.nonce);
        assert_ne!(e1.ciphertext, e2.ciphertext);
    }

    #[test]
    fn header_layout_round_trips() {
        let (a, _) = pair();
        let env = seal(&a, StreamKind::Blob, u64::MAX - 1, b"");
        let bytes = env.header.to_bytes();
        assert_eq!(EnvelopeHeader::from_bytes(&bytes).unwrap(), env.header);
        let mut bad = bytes;
        bad[77] = 9;
        assert_eq!(
            EnvelopeHeader::from_bytes(&bad),
            Err(EnvelopeError::UnknownStream { found: 9 })
        );
    }

    #[test]
    fn each_check_has_its_variant() {
        let (a, b) = pair();
        let env = seal(&a, StreamKind::Changes, 1, b"hello");

        let mut e = env.clone();
        e.header.version = 2;
        assert_eq!(
            open(&b, &e),
            Err(EnvelopeError::Version {
                found: 2,
                supported: 1
            })
        );

        let mut e = env.clone();
        e.header.receiver = OrgId([0xEE; 32]);
        assert!(matches!(
            open(&b, &e),
            Err(EnvelopeError::WrongReceiver { .. })
        ));

        let mut e = env.clone();
        e.header.sender = OrgId([0xEE; 32]);
        assert!(matches!(
            open(&b, &e),
            Err(EnvelopeError::WrongSender { .. })
        ));

        let mut e = env.clone();
        e.header.epoch = 4;
        assert_eq!(
            open(&b, &e),
            Err(EnvelopeError::WrongEpoch {
                found: 4,
                expected: 3
            })
        );

        let mut e = env.clone();
        e.ciphertext.truncate(TAG_LEN - 1);
        assert_eq!(
            open(&b, &e),
            Err(EnvelopeError::TooShort { len: TAG_LEN - 1 })
        );

        let mut e = env.clone();
        e.header.stream = StreamKind::Blob;
        assert_eq!(open(&b, &e), Err(EnvelopeError::Tampered));

        let mut e = env.clone();
        e.header.sequence = 2;
        assert_eq!(open(&b, &e), Err(EnvelopeError::Tampered));
    }

    #[test]
    fn wrong_key_and_same_key_id_wrong_bytes() {
        let (a, b) = pair();
        let env = seal(&a, StreamKind::Changes, 1, b"hello");
        // Another key pair for the same peer ids: different key id.
        let other = PairKeys {
            epoch: b.epoch,
            local: b.local,
            peer: b.peer,
            send: DirectionKey::from_bytes([7; 32]),
            recv: DirectionKey::from_bytes([8; 32]),
        };
        assert!(matches!(
            open(&other, &env),
            Err(EnvelopeError::WrongKey { .. })
        ));
        // An envelope sealed with wrong key bytes but carrying the right key
        // id (forged header) only fails authentication.
        let forger = PairKeys {
            epoch: a.epoch,
            local: a.local,
            peer: a.peer,
            send: DirectionKey::from_bytes([7; 32]),
            recv: DirectionKey::from_bytes([8; 32]),
        };
        let mut forged = seal(&forger, StreamKind::Changes, 1, b"hello");
        forged.header.key_id = b.recv.key_id();
        assert_eq!(open(&b, &forged), Err(EnvelopeError::Tampered));
    }

    #[test]
    fn replay_guard() {
        let (a, b) = pair();
        let mut guard = ReplayGuard::default();
        let e1 = seal(&a, StreamKind::Changes, 1, b"one");
        guard.check(&e1.header).unwrap();
        open(&b, &e1).unwrap();
        guard.accept(e1.header.sequence);
        assert_eq!(
            guard.check(&e1.header),
            Err(EnvelopeError::Replayed {
                sequence: 1,
                last: 1
            })
        );
        let e0 = seal(&a, StreamKind::Changes, 0, b"zero");
        assert!(guard.check(&e0.header).is_err());
        let e5 = seal(&a, StreamKind::Changes, 5, b"five");
        guard.check(&e5.header).unwrap();
        guard.accept(5);
        guard.accept(3);
        assert_eq!(guard.last(), 5);
        assert!(ReplayGuard::new(9).check(&e5.header).is_err());
    }

    #[test]
    fn errors_read_well() {
        let e = EnvelopeError::WrongKey {
            found: [1; 8],
            expected: [2; 8],
        };
        assert!(e.to_string().contains("0101010101010101"));
        assert!(EnvelopeError::Tampered.to_string().contains("altered"));
    }

    /// The envelope as one byte string, for flipping: header || nonce || ciphertext.
    fn flatten(env: &SealedEnvelope) -> Vec<u8> {
        let mut v = env.header.to_bytes().to_vec();
        v.extend_from_slice(&env.nonce);
        v.extend_from_slice(&env.ciphertext);
        v
    }

    fn unflatten(bytes: &[u8]) -> Result<SealedEnvelope, EnvelopeError> {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&bytes[..HEADER_LEN]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
        Ok(SealedEnvelope {
            header: EnvelopeHeader::from_bytes(&h)?,
            nonce,
            ciphertext: bytes[HEADER_LEN + NONCE_LEN..].to_vec(),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_single_byte_change_is_refused(
            msg in proptest::collection::vec(any::<u8>(), 0..600),
            seq in any::<u64>(),
            blob in any::<bool>(),
            pos in any::<prop::sample::Index>(),
            delta in 1u8..=255,
        ) {
            let (a, b) = pair();
            let stream = if blob { StreamKind::Blob } else { StreamKind::Changes };
            let env = seal(&a, stream, seq, &msg);
            prop_assert_eq!(open(&b, &env), Ok(msg.clone()));
            prop_assert_eq!(open_owned(&b, env.clone()), Ok(msg.clone()));
            let mut bytes = flatten(&env);
            let i = pos.index(bytes.len());
            bytes[i] ^= delta;
            let result = unflatten(&bytes).and_then(|e| open(&b, &e));
            prop_assert!(result.is_err(), "flip at {} accepted", i);
            // Opening in place refuses exactly the same way.
            let owned = unflatten(&bytes).and_then(|e| open_owned(&b, e));
            prop_assert_eq!(&owned, &result);
            // And the refusal names the right cause.
            let err = result.unwrap_err();
            let ok = match i {
                0 => matches!(err, EnvelopeError::Version { .. }),
                1..=32 => matches!(err, EnvelopeError::WrongSender { .. }),
                33..=64 => matches!(err, EnvelopeError::WrongReceiver { .. }),
                65..=68 => matches!(err, EnvelopeError::WrongEpoch { .. }),
                69..=76 => matches!(err, EnvelopeError::WrongKey { .. }),
                77 => matches!(err, EnvelopeError::UnknownStream { .. } | EnvelopeError::Tampered),
                _ => err == EnvelopeError::Tampered,
            };
            prop_assert!(ok, "flip at {} gave {:?}", i, err);
        }

        #[test]
        fn arbitrary_envelopes_never_open_or_panic(
            bytes in proptest::collection::vec(any::<u8>(), HEADER_LEN + NONCE_LEN..HEADER_LEN + NONCE_LEN + 200),
        ) {
            let (_, b) = pair();
            if let Ok(env) = unflatten(&bytes) {
                prop_assert!(open(&b, &env).is_err());
                prop_assert!(open_owned(&b, env).is_err());
            }
        }
    }
}
