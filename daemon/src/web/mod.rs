//! The web admin console: server-rendered pages served by `orgsyncd` on
//! `[web] listen` (see [`crate::config::WebConfig`]).
//!
//! Every page acts through the same governance functions as the CLI's API
//! handlers (`crate::governance::{pending, shares}`), with the signed-in
//! console account as the actor in the audit log.
//!
//! Security guarantees, checked on every request:
//! - the `Host` header must name this console (loopback listen: only
//!   `127.0.0.1`, `localhost` or `[::1]` with the port), against DNS rebinding;
//! - every POST must come from this console's own origin (`Origin`, or
//!   `Referer` when the browser sent no `Origin`; a request with neither,
//!   or with `Sec-Fetch-Site: cross-site`, is refused 403) and carry the
//!   session's CSRF token (compared in constant time);
//! - a viewer's POST that would change something is refused 403;
//! - responses forbid framing, inline scripts and caching.
//!
//! Accounts live in [`accounts::ACCOUNTS_FILE`]; sessions and login
//! failure counts only in memory (a restart signs everyone out).

/// The `Ok` value of a `Result<T, Response>`, or return the `Err` response
/// from the handler: every page first signs the caller in, checks the
/// CSRF token and finds governance, and each of those can answer instead
/// (the login page, a 403, "governance is off").
macro_rules! or_respond {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(response) => return response,
        }
    };
}

mod about;
pub mod accounts;
mod export;
mod home;
mod incoming;
mod live;
mod outgoing;
mod pages;
pub mod pairing;
mod partner_settings;
mod partners;
mod records;
mod requests;
pub mod session;
pub mod totp;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::PartnerSource;
use crate::config::{WebConfig, WebEnabled};
use crate::governance::Governance;
use crate::stop::Stopper;
use accounts::Accounts;
use session::{Limiter, Sessions};

/// How long shutdown waits for open console requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest form body accepted.
const MAX_FORM_BYTES: usize = 256 * 1024;
/// The session cookie's name.
pub const COOKIE: &str = "orgsync_session";

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (web.listen): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error("web.tls_cert / web.tls_key: {path}: {message}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The accounts file is unreadable.
    #[error("console accounts: {0}")]
    Accounts(#[from] accounts::AccountError),
}

/// What this instance is, shown on the About page.
#[derive(Clone, Debug)]
pub struct About {
    /// Organisation name.
    pub org_name: String,
    /// Account number.
    pub account: String,
    /// Certificate fingerprint partners compare.
    pub fingerprint: String,
    /// Current key epoch.
    pub epoch: u32,
    /// This instance's id.
    pub instance: String,
}

/// What the handlers share. Cloning is cheap.
#[derive(Clone)]
pub struct WebState {
    accounts: Accounts,
    sessions: Arc<Sessions>,
    limiter: Arc<Limiter>,
    gov: Option<Governance>,
    partners: Arc<dyn PartnerSource>,
    about: Arc<About>,
    tls: bool,
    listen: SocketAddr,
    /// Bounds concurrent argon2 verifications (19 MiB and tens of ms each),
    /// so a burst of logins cannot exhaust memory or the blocking pool.
    verify_slots: Arc<tokio::sync::Semaphore>,
    /// Pairing by code and revocation (absent: those forms are not shown).
    control: Option<Arc<pairing::PartnerControl>>,
    /// Committed changes, for the live-updates stream.
    store: Option<crate::store::Store>,
    /// Turns true when the console stops (ends the live streams).
    stop: Option<watch::Receiver<bool>>,
}

/// Concurrent password verifications allowed.
const VERIFY_SLOTS: usize = 4;

impl WebState {
    /// State for a console over the instance in `dir`.
    pub fn new(
        dir: &Path,
        gov: Option<Governance>,
        partners: Arc<dyn PartnerSource>,
        about: About,
        tls: bool,
        listen: SocketAddr,
    ) -> WebState {
        WebState {
            accounts: Accounts::new(dir),
            sessions: Arc::default(),
            limiter: Arc::default(),
            gov,
            partners,
            about: Arc::new(about),
            tls,
            listen,
            verify_slots: Arc::new(tokio::sync::Semaphore::new(VERIFY_SLOTS)),
            control: None,
            store: None,
            stop: None,
        }
    }

    /// Adds pairing by code and revocation (About and Partners pages) and
    /// live updates of committed changes from `store`.
    pub fn with_instance(
        mut self,
        control: pairing::PartnerControl,
        store: crate::store::Store,
    ) -> WebState {
        self.control = Some(Arc::new(control));
        self.store = Some(store);
        self
    }

    /// Records `action` in the governance audit log under `who` (the
    /// console account), logging instead if that fails.
    fn audit(&self, who: &str, action: &str, detail: String) {
        if let Some(g) = &self.gov {
            if let Err(e) = g.audit(who, action, None, None, detail) {
                tracing::warn!(error = %e, action, who, "cannot write the audit log");
            }
        }
    }
}

/// The client address of a connection, put in each request's extensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientAddr(pub IpAddr);

/// A running console. Stopped by the daemon's stop.
pub struct WebServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WebServer {
    /// Whether `cfg` asks for the console in `dir` now: `enabled = true`,
    /// or the key absent and at least one account exists.
    pub fn wanted(cfg: &WebConfig, dir: &Path) -> Result<bool, WebError> {
        Ok(match cfg.enabled {
            WebEnabled::On => true,
            WebEnabled::Off => false,
            WebEnabled::Auto => !Accounts::new(dir).load()?.is_empty(),
        })
    }

    /// Binds `cfg.listen` (with TLS when configured) and serves `state`.
    pub async fn start(cfg: &WebConfig, state: WebState) -> Result<WebServer, WebError> {
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
            _ => None,
        };
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| WebError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| WebError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let mut state = state;
        state.listen = addr;
        state.tls = tls.is_some();
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(url = %format!("{scheme}://{addr}/"), "web console listening");
        let (stop, stop_rx) = watch::channel(false);
        if let Some(c) = &state.control {
            c.set_stop(stop_rx.clone());
        }
        state.stop = Some(stop_rx.clone());
        let task = tokio::spawn(serve(listener, tls, state, async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|s| *s).await;
        }));
        Ok(WebServer { addr, stop, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets open requests finish briefly, within the
    /// stopper's budget.
    pub(crate) async fn stop_with(self, s: &mut Stopper) {
        self.stop.send_replace(true);
        s.join("web console", self.task, None).await;
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, WebError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |path: &Path, message: String| WebError::Tls {
        path: path.to_path_buf(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| err(key, e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: WebState,
    shutdown: impl Future<Output = ()> + Send,
) {
    let app = pages::router(state);
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "web console accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let app = app.clone();
                let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ClientAddr(peer.ip()));
                    let mut app = app.clone();
                    async move {
                        tower_service::Service::call(&mut app, req).await
                    }
                });
                while connections.try_join_next().is_some() {}
                match &tls {
                    None => {
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        let conn = graceful.watch(conn);
                        connections.spawn(async move {
                            if let Err(e) = conn.await {
                                tracing::debug!(error = %e, "web connection ended with an error");
                            }
                        });
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        let watcher = graceful.watcher();
                        connections.spawn(async move {
                            let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, %peer, "web console TLS handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            };
                            let conn = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service);
                            if let Err(e) = watcher.watch(conn).await {
                                tracing::debug!(error = %e, "web connection ended with an error");
                            }
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(
            open = connections.len(),
            "web console requests cut at shutdown"
        );
    }
    connections.abort_all();
}

/// A refusal page with `status` and a plain-words reason.
pub(crate) fn refusal(status: StatusCode, reason: &str) -> Response {
    (status, pages::message_page("Refused", reason)).into_response()
}

fn host_allowed(st: &WebState, host: &str) -> bool {
    if st.tls || !st.listen.ip().is_loopback() {
        // Behind TLS a rebinding attacker has no certificate for its name.
        return true;
    }
    let port = st.listen.port();
    [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        st.listen.to_string(),
    ]
    .iter()
    .any(|h| h.eq_ignore_ascii_case(host))
}

/// Whether a POST comes from this console's own pages.
fn same_origin(st: &WebState, headers: &HeaderMap, host: &str) -> Result<(), &'static str> {
    let scheme = if st.tls { "https" } else { "http" };
    let own = format!("{scheme}://{host}");
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
    {
        return Err("the browser marked this request as cross-site");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        return match origin.to_str() {
            Ok(o) if o.eq_ignore_ascii_case(&own) => Ok(()),
            _ => Err("the request's Origin is another site"),
        };
    }
    match headers.get(header::REFERER).and_then(|v| v.to_str().ok()) {
        Some(r)
            if r.len() > own.len()
                && r[..own.len()].eq_ignore_ascii_case(&own)
                && r.as_bytes()[own.len()] == b'/' =>
        {
            Ok(())
        }
        Some(_) => Err("the request's Referer is another site"),
        None => Err("the request has neither Origin nor Referer"),
    }
}

/// Host, origin and security-header checks around every request.
async fn guard(
    axum::extract::State(st): axum::extract::State<WebState>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0);
    if !host_allowed(&st, &host) {
        tracing::warn!(host = %host, client = ?client, path = %req.uri().path(),
            "web console: refused a request for another host name (possible DNS rebinding)");
        return refusal(
            StatusCode::MISDIRECTED_REQUEST,
            "This console answers only to its own address.",
        );
    }
    if req.method() == Method::POST {
        if let Err(reason) = same_origin(&st, req.headers(), &host) {
            let who = pages::session_name(&st, req.headers());
            tracing::warn!(reason, client = ?client, path = %req.uri().path(), who = ?who,
                "web console: refused a cross-site POST");
            if let Some(who) = who {
                st.audit(
                    &who,
                    "web.refused",
                    format!("{} {}: {reason}", req.method(), req.uri().path()),
                );
            }
            return refusal(
                StatusCode::FORBIDDEN,
                &format!(
                    "Refused: {reason}. Changes can only be made from this console's own pages."
                ),
            );
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, "content-security-policy",
        "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Over TLS the console answers HTTPS only, and its session cookie is
    /// `Secure` (never sent back over plain HTTP).
    #[tokio::test]
    async fn tls_console_serves_https_with_secure_cookies() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        let cfg = WebConfig {
            enabled: WebEnabled::On,
            listen: "127.0.0.1:0".parse().unwrap(),
            tls_cert: Some(cert),
            tls_key: Some(key),
        };
        let about = About {
            org_name: "Acme".into(),
            account: "1".into(),
            fingerprint: "f".into(),
            epoch: 0,
            instance: "i".into(),
        };
        let state = WebState::new(
            dir.path(),
            None,
            Arc::new(Vec::new),
            about,
            true,
            cfg.listen,
        );
        let server = WebServer::start(&cfg, state).await.unwrap();
        let addr = server.local_addr();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(
            format!(
                "GET /login HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
                addr.port()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut resp = Vec::new();
        let _ = tls.read_to_end(&mut resp).await;
        let resp = String::from_utf8_lossy(&resp);
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let cookie = resp
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
            .unwrap_or_else(|| panic!("no cookie: {resp}"));
        assert!(
            cookie.contains("Secure")
                && cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );

        // Plain HTTP to the TLS port gets no HTTP answer.
        let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut back = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut back)).await;
        assert!(
            !back.starts_with(b"HTTP/1.1 200"),
            "plain HTTP must not be served"
        );

        let mut s = Stopper::new("test", Duration::from_secs(2));
        server.stop_with(&mut s).await;
        assert!(s.finish().is_clean());
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "port closed after stop"
        );
    }
}
