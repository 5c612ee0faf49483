//! Routes and pages of the console (maud templates, checked at compile time).

// Guards return the refusal page itself as the error: it is built once per
// request and returned straight to axum, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{html, Markup, DOCTYPE};

use super::accounts::{self, Account, Role};
use super::session::{self, Locked, Session, Stage};
use super::{refusal, totp, ClientAddr, WebState, COOKIE, MAX_FORM_BYTES};
use crate::governance::inbox;
use crate::governance::{GovError, Governance};

const STYLE: &str = include_str!("style.css");

pub(super) fn router(st: WebState) -> Router {
    Router::new()
        .route("/login", get(login_page).post(login_post))
        .route("/login/totp", post(totp_post))
        .route("/logout", post(logout))
        .merge(super::outgoing::routes())
        .merge(super::incoming::routes())
        .merge(super::home::routes())
        .merge(super::partners::routes())
        .merge(super::about::routes())
        .merge(super::live::routes())
        .merge(super::requests::routes())
        .merge(super::records::routes())
        .merge(super::export::routes())
        .route("/static/style.css", get(css))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            st.clone(),
            super::guard,
        ))
        .with_state(st)
}

pub(super) type FormMap = Form<HashMap<String, String>>;

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

/// The signed-in account behind a request.
pub(super) struct Authed {
    pub(super) sid: String,
    pub(super) session: Session,
    pub(super) account: Account,
    /// Inbox items waiting, for the navigation's count (live.rs updates it).
    pub(super) inbox: usize,
}

impl Authed {
    pub(super) fn name(&self) -> &str {
        &self.account.name
    }
    pub(super) fn admin(&self) -> bool {
        self.account.role == Role::Admin
    }
}

fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The signed-in account name of the request's session, if any.
pub(super) fn session_name(st: &WebState, headers: &HeaderMap) -> Option<String> {
    let s = st.sessions.get(&cookie_id(headers)?)?;
    match s.stage {
        Stage::SignedIn { name } => Some(name),
        _ => None,
    }
}

fn set_cookie(st: &WebState, id: &str) -> HeaderValue {
    let secure = if st.tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

pub(super) fn see_other(to: &str, cookie: Option<HeaderValue>) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response();
    if let Some(c) = cookie {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

pub(super) fn internal(what: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "web console: {what}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        message_page("Error", &format!("{what}: {e}")),
    )
        .into_response()
}

/// The signed-in account, or a redirect to the login page.
pub(super) fn current(st: &WebState, headers: &HeaderMap) -> Result<Authed, Response> {
    let to_login = || see_other("/login", None);
    let sid = cookie_id(headers).ok_or_else(to_login)?;
    let session = st.sessions.get(&sid).ok_or_else(to_login)?;
    let Stage::SignedIn { name } = &session.stage else {
        return Err(to_login());
    };
    // Re-read at each request: a removed account or a changed role applies at once.
    match st.accounts.get(name) {
        Ok(Some(account)) if account.stamp() == session.stamp => Ok(Authed {
            sid,
            session,
            account,
            inbox: st
                .gov
                .as_ref()
                .and_then(|g| inbox::list(g, None).ok())
                .map_or(0, |l| l.len()),
        }),
        Ok(_) => {
            // Removed, or password / second factor changed since sign-in.
            tracing::info!(who = %name, "web console: session ended (account removed or credentials changed)");
            st.sessions.remove(&sid);
            Err(to_login())
        }
        Err(e) => Err(internal("cannot read the console accounts", e)),
    }
}

/// Checks a POST: signed in, the form's CSRF token is the session's, and
/// (when `needs_admin`) the account is an admin. Refusals are logged and
/// audited under the account's name.
pub(super) fn authorize_post(
    st: &WebState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    needs_admin: bool,
    what: &str,
) -> Result<Authed, Response> {
    let a = match current(st, headers) {
        Ok(a) => a,
        Err(_) => {
            tracing::warn!(
                what,
                "web console: refused a POST without a signed-in session"
            );
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "Sign in first: this session has ended or never signed in.",
            ));
        }
    };
    let token = form.get("csrf").map(String::as_str).unwrap_or("");
    if !session::tokens_equal(token, &a.session.csrf) {
        let reason = if token.is_empty() { "missing" } else { "wrong" };
        tracing::warn!(who = %a.name(), what, reason, "web console: refused a POST: CSRF token {reason}");
        st.audit(
            a.name(),
            "web.refused",
            format!("{what}: CSRF token {reason}"),
        );
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "The form's security token is missing or wrong (CSRF check). Reload the page and try again.",
        ));
    }
    if needs_admin && !a.admin() {
        tracing::warn!(who = %a.name(), what, "web console: refused a viewer's change");
        st.audit(
            a.name(),
            "web.refused",
            format!("{what}: viewer accounts cannot change anything"),
        );
        return Err(refusal(
            StatusCode::FORBIDDEN,
            &format!(
                "Viewer accounts see everything but change nothing: {what} needs an admin account."
            ),
        ));
    }
    Ok(a)
}

pub(super) fn gov_status(e: &GovError) -> StatusCode {
    match e {
        GovError::NotFound(_) => StatusCode::NOT_FOUND,
        GovError::Invalid(_) => StatusCode::BAD_REQUEST,
        GovError::Refused(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS UTC`.
pub(super) fn utc(ms: u64) -> String {
    // The one civil-date conversion is json's; only the layout differs.
    let stamp = crate::json::rfc3339_ms(ms);
    let (date, time) = stamp.split_once('T').unwrap_or((&stamp, ""));
    let time = time.split_once('.').map_or(time, |(hms, _)| hms);
    format!("{date} {time} UTC")
}

pub(super) fn layout(title: &str, here: &str, auth: Option<&Authed>, body: Markup) -> Html<String> {
    let nav = [
        ("/", "Home", "home"),
        ("/incoming", "Incoming", "incoming"),
        ("/outgoing", "Outgoing", "outgoing"),
        ("/requests", "Requests", "requests"),
        ("/records", "Records", "records"),
        ("/export", "Export", "export"),
        ("/partners", "Partners", "partners"),
        ("/about", "About", "about"),
    ];
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · orgsync console" }
                    link rel="stylesheet" href="/static/style.css";
                    @if auth.is_some() { script src="/static/live.js" defer {} }
                }
                body {
                    header {
                        span.brand { "orgsync console" }
                        @if let Some(a) = auth {
                            nav aria-label="Main" {
                                ul {
                                    @for (href, label, key) in nav {
                                        li { a href=(href) aria-current=[(key == here).then_some("page")] { (label) @if key == "incoming" { " " span.count id="nav-inbox" hidden[a.inbox == 0] { @if a.inbox > 0 { (a.inbox) } } } } }
                                    }
                                }
                            }
                            form method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(a.session.csrf);
                                span.muted { (a.name()) " (" (a.account.role.as_str()) ") " }
                                button.secondary type="submit" { "Sign out" }
                            }
                        }
                    }
                    main id="main" {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        }
        .into_string(),
    )
}

/// A page with only a message (refusals, errors).
pub(super) fn message_page(title: &str, message: &str) -> Html<String> {
    layout(
        title,
        "",
        None,
        html! {
            p.error role="alert" { (message) }
            p { a href="/" { "Back to the console" } }
        },
    )
}

pub(super) fn notice(n: &Option<(bool, String)>) -> Markup {
    html! {
        @if let Some((ok, text)) = n {
            @if *ok { p.ok role="status" { (text) } } @else { p.error role="alert" { (text) } }
        }
    }
}

// ----- login -----

fn login_form(st: &WebState, session: &Session, error: Option<&str>) -> Html<String> {
    let _ = st;
    let body = match &session.stage {
        Stage::NeedTotp { name } => html! {
            div.login {
                @if let Some(e) = error { p.error role="alert" id="login-error" { (e) } }
                p { "Password accepted for " strong { (name) } ". Enter the 6-digit code from your authenticator app." }
                form method="post" action="/login/totp" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label for="code" { "Authentication code" }
                    input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code"
                        pattern="[0-9]{6}" maxlength="6" required autofocus aria-describedby=[error.map(|_| "login-error")];
                    p { button type="submit" { "Verify" } }
                }
            }
        },
        _ => html! {
            div.login {
                @if let Some(e) = error { p.error role="alert" id="login-error" { (e) } }
                form method="post" action="/login" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label for="name" { "Account name" }
                    input type="text" id="name" name="name" autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input type="password" id="password" name="password" autocomplete="current-password" required
                        aria-describedby=[error.map(|_| "login-error")];
                    p { button type="submit" { "Sign in" } }
                }
                p.muted { "Accounts are created on the server with " code { "orgsync admin add NAME" } "." }
            }
        },
    };
    layout("Sign in", "", None, body)
}

/// The login-stage session of the request, or a new anonymous one (with
/// the cookie to set).
fn login_session(st: &WebState, headers: &HeaderMap) -> (String, Session, Option<HeaderValue>) {
    if let Some(id) = cookie_id(headers) {
        if let Some(s) = st.sessions.get(&id) {
            return (id, s, None);
        }
    }
    let (id, s) = st.sessions.create(Stage::Anonymous);
    let c = set_cookie(st, &id);
    (id, s, Some(c))
}

async fn login_page(State(st): State<WebState>, headers: HeaderMap) -> Response {
    let (_, s, cookie) = login_session(&st, &headers);
    if matches!(s.stage, Stage::SignedIn { .. }) {
        return see_other("/", None);
    }
    let mut r = login_form(&st, &s, None).into_response();
    if let Some(c) = cookie {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

fn lock_message(l: Locked) -> String {
    let (what, left) = match l {
        Locked::Account(d) => ("this account", d),
        Locked::Address(d) => ("sign-ins from your address", d),
    };
    let mins = left.as_secs().div_ceil(60).max(1);
    format!(
        "Too many failed sign-ins: {what} are locked for {mins} more minute(s) (locks last {} minutes). Try again later, or have an admin reset the password on the server with `orgsync admin passwd NAME`.",
        session::LOCK_FOR.as_secs() / 60
    )
    .replace("this account are", "this account is")
}

fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    // Verified for unknown names so that timing does not reveal which exist.
    H.get_or_init(|| accounts::hash_password("orgsync-timing-equaliser").unwrap_or_default())
}

/// Checks a login-stage POST's session and CSRF token.
fn login_post_session(
    st: &WebState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(String, Session), Response> {
    let sid = cookie_id(headers);
    let s = sid.as_deref().and_then(|id| st.sessions.get(id));
    let (Some(sid), Some(s)) = (sid, s) else {
        tracing::warn!("web console: sign-in POST without a login session");
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "The sign-in form has expired. Reload the page and try again.",
        ));
    };
    let token = form.get("csrf").map(String::as_str).unwrap_or("");
    if !session::tokens_equal(token, &s.csrf) {
        tracing::warn!("web console: sign-in POST with a missing or wrong CSRF token");
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "The form's security token is missing or wrong (CSRF check). Reload the page and try again.",
        ));
    }
    Ok((sid, s))
}

async fn login_post(
    State(st): State<WebState>,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (sid, s) = or_respond!(login_post_session(&st, &headers, &form));
    let name = form.get("name").map(|n| n.trim()).unwrap_or("").to_string();
    let password = zeroize::Zeroizing::new(form.get("password").cloned().unwrap_or_default());
    let shown = crate::governance::shares::sanitize_claim(&name);
    if let Some(l) = st.limiter.check(&name, ip) {
        tracing::warn!(name = %shown, client = %ip, "web console: sign-in refused, locked");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            login_form(&st, &s, Some(&lock_message(l))),
        )
            .into_response();
    }
    let account = match st.accounts.get(&name) {
        Ok(a) => a,
        Err(e) => return internal("cannot read the console accounts", e),
    };
    let hash = account
        .as_ref()
        .map(|a| a.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    // The semaphore is never closed; a closed one would fail the login safely.
    let Ok(_slot) = st.verify_slots.acquire().await else {
        return internal("password check unavailable", "semaphore closed");
    };
    let ok = tokio::task::spawn_blocking(move || accounts::verify_password(&hash, &password))
        .await
        .unwrap_or(false);
    let Some(account) = account.filter(|_| ok) else {
        let locked = st.limiter.failure(&name, ip);
        tracing::warn!(name = %shown, client = %ip, locked = locked.is_some(), "web console: wrong name or password");
        st.audit(
            "web",
            "web.login.failed",
            format!("wrong name or password for {shown:?} from {ip}"),
        );
        if let Some(l) = locked {
            st.audit(
                "web",
                "web.login.locked",
                format!("{shown:?} locked after repeated failures (last from {ip})"),
            );
            return (
                StatusCode::TOO_MANY_REQUESTS,
                login_form(&st, &s, Some(&lock_message(l))),
            )
                .into_response();
        }
        return (
            StatusCode::UNAUTHORIZED,
            login_form(&st, &s, Some("Wrong account name or password.")),
        )
            .into_response();
    };
    // A new id at each stage: a session id known before sign-in is worthless after.
    st.sessions.remove(&sid);
    if account.totp_secret.is_some() {
        let (id, _) = st.sessions.create_stamped(
            Stage::NeedTotp {
                name: account.name.clone(),
            },
            account.stamp(),
        );
        return see_other("/login", Some(set_cookie(&st, &id)));
    }
    st.limiter.success(&account.name);
    let (id, _) = st.sessions.create_stamped(
        Stage::SignedIn {
            name: account.name.clone(),
        },
        account.stamp(),
    );
    tracing::info!(who = %account.name, client = %ip, "web console: signed in");
    st.audit(&account.name, "web.login", format!("signed in from {ip}"));
    see_other("/", Some(set_cookie(&st, &id)))
}

async fn totp_post(
    State(st): State<WebState>,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (sid, s) = or_respond!(login_post_session(&st, &headers, &form));
    let Stage::NeedTotp { name } = &s.stage else {
        return see_other("/login", None);
    };
    if let Some(l) = st.limiter.check(name, ip) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            login_form(&st, &s, Some(&lock_message(l))),
        )
            .into_response();
    }
    let account = match st.accounts.get(name) {
        Ok(Some(a)) if a.stamp() == s.stamp => a,
        Ok(_) => {
            // Removed, or credentials changed since the password step.
            st.sessions.remove(&sid);
            return see_other("/login", None);
        }
        Err(e) => return internal("cannot read the console accounts", e),
    };
    let code = form.get("code").map(String::as_str).unwrap_or("");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let step = match &account.totp_secret {
        Some(secret) => match totp::matching_step(secret, code, now) {
            Ok(s) => s,
            Err(e) => return internal("the account's TOTP secret is unusable", e),
        },
        None => None,
    };
    let fresh = step.is_some_and(|st_| st.limiter.use_totp_step(name, st_));
    if !fresh {
        let locked = st.limiter.failure(name, ip);
        tracing::warn!(who = %name, client = %ip, "web console: wrong or reused authentication code");
        st.audit(
            name,
            "web.login.failed",
            format!("wrong or reused authentication code from {ip}"),
        );
        if let Some(l) = locked {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                login_form(&st, &s, Some(&lock_message(l))),
            )
                .into_response();
        }
        return (
            StatusCode::UNAUTHORIZED,
            login_form(
                &st,
                &s,
                Some("Wrong or already used code. Enter the current code."),
            ),
        )
            .into_response();
    }
    st.limiter.success(name);
    st.sessions.remove(&sid);
    let (id, _) = st
        .sessions
        .create_stamped(Stage::SignedIn { name: name.clone() }, account.stamp());
    tracing::info!(who = %name, client = %ip, "web console: signed in (password and code)");
    st.audit(
        name,
        "web.login",
        format!("signed in with password and code from {ip}"),
    );
    see_other("/", Some(set_cookie(&st, &id)))
}

async fn logout(State(st): State<WebState>, headers: HeaderMap, Form(form): FormMap) -> Response {
    let a = or_respond!(authorize_post(&st, &headers, &form, false, "signing out"));
    st.sessions.remove(&a.sid);
    st.audit(a.name(), "web.logout", String::new());
    see_other(
        "/login",
        Some(HeaderValue::from_static(
            "orgsync_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        )),
    )
}

// ----- pages -----

/// The checks every governance-changing POST makes, in order: a
/// signed-in admin with a valid CSRF token and same-origin request
/// ([`authorize_post`]), then a daemon that runs sharing governance (else
/// the `page` (title, nav entry) says it does not).
pub(super) fn admin_post<'a>(
    st: &'a WebState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    what: &str,
    page: (&str, &str),
) -> Result<(Authed, &'a Governance), Response> {
    let a = authorize_post(st, headers, form, true, what)?;
    match st.gov.as_ref() {
        Some(g) => Ok((a, g)),
        None => Err(no_gov(&a, page.0, page.1)),
    }
}

/// The signed-in account and the governance behind a page that only
/// reads, or the response to give instead (the login page, or a page
/// saying governance is off).
pub(super) fn signed_in<'a>(
    st: &'a WebState,
    headers: &HeaderMap,
    page: (&str, &str),
) -> Result<(Authed, &'a Governance), Response> {
    let a = current(st, headers)?;
    match st.gov.as_ref() {
        Some(g) => Ok((a, g)),
        None => Err(no_gov(&a, page.0, page.1)),
    }
}

/// A share id from a URL path; a malformed one is the admin's bad input.
pub(super) fn share_id(id: &str) -> Result<orgsync_protocol::share::ShareId, GovError> {
    id.parse()
        .map_err(|e| GovError::Invalid(format!("share id: {e}")))
}

pub(super) fn no_gov(a: &Authed, title: &str, here: &str) -> Response {
    layout(
        title,
        here,
        Some(a),
        html! { p.error { "Sharing governance is not enabled in this daemon." } },
    )
    .into_response()
}

pub(super) fn field<'a>(form: &'a HashMap<String, String>, k: &str) -> &'a str {
    form.get(k).map(|s| s.trim()).unwrap_or("")
}

pub(super) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_764_750_000_000), "2025-12-03 08:20:00 UTC");
    }

    #[test]
    fn cookie_parsing_finds_only_our_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; orgsync_session=abc; b=2"),
        );
        assert_eq!(cookie_id(&h).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("xorgsync_session=abc"),
        );
        assert_eq!(cookie_id(&h), None);
    }
}
