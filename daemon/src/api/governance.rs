//! Routes of sharing governance (see [`crate::governance`]).
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/shares` | `{"given": [..], "received": [..]}` |
//! | `POST /v1/shares` | `{partner?, children?, rules, access?, terms?, label?, code_valid_secs?, by?}` |
//! | `POST /v1/shares/{id}/remove` | `{rules, by?}`: rules removed (all when empty); leaving objects withdrawn |
//! | `POST /v1/shares/{id}/revoke` | `{by?}`: stop and erase (access-type rules apply) |
//! | `POST /v1/shares/{id}/accept-terms` | `{by?}`: accept a received share's terms |
//! | `POST /v1/shares/{id}/reject` | `{by?}`: reject a received share (what it sends is dropped) |
//! | `POST /v1/shares/redeem` | `{partner, code, by?}` |
//! | `GET /v1/inbox?partner=` | `{"items": [..]}` |
//! | `POST /v1/inbox/decide` | `{ids, all_from?, action: approve/reject, link?, flag?, by?}` |
//! | `POST /v1/inbox/policy` | `{partner, mode: auto/manual, by?}` |
//! | `GET /v1/governance/partners` | settings of every partner |
//! | `POST /v1/governance/partners` | `{partner, subcontractor?, child?, mirror?, map?, by?}` |
//! | `GET /v1/governance/pending` | peers refused at the handshake, not dismissed |
//! | `POST /v1/governance/pending/accept` | `{fingerprint, bundle, by?}`: pair after the check |
//! | `POST /v1/governance/pending/dismiss` | `{fingerprint, by?}` |
//! | `GET /v1/requests` | `{"requests": [..]}` |
//! | `POST /v1/requests` | `{partner, want, suggest?, note?, by?}` |
//! | `POST /v1/requests/{id}/preview` | `{level, access}` → `{"objects": [..]}` |
//! | `POST /v1/requests/{id}/approve` | `{level, access, terms?, by?}` |
//! | `POST /v1/requests/{id}/reject` | `{reason?, by?}` |
//! | `GET /v1/audit?partner=&since=` | `{"entries": [..]}` (since: Unix ms) |
//! | `GET /v1/received?partner=&share=` | `{"objects": [..]}`: received copies, for export |

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json as AxJson, Router};
use orgsync_protocol::model::{ObjectId, OrgId};
use orgsync_protocol::share::{AccessType, Selection, Selector, ShareId, TransferLevel};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::{ApiResult, ApiState, Failure, JsonBody};
use crate::governance::audit::AuditFilter;
use crate::governance::db::{InShare, OutShare, RequestRecord, RequestRole};
use crate::governance::inbox::{self, Action};
use crate::governance::shares::{self, NewShare};
use crate::governance::{declined, pending, requests, GovError, Governance};
use crate::json::object_to_json;

/// The governance routes (merged into [`super::router`]).
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/shares", get(list_shares).post(create_share))
        .route("/v1/shares/redeem", post(redeem))
        .route("/v1/shares/:id/remove", post(remove_rules))
        .route("/v1/shares/:id/revoke", post(revoke))
        .route("/v1/shares/:id/accept-terms", post(accept_terms))
        .route("/v1/shares/:id/reject", post(reject_received))
        .route("/v1/inbox", get(list_inbox))
        .route("/v1/inbox/decide", post(decide))
        .route("/v1/inbox/policy", post(inbox_policy))
        .route(
            "/v1/governance/partners",
            get(partner_settings).post(set_partner),
        )
        .route("/v1/governance/pending", get(pending_list))
        .route("/v1/governance/pending/accept", post(pending_accept))
        .route("/v1/governance/pending/dismiss", post(pending_dismiss))
        .route("/v1/requests", get(list_requests).post(send_request))
        .route("/v1/requests/:id/preview", post(preview_request))
        .route("/v1/requests/:id/approve", post(approve_request))
        .route("/v1/requests/:id/reject", post(reject_request))
        .route("/v1/audit", get(audit))
        .route("/v1/received", get(received))
}

impl From<GovError> for Failure {
    fn from(e: GovError) -> Self {
        let status = match &e {
            GovError::NotFound(_) => StatusCode::NOT_FOUND,
            GovError::Invalid(_) => StatusCode::BAD_REQUEST,
            GovError::Refused(_) => StatusCode::FORBIDDEN,
            _ => return Failure::internal(e.to_string()),
        };
        Failure {
            status,
            message: e.to_string(),
            field: None,
        }
    }
}

fn bad(message: impl Into<String>, field: &str) -> Failure {
    Failure {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
        field: Some(field.into()),
    }
}

fn gov(st: &ApiState) -> ApiResult<&Governance> {
    st.governance
        .as_ref()
        .ok_or_else(|| Failure::not_found("sharing governance is not enabled in this daemon"))
}

fn by(b: &Option<String>) -> String {
    b.clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "admin".into())
}

fn share_id(s: &str) -> ApiResult<ShareId> {
    s.parse()
        .map_err(|e: orgsync_protocol::share::ShareIdError| bad(e.to_string(), "id"))
}

fn object_id(field: &str, s: &str) -> ApiResult<ObjectId> {
    s.parse()
        .map_err(|e: orgsync_protocol::model::IdParseError| bad(e.to_string(), field))
}

fn selection(rules: &[String]) -> ApiResult<Selection> {
    let rules = rules
        .iter()
        .map(|r| {
            r.parse::<Selector>()
                .map_err(|e| bad(e.to_string(), "rules"))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Selection { rules })
}

fn access(s: &Option<String>) -> ApiResult<AccessType> {
    match s {
        None => Ok(AccessType::OnLoan),
        Some(s) => s
            .parse()
            .map_err(|e: orgsync_protocol::share::UnknownAccessType| bad(e.to_string(), "access")),
    }
}

fn level(s: &str) -> ApiResult<TransferLevel> {
    s.parse()
        .map_err(|e: orgsync_protocol::share::SelectorError| bad(e.to_string(), "level"))
}

fn who(g: &Governance, org: &Option<OrgId>) -> Json {
    match org {
        Some(o) => json!({"account": o.account_number(), "name": g.partner_name(o)}),
        None => Json::Null,
    }
}

fn accepted(a: &Option<(String, u64)>) -> Json {
    match a {
        Some((by, at)) => json!({"by": by, "at_ms": at}),
        None => Json::Null,
    }
}

fn out_json(g: &Governance, s: &OutShare) -> Json {
    let members = g.db().members(&s.id).map(|m| m.len()).unwrap_or(0);
    json!({
        "id": s.id.to_string(),
        "partner": who(g, &s.partner),
        "rules": s.selection.rules.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "access": s.access.as_str(),
        "terms": s.terms,
        "terms_accepted": accepted(&s.terms_accepted),
        "label": s.label,
        "request": s.request.map(|r| r.to_string()),
        "created_ms": s.created_ms,
        "processed_ms": s.processed_ms,
        "revoked_ms": s.revoked_ms,
        "erase_acked_ms": s.erase_acked_ms,
        "code": s.code.as_ref().map(|c| json!({"expires_ms": c.expires_ms, "used": c.used})),
        "flowing": s.is_flowing(),
        "objects": members,
    })
}

fn in_json(g: &Governance, s: &InShare) -> Json {
    json!({
        "id": s.id.to_string(),
        "partner": who(g, &Some(s.partner)),
        "access": s.access.as_str(),
        "terms": s.terms,
        "terms_accepted": accepted(&s.terms_accepted),
        "label": s.label,
        "request": s.request.map(|r| r.to_string()),
        "received": s.received,
        "revoked_ms": s.revoked_ms,
        "rejected": declined::get(g, &s.id).ok().flatten().map(|d| json!({"by": d.by, "at_ms": d.at_ms})),
    })
}

async fn list_shares(State(st): State<ApiState>) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let (given, received) = shares::list(g)?;
    Ok(AxJson(json!({
        "given": given.iter().map(|s| out_json(g, s)).collect::<Vec<_>>(),
        "received": received.iter().map(|s| in_json(g, s)).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    partner: Option<String>,
    #[serde(default)]
    children: bool,
    rules: Vec<String>,
    access: Option<String>,
    terms: Option<String>,
    label: Option<String>,
    code_valid_secs: Option<u64>,
    by: Option<String>,
}

async fn create_share(
    State(st): State<ApiState>,
    JsonBody(b): JsonBody<CreateBody>,
) -> ApiResult<(StatusCode, AxJson<Json>)> {
    let g = gov(&st)?;
    let mut partners = Vec::new();
    if let Some(p) = &b.partner {
        partners.push(g.resolve_partner(p)?);
    }
    if b.children {
        let children: Vec<OrgId> = g
            .all_settings()
            .into_iter()
            .filter(|(_, _, s)| s.child)
            .map(|(o, _, _)| o)
            .collect();
        if children.is_empty() {
            return Err(bad(
                "no partner is marked as a child account (orgsync partner set P --child)",
                "children",
            ));
        }
        for c in children {
            if !partners.contains(&c) {
                partners.push(c);
            }
        }
    }
    if b.code_valid_secs.is_some() && !partners.is_empty() {
        return Err(bad(
            "a share code releases a share to whoever redeems it: give no partner",
            "code_valid_secs",
        ));
    }
    let created = shares::create(
        g,
        NewShare {
            partners,
            selection: selection(&b.rules)?,
            access: access(&b.access)?,
            terms: b.terms.clone(),
            label: b.label.clone().unwrap_or_default(),
            request: None,
            code_valid_ms: b.code_valid_secs.map(|s| s.saturating_mul(1000)),
            by: by(&b.by),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, AxJson(json!(created))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesBody {
    #[serde(default)]
    rules: Vec<String>,
    by: Option<String>,
}

async fn remove_rules(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    JsonBody(b): JsonBody<RulesBody>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let sel = selection(&b.rules)?;
    let s = shares::remove_rules(g, &share_id(&id)?, &sel.rules, &by(&b.by)).await?;
    Ok(AxJson(out_json(g, &s)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByBody {
    by: Option<String>,
}

async fn revoke(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    JsonBody(b): JsonBody<ByBody>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let s = shares::revoke(g, &share_id(&id)?, &by(&b.by)).await?;
    Ok(AxJson(out_json(g, &s)))
}

async fn accept_terms(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    JsonBody(b): JsonBody<ByBody>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let s = shares::accept_terms(g, &share_id(&id)?, &by(&b.by)).await?;
    Ok(AxJson(in_json(g, &s)))
}

async fn reject_received(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    JsonBody(b): JsonBody<ByBody>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let s = declined::reject(g, &share_id(&id)?, &by(&b.by)).await?;
    Ok(AxJson(in_json(g, &s)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemBody {
    partner: String,
    code: String,
    by: Option<String>,
}

async fn redeem(
    State(st): State<ApiState>,
    JsonBody(b): JsonBody<RedeemBody>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let p = g.resolve_partner(&b.partner)?;
    shares::redeem(g, &p, &b.code, &by(&b.by)).await?;
    Ok(AxJson(json!({"sent": true})))
}

fn partner_filter(g: &Governance, q: &HashMap<String, String>) -> ApiResult<Option<OrgId>> {
    match q.get("partner") {
        Some(p) if !p.is_empty() => Ok(Some(g.resolve_partner(p)?)),
        _ => Ok(None),
    }
}

async fn list_inbox(
    State(st): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let p = partner_filter(g, &q)?;
    let items: Vec<Json> = inbox::list(g, p.as_ref())?
        .into_iter()
        .map(|i| {
            json!({
                "id": i.id.to_string(),
                "partner": who(g, &Some(i.partner)),
                "kind": i.kind.as_str(),
                "share": i.share,
                "object": object_to_json(&i.object),
                "changes": i.seqs.len(),
            })
        })
        .collect();
    Ok(AxJson(json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    #[serde(default)]
    ids: Vec<String>,
    all_from: Option<String>,
    action: String,
    link: Option<String>,
    flag: Option<String>,
    by: Option<String>,
}

async fn decide(
    State(st): State<ApiState>,
    JsonBody(b): JsonBody<DecideBody>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let mut ids = b
        .ids
        .iter()
        .map(|i| object_id("ids", i))
        .collect::<ApiResult<Vec<_>>>()?;
    if let Some(p) = &b.all_from {
        let p = g.resolve_partner(p)?;
        ids.extend(inbox::list(g, Some(&p))?.into_iter().map(|i| i.id));
    }
    if ids.is_empty() {
        return Err(bad("nothing to decide: give ids or all_from", "ids"));
    }
    let action = match (b.action.as_str(), &b.link) {
        ("approve", Some(l)) => Action::Link(object_id("link", l)?),
        ("approve", None) => Action::AsNew,
        ("reject", None) => Action::Reject,
        ("reject", Some(_)) => return Err(bad("a rejection links nothing", "link")),
        (other, _) => {
            return Err(bad(
                format!("unknown action {other:?} (approve or reject)"),
                "action",
            ))
        }
    };
    let flag = b
        .flag
        .as_deref()
        .map(|f| object_id("flag", f))
        .transpose()?;
    let n = inbox::decide(g, &ids, action, flag, &by(&b.by)).await?;
    Ok(AxJson(json!({ "decided": n })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    partner: String,
    mode: String,
    by: Option<String>,
}

async fn inbox_policy(
    State(st): State<ApiState>,
    JsonBody(b): JsonBody<PolicyBody>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let p = g.resolve_partner(&b.partner)?;
    let auto = match b.mode.as_str() {
        "auto" => true,
        "manual" => false,
        other => {
            return Err(bad(
                format!("unknown mode {other:?} (auto or manual)"),
                "mode",
            ))
        }
    };
    inbox::set_auto(g, &p, auto, &by(&b.by)).await?;
    Ok(AxJson(json!({"partner": who(g, &Some(p)), "mode": b.mode})))
}

async fn partner_settings(State(st): State<ApiState>) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let partners: Vec<Json> = g
        .all_settings()
        .into_iter()
        .map(|(org, name, s)| {
            json!({
                "account": org.account_number(),
                "name": name,
                "inbox": if s.auto_approve { "auto" } else { "manual" },
                "subcontractor": s.subcontractor,
                "child": s.child,
                "mirror": s.mirror_state(),
                "field_map": s.field_map,
            })
        })
        .collect();
    Ok(AxJson(json!({ "partners": partners })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartnerBody {
    partner: String,
    subcontractor: Option<bool>,
    child: Option<bool>,
    mirror: Option<bool>,
    #[serde(default)]
    map: BTreeMap<String, String>,
    by: Option<String>,
}

async fn set_partner(
    State(st): State<ApiState>,
    JsonBody(b): JsonBody<PartnerBody>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let p = g.resolve_partner(&b.partner)?;
    let mut what = Vec::new();
    if let Some(v) = b.subcontractor {
        what.push(format!("subcontractor={v}"));
    }
    if let Some(v) = b.child {
        what.push(format!("child={v}"));
    }
    for (from, to) in &b.map {
        what.push(format!("custom.{from} -> custom.{to}"));
    }
    let s = g
        .update_settings(&p, &by(&b.by), &what.join(", "), |s| {
            if let Some(v) = b.subcontractor {
                s.subcontractor = v;
            }
            if let Some(v) = b.child {
                s.child = v;
            }
            s.field_map.extend(b.map.clone());
        })
        .await?;
    let s = match b.mirror {
        Some(on) => {
            crate::governance::mirror::set(g, &p, on, &by(&b.by)).await?;
            g.all_settings()
                .into_iter()
                .find(|(org, _, _)| *org == p)
                .map(|(_, _, s)| s)
                .unwrap_or(s)
        }
        None => s,
    };
    Ok(AxJson(json!({
        "subcontractor": s.subcontractor,
        "child": s.child,
        "mirror": s.mirror_state(),
        "field_map": s.field_map,
    })))
}

fn request_json(g: &Governance, r: &RequestRecord) -> Json {
    json!({
        "id": r.id.to_string(),
        "partner": who(g, &Some(r.partner)),
        "role": match r.role { RequestRole::Requester => "requester", RequestRole::Owner => "owner" },
        "status": r.status.as_str(),
        "wants": r.wants.rules.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        "suggested": r.suggested.as_ref().map(|l| l.to_string()),
        "note": r.note,
        "level": r.level.as_ref().map(|l| l.to_string()),
        "access": r.access.map(|a| a.as_str()),
        "share": r.share.map(|s| s.to_string()),
        "reason": r.reason,
        "history": r.history.iter().map(|(s, at)| json!({"status": s.as_str(), "at_ms": at})).collect::<Vec<_>>(),
    })
}

async fn list_requests(State(st): State<ApiState>) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let all: Vec<Json> = requests::list(g)?
        .iter()
        .map(|r| request_json(g, r))
        .collect();
    Ok(AxJson(json!({ "requests": all })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    partner: String,
    want: Vec<String>,
    suggest: Option<String>,
    #[serde(default)]
    note: String,
    by: Option<String>,
}

async fn send_request(
    State(st): State<ApiState>,
    JsonBody(b): JsonBody<RequestBody>,
) -> ApiResult<(StatusCode, AxJson<Json>)> {
    let g = gov(&st)?;
    let p = g.resolve_partner(&b.partner)?;
    let suggested = b.suggest.as_deref().map(level).transpose()?;
    let r = requests::send(
        g,
        &p,
        selection(&b.want)?,
        suggested,
        b.note.clone(),
        &by(&b.by),
    )
    .await?;
    Ok((StatusCode::CREATED, AxJson(request_json(g, &r))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelBody {
    level: String,
    access: Option<String>,
    terms: Option<String>,
    by: Option<String>,
}

async fn preview_request(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    JsonBody(b): JsonBody<LevelBody>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let ids = requests::preview(g, &share_id(&id)?, &level(&b.level)?, access(&b.access)?)?;
    let mut objects = Vec::new();
    for i in ids {
        if let Some(o) = g.store().get(i)? {
            objects.push(object_to_json(&o));
        }
    }
    Ok(AxJson(json!({ "objects": objects })))
}

async fn approve_request(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    JsonBody(b): JsonBody<LevelBody>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let r = requests::approve(
        g,
        &share_id(&id)?,
        level(&b.level)?,
        access(&b.access)?,
        b.terms.clone(),
        &by(&b.by),
    )
    .await?;
    Ok(AxJson(request_json(g, &r)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: Option<String>,
    by: Option<String>,
}

async fn reject_request(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    JsonBody(b): JsonBody<RejectBody>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let r = requests::reject(
        g,
        &share_id(&id)?,
        b.reason.clone().unwrap_or_default(),
        &by(&b.by),
    )
    .await?;
    Ok(AxJson(request_json(g, &r)))
}

async fn audit(
    State(st): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let since_ms = match q.get("since") {
        Some(s) if !s.is_empty() => Some(
            s.parse::<u64>()
                .map_err(|_| bad("since is Unix milliseconds", "since"))?,
        ),
        _ => None,
    };
    let filter = AuditFilter {
        partner: partner_filter(g, &q)?,
        since_ms,
    };
    Ok(AxJson(json!({ "entries": g.audit_log(&filter)? })))
}

async fn received(
    State(st): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let partner = partner_filter(g, &q)?;
    let share = q
        .get("share")
        .filter(|s| !s.is_empty())
        .map(|s| share_id(s))
        .transpose()?;
    let objects: Vec<Json> = crate::export::received(g, partner, share)?
        .iter()
        .map(|r| object_to_json(&r.object))
        .collect();
    Ok(AxJson(json!({ "objects": objects })))
}

async fn pending_list(State(st): State<ApiState>) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let list: Vec<Json> = pending::list(g)?
        .iter()
        .map(super::handlers::pending_json)
        .collect();
    Ok(AxJson(json!({ "pending": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    fingerprint: String,
    bundle: String,
    by: Option<String>,
}

async fn pending_accept(
    State(st): State<ApiState>,
    JsonBody(b): JsonBody<AcceptBody>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    let name = pending::accept(g, &b.fingerprint, &b.bundle, &by(&b.by)).await?;
    Ok(AxJson(json!({ "paired": name })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DismissBody {
    fingerprint: String,
    by: Option<String>,
}

async fn pending_dismiss(
    State(st): State<ApiState>,
    JsonBody(b): JsonBody<DismissBody>,
) -> ApiResult<AxJson<Json>> {
    let g = gov(&st)?;
    pending::dismiss(g, &b.fingerprint, &by(&b.by)).await?;
    Ok(AxJson(json!({ "dismissed": b.fingerprint })))
}
