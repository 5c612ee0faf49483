//! The governance trees, kept in the daemon's sled database next to (never
//! inside) the store's own trees.
//!
//! - `gov_out`: ShareId → [`OutShare`] (shares this instance gives)
//! - `gov_in`: ShareId → [`InShare`] (shares partners give us)
//! - `gov_partner`: OrgId → [`PartnerSettings`]
//! - `gov_prov`: ObjectId → [`ProvRecord`] (owner and source of a copy we
//!   did not create; absent for our own objects)
//! - `gov_link`: local ObjectId → [`LinkRecord`]s (partners' copies linked
//!   into one of our objects)
//! - `gov_decision`: ObjectId → [`Decision`] (the admin's inbox decision)
//! - `gov_declined`: ShareId → [`Declined`] (received shares our admin rejected)
//! - `gov_member`: ShareId ++ ObjectId → () (objects currently in a share)
//! - `gov_expected`: ShareId ++ ObjectId → () (objects a partner's share
//!   announced that we have not yet reported received)
//! - `gov_outbox`: OrgId ++ frame id (u64 BE) → encoded `ShareFrame`
//! - `gov_request`: ShareId → [`RequestRecord`]
//! - `gov_erase`: ShareId (onward share) → [`PendingErase`]
//! - `gov_audit`: seq (u64 BE) → JSON audit entry
//! - `gov_meta`: name → value (frame counters, last handled frame ids)

use std::collections::BTreeMap;

use orgsync_protocol::authority::Provenance;
use orgsync_protocol::codec;
use orgsync_protocol::model::{ObjectId, OrgId};
use orgsync_protocol::share::{
    AccessType, Selection, ShareFrame, ShareId, ShareStatus, TransferLevel,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::GovError;

/// A share this instance gives to a partner (or to whoever redeems its code).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutShare {
    /// The share.
    pub id: ShareId,
    /// The recipient; `None` until a share code is redeemed.
    pub partner: Option<OrgId>,
    /// What it covers.
    pub selection: Selection,
    /// What the recipient may do with the data.
    pub access: AccessType,
    /// Agreement the recipient must accept before data is released.
    pub terms: Option<String>,
    /// Who accepted the terms, and when (Unix ms).
    pub terms_accepted: Option<(String, u64)>,
    /// Label for admins.
    pub label: String,
    /// The request it serves.
    pub request: Option<ShareId>,
    /// Created (Unix ms).
    pub created_ms: u64,
    /// When the recipient reported having received it (Unix ms).
    pub processed_ms: Option<u64>,
    /// When it was revoked (Unix ms).
    pub revoked_ms: Option<u64>,
    /// When the recipient acknowledged the erase (Unix ms).
    pub erase_acked_ms: Option<u64>,
    /// The one-time code releasing it, if any.
    pub code: Option<CodeRecord>,
}

impl OutShare {
    /// Whether data flows under this share now: a recipient is bound, it
    /// is not revoked and its terms (if any) are accepted.
    pub fn is_flowing(&self) -> bool {
        self.partner.is_some()
            && self.revoked_ms.is_none()
            && (self.terms.is_none() || self.terms_accepted.is_some())
    }
}

/// A one-time share code: only its hash is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeRecord {
    /// BLAKE3 of the normalised code.
    pub hash: [u8; 32],
    /// Unusable from this time on (Unix ms).
    pub expires_ms: u64,
    /// Already redeemed.
    pub used: bool,
}

/// A share a partner gives us.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InShare {
    /// The share.
    pub id: ShareId,
    /// The owner.
    pub partner: OrgId,
    /// What we may do with the data.
    pub access: AccessType,
    /// The agreement to accept, if any.
    pub terms: Option<String>,
    /// Who accepted, when (Unix ms).
    pub terms_accepted: Option<(String, u64)>,
    /// The owner's label.
    pub label: String,
    /// The request it serves.
    pub request: Option<ShareId>,
    /// Objects the owner put in it, not yet reported received, as stored
    /// before they were kept as keys of `gov_expected` (one each, so that
    /// an announcement does not rewrite this whole record); moved there
    /// when next read, empty afterwards.
    pub expected: Vec<ObjectId>,
    /// Objects received so far.
    pub received: u64,
    /// Revoked by the owner (Unix ms).
    pub revoked_ms: Option<u64>,
}

/// Per-partner governance settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartnerSettings {
    /// Approve everything this partner sends without asking.
    pub auto_approve: bool,
    /// We mark this partner as our subcontractor.
    pub subcontractor: bool,
    /// This partner is one of our child accounts.
    pub child: bool,
    /// Custom-field names of this partner → our names, for linked objects.
    pub field_map: BTreeMap<String, String>,
    /// We make this partner our mirror (another copy of our organisation).
    pub mirror: bool,
    /// The partner said it makes us its mirror. A mirror works only when
    /// both sides say so.
    pub peer_mirror: bool,
}

impl PartnerSettings {
    /// Both sides made each other mirrors.
    pub fn is_mirror(&self) -> bool {
        self.mirror && self.peer_mirror
    }

    /// The mirror state as admins see it (both sides must say so):
    /// `active`, `waiting for the partner`, `asked by the partner` or `no`.
    pub fn mirror_state(&self) -> &'static str {
        match (self.mirror, self.peer_mirror) {
            (true, true) => "active",
            (true, false) => "waiting for the partner",
            (false, true) => "asked by the partner",
            (false, false) => "no",
        }
    }
}

/// The provenance of a copy we did not create (see
/// [`orgsync_protocol::authority`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProvRecord {
    /// Owner and source.
    pub prov: Provenance,
    /// The giver withdrew it from its share (unshare): our approved copy
    /// stays but is no longer updated.
    pub detached: bool,
}

/// A partner's copy linked into one of our objects: its updates land on
/// ours, and ours is re-shared no more widely than the copy allows.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// The partner's object id.
    pub remote: ObjectId,
    /// Its provenance.
    pub prov: Provenance,
}

/// An admin's decision on a partner's object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Kept as a local object with the same id; updates apply.
    Approved,
    /// Updates land on this local object.
    Linked(ObjectId),
    /// Never applied.
    Rejected,
}

/// A received share our admin rejected: what it announces is dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declined {
    /// Who rejected it.
    pub by: String,
    /// When (Unix ms).
    pub at_ms: u64,
}

/// Which side of a share request we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestRole {
    /// We asked.
    Requester,
    /// We own the data.
    Owner,
}

/// A share request, on either side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The request.
    pub id: ShareId,
    /// The other side.
    pub partner: OrgId,
    /// Our side.
    pub role: RequestRole,
    /// Where it is.
    pub status: ShareStatus,
    /// What the requester wants.
    pub wants: Selection,
    /// Its suggested level.
    pub suggested: Option<TransferLevel>,
    /// Its note.
    pub note: String,
    /// The level served (once approved).
    pub level: Option<TransferLevel>,
    /// The access granted (once approved).
    pub access: Option<AccessType>,
    /// The share serving it.
    pub share: Option<ShareId>,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// Every status it went through, with the time (Unix ms).
    pub history: Vec<(ShareStatus, u64)>,
}

/// An erase we passed on, waiting for the onward recipient's ack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingErase {
    /// Who asked us to erase.
    pub origin_partner: OrgId,
    /// Under which of its shares.
    pub origin_share: ShareId,
    /// Copies we erased here.
    pub erased: u64,
    /// Onward shares whose ack is still awaited.
    pub waiting: Vec<ShareId>,
    /// Onward acks received.
    pub onward: u64,
}

/// The governance trees.
#[derive(Clone)]
pub struct GovDb {
    pub(crate) out: sled::Tree,
    pub(crate) inc: sled::Tree,
    pub(crate) partner: sled::Tree,
    pub(crate) prov: sled::Tree,
    pub(crate) link: sled::Tree,
    pub(crate) decision: sled::Tree,
    pub(crate) declined: sled::Tree,
    pub(crate) member: sled::Tree,
    pub(crate) expected: sled::Tree,
    pub(crate) outbox: sled::Tree,
    pub(crate) request: sled::Tree,
    pub(crate) erase: sled::Tree,
    pub(crate) audit: sled::Tree,
    pub(crate) meta: sled::Tree,
    db: sled::Db,
}

fn db_err(op: &'static str) -> impl FnOnce(sled::Error) -> GovError {
    move |source| GovError::Db { op, source }
}

pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, GovError> {
    codec::decode(bytes).map_err(|source| GovError::Corrupt { what, source })
}

pub(super) fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, GovError> {
    codec::encode(v).map_err(|source| GovError::Corrupt { what, source })
}

/// Key of a (share, object) membership.
pub(super) fn member_key(share: &ShareId, obj: &ObjectId) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&share.0);
    k[16..].copy_from_slice(&obj.0);
    k
}

/// Adds (`on`) or removes the keys `share ++ obj` of `objs` in `tree`, in
/// one batch: the shape of `gov_member` and `gov_expected`.
fn mark(
    tree: &sled::Tree,
    share: &ShareId,
    objs: &[ObjectId],
    on: bool,
    what: &'static str,
) -> Result<(), GovError> {
    let mut batch = sled::Batch::default();
    for obj in objs {
        let k = member_key(share, obj);
        if on {
            batch.insert(&k[..], &[][..]);
        } else {
            batch.remove(&k[..]);
        }
    }
    tree.apply_batch(batch).map_err(db_err(what))
}

fn outbox_key(partner: &OrgId, id: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&partner.0);
    k[32..].copy_from_slice(&id.to_be_bytes());
    k
}

fn meta_key(tag: &str, partner: &OrgId) -> Vec<u8> {
    let mut k = tag.as_bytes().to_vec();
    k.extend_from_slice(&partner.0);
    k
}

impl GovDb {
    /// Opens (creating) the governance trees of `db`.
    pub fn open(db: &sled::Db) -> Result<GovDb, GovError> {
        let t = |name: &'static str| db.open_tree(name).map_err(db_err("open tree"));
        Ok(GovDb {
            out: t("gov_out")?,
            inc: t("gov_in")?,
            partner: t("gov_partner")?,
            prov: t("gov_prov")?,
            link: t("gov_link")?,
            decision: t("gov_decision")?,
            declined: t("gov_declined")?,
            member: t("gov_member")?,
            expected: t("gov_expected")?,
            outbox: t("gov_outbox")?,
            request: t("gov_request")?,
            erase: t("gov_erase")?,
            audit: t("gov_audit")?,
            meta: t("gov_meta")?,
            db: db.clone(),
        })
    }

    /// Makes every write so far durable.
    ///
    /// The flush runs on tokio's blocking pool. Not with sled's
    /// `flush_async`: that runs it on sled's I/O pool, one pool of seven
    /// threads for the whole process, where it holds its thread until the
    /// buffer write it waits for has run, and that write is queued on the
    /// same pool. With seven or more databases flushing at once in one
    /// process (embedded instances: tests, the bench, host applications),
    /// every pool thread waited for a write no thread was left to run, and
    /// everything in the process that flushes or writes sled hung with
    /// them (issue 17).
    pub async fn flush(&self) -> Result<(), GovError> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(flushed) => flushed.map(|_| ()).map_err(db_err("flush")),
            // The flush panicked, or the runtime is shutting down.
            Err(e) => Err(GovError::Db {
                op: "flush",
                source: sled::Error::Io(std::io::Error::other(format!(
                    "the flush did not run to completion: {e}"
                ))),
            }),
        }
    }

    pub(super) fn get<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        what: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, GovError> {
        match tree.get(key).map_err(db_err("read"))? {
            Some(v) => decode(what, &v).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn put<T: Serialize>(
        &self,
        tree: &sled::Tree,
        what: &'static str,
        key: &[u8],
        v: &T,
    ) -> Result<(), GovError> {
        tree.insert(key, encode(what, v)?)
            .map_err(db_err("write"))?;
        Ok(())
    }

    /// Writes every `(key, value)` of `items` to `tree` in one batch.
    pub(super) fn put_many<K: AsRef<[u8]>, T: Serialize>(
        &self,
        tree: &sled::Tree,
        what: &'static str,
        items: &[(K, T)],
    ) -> Result<(), GovError> {
        let mut batch = sled::Batch::default();
        for (k, v) in items {
            batch.insert(k.as_ref(), encode(what, v)?);
        }
        tree.apply_batch(batch).map_err(db_err("write"))
    }

    pub(super) fn remove(&self, tree: &sled::Tree, key: &[u8]) -> Result<(), GovError> {
        tree.remove(key).map_err(db_err("remove"))?;
        Ok(())
    }

    pub(super) fn all<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        what: &'static str,
    ) -> Result<Vec<T>, GovError> {
        tree.iter()
            .map(|kv| {
                let (_, v) = kv.map_err(db_err("scan"))?;
                decode(what, &v)
            })
            .collect()
    }

    /// Objects currently in `share`.
    pub fn members(&self, share: &ShareId) -> Result<Vec<ObjectId>, GovError> {
        self.member
            .scan_prefix(share.0)
            .map(|kv| {
                let (k, _) = kv.map_err(db_err("scan members"))?;
                let mut id = [0u8; 16];
                id.copy_from_slice(&k[16..32]);
                Ok(ObjectId(id))
            })
            .collect()
    }

    pub(super) fn is_member(&self, share: &ShareId, obj: &ObjectId) -> Result<bool, GovError> {
        self.member
            .contains_key(member_key(share, obj))
            .map_err(db_err("read member"))
    }

    /// Notes `objs` as announced by the incoming `share` and not yet
    /// reported received, in one batch.
    pub(super) fn expect(&self, share: &ShareId, objs: &[ObjectId]) -> Result<(), GovError> {
        mark(&self.expected, share, objs, true, "write expected objects")
    }

    /// The objects of the incoming `share` not yet reported received, in
    /// id order (creation order for ids of version 7).
    #[cfg(test)]
    pub(super) fn expected_of(&self, share: &ShareId) -> Result<Vec<ObjectId>, GovError> {
        self.expected_iter(share).collect()
    }

    /// [`GovDb::expected_of`] read lazily: a caller that stops at the
    /// first object still missing reads no further (the rest may be
    /// hundreds of thousands of ids announced ahead of their data).
    pub(super) fn expected_iter(
        &self,
        share: &ShareId,
    ) -> impl Iterator<Item = Result<ObjectId, GovError>> {
        self.expected.scan_prefix(share.0).map(|kv| {
            let (k, _) = kv.map_err(db_err("scan expected objects"))?;
            let mut id = [0u8; 16];
            id.copy_from_slice(&k[16..32]);
            Ok(ObjectId(id))
        })
    }

    /// Forgets `objs` as expected by `share` (they arrived).
    pub(super) fn arrived(&self, share: &ShareId, objs: &[ObjectId]) -> Result<(), GovError> {
        mark(
            &self.expected,
            share,
            objs,
            false,
            "remove expected objects",
        )
    }

    /// Makes `objs` members of `share` (or not) in one batch.
    pub(super) fn set_members(
        &self,
        share: &ShareId,
        objs: &[ObjectId],
        on: bool,
    ) -> Result<(), GovError> {
        mark(&self.member, share, objs, on, "write members")
    }

    /// [`GovDb::set_members`] of one object.
    pub(super) fn set_member(
        &self,
        share: &ShareId,
        obj: &ObjectId,
        on: bool,
    ) -> Result<(), GovError> {
        self.set_members(share, std::slice::from_ref(obj), on)
    }

    /// Queues `frame` body for `partner` under a fresh id; returns it.
    pub(super) fn enqueue(
        &self,
        partner: &OrgId,
        body: orgsync_protocol::share::ShareBody,
    ) -> Result<u64, GovError> {
        let key = meta_key("next_frame", partner);
        let next = self
            .meta
            .update_and_fetch(&key, |old| {
                let n = old
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                Some((n + 1).to_be_bytes().to_vec())
            })
            .map_err(db_err("frame counter"))?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes)
            // update_and_fetch always stores Some above.
            .unwrap_or(1);
        let frame = ShareFrame { id: next, body };
        self.put(
            &self.outbox,
            "share frame",
            &outbox_key(partner, next),
            &frame,
        )?;
        Ok(next)
    }

    /// Unacknowledged frames for `partner` with an id above `after`, in id
    /// order (those up to `after` are not read).
    pub(super) fn outbox_after(
        &self,
        partner: &OrgId,
        after: u64,
    ) -> Result<Vec<ShareFrame>, GovError> {
        let from = outbox_key(partner, after.saturating_add(1));
        let to = outbox_key(partner, u64::MAX);
        self.outbox
            .range(from..=to)
            .map(|kv| {
                let (_, v) = kv.map_err(db_err("scan outbox"))?;
                decode("share frame", &v)
            })
            .collect()
    }

    pub(super) fn delivered(&self, partner: &OrgId, id: u64) -> Result<(), GovError> {
        self.remove(&self.outbox, &outbox_key(partner, id))
    }

    /// The highest frame id of `partner` handled here.
    pub(super) fn handled(&self, partner: &OrgId) -> Result<u64, GovError> {
        Ok(self
            .meta
            .get(meta_key("handled", partner))
            .map_err(db_err("read handled"))?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    pub(super) fn set_handled(&self, partner: &OrgId, id: u64) -> Result<(), GovError> {
        self.meta
            .insert(meta_key("handled", partner), &id.to_be_bytes())
            .map_err(db_err("write handled"))?;
        Ok(())
    }

    pub(super) fn settings(&self, partner: &OrgId) -> Result<PartnerSettings, GovError> {
        Ok(self
            .get(&self.partner, "partner settings", &partner.0)?
            .unwrap_or_default())
    }

    pub(super) fn next_audit_seq(&self) -> Result<u64, GovError> {
        self.db.generate_id().map_err(db_err("audit seq"))
    }
}
