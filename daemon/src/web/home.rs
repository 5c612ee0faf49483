//! The Home page: shares partners give this organisation (accept their
//! terms in a dialog, or reject them), share-code redemption and the audit
//! log with filters.
//!
//! The terms dialog is a `<dialog>` element the server renders open
//! (`/?terms=SHARE`), so it needs no script (the console's pages all work
//! without JavaScript): the dialog is also its own confirmation page. Nothing of a
//! share with terms is released until an admin ticks the box and accepts.
//! Every change goes through the functions `orgsync share accept-terms`
//! and `orgsync share redeem` call ([`crate::governance::shares`]), and
//! [`crate::governance::declined::reject`] for Reject, with the signed-in
//! account as the actor.

// Guards return the refusal page itself as the error (see pages.rs).
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::html;

use super::incoming::Draft;
use super::outgoing::paired;
use super::pages::{
    admin_post, current, field, gov_status, internal, layout, no_gov, notice, see_other, share_id,
    urlencode, utc, Authed, FormMap,
};
use super::WebState;
use crate::governance::audit::AuditFilter;
use crate::governance::db::{Declined, InShare};
use crate::governance::{declined, shares, GovError, Governance};

/// Most audit entries shown on the Home page.
const AUDIT_ROWS: usize = 200;

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/", get(home))
        .route("/shares/:id/accept-terms", post(accept_terms))
        .route("/shares/:id/reject", post(reject))
        .route("/shares/redeem", post(redeem))
}

async fn home(
    State(st): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let a = or_respond!(current(&st, &headers));
    let Some(g) = st.gov.as_ref() else {
        return no_gov(&a, "Home", "home");
    };
    let n = q.get("done").map(|d| (true, d.clone()));
    view(&st, g, &a, &q, n, &Draft::default(), StatusCode::OK)
}

/// What a received share's Status cell says.
fn state_of(s: &InShare, rejected: Option<&Declined>) -> String {
    if s.revoked_ms.is_some() {
        "revoked by the partner".into()
    } else if let Some(d) = rejected {
        format!("rejected by {} on {}", d.by, utc(d.at_ms))
    } else if let Some((by, at)) = &s.terms_accepted {
        format!("terms accepted by {by} on {}", utc(*at))
    } else if s.terms.is_some() {
        "waiting for an admin to accept the terms: nothing released yet".into()
    } else {
        "receiving (no terms to accept)".into()
    }
}

fn view(
    st: &WebState,
    g: &Governance,
    a: &Authed,
    q: &HashMap<String, String>,
    n: Option<(bool, String)>,
    draft: &Draft,
    status: StatusCode,
) -> Response {
    let received = match shares::list(g) {
        Ok((_, r)) => r,
        Err(e) => return internal("cannot list shares", e),
    };
    let mut rejected = HashMap::new();
    for s in &received {
        match declined::get(g, &s.id) {
            Ok(Some(d)) => {
                rejected.insert(s.id, d);
            }
            Ok(None) => {}
            Err(e) => return internal("cannot read rejected shares", e),
        }
    }
    let open = |s: &InShare| s.revoked_ms.is_none() && !rejected.contains_key(&s.id);
    // The share whose terms dialog is open (admins only: viewers accept nothing).
    let dialog = q
        .get("terms")
        .filter(|_| a.admin())
        .and_then(|id| received.iter().find(|s| s.id.to_string() == id.trim()))
        .filter(|s| open(s) && s.terms.is_some() && s.terms_accepted.is_none());
    let get = |k: &str| q.get(k).map(|s| s.trim().to_string()).unwrap_or_default();
    let (fp, fa, fw) = (get("partner"), get("action"), get("who"));
    let mut partner_error = None;
    let partner = if fp.is_empty() {
        None
    } else {
        match g.resolve_partner(&fp) {
            Ok(p) => Some(p),
            Err(e) => {
                partner_error = Some(e.to_string());
                None
            }
        }
    };
    let entries = match g.audit_log(&AuditFilter {
        partner,
        since_ms: None,
    }) {
        Ok(e) => e,
        Err(e) => return internal("cannot read the audit log", e),
    };
    let mut entries: Vec<_> = entries
        .into_iter()
        .filter(|e| fa.is_empty() || e.action.contains(fa.as_str()))
        .filter(|e| fw.is_empty() || e.who == fw)
        .filter(|_| partner_error.is_none())
        .collect();
    entries.reverse();
    let total = entries.len();
    entries.truncate(AUDIT_ROWS);
    let partners = paired(st);
    let body = html! {
        (notice(&n))
        h2 id="received" { "Shares received" }
        @if received.is_empty() {
            p.muted { "No partner shares anything with this organisation yet." }
        } @else {
            table aria-labelledby="received" {
                thead { tr { th { "From" } th { "Label" } th { "Access" } th { "Records" } th { "Terms" } th { "Status" } @if a.admin() { th { "Decide" } } } }
                tbody {
                    @for s in &received {
                        tr {
                            td data-label="From" { (g.partner_name(&s.partner)) }
                            td data-label="Label" { (s.label) }
                            td data-label="Access" { (s.access.as_str()) }
                            td data-label="Records" { (s.received) }
                            td data-label="Terms" {
                                @match &s.terms {
                                    Some(t) => details { summary { "Read the terms" } p.terms { (t) } },
                                    None => span.muted { "none" },
                                }
                            }
                            td data-label="Status" { (state_of(s, rejected.get(&s.id))) }
                            @if a.admin() {
                                td data-label="Decide" {
                                    @if open(s) {
                                        @if s.terms.is_some() && s.terms_accepted.is_none() {
                                            a.button href={"/?terms=" (s.id) "#terms-dialog"} aria-label={"Accept share " (s.label) ": read its terms first"} { "Accept…" }
                                            " "
                                        }
                                        form.inline method="post" action={"/shares/" (s.id) "/reject"} {
                                            input type="hidden" name="csrf" value=(a.session.csrf);
                                            button.secondary type="submit" aria-label={"Reject share " (s.label)} { "Reject" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(s) = dialog {
            div.backdrop {}
            dialog open id="terms-dialog" aria-modal="true" aria-labelledby="terms-title" {
                h2 id="terms-title" { "Terms of “" (s.label) "” from " (g.partner_name(&s.partner)) }
                p.muted { "Nothing of this share is released to this organisation until an admin accepts these terms." }
                div.terms { (s.terms.clone().unwrap_or_default()) }
                form method="post" action={"/shares/" (s.id) "/accept-terms"} {
                    input type="hidden" name="csrf" value=(a.session.csrf);
                    p.check {
                        input type="checkbox" id="agree" name="agree" value="yes" required autofocus aria-describedby=[draft.described("agree")];
                        " "
                        label for="agree" { "I have read these terms and accept them for this organisation." }
                    }
                    (draft.error_at("agree"))
                    p {
                        button type="submit" { "Accept the terms" }
                        " "
                        a.button.secondary href="/" { "Cancel" }
                    }
                }
            }
        }
        @if a.admin() {
            h2 id="redeem" { "Redeem a share code" }
            p.muted { "A partner can give a one-time share code instead of naming this organisation; redeeming it asks that partner to release the share here." }
            @if partners.is_empty() { p.muted { "Pair with a partner first." } } @else {
                form.filters method="post" action="/shares/redeem" aria-labelledby="redeem" {
                    input type="hidden" name="csrf" value=(a.session.csrf);
                    div {
                        label for="redeem-partner" { "Partner who gave the code" }
                        select id="redeem-partner" name="partner" aria-describedby=[draft.described("partner")] {
                            @for (name, org) in &partners {
                                @let v = org.account_number();
                                option value=(v) selected[draft.get("partner") == v] { (name) }
                            }
                        }
                        (draft.error_at("partner"))
                    }
                    div {
                        label for="redeem-code" { "Share code" }
                        input type="text" id="redeem-code" name="code" value=(draft.get("code")) autocomplete="off" placeholder="XXXX-XXXX-XXXX-XXXX" aria-describedby=[draft.described("code")];
                        (draft.error_at("code"))
                    }
                    div { button type="submit" { "Redeem" } }
                }
            }
        }
        h2 id="audit" { "Audit log" }
        form.filters method="get" action="/" role="search" aria-label="Filter the audit log" {
            div {
                label for="f-partner" { "Partner (name or account number)" }
                input type="text" id="f-partner" name="partner" value=(fp) aria-describedby=[partner_error.as_ref().map(|_| "f-partner-error")];
                @if let Some(e) = &partner_error { span.error id="f-partner-error" { (e) } }
            }
            div { label for="f-action" { "Action contains" } input type="text" id="f-action" name="action" value=(fa); }
            div { label for="f-who" { "Who (exact)" } input type="text" id="f-who" name="who" value=(fw); }
            div { button type="submit" { "Filter" } }
        }
        p.muted { "Showing " (entries.len()) " of " (total) " matching entries, newest first." }
        table aria-labelledby="audit" {
            thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Partner" } th { "Share" } th { "Detail" } } }
            tbody {
                @for e in &entries {
                    tr {
                        td data-label="When" { (utc(e.at_ms)) }
                        td data-label="Who" { (e.who) }
                        td data-label="Action" { code { (e.action) } }
                        td data-label="Partner" { (e.partner_name.clone().or(e.partner.clone()).unwrap_or_default()) }
                        td data-label="Share" { (e.share.clone().unwrap_or_default()) }
                        td data-label="Detail" { (e.detail) }
                    }
                }
            }
        }
    };
    (status, layout("Home", "home", Some(a), body)).into_response()
}

/// Shows Home again after a refused POST: `msg` on top, the draft's
/// errors next to their fields, `q` the view (e.g. the open terms dialog).
fn again(
    st: &WebState,
    g: &Governance,
    a: &Authed,
    q: &[(&str, String)],
    draft: Draft,
    msg: String,
    status: StatusCode,
) -> Response {
    let q: HashMap<String, String> = q.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    view(st, g, a, &q, Some((false, msg)), &draft, status)
}

fn done(msg: &str) -> Response {
    see_other(&format!("/?done={}", urlencode(msg)), None)
}

async fn accept_terms(
    State(st): State<WebState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "accepting a share's terms",
        ("Home", "home"),
    ));
    if field(&form, "agree") != "yes" {
        let errors = BTreeMap::from([(
            "agree".to_string(),
            "Tick the box to say you read and accept the terms; nothing was accepted.".to_string(),
        )]);
        return again(
            &st,
            g,
            &a,
            &[("terms", id.clone())],
            Draft {
                values: form,
                errors,
            },
            "Terms not accepted.".into(),
            StatusCode::BAD_REQUEST,
        );
    }
    let result = match share_id(&id) {
        Ok(id) => shares::accept_terms(g, &id, a.name()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(s) => done(&format!(
            "Terms of {} accepted: the partner now releases its data.",
            s.label
        )),
        Err(e) => refused(&st, g, &a, "Terms not accepted", e),
    }
}

fn refused(st: &WebState, g: &Governance, a: &Authed, what: &str, e: GovError) -> Response {
    tracing::warn!(who = %a.name(), error = %e, "web console: {what}");
    let status = gov_status(&e);
    again(
        st,
        g,
        a,
        &[],
        Draft::default(),
        format!("{what}: {e}"),
        status,
    )
}

async fn reject(
    State(st): State<WebState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "rejecting a received share",
        ("Home", "home"),
    ));
    let result = match share_id(&id) {
        Ok(id) => declined::reject(g, &id, a.name()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(s) => done(&format!(
            "Share {} rejected: what it sent and sends is dropped.",
            s.label
        )),
        Err(e) => refused(&st, g, &a, "Share not rejected", e),
    }
}

async fn redeem(State(st): State<WebState>, headers: HeaderMap, Form(form): FormMap) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "redeeming a share code",
        ("Home", "home"),
    ));
    let mut errors = BTreeMap::new();
    let partner = match g.resolve_partner(field(&form, "partner")) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.insert("partner".to_string(), e.to_string());
            None
        }
    };
    let code = field(&form, "code");
    if code.is_empty() {
        errors.insert(
            "code".to_string(),
            "Enter the share code the partner gave you.".to_string(),
        );
    }
    let result = match partner {
        Some(p) if errors.is_empty() => shares::redeem(g, &p, code, a.name()).await.map(|()| p),
        _ => Err(GovError::Invalid("see the fields".into())),
    };
    match result {
        Ok(p) => done(&format!(
            "Share code sent to {}: the share appears here once {} releases it.",
            g.partner_name(&p),
            g.partner_name(&p)
        )),
        Err(e) => {
            if errors.is_empty() {
                errors.insert("code".to_string(), e.to_string());
            }
            again(
                &st,
                g,
                &a,
                &[],
                Draft {
                    values: form,
                    errors,
                },
                "Code not redeemed.".into(),
                gov_status(&e),
            )
        }
    }
}
