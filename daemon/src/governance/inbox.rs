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

use orgsync_protocol::merge;
use orgsync_protocol::model::{Change, FieldKey, Kind, Object, ObjectId, OrgId, Value};
use serde::Serialize;

use super::db::{Decision, Received};
use super::{GovError, Governance, DAEMON, RECHECK};
use crate::policy::Incoming;
use crate::store::{BlobEntry, BlobState, Edit};

/// The engine's question for each change a partner sends.
pub(super) fn decide_incoming(gov: &Governance, partner: &OrgId, change: &Change) -> Incoming {
    let decision: Option<Decision> = gov
        .db()
        .get(&gov.db().decision, "decision", &change.id.0)
        .ok()
        .flatten();
    match decision {
        Some(Decision::Rejected) => Incoming::Reject,
        Some(Decision::Approved) => Incoming::Apply,
        Some(Decision::Linked(_)) => Incoming::Hold,
        None if gov.settings_of(partner).auto_approve => Incoming::Apply,
        // Our own object (or one we hold already) coming back updated.
        None if matches!(gov.store().get(change.id), Ok(Some(_))) => Incoming::Apply,
        None => Incoming::Hold,
    }
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
        let received: Option<Received> = gov.db().get(&gov.db().received, "received", &id.0)?;
        out.push(InboxItem {
            id,
            partner: h.partner,
            partner_name: gov.partner_name(&h.partner),
            kind: object.kind,
            share: received.map(|r| r.share.to_string()),
            object,
            seqs: h.seqs,
        });
    }
    Ok(out)
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
) -> Result<(), GovError> {
    let mut edit = Edit::new(local.id, local.kind);
    for c in changes {
        for (key, state) in &c.fields {
            edit.fields
                .push((map_key(gov, partner, key), map_value(gov, &state.value)));
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
        if !all.contains_key(id) {
            return Err(GovError::NotFound(format!("no object {id} in the inbox")));
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
                let mapped: Vec<Change> = h
                    .changes
                    .iter()
                    .map(|c| {
                        let mut c = c.clone();
                        c.fields = c
                            .fields
                            .into_iter()
                            .map(|(k, mut s)| {
                                s.value = map_value(gov, &s.value);
                                (map_key(gov, &h.partner, &k), s)
                            })
                            .collect();
                        c
                    })
                    .collect();
                let receipt = gov.store().write_changes(mapped).await?;
                if let Some(obj) = receipt.objects.last() {
                    fetch_resume(gov, obj).await?;
                    if let Some(flag) = add_flag {
                        let edit = Edit::new(obj.id, obj.kind)
                            .set(FieldKey::Flag(flag), Value::Bool(true));
                        gov.store().write(vec![edit]).await?;
                    }
                }
                (Decision::Approved, "inbox.approve")
            }
            Action::Link(l) => {
                // Checked above: `local` is Some for a link.
                if let Some(local) = &local {
                    apply_linked(gov, &h.partner, local, &h.changes).await?;
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

/// Sets a partner's inbox policy.
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
    .await
    .map(|_| ())
}

/// Applies held updates of linked objects and reports arrived shares, in
/// the background (held changes land after the engine asked the policy).
pub(super) async fn linked_loop(gov: Governance) {
    loop {
        tokio::time::sleep(RECHECK).await;
        if let Err(e) = linked_once(&gov).await {
            tracing::warn!(error = %e, "cannot process linked objects");
        }
    }
}

async fn linked_once(gov: &Governance) -> Result<(), GovError> {
    let _op = gov.inner.op.lock().await;
    for (id, h) in held(gov)? {
        let decision: Option<Decision> = gov.db().get(&gov.db().decision, "decision", &id.0)?;
        let Some(Decision::Linked(l)) = decision else {
            continue;
        };
        if let Some(local) = gov.store().get(l)?.filter(|o| !o.is_deleted()) {
            apply_linked(gov, &h.partner, &local, &h.changes).await?;
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
    super::shares::report_received(gov).await?;
    gov.db().flush().await
}
