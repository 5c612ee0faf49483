//! The Partners page: paired partners and pending peers.

// Guards return the refusal page itself as the error (see pages.rs).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::html;

use super::pages::{
    admin_post, current, field, gov_status, internal, layout, notice, see_other, urlencode, utc,
    Authed, FormMap,
};
use super::WebState;
use crate::governance::pending;

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/partners", get(partners))
        .route("/partners/pending/accept", post(pending_accept))
        .route("/partners/pending/dismiss", post(pending_dismiss))
}

async fn partners(
    State(st): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let a = match current(&st, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let n = q.get("done").map(|d| (true, d.clone()));
    partners_view(&st, &a, n, StatusCode::OK)
}

fn partners_view(
    st: &WebState,
    a: &Authed,
    n: Option<(bool, String)>,
    status: StatusCode,
) -> Response {
    let list = st.partners.partners();
    let pend = match st.gov.as_ref().map(pending::list).transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => return internal("cannot list pending peers", e),
    };
    let ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    let body = html! {
        (notice(&n))
        h2 id="paired" { "Paired and revoked" }
        @if list.is_empty() { p.muted { "No partners yet." } } @else {
            table aria-labelledby="paired" {
                thead { tr { th { "Partner" } th { "Account number" } th { "State" } th { "Connected" } th { "Last sync" } th { "Not acknowledged" } } }
                tbody {
                    @for p in &list {
                        tr {
                            td data-label="Partner" { (p.name) }
                            td data-label="Account number" { span.mono { (p.org.account_number()) } }
                            td data-label="State" { (p.state) }
                            td data-label="Connected" { @if p.connected { "yes" } @else { "no" } }
                            td data-label="Last sync" { (p.last_sync_ms.map(utc).unwrap_or_else(|| "never".into())) }
                            td data-label="Not acknowledged" { (p.not_acked) }
                        }
                    }
                }
            }
        }
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
    let (a, g) = match admin_post(
        &st,
        &headers,
        &form,
        "pairing a pending peer",
        ("Partners", "partners"),
    ) {
        Ok(ok) => ok,
        Err(r) => return r,
    };
    if field(&form, "checked") != "yes" {
        return partners_view(
            &st,
            &a,
            Some((
                false,
                "Compare the fingerprint with the partner's admin first, then tick the box.".into(),
            )),
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
        Ok(name) => see_other(
            &format!(
                "/partners?done={}",
                urlencode(&format!("Paired with {name}."))
            ),
            None,
        ),
        Err(e) => {
            tracing::warn!(who = %a.name(), error = %e, "web console: pairing refused");
            partners_view(
                &st,
                &a,
                Some((false, format!("Not paired: {e}"))),
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
    let (a, g) = match admin_post(
        &st,
        &headers,
        &form,
        "dismissing a pending peer",
        ("Partners", "partners"),
    ) {
        Ok(ok) => ok,
        Err(r) => return r,
    };
    let fp = field(&form, "fingerprint");
    match pending::dismiss(g, fp, a.name()).await {
        Ok(()) => see_other(&format!("/partners?done={}", urlencode("Dismissed.")), None),
        Err(e) => partners_view(
            &st,
            &a,
            Some((false, format!("Not dismissed: {e}"))),
            gov_status(&e),
        ),
    }
}
