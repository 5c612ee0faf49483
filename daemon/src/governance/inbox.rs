//! The incoming inbox: what happens to a partner's objects until and after
//! an admin decides on them.
//!
//! A partner's change for an object nobody decided on yet is held in the
//! store's inbox. The admin approves it as a new local object (same id;
//! later updates then apply directly), links it to an existing local object
//! (later updates land on that object, custom fields renamed by the
//! partner's field map) or rejects it (it never appears). A partner may be
//! set to auto-approve.

use std::collections::BTreeMap;

use orgsync_protocol::authority::{self, ChangeVerdict, Provenance, Source};
use orgsync_protocol::merge;
use orgsync_protocol::model::{Change, FieldKey, Kind, Object, ObjectId, OrgId, Value};
use serde::Serialize;

use super::db::{Decision, LinkRecord, ProvRecord};
use super::{GovError, Governance, DAEMON};
use crate::policy::Incoming;
use crate::store::{BlobEntry, BlobState, Edit};

/// The engine's question for each change a partner sends: first who may
/// change the object ([`authority::check_change`]), then what the admin
/// decided about it.
pub(super) fn decide_incoming(gov: &Governance, partner: &OrgId, change: &Change) -> Incoming {
    match decide_change(gov, partner, change) {
        Ok(d) => d,
        Err(e) => {
            // Refusing is safe: the change is counted as received and
            // dropped; the partner's next full send brings it again.
            tracing::error!(error = %e, "cannot decide on a partner's change; refused");
            Incoming::Reject
        }
    }
}

fn decide_change(gov: &Governance, partner: &OrgId, change: &Change) -> Result<Incoming, GovError> {
    let prov = gov.provenance(&change.id)?;
    let mirror = gov.is_mirror(partner);
    match authority::check_change(change.id, prov.as_ref(), partner, mirror) {
        Err(refusal) => {
            gov.refused(partner, "change", &refusal);
            return Ok(Incoming::Reject);
        }
        // Held until the share announces it (then `on_offered` decides).
        Ok(ChangeVerdict::Unannounced) => {
            let verdict = hold_within_cap(gov, partner, change)?;
            if verdict == Incoming::Hold {
                crate::metrics::add(&gov.inner.metrics.changes_held_unannounced, 1);
                gov.inner
                    .unannounced
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(*partner)
                    .or_default()
                    .decided
                    .push(change.id);
            }
            return Ok(verdict);
        }
        Ok(ChangeVerdict::NewFromMirror) => {
            gov.set_provenance(
                &change.id,
                &ProvRecord {
                    prov: Provenance {
                        owner: *partner,
                        source: Source::Mirror { from: *partner },
                    },
                    detached: false,
                },
            )?;
            return Ok(Incoming::Apply);
        }
        Ok(ChangeVerdict::Allowed) => {}
    }
    if mirror && !matches!(prov.map(|p| p.source), Some(Source::Share { .. })) {
        return Ok(Incoming::Apply);
    }
    let decision: Option<Decision> = gov.db().get(&gov.db().decision, "decision", &change.id.0)?;
    Ok(match decision {
        Some(Decision::Rejected) => Incoming::Reject,
        Some(Decision::Approved) => Incoming::Apply,
        Some(Decision::Linked(_)) => Incoming::Hold,
        None if super::declined::drops(gov, prov.as_ref())? => Incoming::Reject,
        None if gov.settings_of(partner).auto_approve => Incoming::Apply,
        None => hold_within_cap(gov, partner, change)?,
    })
}

/// A partner's changes held because their share had not announced them.
///
/// The engine decides on a change, then writes it to the inbox with its
/// batch; the announcement may be handled in between, and its inbox scan
/// ([`on_offered`]) then misses the change, which would wait for an admin
/// although the partner is auto-approved. So each such hold is noted when
/// decided, becomes due once the partner's batch is durable (the engine
/// applies one partner's batches one after the other), and the linked loop
/// offers it again if its announcement has come by then.
#[derive(Debug, Default)]
pub(crate) struct Unannounced {
    decided: Vec<ObjectId>,
    due: Vec<ObjectId>,
}

/// `partner`'s batch is durable: the holds decided for it are in the inbox.
pub(super) fn unannounced_written(gov: &Governance, partner: &OrgId) {
    let mut all = gov
        .inner
        .unannounced
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(u) = all.get_mut(partner) {
        let decided = std::mem::take(&mut u.decided);
        u.due.extend(decided);
    }
}

/// Offers again the due holds whose announcement has come meanwhile.
async fn recheck_unannounced(gov: &Governance) -> Result<(), GovError> {
    let due: Vec<(OrgId, Vec<ObjectId>)> = {
        let mut all = gov
            .inner
            .unannounced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|_, u| !u.decided.is_empty() || !u.due.is_empty());
        all.iter_mut()
            .filter(|(_, u)| !u.due.is_empty())
            .map(|(p, u)| (*p, std::mem::take(&mut u.due)))
            .collect()
    };
    for (partner, ids) in due {
        let mut now_announced = Vec::new();
        for id in ids {
            if announced(gov, &partner, &id)?.is_some() {
                now_announced.push(id);
            }
        }
        if !now_announced.is_empty() {
            on_offered(gov, &partner, &now_announced).await?;
        }
    }
    Ok(())
}

/// The count of a partner's held changes kept by [`hold_within_cap`].
#[derive(Debug)]
pub(crate) struct HeldCount {
    n: usize,
    counted: std::time::Instant,
}

/// How often a partner at the inbox cap has its held changes recounted
/// (admins' decisions empty the inbox; a recount reads every key).
const RECOUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Holds `change` unless `partner` already has `limits.max_inbox_items`
/// changes waiting in our inbox; then refuses it (over the limit: the
/// partner is told, the refusal audited; what is held stays).
fn hold_within_cap(
    gov: &Governance,
    partner: &OrgId,
    change: &Change,
) -> Result<Incoming, GovError> {
    let max = gov.inner.config.limits.max_inbox_items;
    let now = std::time::Instant::now();
    let held = {
        let mut counts = gov
            .inner
            .inbox_held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = match counts.entry(*partner) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(HeldCount {
                n: gov.store().inbox_len(partner)?,
                counted: now,
            }),
        };
        if c.n >= max && now.duration_since(c.counted) >= RECOUNT_EVERY {
            c.n = gov.store().inbox_len(partner)?;
            c.counted = now;
        }
        if c.n < max {
            c.n += 1;
            return Ok(Incoming::Hold);
        }
        c.n
    };
    gov.over_limit(
        partner,
        "max_inbox_items",
        format!(
            "change to {} {} not held: {held} changes from you already wait for our admin (limits.max_inbox_items = {max})",
            change.kind, change.id
        ),
    );
    Ok(Incoming::Reject)
}

/// Changes held because no share had announced their object yet, now
/// that `ids` are announced by `partner`: auto-approved partners' objects
/// are applied, linked ones land on their local object, the rest wait for
/// an admin in the inbox.
pub(super) async fn on_offered(
    gov: &Governance,
    partner: &OrgId,
    ids: &[ObjectId],
) -> Result<(), GovError> {
    let wanted: std::collections::BTreeSet<ObjectId> = ids.iter().copied().collect();
    let held: Vec<(u64, Change)> = gov
        .store()
        .inbox(partner)?
        .into_iter()
        .filter(|(_, c)| wanted.contains(&c.id))
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    let mut apply: BTreeMap<ObjectId, Vec<u64>> = BTreeMap::new();
    for (seq, c) in &held {
        let decision: Option<Decision> = gov.db().get(&gov.db().decision, "decision", &c.id.0)?;
        match decision {
            Some(Decision::Rejected) => gov.store().remove_from_inbox(partner, *seq).await?,
            // Linked updates are picked up by the linked loop.
            Some(Decision::Linked(_)) => {}
            Some(Decision::Approved) => apply.entry(c.id).or_default().push(*seq),
            None if super::declined::drops(gov, gov.provenance(&c.id)?.as_ref())? => {
                gov.store().remove_from_inbox(partner, *seq).await?
            }
            None if gov.settings_of(partner).auto_approve => {
                apply.entry(c.id).or_default().push(*seq)
            }
            None => {}
        }
    }
    if apply.is_empty() {
        return Ok(());
    }
    let ids: Vec<ObjectId> = apply.keys().copied().collect();
    approve_held(gov, partner, &ids, &held, None).await?;
    crate::metrics::add(
        &gov.inner.metrics.changes_approved_on_announcement,
        apply.values().map(|seqs| seqs.len() as u64).sum(),
    );
    gov.audit(
        DAEMON,
        "inbox.auto-approve",
        Some(partner),
        None,
        format!(
            "{} object(s) applied once their share announced them",
            ids.len()
        ),
    )?;
    Ok(())
}

/// Applies the held changes of `ids` as approved (same id), marks them
/// approved and empties their inbox entries: one durable write for the
/// changes and one for the inbox, however many objects (an announcement
/// names up to a thousand; one write each was the share path's cost).
async fn approve_held(
    gov: &Governance,
    partner: &OrgId,
    ids: &[ObjectId],
    held: &[(u64, Change)],
    add_flag: Option<ObjectId>,
) -> Result<(), GovError> {
    let wanted: std::collections::BTreeSet<ObjectId> = ids.iter().copied().collect();
    let mine: Vec<&(u64, Change)> = held
        .iter()
        .filter(|(_, c)| wanted.contains(&c.id))
        .collect();
    let changes: Vec<Change> = mine.iter().map(|(_, c)| c.clone()).collect();
    approve_changes(gov, partner, &changes, add_flag).await?;
    for id in &wanted {
        gov.db()
            .put(&gov.db().decision, "decision", &id.0, &Decision::Approved)?;
    }
    let seqs: Vec<u64> = mine.iter().map(|(seq, _)| *seq).collect();
    gov.store().remove_many_from_inbox(partner, &seqs).await?;
    Ok(())
}

/// One object waiting in the inbox.
#[derive(Clone, Debug, Serialize)]
pub struct InboxItem {
    /// The partner's object id (what `approve` and `reject` take).
    pub id: ObjectId,
    /// Who sent it.
    pub partner: OrgId,
    /// The partner's name.
    pub partner_name: String,
    /// Its kind.
    pub kind: Kind,
    /// The share it came under, when announced.
    pub share: Option<String>,
    /// The object as the held changes make it.
    pub object: Object,
    /// The held changes (partner sequence numbers).
    pub seqs: Vec<u64>,
}

struct Held {
    partner: OrgId,
    seqs: Vec<u64>,
    changes: Vec<Change>,
}

fn held(gov: &Governance) -> Result<BTreeMap<ObjectId, Held>, GovError> {
    let mut out: BTreeMap<ObjectId, Held> = BTreeMap::new();
    for peer in gov.inner.trust.peers().iter() {
        for (seq, c) in gov.store().inbox(&peer.org)? {
            let h = out.entry(c.id).or_insert_with(|| Held {
                partner: peer.org,
                seqs: Vec::new(),
                changes: Vec::new(),
            });
            h.seqs.push(seq);
            h.changes.push(c);
        }
    }
    Ok(out)
}

fn merged(changes: &[Change]) -> Option<Object> {
    let mut obj: Option<Object> = None;
    for c in changes {
        // A change of another kind for the same id is skipped in the preview.
        if let Ok(o) = merge::apply_change(obj.clone(), c) {
            obj = Some(o);
        }
    }
    obj
}

/// Objects waiting for a decision, optionally from one partner.
pub fn list(gov: &Governance, partner: Option<&OrgId>) -> Result<Vec<InboxItem>, GovError> {
    let mut out = Vec::new();
    for (id, h) in held(gov)? {
        if partner.is_some_and(|p| *p != h.partner) {
            continue;
        }
        let decision: Option<Decision> = gov.db().get(&gov.db().decision, "decision", &id.0)?;
        if decision.is_some() {
            continue;
        }
        let Some(object) = merged(&h.changes) else {
            continue;
        };
        // Not announced by a share of the sender yet: not decidable.
        let Some(share) = announced(gov, &h.partner, &id)? else {
            continue;
        };
        out.push(InboxItem {
            id,
            partner: h.partner,
            partner_name: gov.partner_name(&h.partner),
            kind: object.kind,
            share: Some(share.to_string()),
            object,
            seqs: h.seqs,
        });
    }
    Ok(out)
}

/// An inbox decision already taken: what the Incoming page's Approved and
/// Rejected filters show.
#[derive(Clone, Debug, Serialize)]
pub struct DecidedItem {
    /// The partner's object id.
    pub id: ObjectId,
    /// Who sent it (none when its provenance is gone, e.g. after an erase).
    pub partner: Option<OrgId>,
    /// What was decided.
    pub decision: Decision,
    /// What was kept: the approved copy (same id) or the linked local
    /// object; none for a rejection or a copy since erased.
    pub object: Option<Object>,
}

/// Every inbox decision taken, in id order.
pub fn decided(gov: &Governance) -> Result<Vec<DecidedItem>, GovError> {
    let mut out = Vec::new();
    for kv in gov.db().decision.iter() {
        let (k, v) = kv.map_err(|source| GovError::Db { op: "scan", source })?;
        // Keys are object ids; another length would be a foreign key.
        let Ok(bytes) = <[u8; 16]>::try_from(k.as_ref()) else {
            continue;
        };
        let id = ObjectId(bytes);
        let decision: Decision = super::db::decode("decision", &v)?;
        let kept = match decision {
            Decision::Approved => Some(id),
            Decision::Linked(l) => Some(l),
            Decision::Rejected => None,
        };
        let object = match kept {
            Some(k) => gov.store().get(k)?.filter(|o| !o.is_deleted()),
            None => None,
        };
        out.push(DecidedItem {
            id,
            partner: gov.provenance(&id)?.and_then(|p| p.from()),
            decision,
            object,
        });
    }
    Ok(out)
}

/// The share of `partner` that announced object `id` to us, if any.
fn announced(
    gov: &Governance,
    partner: &OrgId,
    id: &ObjectId,
) -> Result<Option<orgsync_protocol::share::ShareId>, GovError> {
    Ok(match gov.prov_record(id)?.map(|r| r.prov.source) {
        Some(Source::Share { from, share, .. }) if from == *partner => Some(share),
        _ => None,
    })
}

/// An admin's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Keep as a new local object (same id).
    AsNew,
    /// Land on this local object (or map this flag onto a local flag).
    Link(ObjectId),
    /// Drop it, now and later.
    Reject,
}

/// Rewrites ids the admin linked (flags and references) to local ids.
fn map_ids(gov: &Governance, id: ObjectId) -> ObjectId {
    match gov.db().get(&gov.db().decision, "decision", &id.0) {
        Ok(Some(Decision::Linked(local))) => local,
        _ => id,
    }
}

fn map_key(gov: &Governance, partner: &OrgId, key: &FieldKey) -> FieldKey {
    match key {
        FieldKey::Flag(f) => FieldKey::Flag(map_ids(gov, *f)),
        FieldKey::Custom(name) => FieldKey::Custom(
            gov.settings_of(partner)
                .field_map
                .get(name)
                .cloned()
                .unwrap_or_else(|| name.clone()),
        ),
        other => other.clone(),
    }
}

fn map_value(gov: &Governance, v: &Option<Value>) -> Option<Value> {
    match v {
        Some(Value::Ref(r)) => Some(Value::Ref(map_ids(gov, *r))),
        other => other.clone(),
    }
}

/// Applies a partner's changes to the local object `local` as local edits
/// (ids and custom-field names mapped); remote deletes do not delete ours.
async fn apply_linked(
    gov: &Governance,
    partner: &OrgId,
    local: &Object,
    changes: &[Change],
    initial: bool,
) -> Result<(), GovError> {
    // The partner's newest value of each field.
    let mut newest: BTreeMap<FieldKey, (orgsync_protocol::model::Version, Option<Value>)> =
        BTreeMap::new();
    for c in changes {
        for (key, state) in &c.fields {
            let key = map_key(gov, partner, key);
            if newest.get(&key).is_none_or(|(v, _)| *v < state.version) {
                newest.insert(key, (state.version, map_value(gov, &state.value)));
            }
        }
    }
    let mut edit = Edit::new(local.id, local.kind);
    for (key, (version, value)) in newest {
        // Only what differs, and after the link itself only what is newer
        // than ours: rewriting equal values would make new versions, and
        // two linked sources that disagree would overwrite each other for
        // ever.
        let ours = local.fields.get(&key);
        if local.get(&key) != value.as_ref()
            && (initial || ours.is_none_or(|f| f.version < version))
        {
            edit.fields.push((key, value));
        }
    }
    if !edit.fields.is_empty() && local.kind != Kind::Flag {
        gov.store().write(vec![edit]).await?;
    }
    Ok(())
}

/// Decides on inbox items; returns how many were decided.
pub async fn decide(
    gov: &Governance,
    ids: &[ObjectId],
    action: Action,
    add_flag: Option<ObjectId>,
    by: &str,
) -> Result<usize, GovError> {
    let _op = gov.inner.op.lock().await;
    let all = held(gov)?;
    // Check everything first: a bulk decision is all or nothing.
    for id in ids {
        let Some(h) = all.get(id) else {
            return Err(GovError::NotFound(format!("no object {id} in the inbox")));
        };
        if announced(gov, &h.partner, id)?.is_none() {
            return Err(GovError::Invalid(format!(
                "object {id} from {} is not announced by any of its shares yet: it cannot be \
                 decided on until it is",
                gov.partner_name(&h.partner)
            )));
        }
    }
    let local = match action {
        Action::Link(l) => Some(
            gov.store()
                .get(l)?
                .filter(|o| !o.is_deleted())
                .ok_or_else(|| GovError::NotFound(format!("no local object {l} to link to")))?,
        ),
        _ => None,
    };
    if let Some(flag) = add_flag {
        match gov.store().get(flag)? {
            Some(f) if f.kind == Kind::Flag && !f.is_deleted() => {}
            _ => return Err(GovError::NotFound(format!("no local flag {flag}"))),
        }
    }
    for id in ids {
        // Checked above.
        let Some(h) = all.get(id) else { continue };
        let kind = h.changes.first().map(|c| c.kind);
        if let (Some(l), Some(k)) = (&local, kind) {
            if l.kind != k {
                return Err(GovError::Invalid(format!(
                    "cannot link {k} {id} to {} {}: the kinds differ",
                    l.kind, l.id
                )));
            }
        }
    }
    for id in ids {
        let Some(h) = all.get(id) else { continue };
        let (decision, what) = match action {
            Action::Reject => (Decision::Rejected, "inbox.reject"),
            Action::AsNew => {
                approve_changes(gov, &h.partner, &h.changes, add_flag).await?;
                (Decision::Approved, "inbox.approve")
            }
            Action::Link(l) => {
                // Checked above: `local` is Some for a link.
                if let Some(local) = &local {
                    apply_linked(gov, &h.partner, local, &h.changes, true).await?;
                }
                if let Some(rec) = gov.prov_record(id)? {
                    let mut links = gov.links(&l)?;
                    links.retain(|x| x.remote != *id);
                    links.push(LinkRecord {
                        remote: *id,
                        prov: rec.prov,
                    });
                    gov.set_links(&l, &links)?;
                }
                (Decision::Linked(l), "inbox.link")
            }
        };
        gov.db()
            .put(&gov.db().decision, "decision", &id.0, &decision)?;
        for seq in &h.seqs {
            gov.store().remove_from_inbox(&h.partner, *seq).await?;
        }
        let detail = match decision {
            Decision::Linked(l) => format!("object {id} linked to local object {l}"),
            Decision::Approved => format!("object {id} approved as a new local object"),
            Decision::Rejected => format!("object {id} rejected"),
        };
        gov.audit(by, what, Some(&h.partner), None, detail)?;
    }
    gov.db().flush().await?;
    Ok(ids.len())
}

/// Keeps a partner's changes as a local object with the same id (ids and
/// custom fields mapped), fetching its résumé file and adding `add_flag`.
async fn approve_changes(
    gov: &Governance,
    partner: &OrgId,
    changes: &[Change],
    add_flag: Option<ObjectId>,
) -> Result<(), GovError> {
    let mapped: Vec<Change> = changes
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c.fields = c
                .fields
                .into_iter()
                .map(|(k, mut s)| {
                    s.value = map_value(gov, &s.value);
                    (map_key(gov, partner, &k), s)
                })
                .collect();
            c
        })
        .collect();
    let receipt = gov.store().write_changes(mapped).await?;
    // Each object as it stands after the write (the last of its changes).
    let mut objects: BTreeMap<ObjectId, &Object> = BTreeMap::new();
    for obj in &receipt.objects {
        objects.insert(obj.id, obj);
    }
    let mut flagged = Vec::new();
    for obj in objects.values() {
        fetch_resume(gov, obj).await?;
        if let Some(flag) = add_flag {
            flagged.push(Edit::new(obj.id, obj.kind).set(FieldKey::Flag(flag), Value::Bool(true)));
        }
    }
    if !flagged.is_empty() {
        gov.store().write(flagged).await?;
    }
    Ok(())
}

/// Marks the résumé file of an approved résumé as wanted: it is fetched on
/// the next connection.
async fn fetch_resume(gov: &Governance, obj: &Object) -> Result<(), GovError> {
    if obj.kind != Kind::Resume {
        return Ok(());
    }
    let (Some(Value::Hash(hash)), size) = (obj.get_std("hash"), obj.get_std("size")) else {
        return Ok(());
    };
    if gov.store().blob_files().size(hash)?.is_some() {
        return Ok(());
    }
    let size = match size {
        Some(Value::Integer(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    gov.store()
        .set_blob(
            hash,
            BlobEntry {
                size,
                state: BlobState::Missing,
                object: Some(obj.id),
            },
        )
        .await?;
    Ok(())
}

/// Sets a partner's inbox policy; turning auto-approve on also approves
/// what already waits from that partner.
pub async fn set_auto(
    gov: &Governance,
    partner: &OrgId,
    auto: bool,
    by: &str,
) -> Result<(), GovError> {
    gov.update_settings(
        partner,
        by,
        if auto {
            "inbox policy: auto-approve"
        } else {
            "inbox policy: manual"
        },
        |s| s.auto_approve = auto,
    )
    .await?;
    if auto {
        // What already waits from this partner is approved too.
        let _op = gov.inner.op.lock().await;
        let ids: Vec<ObjectId> = gov
            .store()
            .inbox(partner)?
            .into_iter()
            .map(|(_, c)| c.id)
            .filter(|id| announced(gov, partner, id).ok().flatten().is_some())
            .collect();
        on_offered(gov, partner, &ids).await?;
        gov.db().flush().await?;
    }
    Ok(())
}

/// Applies held updates of linked objects and reports arrived shares, in
/// the background: woken by the engine after each partner batch is durable
/// ([`crate::policy::SharePolicy::batch_applied`]; held changes land after
/// the engine asked the policy), with a slow timer as a safety net.
pub(super) async fn linked_loop(gov: Governance) {
    loop {
        tokio::select! {
            _ = gov.inner.batch_applied.notified() => {}
            _ = tokio::time::sleep(SAFETY_NET) => {}
        }
        if let Err(e) = linked_once(&gov).await {
            tracing::warn!(error = %e, "cannot process linked objects");
        }
    }
}

/// How often the linked loop looks again when no batch woke it.
const SAFETY_NET: std::time::Duration = std::time::Duration::from_secs(30);

async fn linked_once(gov: &Governance) -> Result<(), GovError> {
    let _op = gov.inner.op.lock().await;
    for (id, h) in held(gov)? {
        let decision: Option<Decision> = gov.db().get(&gov.db().decision, "decision", &id.0)?;
        let Some(Decision::Linked(l)) = decision else {
            continue;
        };
        if let Some(local) = gov.store().get(l)?.filter(|o| !o.is_deleted()) {
            apply_linked(gov, &h.partner, &local, &h.changes, false).await?;
            gov.audit(
                DAEMON,
                "inbox.linked-update",
                Some(&h.partner),
                None,
                format!("update of {id} applied to local object {l}"),
            )?;
        }
        for seq in &h.seqs {
            gov.store().remove_from_inbox(&h.partner, *seq).await?;
        }
    }
    recheck_unannounced(gov).await?;
    super::shares::report_received(gov).await?;
    gov.db().flush().await
}
