//! Key rotation proofs: a rotation is a statement signed by the key it
//! replaces.
//!
//! Organisation keys are x25519 only ([`OrgKeyPair`]), so links are signed
//! with **XEdDSA** (Signal's scheme: an EdDSA signature made with an x25519
//! secret, verified with the x25519 public key;
//! <https://signal.org/docs/specifications/xeddsa/>), from the `xeddsa`
//! crate over curve25519-dalek 4.
//!
//! # Links and chains
//!
//! When an organisation moves from epoch `e-1` to epoch `e` it signs, with
//! the key of epoch `e-1`, the statement
//!
//! ```text
//! "orgsync key rotation v1\0" || org_id (32) || e (u32 big-endian)
//!     || public key of epoch e (32) || certificate fingerprint at epoch e (32)
//! ```
//!
//! (all fields fixed-length, so the concatenation is unambiguous). That is a
//! [`RotationLink`]. A [`RotationChain`] is the key of the epoch before its
//! first link (`base_key`) followed by at most [`MAX_CHAIN`] consecutive
//! links ending at the bundle's epoch. An importer that knows the partner's
//! key of some epoch `k` in the chain (or, for a partner it does not know,
//! the genesis key, whose hash is the account number) follows the links from
//! `k` to the newest epoch, each signed by the key before it: then the new
//! key was chosen by whoever held the key on file.
//!
//! Everything here is pure (no I/O); [`verify_chain`] is what an importer
//! calls.

use std::fmt;

use serde::{Deserialize, Serialize};
use xeddsa::xed25519;
use xeddsa::{Sign, Verify};

use crate::identity::{Fingerprint, OrgKeyPair, OrgPublicKey};
use crate::model::OrgId;

/// Domain separation of the signed statement.
const STATEMENT_LABEL: &[u8] = b"orgsync key rotation v1\0";
/// Most links a chain (and so a bundle) carries: the last 16 epochs. An
/// importer whose key on file is older than that must re-pair.
pub const MAX_CHAIN: usize = 16;
/// Bytes of one encoded link: epoch, key, fingerprint, signature.
pub const LINK_LEN: usize = 4 + 32 + 32 + 64;

/// An XEdDSA signature (R || s, 64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RotationSignature(pub [u8; 64]);

impl fmt::Debug for RotationSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RotationSignature({}..)",
            data_encoding::HEXLOWER.encode(&self.0[..8])
        )
    }
}

// serde derives stop at 32-element arrays: (de)serialise as two halves.
#[derive(Serialize, Deserialize)]
struct SignatureHalves([u8; 32], [u8; 32]);

impl Serialize for RotationSignature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut lo = [0u8; 32];
        let mut hi = [0u8; 32];
        lo.copy_from_slice(&self.0[..32]);
        hi.copy_from_slice(&self.0[32..]);
        SignatureHalves(lo, hi).serialize(s)
    }
}

impl<'de> Deserialize<'de> for RotationSignature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let SignatureHalves(lo, hi) = SignatureHalves::deserialize(d)?;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&lo);
        out[32..].copy_from_slice(&hi);
        Ok(RotationSignature(out))
    }
}

/// One rotation: the key and certificate of `epoch`, signed by the key of
/// `epoch - 1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RotationLink {
    /// The new epoch (≥ 1).
    pub epoch: u32,
    /// The organisation's public key of `epoch`.
    pub public_key: OrgPublicKey,
    /// The instance certificate fingerprint at `epoch`.
    pub cert_fingerprint: Fingerprint,
    /// XEdDSA signature by the key of `epoch - 1` over [`statement`].
    pub signature: RotationSignature,
}

/// The bytes a link's signature covers (see the module doc).
pub fn statement(
    org_id: &OrgId,
    epoch: u32,
    public_key: &OrgPublicKey,
    cert_fingerprint: &Fingerprint,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(STATEMENT_LABEL.len() + 32 + 4 + 32 + 32);
    m.extend_from_slice(STATEMENT_LABEL);
    m.extend_from_slice(&org_id.0);
    m.extend_from_slice(&epoch.to_be_bytes());
    m.extend_from_slice(&public_key.0);
    m.extend_from_slice(&cert_fingerprint.0);
    m
}

/// XEdDSA-signs `message` with an organisation key. The secret is copied
/// into the signer, which zeroizes it on drop.
pub fn xeddsa_sign(key: &OrgKeyPair, message: &[u8]) -> RotationSignature {
    let secret = key.secret_bytes();
    let signer = xed25519::PrivateKey::from(&*secret);
    RotationSignature(signer.sign(message, rand_core::OsRng))
}

/// Whether `signature` is a valid XEdDSA signature of `message` by the
/// x25519 key `key`. A low-order (weak) key never verifies: anyone can make
/// signatures that pass for one.
pub fn xeddsa_verify(key: &OrgPublicKey, message: &[u8], signature: &RotationSignature) -> bool {
    if is_weak(key) {
        return false;
    }
    xed25519::PublicKey(key.0)
        .verify(message, &signature.0)
        .is_ok()
}

/// Whether an x25519 public key is unusable for signatures: not a curve
/// point with a valid Edwards form, or of small order.
fn is_weak(key: &OrgPublicKey) -> bool {
    curve25519_dalek::montgomery::MontgomeryPoint(key.0)
        .to_edwards(0)
        .is_none_or(|p| p.is_small_order())
}

impl RotationLink {
    /// Signs the move to `epoch` (key `public_key`, certificate
    /// `cert_fingerprint`) with `previous`, the key of `epoch - 1`.
    pub fn sign(
        previous: &OrgKeyPair,
        org_id: &OrgId,
        epoch: u32,
        public_key: OrgPublicKey,
        cert_fingerprint: Fingerprint,
    ) -> RotationLink {
        let m = statement(org_id, epoch, &public_key, &cert_fingerprint);
        RotationLink {
            epoch,
            public_key,
            cert_fingerprint,
            signature: xeddsa_sign(previous, &m),
        }
    }

    /// Whether this link is signed by `previous` for `org_id`.
    pub fn is_signed_by(&self, previous: &OrgPublicKey, org_id: &OrgId) -> bool {
        let m = statement(org_id, self.epoch, &self.public_key, &self.cert_fingerprint);
        xeddsa_verify(previous, &m, &self.signature)
    }
}

/// The proof carried by a bundle after a rotation: the key of the epoch
/// before the first link, then consecutive links up to the bundle's epoch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RotationChain {
    /// The public key of epoch `links[0].epoch - 1`.
    pub base_key: OrgPublicKey,
    /// At most [`MAX_CHAIN`] links, oldest first.
    pub links: Vec<RotationLink>,
}

impl RotationChain {
    /// The epoch of `base_key` (`None` for a chain without links, which
    /// [`verify_chain`] refuses).
    pub fn base_epoch(&self) -> Option<u32> {
        self.links.first().and_then(|l| l.epoch.checked_sub(1))
    }

    /// The key of `epoch` as this chain states it, if the chain covers it.
    fn key_at(&self, epoch: u32) -> Option<OrgPublicKey> {
        if Some(epoch) == self.base_epoch() {
            return Some(self.base_key);
        }
        self.links
            .iter()
            .find(|l| l.epoch == epoch)
            .map(|l| l.public_key)
    }
}

/// What the importer already trusts about the organisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// A known partner: its key of `epoch` is on file.
    Known {
        /// The epoch on file.
        epoch: u32,
        /// The key on file.
        key: OrgPublicKey,
    },
    /// An organisation not known yet: only its account number, which is
    /// the hash of its genesis (epoch 0) key.
    Genesis,
}

/// Why a rotation chain does not prove the bundle's key. Messages are
/// written for the admin who imported the bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    /// No links at all.
    #[error("the bundle's rotation proof has no links")]
    Empty,
    /// More links than [`MAX_CHAIN`].
    #[error("the bundle's rotation proof has {count} links; at most {MAX_CHAIN} are carried")]
    TooLong {
        /// Links found.
        count: usize,
    },
    /// Links are not consecutive epochs.
    #[error(
        "the bundle's rotation proof skips from epoch {after} to epoch {found}: every epoch \
         must be signed by the one before it, so the chain is broken"
    )]
    SkippedEpoch {
        /// The last epoch before the gap.
        after: u32,
        /// The epoch that follows it in the chain.
        found: u32,
    },
    /// The newest link is not the bundle's epoch and key.
    #[error(
        "the bundle's rotation proof ends at epoch {chain_epoch} with another key than the \
         bundle's (epoch {bundle_epoch}): the bundle's key is not the one the proof vouches for"
    )]
    KeyNotBound {
        /// The newest link's epoch.
        chain_epoch: u32,
        /// The bundle's epoch.
        bundle_epoch: u32,
    },
    /// The newest link binds another certificate than the bundle's.
    #[error(
        "the bundle's certificate fingerprint {bundle} is not the one its rotation proof was \
         signed for ({bound}): the certificate was swapped after the rotation was signed"
    )]
    CertNotBound {
        /// What the newest link binds.
        bound: Fingerprint,
        /// What the bundle carries.
        bundle: Fingerprint,
    },
    /// A link's signature does not verify under the previous key.
    #[error(
        "the rotation to epoch {epoch} is not validly signed by the key of epoch {}: the link \
         was altered or signed by another key",
        .epoch.saturating_sub(1)
    )]
    BadSignature {
        /// The link's epoch.
        epoch: u32,
    },
    /// The importer's key on file is older than the chain's start.
    #[error(
        "the key on file is of epoch {known}, but the bundle's rotation proof only reaches back \
         to epoch {oldest} (bundles carry the last {MAX_CHAIN} epochs)"
    )]
    KnownEpochTooOld {
        /// The epoch on file.
        known: u32,
        /// The oldest epoch the chain covers.
        oldest: u32,
    },
    /// The chain does not pass through the key on file.
    #[error(
        "the bundle's rotation proof does not start from the key on file for epoch {epoch}: \
         it was signed by another key"
    )]
    NotFromKeyOnFile {
        /// The epoch on file.
        epoch: u32,
    },
    /// An unknown organisation's chain does not reach its genesis key.
    #[error(
        "the bundle's rotation proof only reaches back to epoch {oldest}, not to the genesis key \
         that the account number is the hash of, so the account number cannot be checked"
    )]
    NotFromGenesis {
        /// The oldest epoch the chain covers.
        oldest: u32,
    },
    /// The chain's genesis key does not hash to the account number.
    #[error(
        "the bundle's account number {claimed} does not belong to the genesis key of its \
         rotation proof (that key gives {derived}): the bundle was forged"
    )]
    GenesisMismatch {
        /// The account number in the bundle.
        claimed: OrgId,
        /// The account number of the chain's genesis key.
        derived: OrgId,
    },
}

/// Checks that `chain` proves `org_id`'s key `new_key` at `new_epoch` with
/// certificate `new_cert`, starting from what the importer trusts
/// (`anchor`).
///
/// Guarantees on `Ok`: the chain's links are consecutive and end at
/// (`new_epoch`, `new_key`, `new_cert`); the key the anchor trusts appears
/// in the chain at its epoch (for [`Anchor::Genesis`]: the chain starts at
/// epoch 0 with a key whose hash is `org_id`); and every link after the
/// anchor's epoch is XEdDSA-signed by the key of the epoch before it over
/// `org_id`, its epoch, key and certificate.
///
/// # Errors
/// One [`RotationError`] variant per reason, checked in this order:
/// structure, end of chain, anchor, signatures.
pub fn verify_chain(
    org_id: &OrgId,
    chain: &RotationChain,
    new_epoch: u32,
    new_key: &OrgPublicKey,
    new_cert: &Fingerprint,
    anchor: &Anchor,
) -> Result<(), RotationError> {
    let (Some(first), Some(last)) = (chain.links.first(), chain.links.last()) else {
        return Err(RotationError::Empty);
    };
    if chain.links.len() > MAX_CHAIN {
        return Err(RotationError::TooLong {
            count: chain.links.len(),
        });
    }
    let Some(base_epoch) = first.epoch.checked_sub(1) else {
        // A link "to epoch 0" has no previous key.
        return Err(RotationError::SkippedEpoch { after: 0, found: 0 });
    };
    for pair in chain.links.windows(2) {
        if pair[0].epoch.checked_add(1) != Some(pair[1].epoch) {
            return Err(RotationError::SkippedEpoch {
                after: pair[0].epoch,
                found: pair[1].epoch,
            });
        }
    }
    if last.epoch != new_epoch || last.public_key != *new_key {
        return Err(RotationError::KeyNotBound {
            chain_epoch: last.epoch,
            bundle_epoch: new_epoch,
        });
    }
    if !last.cert_fingerprint.ct_eq(new_cert) {
        return Err(RotationError::CertNotBound {
            bound: last.cert_fingerprint,
            bundle: *new_cert,
        });
    }
    let from_epoch = match *anchor {
        Anchor::Known { epoch, key } => {
            if epoch < base_epoch {
                return Err(RotationError::KnownEpochTooOld {
                    known: epoch,
                    oldest: base_epoch,
                });
            }
            if chain.key_at(epoch) != Some(key) {
                return Err(RotationError::NotFromKeyOnFile { epoch });
            }
            epoch
        }
        Anchor::Genesis => {
            if base_epoch != 0 {
                return Err(RotationError::NotFromGenesis { oldest: base_epoch });
            }
            let derived = chain.base_key.org_id();
            if derived != *org_id {
                return Err(RotationError::GenesisMismatch {
                    claimed: *org_id,
                    derived,
                });
            }
            0
        }
    };
    let mut previous = chain.base_key;
    for link in &chain.links {
        // Links up to the anchor's epoch are vouched for by the anchor
        // itself; only the ones after it need (and get) checking.
        if link.epoch > from_epoch && !link.is_signed_by(&previous, org_id) {
            return Err(RotationError::BadSignature { epoch: link.epoch });
        }
        previous = link.public_key;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint([n; 32])
    }

    /// Keys of epochs 0..=n and the full chain for them.
    fn rotated(n: u32) -> (Vec<OrgKeyPair>, OrgId, RotationChain) {
        let keys: Vec<OrgKeyPair> = (0..=n).map(|_| OrgKeyPair::generate()).collect();
        let org = keys[0].public().org_id();
        let links = (1..=n)
            .map(|e| {
                let i = e as usize;
                RotationLink::sign(&keys[i - 1], &org, e, keys[i].public(), fp(7))
            })
            .collect();
        let chain = RotationChain {
            base_key: keys[0].public(),
            links,
        };
        (keys, org, chain)
    }

    fn check(
        org: &OrgId,
        chain: &RotationChain,
        key: &OrgKeyPair,
        epoch: u32,
        anchor: Anchor,
    ) -> Result<(), RotationError> {
        verify_chain(org, chain, epoch, &key.public(), &fp(7), &anchor)
    }

    #[test]
    fn xeddsa_round_trip_wrong_key_and_tampered_message() {
        let k = OrgKeyPair::generate();
        let other = OrgKeyPair::generate();
        let sig = xeddsa_sign(&k, b"statement");
        assert!(xeddsa_verify(&k.public(), b"statement", &sig));
        assert!(!xeddsa_verify(&other.public(), b"statement", &sig));
        assert!(!xeddsa_verify(&k.public(), b"statemenT", &sig));
        let mut bad = sig;
        bad.0[40] ^= 1;
        assert!(!xeddsa_verify(&k.public(), b"statement", &bad));
        bad = sig;
        bad.0[3] ^= 0x80;
        assert!(!xeddsa_verify(&k.public(), b"statement", &bad));
        // Two signatures of one message differ (random nonce) and both hold.
        let again = xeddsa_sign(&k, b"statement");
        assert_ne!(sig, again);
        assert!(xeddsa_verify(&k.public(), b"statement", &again));
    }

    #[test]
    fn xeddsa_works_for_both_edwards_sign_bits() {
        // XEdDSA negates the scalar when k*B has its sign bit set; keys of
        // both kinds must sign and verify.
        use curve25519_dalek::scalar::{clamp_integer, Scalar};
        let mut seen = [0u32; 2];
        for seed in 0..64u8 {
            let k = OrgKeyPair::from_secret_bytes(&[seed; 32]);
            let scalar = Scalar::from_bytes_mod_order(clamp_integer(*k.secret_bytes()));
            let ed = curve25519_dalek::EdwardsPoint::mul_base(&scalar).compress();
            seen[usize::from(ed.0[31] >> 7)] += 1;
            let sig = xeddsa_sign(&k, &[seed]);
            assert!(xeddsa_verify(&k.public(), &[seed], &sig), "seed {seed}");
            assert!(!xeddsa_verify(&k.public(), &[seed, 0], &sig));
        }
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    }

    #[test]
    fn weak_keys_never_verify() {
        let sig = RotationSignature([0; 64]);
        for u in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            assert!(!xeddsa_verify(&OrgPublicKey(u), b"m", &sig));
        }
    }

    #[test]
    fn a_full_chain_verifies_from_any_known_epoch_and_from_genesis() {
        let (keys, org, chain) = rotated(3);
        for known in 0..=3u32 {
            let anchor = Anchor::Known {
                epoch: known,
                key: keys[known as usize].public(),
            };
            assert_eq!(check(&org, &chain, &keys[3], 3, anchor), Ok(()));
        }
        assert_eq!(check(&org, &chain, &keys[3], 3, Anchor::Genesis), Ok(()));
    }

    #[test]
    fn each_broken_chain_has_its_error() {
        let (keys, org, chain) = rotated(3);
        let known0 = Anchor::Known {
            epoch: 0,
            key: keys[0].public(),
        };
        // A chain signed throughout by an impostor's keys.
        let (mk, _, _) = rotated(3);
        let forged = forged_genesis(&mk, &org);
        assert_eq!(
            check(&org, &forged, &mk[3], 3, known0),
            Err(RotationError::NotFromKeyOnFile { epoch: 0 })
        );
        // The impostor puts the real base key in front of its own links.
        let spliced = RotationChain {
            base_key: keys[0].public(),
            links: forged.links.clone(),
        };
        assert_eq!(
            check(&org, &spliced, &mk[3], 3, known0),
            Err(RotationError::BadSignature { epoch: 1 })
        );
        // A tampered middle link.
        let mut tampered = chain.clone();
        tampered.links[1].public_key = mk[2].public();
        assert_eq!(
            check(&org, &tampered, &keys[3], 3, known0),
            Err(RotationError::BadSignature { epoch: 2 })
        );
        // Signed for another organisation.
        assert_eq!(
            check(&mk[0].public().org_id(), &chain, &keys[3], 3, known0),
            Err(RotationError::BadSignature { epoch: 1 })
        );
        // A skipped epoch.
        let mut skip = chain.clone();
        skip.links.remove(1);
        assert_eq!(
            check(&org, &skip, &keys[3], 3, known0),
            Err(RotationError::SkippedEpoch { after: 1, found: 3 })
        );
        // The swapped certificate.
        assert!(matches!(
            verify_chain(&org, &chain, 3, &keys[3].public(), &fp(8), &known0),
            Err(RotationError::CertNotBound { .. })
        ));
        // The bundle's key is not the chain's.
        assert!(matches!(
            check(&org, &chain, &mk[3], 3, known0),
            Err(RotationError::KeyNotBound { .. })
        ));
        // Known epoch older than the chain.
        let short = RotationChain {
            base_key: keys[1].public(),
            links: chain.links[1..].to_vec(),
        };
        assert_eq!(
            check(&org, &short, &keys[3], 3, known0),
            Err(RotationError::KnownEpochTooOld {
                known: 0,
                oldest: 1
            })
        );
        assert_eq!(
            check(&org, &short, &keys[3], 3, Anchor::Genesis),
            Err(RotationError::NotFromGenesis { oldest: 1 })
        );
        // A chain from another genesis key claiming this account number.
        assert!(matches!(
            check(&org, &forged_genesis(&mk, &org), &mk[3], 3, Anchor::Genesis),
            Err(RotationError::GenesisMismatch { .. })
        ));
        // Too long, empty.
        let mut long = chain.clone();
        long.links = vec![chain.links[0].clone(); MAX_CHAIN + 1];
        assert_eq!(
            check(&org, &long, &keys[3], 3, known0),
            Err(RotationError::TooLong {
                count: MAX_CHAIN + 1
            })
        );
        long.links.clear();
        assert_eq!(
            check(&org, &long, &keys[3], 3, known0),
            Err(RotationError::Empty)
        );
    }

    fn forged_genesis(mk: &[OrgKeyPair], org: &OrgId) -> RotationChain {
        RotationChain {
            base_key: mk[0].public(),
            links: (1..=3u32)
                .map(|e| {
                    let i = e as usize;
                    RotationLink::sign(&mk[i - 1], org, e, mk[i].public(), fp(7))
                })
                .collect(),
        }
    }

    #[test]
    fn messages_name_the_epochs() {
        let e = RotationError::BadSignature { epoch: 4 }.to_string();
        assert!(e.contains("epoch 4") && e.contains("epoch 3"), "{e}");
        let e = RotationError::KnownEpochTooOld {
            known: 2,
            oldest: 9,
        }
        .to_string();
        assert!(e.contains("epoch 2") && e.contains("last 16"), "{e}");
    }
}
