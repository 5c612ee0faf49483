//! The Outgoing page: what this organisation shares with each partner.
//!
//! Every change goes through the same governance functions as
//! `orgsync share add/remove/revoke` (`crate::governance::shares`), with the
//! signed-in console account as the actor, so the audit log names the admin.
//! Viewers see the tables without any button; their POSTs are refused 403
//! by [`super::pages::authorize_post`], like every POST without the
//! session's CSRF token.

// Guards return the refusal page itself as the error (see pages.rs).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use orgsync_protocol::model::{Kind, ObjectId, OrgId};
use orgsync_protocol::share::{AccessType, Selection, Selector};

use super::pages::{
    admin_post, current, field, gov_status, internal, layout, no_gov, notice, see_other, share_id,
    urlencode, utc, Authed, FormMap,
};
use super::WebState;
use crate::governance::db::OutShare;
use crate::governance::shares::{self, NewShare};
use crate::governance::{GovError, Governance};

/// Most flags listed (a page of the store scan).
const MAX_FLAGS: usize = 1000;
/// The kinds of rule the new-share form offers, with their labels.
const RULE_TYPES: [(&str, &str); 6] = [
    ("flag", "Flag"),
    ("kind", "Kind"),
    ("role", "Role"),
    ("category", "Category"),
    ("organization", "Organization"),
    ("object", "Picked records"),
];
/// Most records one New share form may pick (each is one rule).
const MAX_PICKED: usize = 500;
/// Longest validity of a share code made here, in minutes (30 days).
const MAX_CODE_MINUTES: u64 = 30 * 24 * 60;

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/outgoing", get(page))
        .route("/outgoing/share", post(new_share))
        .route("/outgoing/flag", post(flag_save))
        .route("/outgoing/:id/revoke", post(revoke))
        .route("/outgoing/:id/unshare", post(unshare))
}

/// A flag of this store: id and name.
pub(super) struct Flag {
    pub(super) id: ObjectId,
    pub(super) name: String,
}

pub(super) fn flags(g: &Governance) -> Result<Vec<Flag>, Response> {
    let objs = g
        .store()
        .list(Some(Kind::Flag), None, MAX_FLAGS)
        .map_err(|e| internal("cannot list the flags", e))?;
    Ok(objs
        .into_iter()
        .filter(|o| !o.is_deleted())
        .map(|o| {
            let j = crate::json::object_to_json(&o);
            let name = j["fields"]["name"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| o.id.to_string());
            Flag { id: o.id, name }
        })
        .collect())
}

/// Paired partners (name, org), in the partner list's order.
pub(super) fn paired(st: &WebState) -> Vec<(String, OrgId)> {
    st.partners
        .partners()
        .into_iter()
        .filter(|p| p.state != "revoked")
        .map(|p| (p.name, p.org))
        .collect()
}

/// Whether `s` still gives `flag` to its partner (not revoked, has the rule).
fn gives_flag(s: &OutShare, flag: ObjectId) -> bool {
    s.revoked_ms.is_none() && s.selection.rules.contains(&Selector::Flag(flag))
}

/// What a form held, to show it again with an error next to its field
/// (shared by the console's forms).
#[derive(Default)]
pub(super) struct Draft {
    pub(super) values: HashMap<String, String>,
    /// The field the error is about, and the error in plain words.
    pub(super) error: Option<(&'static str, String)>,
}

impl Draft {
    /// A form's values shown again with `msg` next to field `at`.
    pub(super) fn refused(
        values: &HashMap<String, String>,
        at: &'static str,
        msg: String,
    ) -> Draft {
        Draft {
            values: values.clone(),
            error: Some((at, msg)),
        }
    }
    pub(super) fn get(&self, k: &str) -> &str {
        self.values.get(k).map(String::as_str).unwrap_or("")
    }
    pub(super) fn error_at(&self, f: &str) -> Markup {
        html! {
            @if let Some((at, msg)) = &self.error {
                @if *at == f { p.error role="alert" id={"err-" (f)} { (msg) } }
            }
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
    view(&st, &a, &q, n, Draft::default(), StatusCode::OK)
}

fn view(
    st: &WebState,
    a: &Authed,
    q: &HashMap<String, String>,
    n: Option<(bool, String)>,
    draft: Draft,
    status: StatusCode,
) -> Response {
    let Some(g) = st.gov.as_ref() else {
        return no_gov(a, "Outgoing", "outgoing");
    };
    let given = match shares::list(g) {
        Ok((given, _)) => given,
        Err(e) => return internal("cannot list the shares", e),
    };
    let flags = or_respond!(flags(g));
    let partners = paired(st);
    let flag_name = |id: &ObjectId| {
        flags
            .iter()
            .find(|f| f.id == *id)
            .map(|f| f.name.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let rule_text = |r: &Selector| match r {
        Selector::Flag(id) => format!("flag {}", flag_name(id)),
        other => other.to_string(),
    };
    // The flag checklist asked for by a Share / UnShare button.
    let checklist = q.get("flag").and_then(|f| {
        let id: ObjectId = f.parse().ok()?;
        let sharing = q.get("action").map(String::as_str) != Some("unshare");
        let receiving: Vec<OrgId> = given
            .iter()
            .filter(|s| gives_flag(s, id))
            .filter_map(|s| s.partner)
            .collect();
        let list: Vec<(String, OrgId)> = partners
            .iter()
            .filter(|(_, o)| receiving.contains(o) != sharing)
            .cloned()
            .collect();
        Some((id, sharing, list))
    });
    let mut by_partner: Vec<(String, Vec<&OutShare>)> = Vec::new();
    for s in &given {
        let name = match &s.partner {
            Some(p) => g.partner_name(p),
            None => "(share code, not redeemed)".to_string(),
        };
        match by_partner.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(s),
            None => by_partner.push((name, vec![s])),
        }
    }
    let csrf = &a.session.csrf;
    let body = html! {
        (notice(&n))
        p.muted { "What this organisation gives its partners. A partner receives the records a share's rules pick, as its access type allows; UnShare stops updates and withdraws the records that no longer qualify; Revoke stops the share and asks the partner to erase it." }
        h2 id="flags" { "Flags" }
        @if flags.is_empty() { p.muted { "No flags yet." } } @else {
            table aria-labelledby="flags" {
                thead { tr { th { "Flag" } th { "Shared with" } @if a.admin() { th { "Actions" } } } }
                tbody {
                    @for f in &flags {
                        @let to: Vec<String> = given.iter().filter(|s| gives_flag(s, f.id)).filter_map(|s| s.partner.as_ref()).map(|p| g.partner_name(p)).collect();
                        tr {
                            td data-label="Flag" { (f.name) br; span.muted.mono { (f.id) } }
                            td data-label="Shared with" { @if to.is_empty() { span.muted { "nobody" } } @else { (to.join(", ")) } }
                            @if a.admin() {
                                td data-label="Actions" {
                                    a.button href={"/outgoing?flag=" (f.id) "&action=share#checklist"} aria-label={"Share flag " (f.name)} { "Share" }
                                    " "
                                    a.button.secondary href={"/outgoing?flag=" (f.id) "&action=unshare#checklist"} aria-label={"UnShare flag " (f.name)} { "UnShare" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let (true, Some((id, sharing, list))) = (a.admin(), &checklist) {
            section id="checklist" aria-labelledby="checklist-h" {
                h3 id="checklist-h" { @if *sharing { "Share flag " } @else { "UnShare flag " } (flag_name(id)) }
                @if list.is_empty() {
                    p.muted { @if *sharing { "Every partner already receives this flag." } @else { "No partner receives this flag." } }
                } @else {
                    p.muted { @if *sharing { "Partners not yet receiving this flag:" } @else { "Partners receiving this flag:" } }
                    form method="post" action="/outgoing/flag" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="flag" value=(id);
                        input type="hidden" name="action" value=(if *sharing { "share" } else { "unshare" });
                        @for (name, org) in list {
                            p.check {
                                input type="checkbox" id={"p-" (org.account_number())} name={"partner-" (org.account_number())} value="yes";
                                " "
                                label for={"p-" (org.account_number())} { (name) " (" span.mono { (org.account_number()) } ")" }
                            }
                        }
                        p { button type="submit" { "Save" } " " a href="/outgoing" { "Cancel" } }
                    }
                }
            }
        }
        h2 id="shares" { "Shares per partner" }
        @if by_partner.is_empty() { p.muted { "Nothing shared yet." } }
        @for (i, (name, list)) in by_partner.iter().enumerate() {
            h3 id={"partner-" (i)} { (name) }
            table aria-labelledby={"partner-" (i)} {
                thead { tr { th { "Share" } th { "Rules" } th { "Access" } th { "Terms" } th { "State" } th { "Records" } @if a.admin() { th { "Actions" } } } }
                tbody {
                    @for s in list {
                        @let members = g.db().members(&s.id).map(|m| m.len()).unwrap_or(0);
                        tr {
                            td data-label="Share" { (s.label) br; span.muted.mono { (s.id) } }
                            td data-label="Rules" {
                                @if s.selection.rules.is_empty() { span.muted { "none" } }
                                @for r in &s.selection.rules {
                                    div {
                                        (rule_text(r))
                                        @if a.admin() && s.revoked_ms.is_none() {
                                            form.inline method="post" action={"/outgoing/" (s.id) "/unshare"} {
                                                input type="hidden" name="csrf" value=(csrf);
                                                input type="hidden" name="rule" value=(r.to_string());
                                                " " button.secondary type="submit" aria-label={"UnShare " (rule_text(r)) " from " (name)} { "UnShare" }
                                            }
                                        }
                                    }
                                }
                            }
                            td data-label="Access" { (s.access.as_str()) }
                            td data-label="Terms" {
                                @match (&s.terms, &s.terms_accepted) {
                                    (None, _) => span.muted { "none" },
                                    (Some(_), Some((by, at))) => { "accepted by " (by) " " (utc(*at)) },
                                    (Some(_), None) => { "waiting for acceptance" },
                                }
                            }
                            td data-label="State" {
                                @if let Some(at) = s.revoked_ms { "revoked " (utc(at)) } @else if s.is_flowing() { "flowing" } @else { "not flowing yet" }
                            }
                            td data-label="Records" { (members) }
                            @if a.admin() {
                                td data-label="Actions" {
                                    @if s.revoked_ms.is_none() {
                                        form method="post" action={"/outgoing/" (s.id) "/revoke"} {
                                            input type="hidden" name="csrf" value=(csrf);
                                            button.secondary type="submit" aria-label={"Revoke share " (s.id)} { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if a.admin() {
            h2 id="new" { "New share" }
            form method="post" action="/outgoing/share" aria-labelledby="new" {
                input type="hidden" name="csrf" value=(csrf);
                label for="partner" { "Partner" }
                select id="partner" name="partner" {
                    @for (pname, org) in &partners {
                        option value=(org.account_number()) selected[draft.get("partner") == org.account_number()] { (pname) }
                    }
                    option value="code" selected[draft.get("partner") == "code"] { "Nobody yet: make a one-time share code" }
                }
                (draft.error_at("partner"))
                label for="code_minutes" { "Share code valid for (minutes; only for a share code)" }
                input id="code_minutes" name="code_minutes" type="number" min="1" max=(MAX_CODE_MINUTES) value=(Some(draft.get("code_minutes")).filter(|v| !v.is_empty()).unwrap_or("1440"));
                (draft.error_at("code_minutes"))
                label for="rule_type" { "Share by" }
                select id="rule_type" name="rule_type" {
                    @for (v, l) in RULE_TYPES {
                        option value=(v) selected[draft.get("rule_type") == v] { (l) }
                    }
                }
                (draft.error_at("rule_type"))
                label for="rule_value" { "Which (flag or organization id; kind, role or category name; picked records' ids, separated by commas or spaces)" }
                input id="rule_value" name="rule_value" value=(draft.get("rule_value")) required;
                (draft.error_at("rule_value"))
                label for="access" { "Access type" }
                select id="access" name="access" {
                    @for t in AccessType::ALL {
                        option value=(t.as_str()) selected[draft.get("access") == t.as_str() || (draft.get("access").is_empty() && t == AccessType::OnLoan)] { (t.as_str()) }
                    }
                }
                (draft.error_at("access"))
                label for="terms" { "Terms the partner must accept first (optional)" }
                textarea id="terms" name="terms" { (draft.get("terms")) }
                label for="label" { "Label (optional)" }
                input id="label" name="label" value=(draft.get("label"));
                (draft.error_at("form"))
                p { button type="submit" { "Share" } }
            }
        }
    };
    (status, layout("Outgoing", "outgoing", Some(a), body)).into_response()
}

/// The new-share form's rules (one, or one per picked record), or the
/// field at fault and why.
fn parse_rules(form: &HashMap<String, String>) -> Result<Vec<Selector>, (&'static str, String)> {
    let t = field(form, "rule_type");
    let v = field(form, "rule_value");
    if !RULE_TYPES.iter().any(|(k, _)| *k == t) {
        return Err((
            "rule_type",
            format!(
                "{t:?} is not a way to share (flag, kind, role, category, organization or picked records)."
            ),
        ));
    }
    if v.is_empty() {
        return Err((
            "rule_value",
            "Say which flag, kind, role, category, organization or records to share.".into(),
        ));
    }
    let values: Vec<&str> = if t == "object" {
        v.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        vec![v]
    };
    if values.len() > MAX_PICKED {
        return Err((
            "rule_value",
            format!(
                "{} records picked; one share takes at most {MAX_PICKED} (share a flag instead).",
                values.len()
            ),
        ));
    }
    let mut rules = Vec::with_capacity(values.len());
    for one in values {
        let rule = format!("{t}:{one}")
            .parse::<Selector>()
            .map_err(|e| ("rule_value", format!("Not shared: {e}.")))?;
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    Ok(rules)
}

/// The minutes a new share code stays valid, from the form.
fn code_minutes(form: &HashMap<String, String>) -> Result<u64, String> {
    let v = field(form, "code_minutes");
    if v.is_empty() {
        return Ok(24 * 60);
    }
    match v.parse::<u64>() {
        Ok(m) if (1..=MAX_CODE_MINUTES).contains(&m) => Ok(m),
        _ => Err(format!(
            "{v:?} is not a number of minutes from 1 to {MAX_CODE_MINUTES}."
        )),
    }
}

async fn new_share(
    State(st): State<WebState>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "creating a share",
        ("Outgoing", "outgoing"),
    ));
    let redo = |at: &'static str, msg: String, status: StatusCode| {
        tracing::warn!(who = %a.name(), field = at, reason = %msg, "web console: share refused");
        let draft = Draft {
            values: form.clone(),
            error: Some((at, msg)),
        };
        view(&st, &a, &HashMap::new(), None, draft, status)
    };
    // "code": no partner yet, a one-time share code instead.
    let (partner, code_valid_ms) = if field(&form, "partner") == "code" {
        match code_minutes(&form) {
            Ok(m) => (None, Some(m * 60_000)),
            Err(msg) => return redo("code_minutes", msg, StatusCode::BAD_REQUEST),
        }
    } else {
        match g.resolve_partner(field(&form, "partner")) {
            Ok(p) => (Some(p), None),
            Err(e) => {
                return redo(
                    "partner",
                    format!("Not shared: {e}."),
                    StatusCode::BAD_REQUEST,
                )
            }
        }
    };
    let rules = match parse_rules(&form) {
        Ok(r) => r,
        Err((at, msg)) => return redo(at, msg, StatusCode::BAD_REQUEST),
    };
    let access = match field(&form, "access").parse::<AccessType>() {
        Ok(t) => t,
        Err(e) => {
            return redo(
                "access",
                format!("Not shared: {e}."),
                StatusCode::BAD_REQUEST,
            )
        }
    };
    let terms = Some(field(&form, "terms").to_string()).filter(|t| !t.is_empty());
    let req = NewShare {
        partners: partner.into_iter().collect(),
        selection: Selection { rules },
        access,
        terms,
        label: field(&form, "label").to_string(),
        request: None,
        code_valid_ms,
        by: a.name().to_string(),
    };
    match shares::create(g, req).await {
        // Shown once, in this response only: a redirect would put the
        // code in the URL (history, logs).
        Ok(shares::Created {
            code: Some(code), ..
        }) => {
            let minutes = code_valid_ms.unwrap_or(0) / 60_000;
            let msg = format!(
                "Share code {code}: give it to the partner once (valid {minutes} minutes; they redeem it on their Home page or with `orgsync share redeem`). It is not shown again."
            );
            view(
                &st,
                &a,
                &HashMap::new(),
                Some((true, msg)),
                Draft::default(),
                StatusCode::OK,
            )
        }
        Ok(c) => see_other(
            &format!(
                "/outgoing?done={}",
                urlencode(&format!(
                    "Shared with {}: {} record(s) sent now.",
                    partner.map(|p| g.partner_name(&p)).unwrap_or_default(),
                    c.objects
                ))
            ),
            None,
        ),
        Err(e) => redo("form", format!("Not shared: {e}"), gov_status(&e)),
    }
}

async fn revoke(
    State(st): State<WebState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "revoking a share",
        ("Outgoing", "outgoing"),
    ));
    let result = match share_id(&id) {
        Ok(id) => shares::revoke(g, &id, a.name()).await,
        Err(e) => Err(e),
    };
    done_or_error(
        &st,
        &a,
        result.map(|s| format!("Share {} revoked.", s.id)),
        "Not revoked",
    )
}

async fn unshare(
    State(st): State<WebState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "removing a share rule",
        ("Outgoing", "outgoing"),
    ));
    let result = async {
        let id = share_id(&id)?;
        let rule: Selector = field(&form, "rule")
            .parse()
            .map_err(|e| GovError::Invalid(format!("{e}")))?;
        shares::remove_rules(g, &id, &[rule], a.name()).await
    }
    .await;
    done_or_error(
        &st,
        &a,
        result.map(|s| format!("Rule removed from share {}.", s.id)),
        "Not unshared",
    )
}

fn done_or_error(
    st: &WebState,
    a: &Authed,
    result: Result<String, GovError>,
    what: &str,
) -> Response {
    match result {
        Ok(msg) => see_other(&format!("/outgoing?done={}", urlencode(&msg)), None),
        Err(e) => {
            tracing::warn!(who = %a.name(), error = %e, "web console: {what}");
            view(
                st,
                a,
                &HashMap::new(),
                Some((false, format!("{what}: {e}"))),
                Draft::default(),
                gov_status(&e),
            )
        }
    }
}

/// Share or UnShare one flag with the partners ticked in the checklist.
async fn flag_save(
    State(st): State<WebState>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "sharing a flag",
        ("Outgoing", "outgoing"),
    ));
    let bad = |msg: String| done_or_error(&st, &a, Err(GovError::Invalid(msg)), "Nothing changed");
    let flag: ObjectId = match field(&form, "flag").parse() {
        Ok(f) => f,
        Err(e) => return bad(format!("{:?} is not a flag id: {e}", field(&form, "flag"))),
    };
    let sharing = match field(&form, "action") {
        "share" => true,
        "unshare" => false,
        other => return bad(format!("{other:?} is not share or unshare")),
    };
    // Validate every ticked partner before changing anything.
    let mut chosen = Vec::new();
    for (k, v) in &form {
        let Some(acct) = k.strip_prefix("partner-") else {
            continue;
        };
        if v != "yes" {
            continue;
        }
        match g.resolve_partner(acct) {
            Ok(p) => chosen.push(p),
            Err(e) => return bad(format!("{e}")),
        }
    }
    if chosen.is_empty() {
        return bad("tick at least one partner".into());
    }
    let given = match shares::list(g) {
        Ok((given, _)) => given,
        Err(e) => return internal("cannot list the shares", e),
    };
    let mut names = Vec::new();
    for p in &chosen {
        let result = if sharing {
            shares::create(
                g,
                NewShare {
                    partners: vec![*p],
                    selection: Selection {
                        rules: vec![Selector::Flag(flag)],
                    },
                    access: AccessType::OnLoan,
                    terms: None,
                    label: String::new(),
                    request: None,
                    code_valid_ms: None,
                    by: a.name().to_string(),
                },
            )
            .await
            .map(|_| ())
        } else {
            let mut r = Ok(());
            for s in given
                .iter()
                .filter(|s| s.partner.as_ref() == Some(p) && gives_flag(s, flag))
            {
                r = shares::remove_rules(g, &s.id, &[Selector::Flag(flag)], a.name())
                    .await
                    .map(|_| ());
                if r.is_err() {
                    break;
                }
            }
            r
        };
        if let Err(e) = result {
            let so_far = if names.is_empty() {
                "nothing".to_string()
            } else {
                names.join(", ")
            };
            return done_or_error(
                &st,
                &a,
                Err(e),
                &format!("Done so far: {so_far}. Stopped at {}", g.partner_name(p)),
            );
        }
        names.push(g.partner_name(p));
    }
    let msg = format!(
        "Flag {} {}.",
        if sharing {
            "shared with"
        } else {
            "no longer shared with"
        },
        names.join(", ")
    );
    see_other(&format!("/outgoing?done={}", urlencode(&msg)), None)
}
