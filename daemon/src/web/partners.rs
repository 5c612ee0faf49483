//! The Partners page: paired partners and pending peers.

// Guards return the refusal page itself as the error (see pages.rs).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};

use super::live::{lag_text, progress_text};
use super::pages::{
    admin_post, authorize_post, current, field, gov_status, internal, layout, notice, utc, Authed,
    FormMap,
};
use super::partner_settings::done;
use super::WebState;
use crate::governance::pending;

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/partners", get(partners))
        .route("/partners/pending/accept", post(pending_accept))
        .route("/partners/pending/dismiss", post(pending_dismiss))
        .route("/partners/revoke", get(revoke_page).post(revoke))
        .merge(super::partner_settings::routes())
}

async fn partners(
    State(st): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let a = or_respond!(current(&st, &headers));
    let n = q.get("done").map(|d| (true, d.clone()));
    partners_view(&st, &a, n, None, StatusCode::OK)
}

/// The Partners page; `err` is (input id, message) shown next to that input.
pub(super) fn partners_view(
    st: &WebState,
    a: &Authed,
    n: Option<(bool, String)>,
    err: Option<(String, String)>,
    status: StatusCode,
) -> Response {
    let list = st.partners.partners();
    let pend = match st.gov.as_ref().map(pending::list).transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => return internal("cannot list pending peers", e),
    };
    let not_acked: u64 = list
        .iter()
        .filter(|p| p.state != "revoked")
        .map(|p| p.not_acked)
        .sum();
    let can_revoke = a.admin() && st.control.is_some();
    let ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    let body = html! {
        (notice(&n))
        h2 id="paired" { "Paired and revoked" }
        p id="sync-progress" role="status" aria-live="polite" { (progress_text(not_acked)) }
        @if list.is_empty() { p.muted { "No partners yet. Pair on the " a href="/about" { "About" } " page with a one-time code." } } @else {
            table.partners aria-labelledby="paired" {
                thead { tr { th { "Partner" } th { "Account number" } th { "State" } th { "Connected" } th { "Last sync" } th { "Not acknowledged" } th { "Lag" } @if can_revoke { th { "Actions" } } } }
                tbody {
                    @for p in &list {
                        tr data-account=(p.org.account_number()) {
                            td data-label="Partner" { (p.name) }
                            td data-label="Account number" { span.mono { (p.org.account_number()) } }
                            td data-label="State" { (p.state) }
                            td data-label="Connected" data-live="connected" { @if p.connected { "yes" } @else { "no" } }
                            td data-label="Last sync" data-live="last_sync" { (p.last_sync_ms.map(utc).unwrap_or_else(|| "never".into())) }
                            td data-label="Not acknowledged" data-live="not_acked" { (p.not_acked) }
                            td data-label="Lag" data-live="lag" { (lag_text(p.lag_ms)) }
                            @if can_revoke {
                                td data-label="Actions" {
                                    @if p.state != "revoked" {
                                        a.button.secondary href={"/partners/revoke?partner=" (p.org.account_number())} aria-label={"Revoke " (p.name)} { "Revoke…" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (super::partner_settings::section(st, a, err.as_ref()))
        h2 id="pending" { "Pending (refused at the handshake)" }
        p.muted { "A pending peer proved it holds its key but is not paired. Pair only after comparing its fingerprint with the one its admin reads to you, and paste the bundle they sent." }
        @if pend.is_empty() { p.muted { "No pending peers." } }
        @for (i, p) in pend.iter().enumerate() {
            section aria-labelledby={"pending-" (i)} {
                h3 id={"pending-" (i)} { "Fingerprint " span.mono { (p.fingerprint) } }
                p {
                    "Address " (p.address.map(|a| a.to_string()).unwrap_or_else(|| "unknown".into()))
                    ", " (p.attempts) " attempt(s), first seen " (utc(ms(p.first_seen))) ", last seen " (utc(ms(p.last_seen)))
                    @if p.revoked { " (a revoked partner's key)" }
                }
                @if a.admin() {
                    form method="post" action="/partners/pending/accept" {
                        input type="hidden" name="csrf" value=(a.session.csrf);
                        input type="hidden" name="fingerprint" value=(p.fingerprint);
                        label for={"bundle-" (i)} { "Partner's bundle (paste the text their admin sent)" }
                        textarea id={"bundle-" (i)} name="bundle" required {}
                        p.check {
                            input type="checkbox" id={"checked-" (i)} name="checked" value="yes" required;
                            " "
                            label for={"checked-" (i)} { "I compared this fingerprint with the one the partner's admin read to me, and they match." }
                        }
                        p { button type="submit" { "Accept and pair" } }
                    }
                    form method="post" action="/partners/pending/dismiss" {
                        input type="hidden" name="csrf" value=(a.session.csrf);
                        input type="hidden" name="fingerprint" value=(p.fingerprint);
                        button.secondary type="submit" aria-label={"Dismiss pending peer " (p.fingerprint)} { "Dismiss" }
                    }
                }
            }
        }
    };
    (status, layout("Partners", "partners", Some(a), body)).into_response()
}

async fn pending_accept(
    State(st): State<WebState>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "pairing a pending peer",
        ("Partners", "partners"),
    ));
    if field(&form, "checked") != "yes" {
        return partners_view(
            &st,
            &a,
            Some((
                false,
                "Compare the fingerprint with the partner's admin first, then tick the box.".into(),
            )),
            None,
            StatusCode::BAD_REQUEST,
        );
    }
    match pending::accept(
        g,
        field(&form, "fingerprint"),
        field(&form, "bundle"),
        a.name(),
    )
    .await
    {
        Ok(name) => done(&format!("Paired with {name}.")),
        Err(e) => {
            tracing::warn!(who = %a.name(), error = %e, "web console: pairing refused");
            partners_view(
                &st,
                &a,
                Some((false, format!("Not paired: {e}"))),
                None,
                gov_status(&e),
            )
        }
    }
}

async fn pending_dismiss(
    State(st): State<WebState>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "dismissing a pending peer",
        ("Partners", "partners"),
    ));
    let fp = field(&form, "fingerprint");
    match pending::dismiss(g, fp, a.name()).await {
        Ok(()) => done("Dismissed."),
        Err(e) => partners_view(
            &st,
            &a,
            Some((false, format!("Not dismissed: {e}"))),
            None,
            gov_status(&e),
        ),
    }
}

/// The partner a revoke form names, from the live list.
fn revoke_target(st: &WebState, account: &str) -> Option<crate::api::PartnerStatus> {
    st.partners
        .partners()
        .into_iter()
        .find(|p| p.org.account_number() == account.trim())
}

fn revoke_form(a: &Authed, p: &crate::api::PartnerStatus, error: Option<&str>) -> Markup {
    html! {
        p { "Revoking " strong { (p.name) } " (account " span.mono { (p.org.account_number()) } ") stops all sync with it at once: "
            "this daemon refuses its certificate and keys from now on. What it already received stays on its side. "
            "Pairing again takes a new invitation or bundle." }
        form method="post" action="/partners/revoke" {
            input type="hidden" name="csrf" value=(a.session.csrf);
            input type="hidden" name="partner" value=(p.org.account_number());
            @if let Some(e) = error { p.error role="alert" id="err-confirm" { (e) } }
            p.check {
                input type="checkbox" id="confirm" name="confirm" value="yes" required aria-describedby=[error.map(|_| "err-confirm")];
                " "
                label for="confirm" { "Yes, revoke " (p.name) "." }
            }
            p { button type="submit" { "Revoke " (p.name) } " " a href="/partners" { "Cancel" } }
        }
    }
}

/// The confirmation step of a revocation (admins only).
async fn revoke_page(
    State(st): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let a = or_respond!(current(&st, &headers));
    if !a.admin() {
        return super::refusal(
            StatusCode::FORBIDDEN,
            "Viewer accounts see everything but change nothing: revoking a partner needs an admin account.",
        );
    }
    let Some(p) = revoke_target(&st, q.get("partner").map_or("", String::as_str)) else {
        return partners_view(
            &st,
            &a,
            Some((false, "No such partner to revoke.".into())),
            None,
            StatusCode::NOT_FOUND,
        );
    };
    layout(
        "Revoke a partner",
        "partners",
        Some(&a),
        revoke_form(&a, &p, None),
    )
    .into_response()
}

async fn revoke(State(st): State<WebState>, headers: HeaderMap, Form(form): FormMap) -> Response {
    let a = or_respond!(authorize_post(
        &st,
        &headers,
        &form,
        true,
        "revoking a partner"
    ));
    let (Some(c), Some(p)) = (
        st.control.as_ref(),
        revoke_target(&st, field(&form, "partner")),
    ) else {
        return partners_view(
            &st,
            &a,
            Some((false, "No such partner to revoke; nothing changed.".into())),
            None,
            StatusCode::NOT_FOUND,
        );
    };
    if field(&form, "confirm") != "yes" {
        let body = revoke_form(
            &a,
            &p,
            Some("Tick the box to confirm; nothing was revoked."),
        );
        return (
            StatusCode::BAD_REQUEST,
            layout("Revoke a partner", "partners", Some(&a), body),
        )
            .into_response();
    }
    match c.revoke(&p.org.account_number()) {
        Ok((name, already)) => {
            if !already {
                st.audit(
                    a.name(),
                    "partner.revoke",
                    format!(
                        "{name} (account {}) revoked from the console",
                        p.org.account_number()
                    ),
                );
            }
            let msg = if already {
                format!("{name} was already revoked.")
            } else {
                format!("Revoked {name}: its certificate and keys are refused from now on.")
            };
            done(&msg)
        }
        Err(e) => {
            tracing::warn!(who = %a.name(), error = %e, "web console: revoke failed");
            partners_view(
                &st,
                &a,
                Some((false, format!("Not revoked: {e}"))),
                None,
                StatusCode::INTERNAL_SERVER_ERROR,
            )
        }
    }
}
