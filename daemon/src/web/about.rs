//! The About page: this instance's identity, as partners see it, and
//! pairing by one-time code (create an invitation, join a partner's).
//!
//! Pairing runs keytool's own functions (see [`super::pairing`]); only
//! admins see the forms, and a viewer's POST is refused 403 by
//! [`super::pages::authorize_post`]. The code is shown once, in the answer
//! to the POST that created it, and is never stored, logged or audited.

// Guards return the refusal page itself as the error (see pages.rs).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};

use super::pages::{
    authorize_post, current, field, layout, notice, see_other, urlencode, utc, Authed, FormMap,
};
use super::pairing::{InviteState, NewInvite, PairError};
use super::WebState;

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/about", get(about))
        .route("/about/invite", post(invite))
        .route("/about/join", post(join))
}

/// What the forms show again after a refusal: values and the field in error.
#[derive(Default)]
struct Draft {
    values: HashMap<String, String>,
    error: Option<(&'static str, String)>,
}

impl Draft {
    fn get<'a>(&'a self, k: &str, default: &'a str) -> &'a str {
        self.values.get(k).map(String::as_str).unwrap_or(default)
    }
    fn error_at(&self, f: &str) -> Markup {
        html! {
            @if let Some((at, msg)) = &self.error {
                @if *at == f { p.error role="alert" id={"err-" (f)} { (msg) } }
            }
        }
    }
    fn describes(&self, f: &str) -> Option<String> {
        self.error
            .as_ref()
            .filter(|(at, _)| *at == f)
            .map(|_| format!("err-{f}"))
    }
}

async fn about(
    State(st): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let a = or_respond!(current(&st, &headers));
    let n = q.get("done").map(|d| (true, d.clone()));
    view(&st, &a, n, None, Draft::default(), StatusCode::OK)
}

fn invite_state(s: &Option<InviteState>) -> Markup {
    html! {
        @match s {
            Some(InviteState::Waiting { listen, expires_ms }) => p id="invite-state" {
                "An invitation is waiting on " span.mono { (listen) } " (UDP) until " (utc(*expires_ms)) "."
            },
            Some(InviteState::Paired(name)) => p.ok id="invite-state" role="status" { "The last invitation paired with " (name) "." },
            Some(InviteState::Failed(why)) => p.error id="invite-state" { "The last invitation ended without pairing: " (why) },
            None => {},
        }
    }
}

fn view(
    st: &WebState,
    a: &Authed,
    n: Option<(bool, String)>,
    created: Option<NewInvite>,
    d: Draft,
    status: StatusCode,
) -> Response {
    let i = &st.about;
    let control = st.control.as_ref();
    let listen_default = control
        .map(|c| c.default_invite_listen())
        .unwrap_or_default();
    let body = html! {
        (notice(&n))
        dl {
            dt { "Organisation" } dd { (i.org_name) }
            dt { "Account number" } dd id="account" { (i.account) }
            dt { "Certificate fingerprint" } dd { (i.fingerprint) }
            dt { "Key epoch" } dd { (i.epoch) }
            dt { "Instance" } dd { (i.instance) }
        }
        p.muted { "Partners compare the fingerprint with the one you read to them before pairing." }
        @if let Some(c) = control {
            h2 id="invite" { "Invite a partner" }
            @if let Some(new) = &created {
                section.code aria-labelledby="code-title" {
                    h3 id="code-title" { "One-time pairing code" }
                    p.code.mono id="invite-code" { (new.code.as_str()) }
                    p { "Read this code to the partner's admin by phone. It is shown only now, works once (a wrong guess ends the invitation) and expires at " (utc(new.expires_ms)) "." }
                    p { "On their console (About → Join) they enter:" }
                    dl {
                        dt { "Address" } dd id="invite-connect" { (new.connect) }
                        dt { "Account number" } dd { (i.account) }
                        dt { "Code" } dd { (new.code.as_str()) }
                    }
                    p.muted { "Or on their server: " code { "orgsync-keytool join --connect " (new.connect) " --account " (i.account) " " (new.code.as_str()) } }
                }
            }
            (invite_state(&c.invite_state()))
            @if a.admin() {
                form method="post" action="/about/invite" {
                    input type="hidden" name="csrf" value=(a.session.csrf);
                    label for="listen" { "Listen for the partner on (UDP address, IP:PORT)" }
                    (d.error_at("listen"))
                    input type="text" id="listen" name="listen" value=(d.get("listen", &listen_default)) required
                        aria-describedby=[d.describes("listen")];
                    label for="minutes" { "Code valid for (minutes)" }
                    (d.error_at("minutes"))
                    input type="text" id="minutes" name="minutes" inputmode="numeric" value=(d.get("minutes", "10")) required
                        aria-describedby=[d.describes("minutes")];
                    (d.error_at("invite"))
                    p { button type="submit" { "Create a one-time code" } }
                }
                h2 id="join" { "Join a partner's invitation" }
                p.muted { "The partner's admin created a code on their console (or ran " code { "orgsync-keytool invite" } ") and read it to you with their address and account number." }
                form method="post" action="/about/join" {
                    input type="hidden" name="csrf" value=(a.session.csrf);
                    label for="connect" { "Partner's pairing address (HOST:PORT)" }
                    (d.error_at("connect"))
                    input type="text" id="connect" name="connect" value=(d.get("connect", "")) required
                        aria-describedby=[d.describes("connect")];
                    label for="account-number" { "Partner's account number" }
                    (d.error_at("account"))
                    input type="text" id="account-number" name="account" value=(d.get("account", "")) required
                        aria-describedby=[d.describes("account")];
                    label for="code" { "Pairing code (e.g. 7-lantern-wagon)" }
                    (d.error_at("code"))
                    input type="text" id="code" name="code" autocomplete="off" required
                        aria-describedby=[d.describes("code")];
                    (d.error_at("join"))
                    p { button type="submit" { "Join and pair" } }
                }
            } @else {
                p.muted { "Viewer accounts cannot create or join invitations." }
            }
        }
    };
    (status, layout("About", "about", Some(a), body)).into_response()
}

/// The field a pairing error belongs to (`fallback` for the whole form).
fn draft_error(e: PairError, fallback: &'static str) -> (&'static str, String) {
    match e {
        PairError::Field(f, msg) => (f, msg),
        other => (fallback, other.to_string()),
    }
}

async fn invite(State(st): State<WebState>, headers: HeaderMap, Form(form): FormMap) -> Response {
    let a = or_respond!(authorize_post(
        &st,
        &headers,
        &form,
        true,
        "creating a pairing invitation"
    ));
    let Some(c) = st.control.clone() else {
        return see_other("/about", None);
    };
    let refuse = |err: (&'static str, String), status| {
        let values = form.clone();
        view(
            &st,
            &a,
            None,
            None,
            Draft {
                values,
                error: Some(err),
            },
            status,
        )
    };
    let minutes = match field(&form, "minutes").parse::<u64>() {
        Ok(m) if (1..=24 * 60).contains(&m) => m,
        _ => {
            return refuse(
                (
                    "minutes",
                    format!(
                        "{:?} is not a number of minutes from 1 to 1440",
                        field(&form, "minutes")
                    ),
                ),
                StatusCode::BAD_REQUEST,
            )
        }
    };
    let who = a.name().to_string();
    let st2 = st.clone();
    let done = move |r: Result<String, String>| match r {
        Ok(name) => st2.audit(
            &who,
            "partner.pair",
            format!("paired with {name} by a console invitation"),
        ),
        Err(e) => st2.audit(
            &who,
            "partner.invite.ended",
            format!("console invitation ended without pairing: {e}"),
        ),
    };
    match c.invite(
        field(&form, "listen"),
        Duration::from_secs(minutes * 60),
        done,
    ) {
        Ok(new) => {
            st.audit(
                a.name(),
                "partner.invite",
                format!(
                    "one-time pairing code created, listening on {} until {}",
                    new.connect,
                    utc(new.expires_ms)
                ),
            );
            view(&st, &a, None, Some(new), Draft::default(), StatusCode::OK)
        }
        Err(e) => {
            tracing::warn!(who = %a.name(), error = %e, "web console: invitation not created");
            refuse(draft_error(e, "invite"), StatusCode::BAD_REQUEST)
        }
    }
}

async fn join(State(st): State<WebState>, headers: HeaderMap, Form(form): FormMap) -> Response {
    let a = or_respond!(authorize_post(
        &st,
        &headers,
        &form,
        true,
        "joining a pairing invitation"
    ));
    let Some(c) = st.control.clone() else {
        return see_other("/about", None);
    };
    match c
        .join(
            field(&form, "connect"),
            field(&form, "account"),
            field(&form, "code"),
        )
        .await
    {
        Ok(name) => {
            st.audit(
                a.name(),
                "partner.pair",
                format!("paired with {name} by joining its invitation"),
            );
            see_other(
                &format!("/about?done={}", urlencode(&format!("Paired with {name}."))),
                None,
            )
        }
        Err(e) => {
            tracing::warn!(who = %a.name(), error = %e, "web console: join refused");
            let mut values = form.clone();
            // The code is single-use and secret: never echoed back.
            values.remove("code");
            view(
                &st,
                &a,
                None,
                None,
                Draft {
                    values,
                    error: Some(draft_error(e, "join")),
                },
                StatusCode::BAD_REQUEST,
            )
        }
    }
}
