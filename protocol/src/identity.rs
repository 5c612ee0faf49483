//! Organisation identities and keys: the long-term x25519 key pair, the
//! OrgId derived from it, certificate fingerprints, and pair-key derivation.
//!
//! # Pair keys
//!
//! Two organisations A and B with x25519 key pairs derive, for a key epoch:
//!
//! ```text
//! ss        = X25519(a, B)                      (refused if all zeros)
//! K(A,B)    = HKDF-SHA256(salt = PAIR_SALT, ikm = ss,
//!                         info = "orgsync pair key v1" || min(A,B) || max(A,B) || epoch_be32)
//! key(X->Y) = HKDF-Expand(prk = K(A,B),
//!                         info = "orgsync direction key v1" || X || Y || epoch_be32)
//! ```
//!
//! Sorting the OrgIds in the first step makes K(A,B) the same on both sides;
//! the ordered `X || Y` of the second step binds each subkey to one
//! direction, so an envelope sent A->B can never be reflected back to A as if
//! B had sent it. `send = key(local->peer)`, `recv = key(peer->local)`.
//!
//! # Secrets in memory
//!
//! Every buffer this module owns that holds secret material (x25519 secret,
//! shared secret, K(A,B), direction keys) is zeroized on drop. The `hkdf`
//! 0.12 crate keeps a copy of its PRK inside its HMAC state and does not
//! zeroize it; that state lives on the stack only for the duration of
//! [`OrgKeyPair::pair_keys`].

use std::fmt;
use std::str::FromStr;

use hkdf::Hkdf;
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::model::OrgId;

/// BLAKE3 derive-key context of [`OrgPublicKey::org_id`].
const ORG_ID_CONTEXT: &str = "orgsync 2024 org id v1";
/// Fixed HKDF salt of the pair-key extraction (a protocol label: domain
/// separation from any other use of the same x25519 keys).
const PAIR_SALT: &[u8] = b"orgsync 2024 pair key salt v1";
/// HKDF info prefix of the pair key K(A,B).
const PAIR_INFO: &[u8] = b"orgsync pair key v1";
/// HKDF info prefix of a direction subkey.
const DIRECTION_INFO: &[u8] = b"orgsync direction key v1";
/// BLAKE3 derive-key context of [`DirectionKey::key_id`].
const KEY_ID_CONTEXT: &str = "orgsync 2024 envelope key id v1";

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
    /// Deterministic; distinct keys give distinct ids (up to BLAKE3
    /// collisions).
    pub fn org_id(&self) -> OrgId {
        OrgId(blake3::derive_key(ORG_ID_CONTEXT, &self.0))
    }
}

/// An organisation's long-term x25519 key pair. The secret is zeroized on
/// drop and never printed.
pub struct OrgKeyPair {
    // `StaticSecret` zeroizes itself on drop (x25519-dalek "zeroize" feature).
    secret: StaticSecret,
    public: PublicKey,
}

impl OrgKeyPair {
    /// A fresh key pair from the OS RNG.
    ///
    /// # Panics
    /// Only if the operating system's random number generator is
    /// unavailable, where no safe key can be made at all.
    pub fn generate() -> Self {
        Self::from_secret(StaticSecret::random_from_rng(OsRng))
    }

    /// Rebuilds a key pair from its 32 secret bytes. Every 32-byte string is
    /// a valid x25519 secret (it is clamped on use), so this cannot fail.
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Self {
        Self::from_secret(StaticSecret::from(*bytes))
    }

    fn from_secret(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        OrgKeyPair { secret, public }
    }

    /// The secret bytes, for writing to a 0600 file; zeroized when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> OrgPublicKey {
        OrgPublicKey(self.public.to_bytes())
    }

    /// Pair keys with a partner for a key epoch.
    ///
    /// Both sides get the same pair key: `A.send == B.recv` and
    /// `A.recv == B.send`. Keys differ for every (pair, epoch).
    ///
    /// # Errors
    /// - [`IdentityError::SelfPairing`] if `local == peer`;
    /// - [`IdentityError::WeakPublicKey`] if `peer_public` is a low-order
    ///   point (the shared secret would be all zeros, i.e. known to anyone).
    pub fn pair_keys(
        &self,
        local: OrgId,
        peer: OrgId,
        peer_public: &OrgPublicKey,
        epoch: u32,
    ) -> Result<PairKeys, IdentityError> {
        if local == peer {
            return Err(IdentityError::SelfPairing);
        }
        // `SharedSecret` zeroizes itself on drop.
        let shared = self.secret.diffie_hellman(&PublicKey::from(peer_public.0));
        if !shared.was_contributory() {
            return Err(IdentityError::WeakPublicKey);
        }

        let (lo, hi) = if local < peer {
            (local, peer)
        } else {
            (peer, local)
        };
        let epoch_be = epoch.to_be_bytes();
        let mut pair_key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(PAIR_SALT), shared.as_bytes())
            .expand_multi_info(&[PAIR_INFO, &lo.0, &hi.0, &epoch_be], &mut pair_key[..])
            // Invariant: 32 bytes is far below HKDF-SHA256's 255*32-byte limit.
            .expect("32-byte HKDF output is within the limit");
        // Invariant: a 32-byte PRK is exactly SHA-256's output length.
        let expander = Hkdf::<Sha256>::from_prk(&pair_key[..]).expect("32-byte PRK is valid");

        let direction = |from: &OrgId, to: &OrgId| {
            let mut key = Zeroizing::new([0u8; 32]);
            expander
                .expand_multi_info(&[DIRECTION_INFO, &from.0, &to.0, &epoch_be], &mut key[..])
                // Invariant: as above, 32 bytes is within the HKDF limit.
                .expect("32-byte HKDF output is within the limit");
            DirectionKey::from_zeroizing(key)
        };

        Ok(PairKeys {
            epoch,
            local,
            peer,
            send: direction(&local, &peer),
            recv: direction(&peer, &local),
        })
    }
}

impl fmt::Debug for OrgKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OrgKeyPair(<secret>)")
    }
}

/// A 32-byte symmetric key for one direction of a pair; zeroized on drop,
/// never printed.
pub struct DirectionKey {
    key: Zeroizing<[u8; 32]>,
    // Computed once here rather than per envelope: it is a BLAKE3 hash and
    // showed up in the seal/open benchmark for small payloads.
    id: [u8; 8],
}

impl DirectionKey {
    /// Wraps raw key bytes (tests and key import).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self::from_zeroizing(Zeroizing::new(bytes))
    }

    fn from_zeroizing(key: Zeroizing<[u8; 32]>) -> Self {
        let full = Zeroizing::new(blake3::derive_key(KEY_ID_CONTEXT, &key[..]));
        let mut id = [0u8; 8];
        id.copy_from_slice(&full[..8]);
        DirectionKey { key, id }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// A short public identifier of this key: the first 8 bytes of BLAKE3
    /// derive-key("orgsync 2024 envelope key id v1", key). It reveals
    /// nothing usable about the key and lets a receiver tell "sealed under
    /// another key" apart from "tampered with".
    pub fn key_id(&self) -> [u8; 8] {
        self.id
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

// ---------------------------------------------------------------------------
// Fingerprints
// ---------------------------------------------------------------------------

/// SHA-256 fingerprint of an instance's TLS certificate (DER), shown to
/// people as groups they can compare aloud.
///
/// Display form: 64 uppercase hex digits in 16 groups of 4 joined by `-`,
/// e.g. `3F2A-9C01-...-77DE`. [`FromStr`] accepts that form with any case
/// and any `-`, `:` or whitespace separators.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

/// Why a fingerprint could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// Not 64 hex digits once separators are removed.
    #[error("a certificate fingerprint has 64 hex digits (16 groups of 4), this one has {found}")]
    Length {
        /// Digits found, without separators.
        found: usize,
    },
    /// A character that is neither a hex digit nor a separator.
    #[error("character {ch:?} at position {position} is not a hex digit (0-9, A-F)")]
    Character {
        /// 1-based position in the input text.
        position: usize,
        /// The offending character.
        ch: char,
    },
}

impl Fingerprint {
    /// The SHA-256 of a DER-encoded certificate.
    pub fn of_certificate(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// The first four groups (`3F2A-9C01-55B0-E4D2`): enough to tell
    /// certificates apart in logs and lists, not enough to verify one.
    pub fn short(&self) -> String {
        group_hex(&self.0[..8])
    }

    /// Compares with another fingerprint in constant time.
    pub fn ct_eq(&self, other: &Fingerprint) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

/// Uppercase hex in groups of 4 digits (2 bytes) joined by '-'.
fn group_hex(bytes: &[u8]) -> String {
    let groups: Vec<String> = bytes
        .chunks(2)
        .map(|g| data_encoding::HEXUPPER.encode(g))
        .collect();
    groups.join("-")
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&group_hex(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.short())
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut digits = Vec::with_capacity(64);
        for (i, ch) in s.chars().enumerate() {
            if ch == '-' || ch == ':' || ch.is_whitespace() {
                continue;
            }
            match ch.to_digit(16) {
                // to_digit(16) < 16, so the cast is lossless.
                Some(d) => digits.push(d as u8),
                None => {
                    return Err(FingerprintError::Character {
                        position: i + 1,
                        ch,
                    })
                }
            }
        }
        if digits.len() != 64 {
            return Err(FingerprintError::Length {
                found: digits.len(),
            });
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (pair[0] << 4) | pair[1];
        }
        Ok(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(seed: u8) -> (OrgKeyPair, OrgId) {
        let kp = OrgKeyPair::from_secret_bytes(&[seed; 32]);
        let id = kp.public().org_id();
        (kp, id)
    }

    #[test]
    fn both_sides_derive_matching_keys() {
        let (a, ida) = org(1);
        let (b, idb) = org(2);
        let ka = a.pair_keys(ida, idb, &b.public(), 0).unwrap();
        let kb = b.pair_keys(idb, ida, &a.public(), 0).unwrap();
        assert_eq!(ka.send.as_bytes(), kb.recv.as_bytes());
        assert_eq!(ka.recv.as_bytes(), kb.send.as_bytes());
        assert_ne!(ka.send.as_bytes(), ka.recv.as_bytes());
        assert_eq!((ka.local, ka.peer, ka.epoch), (ida, idb, 0));
    }

    #[test]
    fn epochs_and_peers_give_different_keys() {
        let (a, ida) = org(1);
        let (b, idb) = org(2);
        let (c, idc) = org(3);
        let k0 = a.pair_keys(ida, idb, &b.public(), 0).unwrap();
        let k1 = a.pair_keys(ida, idb, &b.public(), 1).unwrap();
        let kc = a.pair_keys(ida, idc, &c.public(), 0).unwrap();
        assert_ne!(k0.send.as_bytes(), k1.send.as_bytes());
        assert_ne!(k0.recv.as_bytes(), k1.recv.as_bytes());
        assert_ne!(k0.send.as_bytes(), kc.send.as_bytes());
        // Same DH secret, different claimed peer id: the ids are bound in.
        let kx = a.pair_keys(ida, idc, &b.public(), 0).unwrap();
        assert_ne!(k0.send.as_bytes(), kx.send.as_bytes());
        assert_ne!(k0.send.key_id(), k1.send.key_id());
    }

    #[test]
    fn low_order_points_are_refused() {
        let (a, ida) = org(1);
        // Identity point and a point of order 8 on Curve25519.
        let mut order8 = [0u8; 32];
        data_encoding::HEXLOWER
            .decode_mut(
                b"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
                &mut order8,
            )
            .unwrap();
        for bad in [[0u8; 32], order8] {
            assert_eq!(
                a.pair_keys(ida, OrgId([9; 32]), &OrgPublicKey(bad), 0)
                    .unwrap_err(),
                IdentityError::WeakPublicKey
            );
        }
    }

    #[test]
    fn self_pairing_is_refused() {
        let (a, ida) = org(1);
        assert_eq!(
            a.pair_keys(ida, ida, &a.public(), 0).unwrap_err(),
            IdentityError::SelfPairing
        );
    }

    #[test]
    fn secret_round_trips_and_debug_hides_it() {
        let a = OrgKeyPair::generate();
        let b = OrgKeyPair::from_secret_bytes(&a.secret_bytes());
        assert_eq!(a.public(), b.public());
        let secret_hex = data_encoding::HEXLOWER.encode(&a.secret_bytes()[..]);
        let (_, ida) = org(1);
        let (p, idp) = org(2);
        let keys = a.pair_keys(ida, idp, &p.public(), 0).unwrap();
        let dbg = format!("{a:?} {keys:?}");
        assert!(!dbg.contains(&secret_hex[..16]));
        for k in [&keys.send, &keys.recv] {
            let hex = data_encoding::HEXLOWER.encode(k.as_bytes());
            let upper = hex.to_uppercase();
            assert!(!dbg.contains(&hex[..16]) && !dbg.contains(&upper[..16]));
            let bytes: Vec<String> = k.as_bytes().iter().map(|b| b.to_string()).collect();
            assert!(!dbg.contains(&bytes[..4].join(", ")));
        }
        assert!(dbg.contains("<secret>"));
    }

    #[test]
    fn org_id_is_derive_key_of_public() {
        let pk = OrgPublicKey([5; 32]);
        assert_eq!(pk.org_id().0, blake3::derive_key(ORG_ID_CONTEXT, &[5; 32]));
        assert_ne!(pk.org_id(), OrgPublicKey([6; 32]).org_id());
    }

    #[test]
    fn fingerprint_display_and_parse() {
        let fp = Fingerprint::of_certificate(b"not really DER");
        let text = fp.to_string();
        assert_eq!(text.len(), 64 + 15);
        assert_eq!(text.split('-').count(), 16);
        assert!(text.split('-').all(|g| g.len() == 4));
        assert_eq!(text, text.to_uppercase());
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        let loose = text.to_lowercase().replace('-', " ");
        assert_eq!(loose.parse::<Fingerprint>().unwrap(), fp);
        let colons = data_encoding::HEXUPPER
            .encode(&fp.0)
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(colons.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(fp.short(), text[..19]);
        assert!(format!("{fp:?}").contains(&fp.short()));
        assert!(fp.ct_eq(&fp) && !fp.ct_eq(&Fingerprint([0; 32])));
        assert_eq!(
            "AB".parse::<Fingerprint>(),
            Err(FingerprintError::Length { found: 2 })
        );
        assert_eq!(
            "ABXZ".parse::<Fingerprint>(),
            Err(FingerprintError::Character {
                position: 3,
                ch: 'X'
            })
        );
    }

    #[test]
    fn fingerprint_is_sha256() {
        // SHA-256("abc") from FIPS 180-2.
        let fp = Fingerprint::of_certificate(b"abc");
        assert_eq!(
            data_encoding::HEXLOWER.encode(&fp.0),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
