//! Outgoing shares and what the owner and the recipient do about them:
//! membership (objects entering a share go whole, once, after their
//! announcement; objects leaving are withdrawn), re-share rules,
//! terms, share codes, revocation and the erase with its acknowledgements.

use std::collections::BTreeSet;
use std::sync::PoisonError;

use orgsync_protocol::model::{Change, Object, ObjectId, OrgId};
use orgsync_protocol::share::{
    AccessType, Grant, Selection, ShareBody, ShareId, MAX_IDS_PER_MESSAGE,
};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::sync::broadcast::error::RecvError;

use orgsync_protocol::authority::{self, InShareView, Provenance, Refusal, Source};

use super::db::{CodeRecord, Decision, InShare, OutShare, PendingErase, ProvRecord};
use super::{GovError, Governance, DAEMON};
use crate::store::Origin;

/// Page size when scanning every object.
const SCAN_PAGE: usize = 1000;

/// Whether `partner` may receive `obj` now (the engine's per-object check):
/// a mirror gets the objects of either copy of the organisation; anyone
/// else what a flowing share of theirs selects and the send rules allow.
/// A database error answers "no" (nothing leaves by mistake), is logged and
/// counted (`orgsync_share_check_errors_total`), and the object is queued
/// to be re-logged, so that it is decided on again instead of being lost.
pub(super) fn shares_with(gov: &Governance, partner: &OrgId, obj: &Object) -> bool {
    match may_send(gov, partner, obj) {
        Ok(yes) => yes,
        Err(e) => {
            crate::metrics::add(&gov.inner.metrics.share_check_errors, 1);
            tracing::error!(error = %e, partner = %gov.partner_name(partner), object = %obj.id,
                "cannot tell whether an object may be sent: held back, to be decided again");
            gov.inner
                .recheck
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(obj.id);
            gov.inner.recheck_wanted.notify_one();
            false
        }
    }
}

fn may_send(gov: &Governance, partner: &OrgId, obj: &Object) -> Result<bool, GovError> {
    #[cfg(test)]
    if gov
        .inner
        .fail_share_checks
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return Err(GovError::Invalid("injected database failure".into()));
    }
    let prov = gov.provenance_of(&obj.id)?;
    if gov.is_mirror(partner) && authority::mirror_sends(&prov) {
        return Ok(true);
    }
    // Only this partner's flowing shares are copied (this runs for every
    // object sent; copying every share each time showed in the profile).
    let shares: Vec<OutShare> = gov
        .inner
        .shares
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|s| s.partner.as_ref() == Some(partner) && s.is_flowing())
        .cloned()
        .collect();
    let lookup = gov.lookup();
    for s in &shares {
        // Only members: an object entering a share goes once the
        // membership loop has announced it (`enter`). Sent before its
        // announcement, the partner would hold it in its inbox, and
        // refuse it past `max_inbox_items`.
        if gov.db().is_member(&s.id, &obj.id)?
            && s.selection.selects(obj, &lookup)
            && gov.check_send(obj.id, &prov, partner, s.access).is_ok()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Re-logs the objects whose send check failed (see [`shares_with`]), so
/// the engine decides on them again.
pub(super) async fn recheck(gov: &Governance) -> Result<usize, GovError> {
    let ids = std::mem::take(
        &mut *gov
            .inner
            .recheck
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let mut whole = Vec::new();
    for id in &ids {
        if let Some(o) = gov.store().get(*id)? {
            whole.push(Change::from_object(&o));
        }
    }
    let n = whole.len();
    for chunk in whole.chunks(SCAN_PAGE) {
        gov.store().write_changes(chunk.to_vec()).await?;
    }
    Ok(n)
}

/// Whether object `id` may go to `partner` as `access`: never back to its
/// owner or to where it came from, and only as its access type (and that
/// of anything linked into it) allows.
pub(super) fn reshare_allowed(
    gov: &Governance,
    partner: &OrgId,
    id: ObjectId,
    access: AccessType,
) -> Result<(), String> {
    let prov = gov.provenance_of(&id).map_err(|e| e.to_string())?;
    gov.check_send(id, &prov, partner, access)
        .map_err(|e| describe(gov, &prov, e))
}

/// A send refusal with the names of the organisations involved.
fn describe(gov: &Governance, prov: &Provenance, e: Refusal) -> String {
    match prov.source {
        Source::Own => e.to_string(),
        Source::Share {
            from,
            share,
            access,
        } => format!(
            "{e} (owner {}, received from {} under share {share} as {access})",
            gov.partner_name(&prov.owner),
            gov.partner_name(&from)
        ),
        Source::Mirror { from } => {
            format!("{e} (received from mirror {})", gov.partner_name(&from))
        }
    }
}

/// Every live object, page by page.
pub(crate) fn all_objects(gov: &Governance) -> Result<Vec<Object>, GovError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = gov.store().list(None, after, SCAN_PAGE)?;
        let done = page.len() < SCAN_PAGE;
        after = page.last().map(|o| o.id);
        out.extend(page.into_iter().filter(|o| !o.is_deleted()));
        if done {
            return Ok(out);
        }
    }
}

/// What a selection would send to a partner.
#[derive(Clone, Debug, Default)]
pub struct Preview {
    /// Objects it picks and may send.
    pub selected: Vec<Object>,
    /// Objects it picks but the re-share rules refuse, with why.
    pub refused: Vec<(ObjectId, String)>,
}

impl Preview {
    /// The refusals as one message, or `Ok` when there are none.
    pub fn check(&self) -> Result<(), String> {
        if self.refused.is_empty() {
            return Ok(());
        }
        let why: Vec<&str> = self.refused.iter().map(|(_, w)| w.as_str()).collect();
        Err(why.join("; "))
    }
}

/// Objects `selection` picks for `partner` as `access`, and those it
/// would pick but the re-share rules refuse (with why).
pub fn preview(
    gov: &Governance,
    partner: Option<&OrgId>,
    selection: &Selection,
    access: AccessType,
) -> Result<Preview, GovError> {
    let lookup = gov.lookup();
    let mut selected = Vec::new();
    let mut refused = Vec::new();
    for obj in all_objects(gov)? {
        if !selection.selects(&obj, &lookup) {
            continue;
        }
        let to = partner.copied().unwrap_or(OrgId([0; 32]));
        let prov = gov.provenance_of(&obj.id)?;
        match gov.check_send(obj.id, &prov, &to, access) {
            Ok(()) => selected.push(obj),
            // Never sent back where it came from: not a refusal, just not
            // part of what this partner gets.
            Err(Refusal::BackToOwner { .. } | Refusal::BackToSource { .. }) => {}
            Err(e) => refused.push((obj.id, describe(gov, &prov, e))),
        }
    }
    Ok(Preview { selected, refused })
}

/// What `orgsync share add` asks for.
#[derive(Clone, Debug)]
pub struct NewShare {
    /// Recipients (one share each); empty with a code.
    pub partners: Vec<OrgId>,
    /// What to share.
    pub selection: Selection,
    /// Access granted.
    pub access: AccessType,
    /// Agreement to accept first.
    pub terms: Option<String>,
    /// Label.
    pub label: String,
    /// The request served.
    pub request: Option<ShareId>,
    /// Release by a one-time code valid for this long (ms) instead.
    pub code_valid_ms: Option<u64>,
    /// Who.
    pub by: String,
}

/// What creating shares produced.
#[derive(Clone, Debug, Serialize)]
pub struct Created {
    /// The shares, one per recipient (or one for a code).
    pub shares: Vec<String>,
    /// The one-time code (shown once; only its hash is kept).
    pub code: Option<String>,
    /// Objects sent now.
    pub objects: usize,
}

fn put_share(gov: &Governance, share: &OutShare) -> Result<(), GovError> {
    gov.db().put(&gov.db().out, "share", &share.id.0, share)?;
    let mut cache = gov
        .inner
        .shares
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    match cache.iter_mut().find(|s| s.id == share.id) {
        Some(s) => *s = share.clone(),
        None => cache.push(share.clone()),
    }
    Ok(())
}

/// A share of ours by id.
pub fn out_share(gov: &Governance, id: &ShareId) -> Result<OutShare, GovError> {
    gov.db()
        .get(&gov.db().out, "share", &id.0)?
        .ok_or_else(|| GovError::NotFound(format!("no share {id} given by this instance")))
}

/// An incoming share by id.
pub fn in_share(gov: &Governance, id: &ShareId) -> Result<InShare, GovError> {
    gov.db()
        .get(&gov.db().inc, "incoming share", &id.0)?
        .ok_or_else(|| GovError::NotFound(format!("no share {id} received by this instance")))
}

/// Every share given and received.
pub fn list(gov: &Governance) -> Result<(Vec<OutShare>, Vec<InShare>), GovError> {
    Ok((
        gov.db().all(&gov.db().out, "share")?,
        gov.db().all(&gov.db().inc, "incoming share")?,
    ))
}

fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn code_hash(code: &str) -> [u8; 32] {
    *blake3::hash(normalise_code(code).as_bytes()).as_bytes()
}

fn new_code() -> String {
    use rand::RngCore;
    let mut b = [0u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let s = data_encoding::BASE32_NOPAD.encode(&b);
    format!("{}-{}-{}-{}", &s[0..4], &s[4..8], &s[8..12], &s[12..16])
}

/// Creates shares (one per partner, or one released by a code).
pub async fn create(gov: &Governance, req: NewShare) -> Result<Created, GovError> {
    let _op = gov.inner.op.lock().await;
    create_locked(gov, req).await
}

pub(super) async fn create_locked(gov: &Governance, req: NewShare) -> Result<Created, GovError> {
    if req.selection.rules.is_empty() {
        return Err(GovError::Invalid(
            "a share needs at least one rule (e.g. flag:ID, kind:contact, object:ID)".into(),
        ));
    }
    if req.partners.is_empty() && req.code_valid_ms.is_none() {
        return Err(GovError::Invalid(
            "name a partner (or --children, or --code for a one-time share code)".into(),
        ));
    }
    for p in &req.partners {
        if let Err(why) = preview(gov, Some(p), &req.selection, req.access)?.check() {
            gov.audit(&req.by, "share.refused", Some(p), None, why.clone())?;
            gov.db().flush().await?;
            return Err(GovError::Refused(format!(
                "refused to share with {}: {why}",
                gov.partner_name(p)
            )));
        }
    }
    let now = gov.now_ms();
    let mut created = Created {
        shares: Vec::new(),
        code: None,
        objects: 0,
    };
    let targets: Vec<Option<OrgId>> = if req.partners.is_empty() {
        vec![None]
    } else {
        req.partners.iter().copied().map(Some).collect()
    };
    for partner in targets {
        let code = match (partner, req.code_valid_ms) {
            (None, Some(valid)) => {
                let code = new_code();
                let record = CodeRecord {
                    hash: code_hash(&code),
                    expires_ms: now.saturating_add(valid),
                    used: false,
                };
                created.code = Some(code);
                Some(record)
            }
            _ => None,
        };
        let share = OutShare {
            id: ShareId::random(),
            partner,
            selection: req.selection.clone(),
            access: req.access,
            terms: req.terms.clone(),
            terms_accepted: None,
            label: req.label.clone(),
            request: req.request,
            created_ms: now,
            processed_ms: None,
            revoked_ms: None,
            erase_acked_ms: None,
            code,
        };
        put_share(gov, &share)?;
        let rules: Vec<String> = share
            .selection
            .rules
            .iter()
            .map(|r| r.to_string())
            .collect();
        gov.audit(
            &req.by,
            "share.create",
            partner.as_ref(),
            Some(share.id.to_string()),
            format!(
                "rules [{}], access {}{}{}",
                rules.join(", "),
                share.access,
                if share.terms.is_some() {
                    ", with terms"
                } else {
                    ""
                },
                if share.code.is_some() {
                    ", released by a one-time code"
                } else {
                    ""
                }
            ),
        )?;
        if let Some(p) = partner {
            gov.send(&p, grant_of(&share))?;
            created.objects += sync_members(gov, &share).await?;
        }
        created.shares.push(share.id.to_string());
    }
    gov.db().flush().await?;
    Ok(created)
}

fn grant_of(share: &OutShare) -> ShareBody {
    ShareBody::Grant(Grant {
        share: share.id,
        access: share.access,
        terms: share.terms.clone(),
        label: share.label.clone(),
        request: share.request,
    })
}

/// Brings the members of `share` in line with its selection: entering
/// objects are re-logged whole and announced, leaving ones withdrawn.
/// Returns how many entered.
pub(super) async fn sync_members(gov: &Governance, share: &OutShare) -> Result<usize, GovError> {
    let Some(partner) = share.partner else {
        return Ok(0);
    };
    let current: BTreeSet<ObjectId> = gov.db().members(&share.id)?.into_iter().collect();
    let wanted: Vec<Object> = if share.is_flowing() {
        preview(gov, Some(&partner), &share.selection, share.access)?.selected
    } else {
        Vec::new()
    };
    let wanted_ids: BTreeSet<ObjectId> = wanted.iter().map(|o| o.id).collect();
    let entering: Vec<Entering> = wanted
        .iter()
        .filter(|o| !current.contains(&o.id))
        .map(|o| (o, None))
        .collect();
    let leaving: Vec<ObjectId> = current.difference(&wanted_ids).copied().collect();
    enter(gov, share, &partner, &entering).await?;
    if !leaving.is_empty() && share.revoked_ms.is_none() {
        for id in &leaving {
            gov.db().set_member(&share.id, id, false)?;
        }
        for chunk in leaving.chunks(MAX_IDS_PER_MESSAGE) {
            gov.send(
                &partner,
                ShareBody::Withdraw {
                    share: share.id,
                    objects: chunk.to_vec(),
                },
            )?;
        }
        gov.audit(
            DAEMON,
            "share.withdraw",
            Some(&partner),
            Some(share.id.to_string()),
            format!("{} object(s) left the selection", leaving.len()),
        )?;
    }
    Ok(entering.len())
}

/// An object entering a share, with the sequence of its own newest log
/// entry when the change that made it enter was ours (`None`: a partner's
/// copy, a share created over existing objects, a lookup rule).
pub(super) type Entering<'a> = (&'a Object, Option<u64>);

/// Makes `objects` members of `share`: announces them to the recipient,
/// then sends each whole exactly once after its announcement. An object
/// whose own log entry the engine has not yet decided on for `partner`
/// goes with that entry (the engine reads the object's current state and
/// now finds it a member: see [`shares_with`]); any other is re-logged
/// whole. Returns how many were re-logged.
async fn enter(
    gov: &Governance,
    share: &OutShare,
    partner: &OrgId,
    objects: &[Entering<'_>],
) -> Result<usize, GovError> {
    if objects.is_empty() {
        return Ok(0);
    }
    let ids: Vec<ObjectId> = objects.iter().map(|(o, _)| o.id).collect();
    let mut by_owner: std::collections::BTreeMap<OrgId, Vec<ObjectId>> = Default::default();
    for id in &ids {
        let owner = gov.provenance_of(id)?.owner;
        by_owner.entry(owner).or_default().push(*id);
    }
    // Announced before the memberships are written: whatever the engine
    // sends as a member was announced first (it sends newly queued frames
    // before each page of changes it decides on).
    for (owner, ids) in by_owner {
        for chunk in ids.chunks(MAX_IDS_PER_MESSAGE) {
            gov.send(
                partner,
                ShareBody::Objects {
                    share: share.id,
                    owner,
                    added: chunk.to_vec(),
                },
            )?;
        }
    }
    gov.db().set_members(&share.id, &ids, true)?;
    // Read after the memberships were written and under the lock the
    // engine takes before deciding (`Governance::deciding`): an entry
    // above it is decided later and sees the membership.
    let decided = gov
        .inner
        .deciding
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(partner)
        .copied()
        .unwrap_or(0);
    let whole: Vec<Change> = objects
        .iter()
        .filter(|(_, seq)| seq.is_none_or(|s| s <= decided))
        .map(|(o, _)| Change::from_object(o))
        .collect();
    for chunk in whole.chunks(SCAN_PAGE) {
        gov.store().write_changes(chunk.to_vec()).await?;
    }
    gov.audit(
        DAEMON,
        "share.deliver",
        Some(partner),
        Some(share.id.to_string()),
        format!(
            "{} object(s) sent ({} re-logged whole)",
            ids.len(),
            whole.len()
        ),
    )?;
    Ok(whole.len())
}

/// Watches committed changes and keeps every flowing share's members in
/// line with its selection.
pub(super) async fn membership_loop(
    gov: Governance,
    mut events: tokio::sync::broadcast::Receiver<crate::store::StoreEvent>,
) {
    loop {
        let received = tokio::select! {
            r = events.recv() => r,
            () = gov.inner.recheck_wanted.notified() => {
                // A pause first: a failing database would otherwise have
                // the engine and this loop spin on the same objects.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if let Err(e) = recheck(&gov).await {
                    tracing::error!(error = %e, "cannot queue objects to be decided again");
                }
                continue;
            }
        };
        let first = match received {
            Ok(e) => Some(e),
            Err(RecvError::Lagged(_)) => None,
            Err(RecvError::Closed) => return,
        };
        let mut batch = Vec::new();
        let mut full = first.is_none();
        batch.extend(first);
        loop {
            match events.try_recv() {
                Ok(e) => batch.push(e),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => full = true,
                Err(_) => break,
            }
        }
        // Read before the work: with a lagged receiver every entry up to
        // here is covered by the full pass.
        let head = gov.store().log_head();
        if let Err(e) = on_changes(&gov, &batch, full).await {
            tracing::error!(error = %e, "cannot update share membership");
        }
        let done = if full {
            head
        } else {
            batch.iter().filter_map(|e| e.seq).max().unwrap_or(0)
        };
        gov.membership_done(done);
    }
}

async fn on_changes(
    gov: &Governance,
    batch: &[crate::store::StoreEvent],
    full: bool,
) -> Result<(), GovError> {
    let _op = gov.inner.op.lock().await;
    let shares: Vec<OutShare> = gov
        .inner
        .shares
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|s| s.is_flowing())
        .cloned()
        .collect();
    if shares.is_empty() {
        return Ok(());
    }
    if full {
        for s in &shares {
            sync_members(gov, s).await?;
        }
        return gov.db().flush().await;
    }
    // One decision per object, however many of its changes the batch holds;
    // remember whether a partner's change was among them, and the newest
    // log entry of ours.
    let mut touched: std::collections::BTreeMap<ObjectId, (Option<OrgId>, Option<u64>)> =
        Default::default();
    for ev in batch {
        let (from, seq) = touched.entry(ev.id).or_default();
        if let Origin::Partner(p) = ev.origin {
            *from = Some(p);
        }
        *seq = (*seq).max(ev.seq);
    }
    let lookup = gov.lookup();
    let mut relog: Vec<Change> = Vec::new();
    for s in &shares {
        // Flowing shares always have a partner.
        let Some(partner) = s.partner else { continue };
        let mut entering = Vec::new();
        let mut leaving = Vec::new();
        for (id, (from, seq)) in &touched {
            let member = gov.db().is_member(&s.id, id)?;
            let obj = match gov.store().get(*id)? {
                Some(o) if !o.is_deleted() => o,
                _ => continue,
            };
            let selected = s.selection.selects(&obj, &lookup)
                && reshare_allowed(gov, &partner, obj.id, s.access).is_ok();
            match (member, selected) {
                // A partner's change is not in our log: re-logged whole.
                (false, true) => {
                    let seq = if from.is_some() { None } else { *seq };
                    entering.push((obj, seq));
                }
                (true, false) => leaving.push(obj.id),
                // A partner's update of a copy we pass on is not in our
                // log: re-log it so the onward recipient gets it too.
                (true, true) if from.is_some_and(|p| p != partner) => {
                    relog.push(Change::from_object(&obj))
                }
                _ => {}
            }
        }
        let refs: Vec<Entering> = entering.iter().map(|(o, seq)| (o, *seq)).collect();
        enter(gov, s, &partner, &refs).await?;
        if !leaving.is_empty() {
            for id in &leaving {
                gov.db().set_member(&s.id, id, false)?;
            }
            gov.send(
                &partner,
                ShareBody::Withdraw {
                    share: s.id,
                    objects: leaving.clone(),
                },
            )?;
            gov.audit(
                DAEMON,
                "share.withdraw",
                Some(&partner),
                Some(s.id.to_string()),
                format!("{} object(s) left the selection", leaving.len()),
            )?;
        }
    }
    if !relog.is_empty() {
        gov.store().write_changes(relog).await?;
    }
    gov.db().flush().await
}

/// Removes rules from a share (objects leaving it are withdrawn).
pub async fn remove_rules(
    gov: &Governance,
    id: &ShareId,
    rules: &[orgsync_protocol::share::Selector],
    by: &str,
) -> Result<OutShare, GovError> {
    let _op = gov.inner.op.lock().await;
    let mut share = out_share(gov, id)?;
    if rules.is_empty() {
        share.selection.rules.clear();
    } else {
        for r in rules {
            if !share.selection.rules.contains(r) {
                return Err(GovError::NotFound(format!("share {id} has no rule {r}")));
            }
        }
        share.selection.rules.retain(|r| !rules.contains(r));
    }
    put_share(gov, &share)?;
    let shown: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
    gov.audit(
        by,
        "share.remove",
        share.partner.as_ref(),
        Some(id.to_string()),
        if shown.is_empty() {
            "every rule".into()
        } else {
            format!("rules [{}]", shown.join(", "))
        },
    )?;
    sync_members(gov, &share).await?;
    gov.db().flush().await?;
    Ok(share)
}

/// Revokes a share: checks the access type's revoke rule at the current
/// governance time, stops the flow and asks the recipient to erase.
pub async fn revoke(gov: &Governance, id: &ShareId, by: &str) -> Result<OutShare, GovError> {
    let _op = gov.inner.op.lock().await;
    let mut share = out_share(gov, id)?;
    if share.revoked_ms.is_some() {
        return Err(GovError::Invalid(format!("share {id} is already revoked")));
    }
    let now = gov.now_ms();
    if let Err(e) = share.access.may_revoke(share.processed_ms, now) {
        gov.audit(
            by,
            "share.revoke-refused",
            share.partner.as_ref(),
            Some(id.to_string()),
            e.to_string(),
        )?;
        gov.db().flush().await?;
        return Err(GovError::Refused(format!("cannot revoke share {id}: {e}")));
    }
    share.revoked_ms = Some(now);
    put_share(gov, &share)?;
    let members = gov.db().members(id)?;
    for m in &members {
        gov.db().set_member(id, m, false)?;
    }
    if let Some(p) = share.partner {
        for chunk in members.chunks(MAX_IDS_PER_MESSAGE) {
            gov.send(
                &p,
                ShareBody::Erase {
                    share: *id,
                    objects: chunk.to_vec(),
                    revoked: true,
                },
            )?;
        }
        if members.is_empty() {
            gov.send(
                &p,
                ShareBody::Erase {
                    share: *id,
                    objects: Vec::new(),
                    revoked: true,
                },
            )?;
        }
    }
    gov.audit(
        by,
        "share.revoke",
        share.partner.as_ref(),
        Some(id.to_string()),
        format!("erase of {} object(s) asked", members.len()),
    )?;
    if let Some(req) = share.request {
        super::requests::owner_move(gov, &req, orgsync_protocol::share::ShareStatus::Revoked)?;
    }
    gov.db().flush().await?;
    Ok(share)
}

/// Accepts the terms of an incoming share; the owner then releases its data.
pub async fn accept_terms(gov: &Governance, id: &ShareId, by: &str) -> Result<InShare, GovError> {
    let _op = gov.inner.op.lock().await;
    let mut share = in_share(gov, id)?;
    if share.terms.is_none() {
        return Err(GovError::Invalid(format!(
            "share {id} has no terms to accept"
        )));
    }
    if share.terms_accepted.is_some() {
        return Err(GovError::Invalid(format!(
            "the terms of share {id} are already accepted"
        )));
    }
    if let Some(d) = super::declined::get(gov, id)? {
        return Err(GovError::Invalid(format!(
            "share {id} was rejected by {}: its terms can no longer be accepted",
            d.by
        )));
    }
    let now = gov.now_ms();
    share.terms_accepted = Some((by.to_string(), now));
    gov.db()
        .put(&gov.db().inc, "incoming share", &id.0, &share)?;
    gov.send(
        &share.partner,
        ShareBody::TermsAccepted {
            share: *id,
            by: by.to_string(),
            at_ms: now,
        },
    )?;
    gov.audit(
        by,
        "terms.accept",
        Some(&share.partner),
        Some(id.to_string()),
        "data-protection agreement accepted".into(),
    )?;
    gov.db().flush().await?;
    Ok(share)
}

/// Asks `partner` to release the share of a one-time code to us.
pub async fn redeem(
    gov: &Governance,
    partner: &OrgId,
    code: &str,
    by: &str,
) -> Result<(), GovError> {
    let _op = gov.inner.op.lock().await;
    if code.len() > orgsync_protocol::share::MAX_CODE_LEN {
        return Err(GovError::Invalid(
            "that is not a share code (too long)".into(),
        ));
    }
    gov.send(partner, ShareBody::Redeem { code: code.into() })?;
    gov.audit(
        by,
        "code.redeem",
        Some(partner),
        None,
        "share code sent".into(),
    )?;
    gov.db().flush().await
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

pub(super) fn on_grant(gov: &Governance, partner: OrgId, g: Grant) -> Result<(), GovError> {
    let existing: Option<InShare> = gov.db().get(&gov.db().inc, "incoming share", &g.share.0)?;
    if existing.as_ref().is_some_and(|e| e.partner != partner) {
        // Another partner's share id: taking it over would let this one
        // speak for that share (and refuse the real giver's erase).
        gov.refused(
            &partner,
            "grant",
            &Refusal::NotSendersShare { share: g.share },
        );
        return Ok(());
    }
    let share = InShare {
        id: g.share,
        partner,
        access: g.access,
        terms: g.terms,
        terms_accepted: existing.as_ref().and_then(|e| e.terms_accepted.clone()),
        label: g.label,
        request: g.request,
        expected: existing
            .as_ref()
            .map(|e| e.expected.clone())
            .unwrap_or_default(),
        received: existing.as_ref().map_or(0, |e| e.received),
        revoked_ms: None,
    };
    gov.db()
        .put(&gov.db().inc, "incoming share", &g.share.0, &share)?;
    gov.audit(
        DAEMON,
        "share.granted",
        Some(&partner),
        Some(g.share.to_string()),
        format!(
            "access {}{}",
            share.access,
            if share.terms.is_some() {
                ", terms to accept"
            } else {
                ""
            }
        ),
    )?;
    Ok(())
}

/// Records refusals of several items of one frame as one audit entry.
#[derive(Default)]
struct Refusals {
    count: usize,
    first: Option<Refusal>,
}

impl Refusals {
    fn add(&mut self, r: Refusal) {
        self.count += 1;
        self.first.get_or_insert(r);
    }

    fn report(self, gov: &Governance, partner: &OrgId, frame: &str) {
        if let Some(first) = self.first {
            let what = if self.count > 1 {
                format!("{frame} ({} item(s) refused; the first)", self.count)
            } else {
                frame.to_string()
            };
            gov.refused(partner, &what, &first);
        }
    }
}

/// The incoming share `id` as the authority rules see it.
fn in_view(gov: &Governance, id: &ShareId) -> Result<Option<InShareView>, GovError> {
    let share: Option<InShare> = gov.db().get(&gov.db().inc, "incoming share", &id.0)?;
    Ok(share.map(|s| InShareView {
        id: s.id,
        from: s.partner,
        access: s.access,
        revoked: s.revoked_ms.is_some(),
    }))
}

/// The incoming share `id`, which must be one `partner` gave us.
fn senders_share(gov: &Governance, partner: &OrgId, id: &ShareId) -> Result<InShare, Refusal> {
    match gov
        .db()
        .get::<InShare>(&gov.db().inc, "incoming share", &id.0)
    {
        Ok(Some(s)) if s.partner == *partner => Ok(s),
        _ => Err(Refusal::NotSendersShare { share: *id }),
    }
}

pub(super) async fn on_objects(
    gov: &Governance,
    partner: OrgId,
    share_id: ShareId,
    owner: OrgId,
    added: Vec<ObjectId>,
) -> Result<(), GovError> {
    let view = in_view(gov, &share_id)?;
    let us = gov.us();
    let mut accepted = Vec::new();
    let mut writes: Vec<(ObjectId, ProvRecord)> = Vec::new();
    let mut refusals = Refusals::default();
    for id in &added {
        let rec = gov.prov_record(id)?;
        let ours = gov.provenance_given(id, rec.as_ref())?;
        match authority::check_offer(*id, &us, ours.as_ref(), &partner, view.as_ref(), &owner) {
            Ok(Some(prov)) => {
                writes.push((
                    *id,
                    ProvRecord {
                        prov,
                        detached: false,
                    },
                ));
                accepted.push(*id);
            }
            Ok(None) => {
                // Offered again (it re-entered the share): updates resume.
                if let Some(mut r) = rec.filter(|r| r.detached) {
                    r.detached = false;
                    writes.push((*id, r));
                }
                accepted.push(*id);
            }
            Err(r) => refusals.add(r),
        }
    }
    // One batch for the frame: the checks above read only what was stored
    // before it, and a frame naming an id twice decides it the same twice.
    gov.set_provenances(&writes)?;
    refusals.report(gov, &partner, "objects");
    if accepted.is_empty() {
        return Ok(());
    }
    // Keys, not a list inside the share record: an announcement of up to
    // 4,096 ids writes those, not every id announced so far.
    in_share(gov, &share_id)?;
    super::expected::expect_within_cap(gov, &partner, &share_id, &accepted)?;
    // The data may have arrived before this announcement: wake the loop
    // that reports arrived shares now rather than at its 30 s safety net
    // (the owner's request status moves to processed on that report).
    gov.inner.batch_applied.notify_one();
    super::inbox::on_offered(gov, &partner, &accepted).await
}

/// Erases the local copies of `objects` that came from `partner` under
/// `share`: purges them (and their inbox entries), forgets where they came
/// from and unlinks them from local objects (which are ours and stay).
/// Anything else named is refused. Returns the ids erased.
async fn erase_copies(
    gov: &Governance,
    partner: &OrgId,
    share: &ShareId,
    objects: &[ObjectId],
    refusals: &mut Refusals,
) -> Result<Vec<ObjectId>, GovError> {
    let inbox = gov.store().inbox(partner)?;
    let mut allowed = Vec::new();
    for id in objects {
        let prov = gov.provenance(id)?;
        if let Err(r) = authority::check_withdraw(*id, prov.as_ref(), partner, share) {
            refusals.add(r);
            continue;
        }
        allowed.push(*id);
    }
    for (seq, c) in &inbox {
        if allowed.contains(&c.id) {
            gov.store().remove_from_inbox(partner, *seq).await?;
        }
    }
    gov.store().purge(&allowed).await?;
    for id in &allowed {
        let decision: Option<Decision> = gov.db().get(&gov.db().decision, "decision", &id.0)?;
        if let Some(Decision::Linked(local)) = decision {
            let mut links = gov.links(&local)?;
            links.retain(|l| l.remote != *id);
            gov.set_links(&local, &links)?;
        }
        gov.forget_provenance(id)?;
        gov.db().remove(&gov.db().decision, &id.0)?;
    }
    Ok(allowed)
}

/// The giver took objects out of its share (unshare): what still waits in
/// the inbox goes; approved copies stay, no longer updated.
pub(super) async fn on_withdraw(
    gov: &Governance,
    partner: OrgId,
    share: ShareId,
    objects: Vec<ObjectId>,
) -> Result<(), GovError> {
    if let Err(r) = senders_share(gov, &partner, &share) {
        gov.refused(&partner, "withdraw", &r);
        return Ok(());
    }
    let mut refusals = Refusals::default();
    let mut allowed = Vec::new();
    for id in &objects {
        let prov = gov.provenance(id)?;
        match authority::check_withdraw(*id, prov.as_ref(), &partner, &share) {
            Ok(()) => allowed.push(*id),
            Err(r) => refusals.add(r),
        }
    }
    refusals.report(gov, &partner, "withdraw");
    let mut dropped = 0;
    for (seq, c) in gov.store().inbox(&partner)? {
        if allowed.contains(&c.id) {
            gov.store().remove_from_inbox(&partner, seq).await?;
            dropped += 1;
        }
    }
    let mut kept = 0;
    for id in &allowed {
        let Some(mut rec) = gov.prov_record(id)? else {
            continue;
        };
        if gov.store().get(*id)?.is_some() {
            rec.detached = true;
            gov.set_provenance(id, &rec)?;
            kept += 1;
        } else {
            // Never approved: nothing of it stays here.
            gov.forget_provenance(id)?;
        }
    }
    gov.audit(
        DAEMON,
        "share.withdrawn",
        Some(&partner),
        Some(share.to_string()),
        format!(
            "{} object(s) left the partner's selection: {dropped} waiting item(s) dropped, \
             {kept} approved copy(ies) kept, no longer updated",
            allowed.len()
        ),
    )?;
    Ok(())
}

pub(super) async fn on_erase(
    gov: &Governance,
    partner: OrgId,
    share_id: ShareId,
    objects: Vec<ObjectId>,
    revoked: bool,
) -> Result<(), GovError> {
    let mut s = match senders_share(gov, &partner, &share_id) {
        Ok(s) => s,
        Err(r) => {
            gov.refused(&partner, "erase", &r);
            return Ok(());
        }
    };
    let mut named = objects.clone();
    if revoked {
        s.revoked_ms.get_or_insert(gov.now_ms());
        gov.db()
            .put(&gov.db().inc, "incoming share", &share_id.0, &s)?;
    }
    // A revoked share takes every copy received under it, also those the
    // giver no longer counts as members (withdrawn earlier, kept here).
    for kv in gov.db().prov.iter().filter(|_| revoked) {
        let (k, v) = kv.map_err(|source| GovError::Db {
            op: "scan provenance",
            source,
        })?;
        let rec: ProvRecord = super::db::decode("provenance", &v)?;
        if let (Ok(id), true) = (
            <[u8; 16]>::try_from(k.as_ref()),
            rec.prov.is_from_share(&partner, &share_id),
        ) {
            if !named.contains(&ObjectId(id)) {
                named.push(ObjectId(id));
            }
        }
    }
    let mut refusals = Refusals::default();
    let erased_ids = erase_copies(gov, &partner, &share_id, &named, &mut refusals).await?;
    refusals.report(gov, &partner, "erase");
    let erased = erased_ids.len() as u64;
    // Pass the erase on to whoever we re-shared these copies to.
    let onward: Vec<OutShare> = gov
        .inner
        .shares
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut waiting = Vec::new();
    for s in onward {
        let Some(to) = s.partner else { continue };
        let mut ids = Vec::new();
        for id in &erased_ids {
            if gov.db().is_member(&s.id, id)? {
                gov.db().set_member(&s.id, id, false)?;
                ids.push(*id);
            }
        }
        if ids.is_empty() {
            continue;
        }
        gov.send(
            &to,
            ShareBody::Erase {
                share: s.id,
                objects: ids.clone(),
                // Our share to them stays; only these copies go.
                revoked: false,
            },
        )?;
        gov.audit(
            DAEMON,
            "erase.forward",
            Some(&to),
            Some(s.id.to_string()),
            format!(
                "{} re-shared object(s) to erase (origin share {share_id})",
                ids.len()
            ),
        )?;
        waiting.push(s.id);
    }
    gov.audit(
        DAEMON,
        "erase.done",
        Some(&partner),
        Some(share_id.to_string()),
        format!(
            "{erased} copy(ies) erased, {} onward erase(s) pending",
            waiting.len()
        ),
    )?;
    if waiting.is_empty() {
        gov.send(
            &partner,
            ShareBody::EraseAck {
                share: share_id,
                erased,
                onward: 0,
            },
        )?;
    } else {
        let pending = PendingErase {
            origin_partner: partner,
            origin_share: share_id,
            erased,
            waiting,
            onward: 0,
        };
        gov.db()
            .put(&gov.db().erase, "pending erase", &share_id.0, &pending)?;
    }
    Ok(())
}

/// Our share `id`, which must have been given to `partner` (replies about
/// a share count only from its recipient).
fn recipients_share(gov: &Governance, partner: &OrgId, id: &ShareId) -> Result<OutShare, Refusal> {
    let share: Option<OutShare> = gov.db().get(&gov.db().out, "share", &id.0).ok().flatten();
    authority::check_share_reply(id, share.as_ref().and_then(|s| s.partner.as_ref()), partner)?;
    // check_share_reply succeeds only when the share exists.
    share.ok_or(Refusal::NotRecipient { share: *id })
}

pub(super) fn on_erase_ack(
    gov: &Governance,
    partner: OrgId,
    share_id: ShareId,
    erased: u64,
    onward: u64,
) -> Result<(), GovError> {
    let mut s = match recipients_share(gov, &partner, &share_id) {
        Ok(s) => s,
        Err(r) => {
            gov.refused(&partner, "erase-ack", &r);
            return Ok(());
        }
    };
    // Acknowledges either our revocation or an erase we passed on under
    // this (still live) share; anything else was never asked.
    let pendings: Vec<PendingErase> = gov.db().all(&gov.db().erase, "pending erase")?;
    let forwarded = pendings.iter().any(|p| p.waiting.contains(&share_id));
    if s.revoked_ms.is_none() && !forwarded {
        gov.refused(
            &partner,
            "erase-ack",
            &Refusal::NotRecipient { share: share_id },
        );
        return Ok(());
    }
    if s.revoked_ms.is_some() {
        s.erase_acked_ms = Some(gov.now_ms());
        put_share(gov, &s)?;
    }
    gov.audit(
        DAEMON,
        "erase.acked",
        Some(&partner),
        Some(share_id.to_string()),
        format!("partner erased {erased} copy(ies); {onward} onward erase(s) acknowledged"),
    )?;
    // An onward erase we were waiting for on behalf of an origin?
    for mut p in pendings {
        if !p.waiting.contains(&share_id) {
            continue;
        }
        p.waiting.retain(|s| *s != share_id);
        p.onward += 1 + onward;
        if p.waiting.is_empty() {
            gov.send(
                &p.origin_partner,
                ShareBody::EraseAck {
                    share: p.origin_share,
                    erased: p.erased,
                    onward: p.onward,
                },
            )?;
            gov.db().remove(&gov.db().erase, &p.origin_share.0)?;
        } else {
            gov.db()
                .put(&gov.db().erase, "pending erase", &p.origin_share.0, &p)?;
        }
    }
    Ok(())
}

/// Longest partner-claimed name kept, in characters.
pub const MAX_CLAIM_CHARS: usize = 64;

/// A name a partner claims, made safe to store and show: control and
/// bidirectional-override characters removed, whitespace trimmed, at most
/// [`MAX_CLAIM_CHARS`] characters (an ellipsis marks a cut), `(empty)` when
/// nothing is left.
pub fn sanitize_claim(claim: &str) -> String {
    let cleaned: String = claim
        .chars()
        .filter(|c| {
            !c.is_control() && !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    let cleaned = cleaned.trim();
    let mut out: String = cleaned.chars().take(MAX_CLAIM_CHARS).collect();
    if cleaned.chars().count() > MAX_CLAIM_CHARS {
        out.push('…');
    }
    if out.is_empty() {
        out.push_str("(empty)");
    }
    out
}

pub(super) async fn on_terms_accepted(
    gov: &Governance,
    partner: OrgId,
    share_id: ShareId,
    by: String,
    at_ms: u64,
) -> Result<(), GovError> {
    let mut share = match recipients_share(gov, &partner, &share_id) {
        Ok(s) => s,
        Err(r) => {
            gov.refused(&partner, "terms-accepted", &r);
            return Ok(());
        }
    };
    // `by` is what the partner says: recorded as its claim (sanitised, in
    // its own field), never as a local actor. The actor is the partner.
    let claimed = sanitize_claim(&by);
    share.terms_accepted = Some((format!("{claimed} (the partner's claim)"), at_ms));
    put_share(gov, &share)?;
    gov.audit_claim(
        &format!("partner:{}", partner.account_number()),
        "terms.accepted",
        Some(&partner),
        Some(share_id.to_string()),
        format!(
            "the partner accepted the data-protection agreement (accepted by {claimed:?}, the \
             partner's claim); data released"
        ),
        Some(claimed),
    )?;
    sync_members(gov, &share).await?;
    Ok(())
}

pub(super) fn on_received(
    gov: &Governance,
    partner: OrgId,
    share_id: ShareId,
    objects: u64,
) -> Result<(), GovError> {
    let mut share = match recipients_share(gov, &partner, &share_id) {
        Ok(s) => s,
        Err(r) => {
            gov.refused(&partner, "received", &r);
            return Ok(());
        }
    };
    if share.processed_ms.is_none() {
        share.processed_ms = Some(gov.now_ms());
        put_share(gov, &share)?;
    }
    gov.audit(
        DAEMON,
        "share.received",
        Some(&partner),
        Some(share_id.to_string()),
        format!("the partner has received {objects} object(s)"),
    )?;
    if let Some(req) = share.request {
        super::requests::owner_move(gov, &req, orgsync_protocol::share::ShareStatus::Processed)?;
    }
    Ok(())
}

pub(super) async fn on_redeem(
    gov: &Governance,
    partner: OrgId,
    code: String,
) -> Result<(), GovError> {
    let hash = code_hash(&code);
    let now = gov.now_ms();
    let shares: Vec<OutShare> = gov.db().all(&gov.db().out, "share")?;
    // Compare against every code share in constant time; pick a match.
    let mut found: Option<OutShare> = None;
    for s in shares {
        if let Some(c) = &s.code {
            if bool::from(c.hash.ct_eq(&hash)) {
                found = Some(s);
            }
        }
    }
    let refuse = |reason: &str| -> Result<(), GovError> {
        gov.send(
            &partner,
            ShareBody::Refused {
                reason: reason.into(),
            },
        )?;
        gov.audit(DAEMON, "code.refused", Some(&partner), None, reason.into())?;
        Ok(())
    };
    let Some(mut share) = found else {
        return refuse("unknown share code");
    };
    let Some(code) = share.code.clone() else {
        return refuse("unknown share code");
    };
    if code.used {
        return refuse("this share code was already used");
    }
    if now >= code.expires_ms {
        return refuse("this share code has expired");
    }
    if share.revoked_ms.is_some() {
        return refuse("the share of this code is revoked");
    }
    share.code = Some(CodeRecord { used: true, ..code });
    share.partner = Some(partner);
    put_share(gov, &share)?;
    gov.audit(
        DAEMON,
        "code.redeemed",
        Some(&partner),
        Some(share.id.to_string()),
        "one-time share code used; share bound to this partner".into(),
    )?;
    gov.send(&partner, grant_of(&share))?;
    sync_members(gov, &share).await?;
    Ok(())
}

/// The recipient side: reports to owners the shares whose announced
/// objects have all arrived (in the inbox or applied). Arrived objects are
/// forgotten as they come, in id order up to the first still missing, so
/// each is looked at about once however often this runs.
pub(super) async fn report_received(gov: &Governance) -> Result<(), GovError> {
    let shares: Vec<InShare> = gov.db().all(&gov.db().inc, "incoming share")?;
    for mut s in shares {
        if s.revoked_ms.is_some() {
            continue;
        }
        if !s.expected.is_empty() {
            // Stored by an earlier version inside the record: move to keys.
            gov.db().expect(&s.id, &s.expected)?;
            s.expected.clear();
            gov.db().put(&gov.db().inc, "incoming share", &s.id.0, &s)?;
        }
        let mut inbox: Option<BTreeSet<ObjectId>> = None;
        let mut here = Vec::new();
        // Stays true only if every expected id is here.
        let mut all_here = true;
        for id in gov.db().expected_iter(&s.id) {
            let id = &id?;
            if gov.store().contains(*id)? {
                here.push(*id);
                continue;
            }
            let decided: Option<Decision> = gov.db().get(&gov.db().decision, "decision", &id.0)?;
            if decided.is_some() {
                here.push(*id);
                continue;
            }
            // Read once, and only when something is not applied.
            if inbox.is_none() {
                inbox = Some(
                    gov.store()
                        .inbox(&s.partner)?
                        .into_iter()
                        .map(|(_, c)| c.id)
                        .collect(),
                );
            }
            if inbox.as_ref().is_some_and(|i| i.contains(id)) {
                here.push(*id);
                continue;
            }
            all_here = false;
            break;
        }
        if here.is_empty() {
            continue;
        }
        gov.db().arrived(&s.id, &here)?;
        super::expected::forget(gov, &s.id, here.len());
        s.received += here.len() as u64;
        gov.db().put(&gov.db().inc, "incoming share", &s.id.0, &s)?;
        if !all_here {
            continue;
        }
        gov.send(
            &s.partner,
            ShareBody::Received {
                share: s.id,
                objects: s.received,
            },
        )?;
        gov.audit(
            DAEMON,
            "share.arrived",
            Some(&s.partner),
            Some(s.id.to_string()),
            format!("{} object(s) received in total", s.received),
        )?;
    }
    Ok(())
}
