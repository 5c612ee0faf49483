//! Partners: the entries of `partners.toml` and the rules for adding,
//! updating and revoking them.

use orgsync_protocol::identity::{Fingerprint, OrgPublicKey};
use orgsync_protocol::model::OrgId;
use orgsync_protocol::rotation::{self, Anchor};
use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::error::KeytoolError;
use crate::instance::{key_hex, validate_address};

/// Where a partner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartnerState {
    /// Keys exchanged: the daemon accepts its certificate and syncs.
    Paired,
    /// Revoked: its certificate and keys are refused.
    Revoked,
}

impl std::fmt::Display for PartnerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            PartnerState::Paired => "paired",
            PartnerState::Revoked => "revoked",
        })
    }
}

/// One `[[partner]]` entry of `partners.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partner {
    /// The partner organisation's name (from its bundle).
    pub name: String,
    /// Its organisation id; stored as the account number.
    #[serde(with = "serde_org_id")]
    pub org_id: OrgId,
    /// Its current public key; stored as 64 hex digits.
    #[serde(with = "serde_public_key")]
    pub public_key: OrgPublicKey,
    /// The epoch of `public_key`.
    pub epoch: u32,
    /// Fingerprint of its instance certificate (pinned by the daemon).
    #[serde(with = "serde_fingerprint")]
    pub cert_fingerprint: Fingerprint,
    /// Where to reach it ("host:port").
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Paired or revoked.
    pub state: PartnerState,
    /// When it was first added (RFC 3339).
    pub added_at: String,
    /// When the entry last changed (RFC 3339).
    pub updated_at: String,
    /// When it was revoked (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// The on-disk form of `partners.toml`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PartnersFile {
    #[serde(default)]
    pub(crate) partner: Vec<Partner>,
}

mod serde_org_id {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &OrgId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.account_number())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OrgId, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

mod serde_public_key {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &OrgPublicKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&key_hex(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OrgPublicKey, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("public_key is not hexadecimal"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("public_key is not 64 hex digits"))?;
        Ok(OrgPublicKey(arr))
    }
}

mod serde_fingerprint {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &Fingerprint, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Fingerprint, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What importing a bundle would do (shown to the operator before it is
/// applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportPlan {
    /// A new partner.
    New,
    /// A known partner, same key: name and/or addresses change.
    Update {
        /// Index in the partners list.
        index: usize,
    },
    /// A known partner, same key, nothing changes.
    Unchanged {
        /// Index in the partners list.
        index: usize,
    },
    /// A known partner moved to a newer key epoch with a new key (and
    /// possibly a new certificate), proven by a rotation chain from the key
    /// on file (checked by [`plan_import`]).
    Rotation {
        /// Index in the partners list.
        index: usize,
        /// The epoch on file.
        from: u32,
    },
}

/// Decides what importing `bundle` (with `addresses`, already merged from
/// the bundle and the command line) into `partners` would do, for our
/// organisation `own`.
///
/// Guarantees: a key is never accepted for an account number unless it is
/// the key on file, or is proven by a rotation chain (see
/// [`orgsync_protocol::rotation`]) from the key on file (known partner) or
/// from the genesis key the account number is the hash of (new partner),
/// with the bundle's certificate bound by the newest link.
///
/// # Errors
/// Our own bundle; a forged account number ([`KeytoolError::OrgIdMismatch`]
/// at epoch 0, [`KeytoolError::OrgIdUnproven`] or
/// [`KeytoolError::AccountUnproven`] after it); a revoked partner; another
/// key at the same or an older epoch under a known account number
/// ([`KeytoolError::KeyConflict`]); a newer key without proof
/// ([`KeytoolError::RotationUnproven`]) or with a proof that does not hold
/// ([`KeytoolError::RotationInvalid`]); another certificate at the same
/// epoch; or a certificate already pinned for another partner.
pub fn plan_import(
    partners: &[Partner],
    own: &OrgId,
    bundle: &Bundle,
) -> Result<ImportPlan, KeytoolError> {
    if &bundle.org_id == own {
        return Err(KeytoolError::OwnBundle {
            org_id: own.account_number(),
        });
    }
    for a in &bundle.addresses {
        validate_address(a)?;
    }
    let plan = plan_by_account(partners, bundle)?;
    // After the account and key checks: a bundle claiming a known account
    // with another partner's certificate is first of all an unproven key
    // change, and is reported as one.
    if let Some(other) = partners
        .iter()
        .find(|p| p.org_id != bundle.org_id && p.cert_fingerprint == bundle.cert_fingerprint)
    {
        return Err(KeytoolError::CertificateConflict {
            org_id: bundle.org_id.account_number(),
            name: bundle.org_name.clone(),
            known: format!("(pinned for partner {} {})", other.name, other.org_id),
            new: bundle.cert_fingerprint.to_string(),
        });
    }
    Ok(plan)
}

/// [`plan_import`] for the bundle's account number: new (proven account
/// number), or known (same key, or a proven rotation).
fn plan_by_account(partners: &[Partner], bundle: &Bundle) -> Result<ImportPlan, KeytoolError> {
    let Some(index) = partners.iter().position(|p| p.org_id == bundle.org_id) else {
        check_new_account(bundle)?;
        return Ok(ImportPlan::New);
    };
    let known = &partners[index];
    if known.state == PartnerState::Revoked {
        return Err(KeytoolError::Revoked {
            org_id: known.org_id.account_number(),
            name: known.name.clone(),
            revoked_at: known.revoked_at.clone().unwrap_or_default(),
        });
    }
    let conflict = || KeytoolError::KeyConflict {
        org_id: known.org_id.account_number(),
        name: known.name.clone(),
        known_key: key_hex(&known.public_key),
        known_epoch: known.epoch,
        new_key: key_hex(&bundle.public_key),
        new_epoch: bundle.epoch,
    };
    if bundle.public_key != known.public_key {
        if bundle.epoch <= known.epoch {
            return Err(conflict());
        }
        let Some(chain) = &bundle.rotation else {
            return Err(KeytoolError::RotationUnproven {
                org_id: known.org_id.account_number(),
                name: known.name.clone(),
                known_epoch: known.epoch,
                new_epoch: bundle.epoch,
            });
        };
        rotation::verify_chain(
            &bundle.org_id,
            chain,
            bundle.epoch,
            &bundle.public_key,
            &bundle.cert_fingerprint,
            &Anchor::Known {
                epoch: known.epoch,
                key: known.public_key,
            },
        )
        .map_err(|reason| KeytoolError::RotationInvalid {
            org_id: known.org_id.account_number(),
            name: known.name.clone(),
            reason: Box::new(reason),
        })?;
        return Ok(ImportPlan::Rotation {
            index,
            from: known.epoch,
        });
    }
    if bundle.epoch != known.epoch {
        // Same key under another epoch number: not something orgsync makes.
        return Err(conflict());
    }
    if bundle.cert_fingerprint != known.cert_fingerprint {
        return Err(KeytoolError::CertificateConflict {
            org_id: known.org_id.account_number(),
            name: known.name.clone(),
            known: known.cert_fingerprint.to_string(),
            new: bundle.cert_fingerprint.to_string(),
        });
    }
    if known.name == bundle.org_name && known.addresses == bundle.addresses {
        Ok(ImportPlan::Unchanged { index })
    } else {
        Ok(ImportPlan::Update { index })
    }
}

/// Checks that a bundle for an account number we do not know belongs to it:
/// at epoch 0 the key hashes to it; later, a rotation chain leads from the
/// genesis key that hashes to it up to the bundle's key and certificate.
fn check_new_account(bundle: &Bundle) -> Result<(), KeytoolError> {
    if bundle.epoch == 0 {
        let derived = bundle.public_key.org_id();
        if derived != bundle.org_id {
            return Err(KeytoolError::OrgIdMismatch {
                claimed: bundle.org_id.account_number(),
                derived: derived.account_number(),
            });
        }
        return Ok(());
    }
    let Some(chain) = &bundle.rotation else {
        return Err(KeytoolError::OrgIdUnproven {
            org_id: bundle.org_id.account_number(),
            epoch: bundle.epoch,
        });
    };
    rotation::verify_chain(
        &bundle.org_id,
        chain,
        bundle.epoch,
        &bundle.public_key,
        &bundle.cert_fingerprint,
        &Anchor::Genesis,
    )
    .map_err(|reason| KeytoolError::AccountUnproven {
        org_id: bundle.org_id.account_number(),
        name: bundle.org_name.clone(),
        reason: Box::new(reason),
    })
}

/// Like [`plan_import`], for pairing (code pairing, accepting a pending
/// peer): a known account number is accepted only with the same key and
/// certificate ([`ImportPlan::Unchanged`] / [`ImportPlan::Update`]), never
/// as a rotation: pairing proves who is at the other end of a channel, not
/// who held the old key.
///
/// # Errors
/// Those of [`plan_import`], and [`KeytoolError::KeyChangeByPairing`] for a
/// rotation.
pub fn plan_pairing(
    partners: &[Partner],
    own: &OrgId,
    bundle: &Bundle,
) -> Result<ImportPlan, KeytoolError> {
    let plan = plan_import(partners, own, bundle)?;
    if let ImportPlan::Rotation { index, .. } = plan {
        return Err(KeytoolError::KeyChangeByPairing {
            org_id: partners[index].org_id.account_number(),
            name: partners[index].name.clone(),
        });
    }
    Ok(plan)
}

/// Applies a plan made by [`plan_import`] for the same `partners` and
/// `bundle`. Returns the index of the partner.
pub fn apply_import(
    partners: &mut Vec<Partner>,
    plan: &ImportPlan,
    bundle: &Bundle,
    now: &str,
) -> usize {
    match *plan {
        ImportPlan::New => {
            partners.push(Partner {
                name: bundle.org_name.clone(),
                org_id: bundle.org_id,
                public_key: bundle.public_key,
                epoch: bundle.epoch,
                cert_fingerprint: bundle.cert_fingerprint,
                addresses: bundle.addresses.clone(),
                state: PartnerState::Paired,
                added_at: now.to_string(),
                updated_at: now.to_string(),
                revoked_at: None,
            });
            partners.len() - 1
        }
        ImportPlan::Unchanged { index } => index,
        ImportPlan::Update { index } | ImportPlan::Rotation { index, .. } => {
            let p = &mut partners[index];
            p.name = bundle.org_name.clone();
            p.public_key = bundle.public_key;
            p.epoch = bundle.epoch;
            p.cert_fingerprint = bundle.cert_fingerprint;
            p.addresses = bundle.addresses.clone();
            p.updated_at = now.to_string();
            index
        }
    }
}

/// Merges bundle addresses with extra ones (command line), keeping order
/// and dropping duplicates.
pub fn merge_addresses(mut from_bundle: Vec<String>, extra: &[String]) -> Vec<String> {
    for a in extra {
        if !from_bundle.contains(a) {
            from_bundle.push(a.clone());
        }
    }
    from_bundle
}

/// Finds the partner `query` names: an account number (any accepted
/// spelling), or an organisation name (exact, case-insensitive).
///
/// # Errors
/// [`KeytoolError::NoSuchPartner`], or [`KeytoolError::AmbiguousPartner`]
/// listing the matches when a name matches several partners.
pub fn find_partner(partners: &[Partner], query: &str) -> Result<usize, KeytoolError> {
    if let Ok(id) = query.parse::<OrgId>() {
        if let Some(i) = partners.iter().position(|p| p.org_id == id) {
            return Ok(i);
        }
    }
    let matches: Vec<usize> = partners
        .iter()
        .enumerate()
        .filter(|(_, p)| p.name.eq_ignore_ascii_case(query.trim()))
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [] => Err(KeytoolError::NoSuchPartner {
            query: query.to_string(),
        }),
        [one] => Ok(*one),
        many => Err(KeytoolError::AmbiguousPartner {
            query: query.to_string(),
            matches: many
                .iter()
                .map(|&i| {
                    let p = &partners[i];
                    format!("  {}  {}  ({})", p.name, p.org_id, p.state)
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }),
    }
}

/// Marks `partners[index]` revoked. Returns false if it already was.
pub fn revoke(partners: &mut [Partner], index: usize, now: &str) -> bool {
    let p = &mut partners[index];
    if p.state == PartnerState::Revoked {
        return false;
    }
    p.state = PartnerState::Revoked;
    p.revoked_at = Some(now.to_string());
    p.updated_at = now.to_string();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use orgsync_protocol::identity::OrgKeyPair;
    use orgsync_protocol::rotation::{RotationChain, RotationError, RotationLink};

    fn bundle(key: &OrgKeyPair, fp: u8) -> Bundle {
        Bundle {
            org_name: "Acme".into(),
            org_id: key.public().org_id(),
            public_key: key.public(),
            epoch: 0,
            cert_fingerprint: Fingerprint([fp; 32]),
            addresses: vec!["acme.example:7700".into()],
            rotation: None,
        }
    }

    /// An organisation that rotated `n` times: its keys and its bundle at
    /// epoch `n` with the full proof (certificate `fp` throughout).
    fn rotated(n: u32, fp: u8) -> (Vec<OrgKeyPair>, Bundle) {
        let keys: Vec<OrgKeyPair> = (0..=n).map(|_| OrgKeyPair::generate()).collect();
        let org = keys[0].public().org_id();
        let links = (1..=n)
            .map(|e| {
                let i = e as usize;
                RotationLink::sign(
                    &keys[i - 1],
                    &org,
                    e,
                    keys[i].public(),
                    Fingerprint([fp; 32]),
                )
            })
            .collect();
        let mut b = bundle(&keys[0], fp);
        b.epoch = n;
        b.public_key = keys[n as usize].public();
        b.rotation = Some(RotationChain {
            base_key: keys[0].public(),
            links,
        });
        (keys, b)
    }

    #[test]
    fn a_proven_rotation_is_accepted_and_applied() {
        let own = OrgKeyPair::generate().public().org_id();
        let (keys, b2) = rotated(2, 1);
        let mut partners = Vec::new();
        apply_import(&mut partners, &ImportPlan::New, &bundle(&keys[0], 1), "t0");
        let plan = plan_import(&partners, &own, &b2).unwrap();
        assert_eq!(plan, ImportPlan::Rotation { index: 0, from: 0 });
        apply_import(&mut partners, &plan, &b2, "t1");
        assert_eq!(
            (partners[0].epoch, partners[0].public_key),
            (2, keys[2].public())
        );
        assert_eq!(
            plan_import(&partners, &own, &b2).unwrap(),
            ImportPlan::Unchanged { index: 0 }
        );
        // Pairing never rotates, even with a valid proof.
        let mut partners = Vec::new();
        apply_import(&mut partners, &ImportPlan::New, &bundle(&keys[0], 1), "t0");
        assert!(matches!(
            plan_pairing(&partners, &own, &b2),
            Err(KeytoolError::KeyChangeByPairing { .. })
        ));
        // A new partner at epoch 2 with a proof back to its genesis key.
        assert_eq!(plan_import(&[], &own, &b2).unwrap(), ImportPlan::New);
        assert_eq!(plan_pairing(&[], &own, &b2).unwrap(), ImportPlan::New);
    }

    #[test]
    fn the_takeover_bundle_is_refused() {
        // M, a real second partner, claims B's account number at B's epoch
        // + 1 with its own key and certificate.
        let own = OrgKeyPair::generate().public().org_id();
        let b_key = OrgKeyPair::generate();
        let m_key = OrgKeyPair::generate();
        let mut partners = Vec::new();
        apply_import(&mut partners, &ImportPlan::New, &bundle(&b_key, 1), "t0");
        apply_import(&mut partners, &ImportPlan::New, &bundle(&m_key, 2), "t0");
        let mut takeover = bundle(&m_key, 9);
        takeover.org_id = b_key.public().org_id();
        takeover.epoch = 1;
        let err = plan_import(&partners, &own, &takeover).unwrap_err();
        assert!(
            matches!(err, KeytoolError::RotationUnproven { .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("without proof from the old key"), "{msg}");
        assert!(
            msg.contains("by phone") && msg.contains("orgsync-keytool revoke"),
            "{msg}"
        );
        assert!(matches!(
            plan_pairing(&partners, &own, &takeover),
            Err(KeytoolError::RotationUnproven { .. })
        ));
        // With a "proof" M signed with its own key.
        let m_next = OrgKeyPair::generate();
        takeover.public_key = m_next.public();
        takeover.rotation = Some(RotationChain {
            base_key: m_key.public(),
            links: vec![RotationLink::sign(
                &m_key,
                &takeover.org_id,
                1,
                m_next.public(),
                takeover.cert_fingerprint,
            )],
        });
        let err = plan_import(&partners, &own, &takeover).unwrap_err();
        assert!(
            matches!(
                &err,
                KeytoolError::RotationInvalid { reason, .. }
                    if **reason == RotationError::NotFromKeyOnFile { epoch: 0 }
            ),
            "{err}"
        );
        // The same claim for an account we do not know: the account number
        // is never taken on faith, at any epoch.
        let err = plan_import(&[], &own, &takeover).unwrap_err();
        assert!(
            matches!(
                &err,
                KeytoolError::AccountUnproven { reason, .. }
                    if matches!(**reason, RotationError::GenesisMismatch { .. })
            ),
            "{err}"
        );
        takeover.rotation = None;
        assert!(matches!(
            plan_import(&[], &own, &takeover),
            Err(KeytoolError::OrgIdUnproven { epoch: 1, .. })
        ));
    }

    #[test]
    fn broken_proofs_each_have_their_message() {
        let own = OrgKeyPair::generate().public().org_id();
        let (keys, good) = rotated(3, 1);
        let mut partners = Vec::new();
        apply_import(&mut partners, &ImportPlan::New, &bundle(&keys[0], 1), "t0");
        let refuse = |b: &Bundle| match plan_import(&partners, &own, b) {
            Err(KeytoolError::RotationInvalid { reason, .. }) => *reason,
            other => panic!("expected RotationInvalid, got {other:?}"),
        };
        fn chain(b: &mut Bundle) -> &mut RotationChain {
            b.rotation.as_mut().expect("rotated bundles carry a proof")
        }
        // Tampered link.
        let mut b = good.clone();
        chain(&mut b).links[1].cert_fingerprint = Fingerprint([5; 32]);
        assert_eq!(refuse(&b), RotationError::BadSignature { epoch: 2 });
        // Skipped epoch.
        let mut b = good.clone();
        chain(&mut b).links.remove(1);
        assert_eq!(
            refuse(&b),
            RotationError::SkippedEpoch { after: 1, found: 3 }
        );
        // Valid chain, swapped certificate.
        let mut b = good.clone();
        b.cert_fingerprint = Fingerprint([6; 32]);
        assert!(matches!(refuse(&b), RotationError::CertNotBound { .. }));
        // The known epoch is older than the chain carries.
        let mut b = good.clone();
        let c = chain(&mut b);
        c.base_key = keys[1].public();
        c.links.remove(0);
        assert_eq!(
            refuse(&b),
            RotationError::KnownEpochTooOld {
                known: 0,
                oldest: 1
            }
        );
        let msgs: std::collections::BTreeSet<String> = [
            RotationError::BadSignature { epoch: 2 },
            RotationError::SkippedEpoch { after: 1, found: 3 },
            RotationError::NotFromKeyOnFile { epoch: 0 },
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(msgs.len(), 3);
    }

    #[test]
    fn import_twice_updates_and_conflicts_are_refused() {
        let own = OrgKeyPair::generate().public().org_id();
        let key = OrgKeyPair::generate();
        let mut partners = Vec::new();
        let b = bundle(&key, 1);
        let plan = plan_import(&partners, &own, &b).unwrap();
        assert_eq!(plan, ImportPlan::New);
        apply_import(&mut partners, &plan, &b, "t0");
        assert_eq!(
            plan_import(&partners, &own, &b).unwrap(),
            ImportPlan::Unchanged { index: 0 }
        );
        let mut b2 = b.clone();
        b2.addresses = vec!["other.example:7701".into()];
        let plan = plan_import(&partners, &own, &b2).unwrap();
        assert_eq!(plan, ImportPlan::Update { index: 0 });
        apply_import(&mut partners, &plan, &b2, "t1");
        assert_eq!(partners.len(), 1);
        assert_eq!(partners[0].addresses, b2.addresses);
        assert_eq!(partners[0].added_at, "t0");

        // Another key under the same account number at the same epoch.
        let mut forged = b.clone();
        forged.public_key = OrgKeyPair::generate().public();
        assert!(matches!(
            plan_import(&partners, &own, &forged),
            Err(KeytoolError::KeyConflict { .. })
        ));
        // The same forged bundle for an unknown account: the account number
        // does not derive from the key.
        assert!(matches!(
            plan_import(&[], &own, &forged),
            Err(KeytoolError::OrgIdMismatch { .. })
        ));
        // A newer epoch without a proof from the key on file is refused.
        let mut newer = forged;
        newer.epoch = 2;
        assert!(matches!(
            plan_import(&partners, &own, &newer),
            Err(KeytoolError::RotationUnproven {
                known_epoch: 0,
                new_epoch: 2,
                ..
            })
        ));
    }

    #[test]
    fn own_bundle_and_revoked_are_refused() {
        let key = OrgKeyPair::generate();
        let b = bundle(&key, 1);
        assert!(matches!(
            plan_import(&[], &b.org_id, &b),
            Err(KeytoolError::OwnBundle { .. })
        ));
        let own = OrgKeyPair::generate().public().org_id();
        let mut partners = Vec::new();
        apply_import(&mut partners, &ImportPlan::New, &b, "t0");
        assert!(revoke(&mut partners, 0, "t1"));
        assert!(!revoke(&mut partners, 0, "t2"));
        assert!(matches!(
            plan_import(&partners, &own, &b),
            Err(KeytoolError::Revoked { .. })
        ));
    }

    #[test]
    fn find_by_name_and_account_number() {
        let k1 = OrgKeyPair::generate();
        let k2 = OrgKeyPair::generate();
        let mut partners = Vec::new();
        apply_import(&mut partners, &ImportPlan::New, &bundle(&k1, 1), "t");
        apply_import(&mut partners, &ImportPlan::New, &bundle(&k2, 2), "t");
        let err = find_partner(&partners, "acme").unwrap_err().to_string();
        assert!(err.contains("several partners"), "{err}");
        assert!(
            err.contains(&k1.public().org_id().account_number()),
            "{err}"
        );
        let acct = k2.public().org_id().account_number().to_lowercase();
        assert_eq!(find_partner(&partners, &acct).unwrap(), 1);
        assert!(matches!(
            find_partner(&partners, "nobody"),
            Err(KeytoolError::NoSuchPartner { .. })
        ));
    }

    #[test]
    fn partners_file_round_trips() {
        let key = OrgKeyPair::generate();
        let mut partners = Vec::new();
        apply_import(&mut partners, &ImportPlan::New, &bundle(&key, 3), "t");
        revoke(&mut partners, 0, "t2");
        let text = toml::to_string(&PartnersFile {
            partner: partners.clone(),
        })
        .unwrap();
        assert!(text.contains("[[partner]]"), "{text}");
        assert!(text.contains("state = \"revoked\""), "{text}");
        let back: PartnersFile = toml::from_str(&text).unwrap();
        assert_eq!(back.partner, partners);
    }
}
