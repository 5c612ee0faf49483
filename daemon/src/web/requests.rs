//! The Requests page: share requests sent to partners and received from
//! them, with their statuses and history; a new request; for a received
//! request, the evaluation: a level, a preview of exactly what that level
//! sends (each record with its fields), an access type, then approve or
//! reject.
//!
//! Every change goes through the same governance functions as `orgsync
//! request send/preview/approve/reject` (`crate::governance::requests`),
//! with the signed-in account as the actor in the audit log. Viewers see
//! the lists, the history and previews, but no form; their POSTs are
//! refused 403 by [`super::pages::admin_post`].

// Guards return the refusal page itself as the error (see pages.rs).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use orgsync_protocol::model::ObjectId;
use orgsync_protocol::share::{
    AccessType, Selection, Selector, ShareStatus, TransferLevel, MAX_NOTE_LEN, MAX_TERMS_LEN,
};

use super::outgoing::Draft;
use super::pages::{
    admin_post, current, field, gov_status, internal, layout, no_gov, notice, see_other, share_id,
    signed_in, urlencode, utc, Authed, FormMap,
};
use super::records::{fields_markup, title};
use super::WebState;
use crate::governance::db::{RequestRecord, RequestRole};
use crate::governance::{requests, GovError, Governance};

/// What a request may ask for: rule type and label.
const WANT_TYPES: [(&str, &str); 6] = [
    ("organization", "Organization (id)"),
    ("category", "Category (name)"),
    ("object", "Records (ids, comma-separated)"),
    ("flag", "Flag (id)"),
    ("kind", "Kind (contact, organization, …)"),
    ("role", "Role (name)"),
];
/// The transfer levels: type and label.
const LEVEL_TYPES: [(&str, &str); 3] = [
    (
        "organization",
        "Organization: one organization with its contacts and transactions",
    ),
    (
        "category",
        "Category: every organization of a category, with theirs",
    ),
    ("objects", "Records: these records (ids, comma-separated)"),
];

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/requests", get(page))
        .route("/requests/new", post(new_request))
        .route("/requests/:id", get(evaluate))
        .route("/requests/:id/approve", post(approve))
        .route("/requests/:id/reject", post(reject))
}

/// The status as admins read it, and what it means (the portal's words).
fn status_words(s: ShareStatus) -> (&'static str, &'static str) {
    match s {
        ShareStatus::Requested => (
            "Requested",
            "asked; the other side has not confirmed receipt yet",
        ),
        ShareStatus::ToEvaluate => ("To evaluate", "the owner's admin must approve or reject it"),
        ShareStatus::Rejected => (
            "Rejected",
            "the owner will not share for this request (final)",
        ),
        ShareStatus::Approved => ("Approved", "approved with a level and an access type"),
        ShareStatus::Preparing => ("Preparing", "the owner's daemon is collecting the data"),
        ShareStatus::Available => ("Available", "the data is offered to the requester"),
        ShareStatus::Processed => ("Processed", "the requester has received the data"),
        ShareStatus::Revoked => ("Revoked", "the owner took the share back (final)"),
    }
}

fn status_badge(s: ShareStatus) -> Markup {
    html! { span.status data-status=(s.as_str()) { (status_words(s).0) } }
}

/// A record's name when it is held here, else its id.
fn named(g: &Governance, id: &ObjectId) -> String {
    match g.store().get(*id) {
        Ok(Some(o)) => format!("{} ({id})", title(&o)),
        _ => id.to_string(),
    }
}

/// Rules as admins read them: records named when held here.
fn rules_text(g: &Governance, rules: &[Selector]) -> String {
    let r: Vec<String> = rules
        .iter()
        .map(|r| match r {
            Selector::Organization(id) => format!("organization {}", named(g, id)),
            Selector::Object(id) => format!("record {}", named(g, id)),
            Selector::Flag(id) => format!("flag {}", named(g, id)),
            other => other.to_string(),
        })
        .collect();
    r.join(", ")
}

fn level_text(g: &Governance, l: &TransferLevel) -> String {
    rules_text(g, &l.selection().rules)
}

fn role_text(r: RequestRole) -> &'static str {
    match r {
        RequestRole::Requester => "sent by us",
        RequestRole::Owner => "received",
    }
}

fn history(r: &RequestRecord) -> Markup {
    html! {
        ol.history {
            @for (s, at) in &r.history { li { (status_words(*s).0) " " span.muted { (utc(*at)) } } }
        }
    }
}

async fn page(
    State(st): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let a = or_respond!(current(&st, &headers));
    let n = q.get("done").map(|d| (true, d.clone()));
    view(&st, &a, n, Draft::default(), StatusCode::OK)
}

fn view(
    st: &WebState,
    a: &Authed,
    n: Option<(bool, String)>,
    draft: Draft,
    status: StatusCode,
) -> Response {
    let Some(g) = st.gov.as_ref() else {
        return no_gov(a, "Requests", "requests");
    };
    let mut all = match requests::list(g) {
        Ok(l) => l,
        Err(e) => return internal("cannot list the share requests", e),
    };
    // Newest first: the last status change.
    all.sort_by_key(|r| std::cmp::Reverse(r.history.last().map(|h| h.1).unwrap_or(0)));
    let partners: Vec<(String, String)> = st
        .partners
        .partners()
        .into_iter()
        .filter(|p| p.state != "revoked")
        .map(|p| (p.name, p.org.account_number()))
        .collect();
    let body = html! {
        (notice(&n))
        p.muted { "A partner asks for data with a request; the owner's admin previews exactly what a level sends, then approves it with an access type or rejects it. Both sides see the same status." }
        details.legend {
            summary { "What the statuses mean" }
            dl {
                @for s in ShareStatus::ALL { dt { (status_words(s).0) } dd { (status_words(s).1) } }
            }
        }
        h2 id="list" { "Requests" }
        @if all.is_empty() { p.muted { "No share requests yet." } } @else {
            table aria-labelledby="list" {
                thead { tr { th { "Request" } th.nowrap { "Partner" } th.nowrap { "Direction" } th { "Status" } th { "Wants" } th { "Level / access" } th { "History" } th { "Actions" } } }
                tbody {
                    @for r in &all {
                        tr id={"r-" (r.id)} {
                            td data-label="Request" { span.mono title=(r.id) { (r.id.to_string().get(..8).unwrap_or_default()) } @if !r.note.is_empty() { br; span.muted { "“" (r.note) "”" } } }
                            td.nowrap data-label="Partner" { (g.partner_name(&r.partner)) }
                            td.nowrap data-label="Direction" { (role_text(r.role)) }
                            td data-label="Status" { (status_badge(r.status)) }
                            td data-label="Wants" { (rules_text(g, &r.wants.rules)) @if let Some(s) = &r.suggested { br; span.muted { "suggests " (level_text(g, s)) } } }
                            td data-label="Level / access" {
                                @match (&r.level, r.access) {
                                    (Some(l), Some(acc)) => { (level_text(g, l)) br; (acc) },
                                    _ => span.muted { "-" },
                                }
                                @if let Some(why) = &r.reason { br; span.muted { "reason: " (why) } }
                            }
                            td data-label="History" { (history(r)) }
                            td.nowrap data-label="Actions" {
                                @if a.admin() && r.role == RequestRole::Owner && r.status == ShareStatus::ToEvaluate {
                                    a.button href={"/requests/" (r.id)} aria-label={"Evaluate request " (r.id)} { "Evaluate" }
                                } @else {
                                    a href={"/requests/" (r.id)} aria-label={"Details of request " (r.id)} { "Details" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if a.admin() && partners.is_empty() {
            h2 id="new" { "New request" }
            p.muted { "Pair with a partner first (see Partners); then ask it for data here." }
        } @else if a.admin() {
            h2 id="new" { "New request" }
            form method="post" action="/requests/new" aria-labelledby="new" {
                input type="hidden" name="csrf" value=(a.session.csrf);
                label for="partner" { "Ask partner" }
                select id="partner" name="partner" {
                    @for (pname, acct) in &partners {
                        option value=(acct) selected[draft.get("partner") == acct] { (pname) }
                    }
                }
                (draft.error_at("partner"))
                label for="want_type" { "What you want" }
                select id="want_type" name="want_type" {
                    @for (v, l) in WANT_TYPES { option value=(v) selected[draft.get("want_type") == v] { (l) } }
                }
                (draft.error_at("want_type"))
                label for="want_value" { "Which (id, ids or name)" }
                input type="text" id="want_value" name="want_value" value=(draft.get("want_value")) required aria-describedby=[draft.error.as_ref().filter(|e| e.0 == "want_value").map(|_| "err-want_value")];
                (draft.error_at("want_value"))
                label for="suggest_type" { "Suggested level (the owner decides the actual one)" }
                select id="suggest_type" name="suggest_type" {
                    option value="" selected[draft.get("suggest_type").is_empty()] { "No suggestion" }
                    @for (v, l) in LEVEL_TYPES { option value=(v) selected[draft.get("suggest_type") == v] { (l) } }
                }
                (draft.error_at("suggest_type"))
                label for="suggest_value" { "Suggested level: which (id, ids or name)" }
                input type="text" id="suggest_value" name="suggest_value" value=(draft.get("suggest_value"));
                (draft.error_at("suggest_value"))
                label for="note" { "Note for the owner's admin (who, what, why)" }
                textarea id="note" name="note" maxlength=(MAX_NOTE_LEN) { (draft.get("note")) }
                (draft.error_at("note"))
                (draft.error_at("form"))
                p { button type="submit" { "Send request" } }
            }
        }
    };
    (status, layout("Requests", "requests", Some(a), body)).into_response()
}

/// A rule from a type and a value; `object` takes comma-separated ids.
fn parse_want(t: &str, v: &str) -> Result<Selection, (&'static str, String)> {
    if !WANT_TYPES.iter().any(|(k, _)| *k == t) {
        return Err((
            "want_type",
            format!("{t:?} is not something a request can ask for."),
        ));
    }
    if v.is_empty() {
        return Err((
            "want_value",
            "Say which organization, category, records, flag, kind or role you want.".into(),
        ));
    }
    let parts: Vec<&str> = if t == "object" {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        vec![v]
    };
    let rules = parts
        .iter()
        .map(|p| format!("{t}:{p}").parse::<Selector>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("want_value", format!("Not sent: {e}.")))?;
    Ok(Selection { rules })
}

/// A transfer level from a type and a value; `None` for no type.
fn parse_level(
    t: &str,
    v: &str,
    at: (&'static str, &'static str),
) -> Result<Option<TransferLevel>, (&'static str, String)> {
    if t.is_empty() {
        return Ok(None);
    }
    if !LEVEL_TYPES.iter().any(|(k, _)| *k == t) {
        return Err((
            at.0,
            format!("{t:?} is not a level (organization, category or records)."),
        ));
    }
    if v.is_empty() {
        return Err((
            at.1,
            "Say which organization (id), category (name) or records (ids) the level covers."
                .into(),
        ));
    }
    format!("{t}:{v}")
        .parse::<TransferLevel>()
        .map(Some)
        .map_err(|e| (at.1, format!("{e}.")))
}

async fn new_request(
    State(st): State<WebState>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "sending a share request",
        ("Requests", "requests"),
    ));
    let redo = |at: &'static str, msg: String, status: StatusCode| {
        tracing::warn!(who = %a.name(), field = at, reason = %msg, "web console: share request refused");
        view(&st, &a, None, Draft::refused(&form, at, msg), status)
    };
    let partner = match g.resolve_partner(field(&form, "partner")) {
        Ok(p) => p,
        Err(e) => {
            return redo(
                "partner",
                format!("Not sent: {e}."),
                StatusCode::BAD_REQUEST,
            )
        }
    };
    let wants = match parse_want(field(&form, "want_type"), field(&form, "want_value")) {
        Ok(w) => w,
        Err((at, msg)) => return redo(at, msg, StatusCode::BAD_REQUEST),
    };
    let suggested = match parse_level(
        field(&form, "suggest_type"),
        field(&form, "suggest_value"),
        ("suggest_type", "suggest_value"),
    ) {
        Ok(l) => l,
        Err((at, msg)) => return redo(at, msg, StatusCode::BAD_REQUEST),
    };
    let note = field(&form, "note").to_string();
    if note.len() > MAX_NOTE_LEN {
        return redo(
            "note",
            format!("The note is {} bytes; at most {MAX_NOTE_LEN}.", note.len()),
            StatusCode::BAD_REQUEST,
        );
    }
    match requests::send(g, &partner, wants, suggested, note, a.name()).await {
        Ok(r) => see_other(
            &format!(
                "/requests?done={}",
                urlencode(&format!(
                    "Request {} sent to {}.",
                    r.id,
                    g.partner_name(&partner)
                ))
            ),
            None,
        ),
        Err(e) => redo("form", format!("Not sent: {e}"), gov_status(&e)),
    }
}

/// The request `id` of the URL, or the page saying why not.
fn find(g: &Governance, a: &Authed, id: &str) -> Result<RequestRecord, Response> {
    let not_found = |msg: String, status: StatusCode| {
        (
            status,
            layout(
                "Request",
                "requests",
                Some(a),
                html! {
                    p.error role="alert" { (msg) }
                    p { a href="/requests" { "Back to the requests" } }
                },
            ),
        )
            .into_response()
    };
    let id = share_id(id).map_err(|e| not_found(format!("{e}"), StatusCode::BAD_REQUEST))?;
    match requests::list(g) {
        Ok(l) => l.into_iter().find(|r| r.id == id).ok_or_else(|| {
            not_found(
                format!("There is no share request {id}."),
                StatusCode::NOT_FOUND,
            )
        }),
        Err(e) => Err(internal("cannot list the share requests", e)),
    }
}

/// The level the evaluation form starts with: the one asked for in the
/// URL, else the requester's suggestion, else what it wants when that is
/// a level.
fn initial_level(r: &RequestRecord, q: &HashMap<String, String>) -> (String, String) {
    if let Some(t) = q.get("level_type") {
        return (
            t.trim().to_string(),
            q.get("level_value")
                .map(|v| v.trim().to_string())
                .unwrap_or_default(),
        );
    }
    let from = r
        .suggested
        .clone()
        .or_else(|| match r.wants.rules.as_slice() {
            [Selector::Organization(id)] => Some(TransferLevel::Organization(*id)),
            [Selector::Category(c)] => Some(TransferLevel::Category(c.clone())),
            rules
                if !rules.is_empty() && rules.iter().all(|r| matches!(r, Selector::Object(_))) =>
            {
                Some(TransferLevel::Objects(
                    rules
                        .iter()
                        .filter_map(|r| match r {
                            Selector::Object(id) => Some(*id),
                            _ => None,
                        })
                        .collect(),
                ))
            }
            _ => None,
        });
    match from {
        Some(l) => {
            let s = l.to_string();
            let (t, v) = s.split_once(':').unwrap_or(("", ""));
            (t.to_string(), v.to_string())
        }
        None => (String::new(), String::new()),
    }
}

async fn evaluate(
    State(st): State<WebState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (a, g) = or_respond!(signed_in(&st, &headers, ("Request", "requests")));
    let r = match find(g, &a, &id) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let previewing = q.contains_key("level_type");
    let mut draft = Draft::default();
    let (lt, lv) = initial_level(&r, &q);
    draft.values.insert("level_type".into(), lt);
    draft.values.insert("level_value".into(), lv);
    draft.values.insert(
        "access".into(),
        q.get("access")
            .cloned()
            .unwrap_or_else(|| AccessType::OnLoan.as_str().into()),
    );
    let n = q.get("done").map(|d| (true, d.clone()));
    eval_view(g, &a, &r, draft, previewing, n, StatusCode::OK)
}

/// The preview of what approving with the draft's level and access sends,
/// or the field at fault.
fn preview(
    g: &Governance,
    r: &RequestRecord,
    draft: &Draft,
) -> Result<
    (
        TransferLevel,
        AccessType,
        Vec<orgsync_protocol::model::Object>,
    ),
    (&'static str, String),
> {
    let level = parse_level(
        draft.get("level_type"),
        draft.get("level_value"),
        ("level_type", "level_value"),
    )?
    .ok_or(("level_type", "Choose a level.".to_string()))?;
    let access: AccessType = draft
        .get("access")
        .parse()
        .map_err(|e| ("access", format!("{e}.")))?;
    let ids = requests::preview(g, &r.id, &level, access)
        .map_err(|e| ("level_value", format!("{e}.")))?;
    let mut objs = Vec::new();
    for id in ids {
        match g.store().get(id) {
            Ok(Some(o)) => objs.push(o),
            Ok(None) => {}
            Err(e) => return Err(("form", format!("cannot read record {id}: {e}"))),
        }
    }
    Ok((level, access, objs))
}

#[allow(clippy::too_many_arguments)]
fn eval_view(
    g: &Governance,
    a: &Authed,
    r: &RequestRecord,
    mut draft: Draft,
    previewing: bool,
    n: Option<(bool, String)>,
    status: StatusCode,
) -> Response {
    let can_decide =
        a.admin() && r.role == RequestRole::Owner && r.status == ShareStatus::ToEvaluate;
    // The preview stays in view when a decision was refused (an error at
    // the terms or from the approval shows next to it).
    let shown = if previewing {
        match preview(g, r, &draft) {
            Ok(p) => Some(p),
            Err(e) => {
                draft.error.get_or_insert(e);
                None
            }
        }
    } else {
        None
    };
    let status = if draft.error.is_some() && status == StatusCode::OK {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let evaluable = r.role == RequestRole::Owner && r.status == ShareStatus::ToEvaluate;
    let body = html! {
        (notice(&n))
        p { a href="/requests" { "← All requests" } }
        dl {
            dt { "Request" } dd { (r.id) }
            dt { "Partner" } dd { (g.partner_name(&r.partner)) " (" (role_text(r.role)) ")" }
            dt { "Status" } dd { (status_badge(r.status)) " — " (status_words(r.status).1) }
            dt { "Wants" } dd { (rules_text(g, &r.wants.rules)) }
            dt { "Suggested level" } dd { @match &r.suggested { Some(l) => (level_text(g, l)), None => "none" } }
            dt { "Note" } dd { @if r.note.is_empty() { "none" } @else { (r.note) } }
            @if let (Some(l), Some(acc)) = (&r.level, r.access) { dt { "Level, access" } dd { (level_text(g, l)) ", " (acc) } }
            @if let Some(s) = &r.share { dt { "Share" } dd { (s) } }
            @if let Some(why) = &r.reason { dt { "Reason" } dd { (why) } }
        }
        (draft.error_at("form"))
        h2 id="history" { "History" }
        (history(r))
        @if evaluable {
            h2 id="eval" { "Evaluation" }
            p.muted { "Choose the level you will actually share, preview exactly which records (with every field) it sends, choose the access type, then approve. The access type cannot be changed later: only revoked." }
            form method="get" action={"/requests/" (r.id) "#preview"} aria-labelledby="eval" {
                label for="level_type" { "Level" }
                select id="level_type" name="level_type" {
                    @for (v, l) in LEVEL_TYPES { option value=(v) selected[draft.get("level_type") == v] { (l) } }
                }
                (draft.error_at("level_type"))
                label for="level_value" { "Which (organization id, category name or record ids)" }
                input type="text" id="level_value" name="level_value" value=(draft.get("level_value")) required;
                (draft.error_at("level_value"))
                label for="access" { "Access type" }
                select id="access" name="access" {
                    @for t in AccessType::ALL { option value=(t.as_str()) selected[draft.get("access") == t.as_str()] { (t.as_str()) } }
                }
                (draft.error_at("access"))
                p { button type="submit" { "Preview" } }
            }
            @if let Some((level, access, objs)) = &shown {
                section id="preview" aria-labelledby="preview-h" {
                    h3 id="preview-h" { "Preview: " (objs.len()) " record(s) would be sent at level " (level) " as " (access) }
                    @if objs.is_empty() { p.muted { "This level selects nothing here." } } @else {
                        table aria-labelledby="preview-h" {
                            thead { tr { th { "Kind" } th { "Record" } th { "Fields sent" } } }
                            tbody {
                                @for o in objs {
                                    tr {
                                        td data-label="Kind" { (o.kind) }
                                        td data-label="Record" { (title(o)) br; span.muted.mono { (o.id) } }
                                        td data-label="Fields sent" { (fields_markup(g, o)) }
                                    }
                                }
                            }
                        }
                    }
                    @if can_decide {
                        form method="post" action={"/requests/" (r.id) "/approve"} {
                            input type="hidden" name="csrf" value=(a.session.csrf);
                            input type="hidden" name="level_type" value=(draft.get("level_type"));
                            input type="hidden" name="level_value" value=(draft.get("level_value"));
                            input type="hidden" name="access" value=(access.as_str());
                            label for="terms" { "Terms the partner must accept first (optional)" }
                            textarea id="terms" name="terms" maxlength=(MAX_TERMS_LEN) { (draft.get("terms")) }
                            (draft.error_at("terms"))
                            p { button type="submit" { "Approve and share " (objs.len()) " record(s)" } }
                        }
                    }
                }
            }
            @if can_decide {
                h3 id="reject-h" { "Reject" }
                form method="post" action={"/requests/" (r.id) "/reject"} aria-labelledby="reject-h" {
                    input type="hidden" name="csrf" value=(a.session.csrf);
                    label for="reason" { "Reason (sent to the partner)" }
                    input type="text" id="reason" name="reason" value=(draft.get("reason")) maxlength=(MAX_NOTE_LEN);
                    (draft.error_at("reason"))
                    p { button.secondary type="submit" { "Reject request" } }
                }
            }
        }
    };
    (status, layout("Request", "requests", Some(a), body)).into_response()
}

/// Shows the evaluation again with `e` next to its field.
fn redo_eval(
    g: &Governance,
    a: &Authed,
    r: &RequestRecord,
    form: &HashMap<String, String>,
    at: &'static str,
    msg: String,
    status: StatusCode,
) -> Response {
    tracing::warn!(who = %a.name(), field = at, reason = %msg, request = %r.id, "web console: request decision refused");
    eval_view(g, a, r, Draft::refused(form, at, msg), true, None, status)
}

/// An admin's decision POST on request `id`: the account, governance and
/// the request, or the refusal to answer.
fn decision_post<'a>(
    st: &'a WebState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    id: &str,
    what: &str,
) -> Result<(Authed, &'a Governance, RequestRecord), Response> {
    let (a, g) = admin_post(st, headers, form, what, ("Requests", "requests"))?;
    let r = find(g, &a, id)?;
    Ok((a, g, r))
}

fn decided(r: &RequestRecord, what: &str) -> Response {
    see_other(
        &format!("/requests/{}?done={}", r.id, urlencode(what)),
        None,
    )
}

async fn approve(
    State(st): State<WebState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (a, g, r) = match decision_post(&st, &headers, &form, &id, "approving a share request") {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let level = match parse_level(
        field(&form, "level_type"),
        field(&form, "level_value"),
        ("level_type", "level_value"),
    ) {
        Ok(Some(l)) => l,
        Ok(None) => {
            return redo_eval(
                g,
                &a,
                &r,
                &form,
                "level_type",
                "Choose a level.".into(),
                StatusCode::BAD_REQUEST,
            )
        }
        Err((at, msg)) => return redo_eval(g, &a, &r, &form, at, msg, StatusCode::BAD_REQUEST),
    };
    let access: AccessType = match field(&form, "access").parse() {
        Ok(t) => t,
        Err(e) => {
            return redo_eval(
                g,
                &a,
                &r,
                &form,
                "access",
                format!("{e}."),
                StatusCode::BAD_REQUEST,
            )
        }
    };
    let terms = Some(field(&form, "terms").to_string()).filter(|t| !t.is_empty());
    if terms.as_ref().is_some_and(|t| t.len() > MAX_TERMS_LEN) {
        return redo_eval(
            g,
            &a,
            &r,
            &form,
            "terms",
            format!("The terms are longer than {MAX_TERMS_LEN} bytes."),
            StatusCode::BAD_REQUEST,
        );
    }
    match requests::approve(g, &r.id, level, access, terms, a.name()).await {
        Ok(r) => decided(
            &r,
            &format!(
                "Approved: the share is {}.",
                status_words(r.status).0.to_lowercase()
            ),
        ),
        Err(e) => redo_eval(
            g,
            &a,
            &r,
            &form,
            "form",
            format!("Not approved: {e}"),
            gov_status(&e),
        ),
    }
}

async fn reject(
    State(st): State<WebState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (a, g, r) = match decision_post(&st, &headers, &form, &id, "rejecting a share request") {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let reason = field(&form, "reason").to_string();
    if reason.len() > MAX_NOTE_LEN {
        return redo_eval(
            g,
            &a,
            &r,
            &form,
            "reason",
            format!(
                "The reason is {} bytes; at most {MAX_NOTE_LEN}.",
                reason.len()
            ),
            StatusCode::BAD_REQUEST,
        );
    }
    let result: Result<RequestRecord, GovError> =
        requests::reject(g, &r.id, reason, a.name()).await;
    match result {
        Ok(r) => decided(&r, "Rejected."),
        Err(e) => redo_eval(
            g,
            &a,
            &r,
            &form,
            "form",
            format!("Not rejected: {e}"),
            gov_status(&e),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wants_and_levels_parse_or_name_their_field() {
        let id = "01a208b3-df58-780a-87ac-6f99d4d6d4ee";
        assert_eq!(parse_want("organization", id).unwrap().rules.len(), 1);
        let two = format!("{id}, {id}");
        assert_eq!(parse_want("object", &two).unwrap().rules.len(), 2);
        assert_eq!(parse_want("organization", "").unwrap_err().0, "want_value");
        assert_eq!(parse_want("everything", id).unwrap_err().0, "want_type");
        assert_eq!(
            parse_want("organization", "nope").unwrap_err().0,
            "want_value"
        );
        let at = ("t", "v");
        assert_eq!(parse_level("", "x", at).unwrap(), None);
        assert_eq!(
            parse_level("category", "school", at).unwrap(),
            Some(TransferLevel::Category("school".into()))
        );
        assert_eq!(parse_level("objects", "x", at).unwrap_err().0, "v");
        assert_eq!(parse_level("planet", "x", at).unwrap_err().0, "t");
        assert_eq!(parse_level("organization", "", at).unwrap_err().0, "v");
    }
}
