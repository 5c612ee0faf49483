//! Share requests between two daemons.
//!
//! The requester names what it wants and suggests a level (`Requested`);
//! the owner's daemon records it (`ToEvaluate`) and tells the requester;
//! the owner's admin previews exactly what a level would send and approves
//! it with the actual level and an access type (`Approved`, then
//! `Preparing` while the share is built, `Available` once it is) or
//! rejects it. The requester reports the data received (`Processed`);
//! a revocation ends it (`Revoked`). Every move goes through
//! [`ShareStatus::transition`] on both sides, so both see the same status
//! and an illegal move is refused.

use orgsync_protocol::model::{ObjectId, OrgId};
use orgsync_protocol::share::{
    AccessType, Request, Selection, ShareBody, ShareId, ShareStatus, StatusUpdate, TransferLevel,
};

use super::db::{RequestRecord, RequestRole};
use super::shares::{self, NewShare};
use super::{GovError, Governance, DAEMON};

fn get(gov: &Governance, id: &ShareId) -> Result<RequestRecord, GovError> {
    gov.db()
        .get(&gov.db().request, "share request", &id.0)?
        .ok_or_else(|| GovError::NotFound(format!("no share request {id}")))
}

fn put(gov: &Governance, r: &RequestRecord) -> Result<(), GovError> {
    gov.db().put(&gov.db().request, "share request", &r.id.0, r)
}

/// Every request, both roles.
pub fn list(gov: &Governance) -> Result<Vec<RequestRecord>, GovError> {
    gov.db().all(&gov.db().request, "share request")
}

/// Moves a request along a legal edge and records it.
fn advance(gov: &Governance, r: &mut RequestRecord, to: ShareStatus) -> Result<(), GovError> {
    r.status = r
        .status
        .transition(to)
        .map_err(|e| GovError::Refused(format!("request {}: {e}", r.id)))?;
    r.history.push((to, gov.now_ms()));
    Ok(())
}

/// Sends a request to `partner`.
pub async fn send(
    gov: &Governance,
    partner: &OrgId,
    wants: Selection,
    suggested: Option<TransferLevel>,
    note: String,
    by: &str,
) -> Result<RequestRecord, GovError> {
    if wants.rules.is_empty() {
        return Err(GovError::Invalid("say what you want (--want RULE)".into()));
    }
    let _op = gov.inner.op.lock().await;
    let r = RequestRecord {
        id: ShareId::random(),
        partner: *partner,
        role: RequestRole::Requester,
        status: ShareStatus::Requested,
        wants: wants.clone(),
        suggested: suggested.clone(),
        note: note.clone(),
        level: None,
        access: None,
        share: None,
        reason: None,
        history: vec![(ShareStatus::Requested, gov.now_ms())],
    };
    put(gov, &r)?;
    gov.send(
        partner,
        ShareBody::Request(Request {
            request: r.id,
            wants,
            suggested,
            note,
        }),
    )?;
    gov.audit(
        by,
        "request.send",
        Some(partner),
        Some(r.id.to_string()),
        "share request sent".into(),
    )?;
    gov.db().flush().await?;
    Ok(r)
}

fn status_body(r: &RequestRecord) -> ShareBody {
    ShareBody::Status(StatusUpdate {
        request: r.id,
        status: r.status,
        level: r.level.clone(),
        access: r.access,
        share: r.share,
        reason: r.reason.clone(),
    })
}

/// Owner side: moves request `id` to `to` and tells the requester.
pub(super) fn owner_move(gov: &Governance, id: &ShareId, to: ShareStatus) -> Result<(), GovError> {
    let mut r = get(gov, id)?;
    if r.role != RequestRole::Owner || r.status == to {
        return Ok(());
    }
    advance(gov, &mut r, to)?;
    put(gov, &r)?;
    gov.send(&r.partner, status_body(&r))?;
    gov.audit(
        DAEMON,
        "request.status",
        Some(&r.partner),
        Some(id.to_string()),
        to.to_string(),
    )?;
    Ok(())
}

/// What approving with `level` would send now.
pub fn preview(
    gov: &Governance,
    id: &ShareId,
    level: &TransferLevel,
    access: AccessType,
) -> Result<Vec<ObjectId>, GovError> {
    let r = get(gov, id)?;
    let p = shares::preview(gov, Some(&r.partner), &level.selection(), access)?;
    p.check().map_err(GovError::Refused)?;
    Ok(p.selected.into_iter().map(|o| o.id).collect())
}

/// Owner side: approves with the actual level and access; builds the share.
pub async fn approve(
    gov: &Governance,
    id: &ShareId,
    level: TransferLevel,
    access: AccessType,
    terms: Option<String>,
    by: &str,
) -> Result<RequestRecord, GovError> {
    let _op = gov.inner.op.lock().await;
    let mut r = get(gov, id)?;
    if r.role != RequestRole::Owner {
        return Err(GovError::Invalid(format!(
            "request {id} is ours: its owner approves it"
        )));
    }
    // Refuse before any state changes when the level cannot be served.
    shares::preview(gov, Some(&r.partner), &level.selection(), access)?
        .check()
        .map_err(GovError::Refused)?;
    advance(gov, &mut r, ShareStatus::Approved)?;
    r.level = Some(level.clone());
    r.access = Some(access);
    put(gov, &r)?;
    gov.send(&r.partner, status_body(&r))?;
    gov.audit(
        by,
        "request.approve",
        Some(&r.partner),
        Some(id.to_string()),
        format!("level {level}, access {access}"),
    )?;
    advance(gov, &mut r, ShareStatus::Preparing)?;
    put(gov, &r)?;
    gov.send(&r.partner, status_body(&r))?;
    let created = shares::create_locked(
        gov,
        NewShare {
            partners: vec![r.partner],
            selection: level.selection(),
            access,
            terms,
            label: format!("request {id}"),
            request: Some(*id),
            code_valid_ms: None,
            by: by.to_string(),
        },
    )
    .await?;
    r.share = created.shares.first().and_then(|s| s.parse().ok());
    advance(gov, &mut r, ShareStatus::Available)?;
    put(gov, &r)?;
    gov.send(&r.partner, status_body(&r))?;
    gov.audit(
        DAEMON,
        "request.status",
        Some(&r.partner),
        Some(id.to_string()),
        "available".into(),
    )?;
    gov.db().flush().await?;
    Ok(r)
}

/// Owner side: rejects.
pub async fn reject(
    gov: &Governance,
    id: &ShareId,
    reason: String,
    by: &str,
) -> Result<RequestRecord, GovError> {
    let _op = gov.inner.op.lock().await;
    let mut r = get(gov, id)?;
    if r.role != RequestRole::Owner {
        return Err(GovError::Invalid(format!(
            "request {id} is ours: its owner rejects it"
        )));
    }
    advance(gov, &mut r, ShareStatus::Rejected)?;
    r.reason = Some(reason.clone());
    put(gov, &r)?;
    gov.send(&r.partner, status_body(&r))?;
    gov.audit(
        by,
        "request.reject",
        Some(&r.partner),
        Some(id.to_string()),
        reason,
    )?;
    gov.db().flush().await?;
    Ok(r)
}

pub(super) fn on_request(gov: &Governance, partner: OrgId, req: Request) -> Result<(), GovError> {
    if gov
        .db()
        .get::<RequestRecord>(&gov.db().request, "share request", &req.request.0)?
        .is_some()
    {
        return Err(GovError::Invalid(format!(
            "request {} already known",
            req.request
        )));
    }
    let mut r = RequestRecord {
        id: req.request,
        partner,
        role: RequestRole::Owner,
        status: ShareStatus::Requested,
        wants: req.wants,
        suggested: req.suggested,
        note: req.note,
        level: None,
        access: None,
        share: None,
        reason: None,
        history: vec![(ShareStatus::Requested, gov.now_ms())],
    };
    advance(gov, &mut r, ShareStatus::ToEvaluate)?;
    put(gov, &r)?;
    gov.send(&partner, status_body(&r))?;
    gov.audit(
        DAEMON,
        "request.received",
        Some(&partner),
        Some(r.id.to_string()),
        "to evaluate".into(),
    )?;
    Ok(())
}

pub(super) fn on_status(gov: &Governance, partner: OrgId, s: StatusUpdate) -> Result<(), GovError> {
    let mut r = get(gov, &s.request)?;
    if r.partner != partner || r.role != RequestRole::Requester {
        return Err(GovError::Refused(format!(
            "request {} is not this partner's to move",
            s.request
        )));
    }
    advance(gov, &mut r, s.status)?;
    if s.level.is_some() {
        r.level = s.level;
    }
    if s.access.is_some() {
        r.access = s.access;
    }
    if s.share.is_some() {
        r.share = s.share;
    }
    if s.reason.is_some() {
        r.reason = s.reason;
    }
    put(gov, &r)?;
    gov.audit(
        DAEMON,
        "request.status",
        Some(&partner),
        Some(r.id.to_string()),
        s.status.to_string(),
    )?;
    Ok(())
}
