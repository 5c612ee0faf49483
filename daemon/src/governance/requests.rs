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
    let r = fresh(
        gov,
        ShareId::random(),
        *partner,
        RequestRole::Requester,
        wants.clone(),
        suggested.clone(),
        note.clone(),
    );
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

/// A request as it starts, on either side: `Requested`.
fn fresh(
    gov: &Governance,
    id: ShareId,
    partner: OrgId,
    role: RequestRole,
    wants: Selection,
    suggested: Option<TransferLevel>,
    note: String,
) -> RequestRecord {
    RequestRecord {
        id,
        partner,
        role,
        status: ShareStatus::Requested,
        wants,
        suggested,
        note,
        level: None,
        access: None,
        share: None,
        reason: None,
        history: vec![(ShareStatus::Requested, gov.now_ms())],
    }
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

/// Stores `r`, tells the other side its status and audits the move.
fn record(
    gov: &Governance,
    r: &RequestRecord,
    who: &str,
    action: &str,
    detail: String,
) -> Result<(), GovError> {
    put(gov, r)?;
    gov.send(&r.partner, status_body(r))?;
    gov.audit(
        who,
        action,
        Some(&r.partner),
        Some(r.id.to_string()),
        detail,
    )?;
    Ok(())
}

/// Owner side: moves request `id` to `to` and tells the requester.
pub(super) fn owner_move(gov: &Governance, id: &ShareId, to: ShareStatus) -> Result<(), GovError> {
    let mut r = get(gov, id)?;
    if r.role != RequestRole::Owner || r.status == to {
        return Ok(());
    }
    advance(gov, &mut r, to)?;
    record(gov, &r, DAEMON, "request.status", to.to_string())
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

/// A request we own (only its owner `verb` it).
fn owned(gov: &Governance, id: &ShareId, verb: &str) -> Result<RequestRecord, GovError> {
    let r = get(gov, id)?;
    if r.role != RequestRole::Owner {
        return Err(GovError::Invalid(format!(
            "request {id} is ours: its owner {verb} it"
        )));
    }
    Ok(r)
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
    let mut r = owned(gov, id, "approves")?;
    // Refuse before any state changes when the level cannot be served.
    shares::preview(gov, Some(&r.partner), &level.selection(), access)?
        .check()
        .map_err(GovError::Refused)?;
    advance(gov, &mut r, ShareStatus::Approved)?;
    r.level = Some(level.clone());
    r.access = Some(access);
    record(
        gov,
        &r,
        by,
        "request.approve",
        format!("level {level}, access {access}"),
    )?;
    advance(gov, &mut r, ShareStatus::Preparing)?;
    record(gov, &r, DAEMON, "request.status", "preparing".into())?;
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
    record(gov, &r, DAEMON, "request.status", "available".into())?;
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
    let mut r = owned(gov, id, "rejects")?;
    advance(gov, &mut r, ShareStatus::Rejected)?;
    r.reason = Some(reason.clone());
    record(gov, &r, by, "request.reject", reason)?;
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
    // Over the cap of open requests: refused, nothing stored (the
    // partner is told and the refusal audited by `over_limit`).
    let max = gov.inner.config.limits.max_open_requests;
    let open = list(gov)?
        .iter()
        .filter(|r| {
            r.partner == partner
                && r.role == RequestRole::Owner
                && r.status == ShareStatus::ToEvaluate
        })
        .count();
    if open >= max {
        gov.over_limit(
            &partner,
            "max_open_requests",
            format!(
                "share request {} refused: {open} of your requests already wait for our admin (limits.max_open_requests = {max})",
                req.request
            ),
        );
        return Ok(());
    }
    let mut r = fresh(
        gov,
        req.request,
        partner,
        RequestRole::Owner,
        req.wants,
        req.suggested,
        req.note,
    );
    advance(gov, &mut r, ShareStatus::ToEvaluate)?;
    record(gov, &r, DAEMON, "request.received", "to evaluate".into())
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
