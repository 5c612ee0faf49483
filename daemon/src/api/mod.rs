//! The local API: HTTP/1.1 + JSON over the Unix socket `DIR/api.sock`.
//!
//! Routes (all bodies JSON unless noted; errors are
//! `{"error": "...", "field": "..."|null}` with a 4xx/5xx status):
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/objects` | create `{kind, fields, custom, flags, id?}` → 201 + object |
//! | `GET /v1/objects?kind=&limit=&after=` | `{"objects": [..], "next": id|null}` |
//! | `GET /v1/objects/{id}` | the object, 404 when absent or deleted |
//! | `PATCH /v1/objects/{id}` | `{fields, custom, add_flags, remove_flags}`; `null` clears |
//! | `DELETE /v1/objects/{id}` | 200 `{"id", "deleted": true}` |
//! | `POST /v1/resumes` | `{contact, path, media_type?}`: the daemon reads the file |
//! | `GET /v1/resumes/{id}/content` | the file's bytes; 404 while still transferring |
//! | `GET /v1/partners` | `{"partners": [..]}` |
//! | `GET /v1/status` | org, account number, instance, log head, partners |
//! | `GET /v1/events?after=SEQ` | NDJSON, one line per committed change, keeps streaming |
//! | `GET /metrics` | Prometheus text |
//!
//! Every write is validated completely before anything is stored, and is
//! durable before the response is sent.

pub mod backend;
pub mod mem;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use orgsync_protocol::model::{FieldKey, Kind, Object, ObjectId, Value};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

pub use backend::{
    Backend, BackendError, BlobInfo, ChangeEvent, Identity, LocalEdit, Origin, PartnerStatus,
};

use crate::json::{self as j, InputError};
use crate::metrics::{self, Metrics};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// Default and largest page size of `GET /v1/objects`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size of `GET /v1/objects`.
pub const MAX_LIMIT: usize = 1000;
/// How long shutdown waits for open requests to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The name of the API socket inside the instance directory.
pub const SOCKET_NAME: &str = "api.sock";

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    stop_tx: Arc<watch::Sender<bool>>,
    stop: watch::Receiver<bool>,
}

impl ApiState {
    /// State for an API over `backend`, counting into `metrics`.
    pub fn new(backend: Arc<dyn Backend>, metrics: Arc<Metrics>) -> Self {
        // Set when the server shuts down, to end open event streams.
        let (stop_tx, stop) = watch::channel(false);
        ApiState {
            backend,
            metrics,
            stop_tx: Arc::new(stop_tx),
            stop,
        }
    }
}

/// Why the API server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Another daemon answers on the socket.
    #[error("another orgsyncd is already serving {0} (stop it first)")]
    AlreadyRunning(PathBuf),
    /// The socket path exists and is not a socket; it is left alone.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Binding or preparing the socket failed.
    #[error("cannot create the API socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Binds the API socket at `path` with mode 0600.
///
/// A socket file left by a dead daemon is removed; one on which a daemon
/// still answers is an error. The socket is bound in a private 0700
/// directory, restricted to 0600 and then renamed into place, so there is no
/// moment where another user could connect.
pub async fn bind_socket(path: &Path) -> Result<UnixListener, ApiError> {
    let bind_err = |source| ApiError::Bind {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(ApiError::NotASocket(path.to_path_buf()));
            }
            match UnixStream::connect(path).await {
                Ok(_) => return Err(ApiError::AlreadyRunning(path.to_path_buf())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(socket = %path.display(), "removing stale API socket");
                    std::fs::remove_file(path).map_err(bind_err)?;
                }
                Err(e) => return Err(bind_err(e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    let private = parent.join(format!(".api-bind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::create_dir(&private).map_err(bind_err)?;
    let result = (|| {
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
        let tmp = private.join(SOCKET_NAME);
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result.map_err(bind_err)
}

/// Serves the API on a Unix socket at `socket_path` until `shutdown`
/// resolves, then stops accepting, ends event streams, waits up to five
/// seconds for open requests and removes the socket.
pub async fn serve(
    state: ApiState,
    socket_path: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ApiError> {
    let listener = bind_socket(socket_path).await?;
    tracing::info!(socket = %socket_path.display(), "local API listening");
    serve_listener(state, listener, shutdown).await;
    let _ = std::fs::remove_file(socket_path);
    Ok(())
}

/// Serves the API on an already bound listener until `shutdown` resolves.
pub async fn serve_listener(
    state: ApiState,
    listener: UnixListener,
    shutdown: impl Future<Output = ()> + Send,
) {
    let stop_tx = state.stop_tx.clone();
    let app = router(state);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "API accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(app.clone());
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "API connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("API requests still open after the shutdown grace period; dropping them");
    }
}

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/objects", post(create_object).get(list_objects))
        .route(
            "/v1/objects/:id",
            get(get_object).patch(update_object).delete(delete_object),
        )
        .route("/v1/resumes", post(attach_resume))
        .route("/v1/resumes/:id/content", get(resume_content))
        .route("/v1/partners", get(partners))
        .route("/v1/status", get(status))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics_text))
        .fallback(not_found_route)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(
    State(st): State<ApiState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    metrics::add(&st.metrics.api_requests, 1);
    next.run(req).await
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// An error response: status plus `{"error", "field"}`.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl Failure {
    fn not_found(message: impl Into<String>) -> Self {
        Failure {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            field: None,
        }
    }
}

impl From<InputError> for Failure {
    fn from(e: InputError) -> Self {
        Failure {
            status: StatusCode::BAD_REQUEST,
            message: e.message,
            field: e.field,
        }
    }
}

impl From<BackendError> for Failure {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::KindMismatch { .. } => Failure {
                status: StatusCode::BAD_REQUEST,
                message: e.to_string(),
                field: Some("kind".into()),
            },
            BackendError::ReadFile { .. } => Failure {
                status: StatusCode::BAD_REQUEST,
                message: e.to_string(),
                field: Some("path".into()),
            },
            BackendError::Store(_) => {
                tracing::error!(error = %e, "API request failed in the store");
                Failure {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: e.to_string(),
                    field: None,
                }
            }
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({"error": self.message, "field": self.field})),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, Failure>;

async fn not_found_route(req: Request) -> Failure {
    Failure::not_found(format!(
        "no such API route: {} {} (routes live under /v1/)",
        req.method(),
        req.uri().path()
    ))
}

/// A JSON body whose every rejection (too large, not JSON, wrong shape) is a
/// JSON error response.
struct JsonBody<T>(T);

#[axum::async_trait]
impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            let status = rej.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("request body is larger than the limit of {MAX_BODY} bytes")
            } else {
                rej.body_text()
            };
            Failure {
                status,
                message,
                field: None,
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| Failure::from(InputError::general(format!("invalid JSON body: {e}"))))
    }
}

// ---------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn parse_path_id(s: &str) -> ApiResult<ObjectId> {
    Ok(j::parse_id("id", s)?)
}

/// The live object `id`, or a 404.
fn load_live(st: &ApiState, id: ObjectId) -> ApiResult<Object> {
    match st.backend.get(id)? {
        Some(obj) if !obj.is_deleted() => Ok(obj),
        Some(_) => Err(Failure::not_found(format!("object {id} was deleted"))),
        None => Err(Failure::not_found(format!("no object {id}"))),
    }
}

/// Checks that every flag an edit attaches names a flag object.
fn check_flags(st: &ApiState, edit: &LocalEdit, field: &str) -> ApiResult<()> {
    for (key, value) in &edit.set {
        if let (FieldKey::Flag(flag), Some(_)) = (key, value) {
            match st.backend.get(*flag)? {
                Some(o) if o.kind == Kind::Flag && !o.is_deleted() => {}
                _ => {
                    return Err(InputError::field(field, format!("no flag {flag}")).into());
                }
            }
        }
    }
    Ok(())
}

async fn commit_one(st: &ApiState, edit: LocalEdit) -> ApiResult<Object> {
    let id = edit.id;
    let events = st.backend.commit(vec![edit]).await?;
    metrics::add(&st.metrics.changes_written, events.len() as u64);
    st.backend.get(id)?.ok_or_else(|| {
        Failure::from(BackendError::Store(format!(
            "object {id} missing after commit"
        )))
    })
}

async fn create_object(
    State(st): State<ApiState>,
    JsonBody(req): JsonBody<j::CreateRequest>,
) -> ApiResult<Response> {
    let existing = match &req.id {
        Some(s) => st.backend.get(j::parse_id("id", s)?)?,
        None => None,
    };
    let schema = st.backend.schema();
    let edit = j::build_create(&schema, &req, existing.as_ref(), || {
        ObjectId::new_v7(now_ms())
    })?;
    check_flags(&st, &edit, "flags")?;
    let obj = commit_one(&st, edit).await?;
    let status = if existing.is_some_and(|o| !o.is_deleted()) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(j::object_to_json(&obj))).into_response())
}

async fn list_objects(
    State(st): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    for key in q.keys() {
        if !matches!(key.as_str(), "kind" | "limit" | "after") {
            return Err(InputError::field(
                key.clone(),
                format!("unknown query parameter {key:?} (known: kind, limit, after)"),
            )
            .into());
        }
    }
    let kind = q.get("kind").map(|k| j::parse_kind(k)).transpose()?;
    let after = q
        .get("after")
        .map(|a| j::parse_id("after", a))
        .transpose()?;
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(InputError::field(
                    "limit",
                    format!("limit must be a whole number from 1 to {MAX_LIMIT}, got {l:?}"),
                )
                .into())
            }
        },
    };
    let objects = st.backend.list(kind, after, limit)?;
    let next = (objects.len() == limit)
        .then(|| objects.last().map(|o| o.id.to_string()))
        .flatten();
    let list: Vec<Json> = objects.iter().map(j::object_to_json).collect();
    Ok(axum::Json(json!({"objects": list, "next": next})).into_response())
}

async fn get_object(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let obj = load_live(&st, parse_path_id(&id)?)?;
    Ok(axum::Json(j::object_to_json(&obj)).into_response())
}

async fn update_object(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    JsonBody(req): JsonBody<j::UpdateRequest>,
) -> ApiResult<Response> {
    let existing = load_live(&st, parse_path_id(&id)?)?;
    let edit = j::build_update(&st.backend.schema(), &existing, &req)?;
    check_flags(&st, &edit, "add_flags")?;
    let obj = commit_one(&st, edit).await?;
    Ok(axum::Json(j::object_to_json(&obj)).into_response())
}

async fn delete_object(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let existing = load_live(&st, parse_path_id(&id)?)?;
    let mut edit = LocalEdit::new(existing.id, existing.kind);
    edit.delete = true;
    let events = st.backend.commit(vec![edit]).await?;
    metrics::add(&st.metrics.changes_written, events.len() as u64);
    Ok(axum::Json(json!({"id": existing.id.to_string(), "deleted": true})).into_response())
}

// ---------------------------------------------------------------------------
// Résumés
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeRequest {
    contact: String,
    path: String,
    #[serde(default)]
    media_type: Option<String>,
}

/// The media type of a résumé file, from its extension.
pub fn media_type_for(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("pdf") => "application/pdf",
        Some("doc") => "application/msword",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Some("odt") => "application/vnd.oasis.opendocument.text",
        Some("rtf") => "application/rtf",
        Some("txt") => "text/plain",
        Some("md") => "text/markdown",
        Some("html") | Some("htm") => "text/html",
        _ => "application/octet-stream",
    }
}

/// Stores the file at `path` as a blob and builds the Resume object edit
/// attaching it to `contact`, which must be a live contact.
pub async fn resume_edit(
    backend: &dyn Backend,
    contact: ObjectId,
    path: &Path,
    media_type: Option<&str>,
) -> Result<LocalEdit, ResumeError> {
    match backend.get(contact)? {
        Some(o) if o.kind == Kind::Contact && !o.is_deleted() => {}
        Some(o) if !o.is_deleted() => {
            return Err(ResumeError::Input(InputError::field(
                "contact",
                format!("object {contact} is a {}, not a contact", o.kind),
            )))
        }
        _ => {
            return Err(ResumeError::Input(InputError::field(
                "contact",
                format!("no contact {contact}"),
            )))
        }
    }
    let meta = tokio::fs::metadata(path).await.map_err(|e| {
        ResumeError::Input(InputError::field(
            "path",
            format!("cannot read {}: {e}", path.display()),
        ))
    })?;
    if !meta.is_file() {
        return Err(ResumeError::Input(InputError::field(
            "path",
            format!("{} is not a regular file", path.display()),
        )));
    }
    let blob = backend.put_blob(path).await?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let media_type = media_type.unwrap_or_else(|| media_type_for(path));
    let mut edit = LocalEdit::new(ObjectId::new_v7(now_ms()), Kind::Resume);
    let mut set = |k: &str, v: Value| {
        edit.set.insert(FieldKey::Std(k.into()), Some(v));
    };
    set("contact", Value::Ref(contact));
    set("file_name", Value::Text(file_name));
    set("media_type", Value::Text(media_type.to_string()));
    set(
        "size",
        Value::Integer(i64::try_from(blob.size).unwrap_or(i64::MAX)),
    );
    set("hash", Value::Hash(blob.hash));
    Ok(edit)
}

/// Why a résumé could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// Bad contact or file.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The store failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl From<ResumeError> for Failure {
    fn from(e: ResumeError) -> Self {
        match e {
            ResumeError::Input(e) => e.into(),
            ResumeError::Backend(e) => e.into(),
        }
    }
}

async fn attach_resume(
    State(st): State<ApiState>,
    JsonBody(req): JsonBody<ResumeRequest>,
) -> ApiResult<Response> {
    let contact = j::parse_id("contact", &req.contact)?;
    let path = PathBuf::from(&req.path);
    if !path.is_absolute() {
        return Err(InputError::field(
            "path",
            format!(
                "path must be absolute (the daemon reads it), got {:?}",
                req.path
            ),
        )
        .into());
    }
    if let Some(mt) = &req.media_type {
        if mt.is_empty() || mt.len() > 255 || !mt.contains('/') {
            return Err(
                InputError::field("media_type", format!("{mt:?} is not a media type")).into(),
            );
        }
    }
    let edit = resume_edit(
        st.backend.as_ref(),
        contact,
        &path,
        req.media_type.as_deref(),
    )
    .await?;
    let obj = commit_one(&st, edit).await?;
    Ok((StatusCode::CREATED, axum::Json(j::object_to_json(&obj))).into_response())
}

async fn resume_content(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let obj = load_live(&st, parse_path_id(&id)?)?;
    if obj.kind != Kind::Resume {
        return Err(InputError::field(
            "id",
            format!("object {} is a {}, not a resume", obj.id, obj.kind),
        )
        .into());
    }
    let Some(Value::Hash(hash)) = obj.get_std("hash") else {
        return Err(Failure::not_found(format!(
            "résumé {} has no content hash",
            obj.id
        )));
    };
    let hex = data_encoding::HEXLOWER.encode(hash);
    let not_yet = || {
        Failure::not_found(format!(
            "the content of résumé {} (BLAKE3 {hex}) is not here yet: it is still transferring from the partner",
            obj.id
        ))
    };
    let Some(path) = st.backend.blob_path(hash) else {
        return Err(not_yet());
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_yet()),
        Err(e) => return Err(BackendError::Store(format!("blob {hex}: {e}")).into()),
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| BackendError::Store(format!("blob {hex}: {e}")))?
        .len();
    let media_type = match obj.get_std("media_type") {
        Some(Value::Text(t)) => t.clone(),
        _ => "application/octet-stream".into(),
    };
    let mut resp = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(file)));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&media_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(resp)
}

// ---------------------------------------------------------------------------
// Partners, status, metrics
// ---------------------------------------------------------------------------

fn partner_json(p: &PartnerStatus) -> Json {
    json!({
        "name": p.name,
        "account": p.org.account_number(),
        "state": p.state,
        "addresses": p.addresses,
        "connected": p.connected,
        "last_sync": p.last_sync_ms.map(j::rfc3339_ms),
        "last_sync_ms": p.last_sync_ms,
        "not_acked": p.not_acked,
        "lag_ms": p.lag_ms,
    })
}

async fn partners(State(st): State<ApiState>) -> Response {
    let list: Vec<Json> = st.backend.partners().iter().map(partner_json).collect();
    axum::Json(json!({ "partners": list })).into_response()
}

async fn status(State(st): State<ApiState>) -> Response {
    let id = st.backend.identity();
    let head = *st.backend.head().borrow();
    let list: Vec<Json> = st.backend.partners().iter().map(partner_json).collect();
    axum::Json(json!({
        "org": id.org_name,
        "account": id.org.account_number(),
        "instance": id.instance.to_string(),
        "log_head": head,
        "partners": list,
    }))
    .into_response()
}

async fn metrics_text(State(st): State<ApiState>) -> Response {
    let text = st.metrics.render(&st.backend.partners());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// The JSON line of one change event.
pub fn event_json(e: &ChangeEvent) -> Json {
    let origin = match e.origin {
        Origin::Local => "local".to_string(),
        Origin::Partner(org) => org.account_number(),
    };
    json!({
        "seq": e.seq,
        "id": e.id.to_string(),
        "kind": e.kind.as_str(),
        "origin": origin,
        "deleted": e.deleted,
    })
}

/// Log entries read per page while streaming.
const EVENT_PAGE: usize = 512;

struct EventCursor {
    backend: Arc<dyn Backend>,
    last: u64,
    head: watch::Receiver<u64>,
    stop: watch::Receiver<bool>,
    buffered: VecDeque<ChangeEvent>,
}

async fn events(
    State(st): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let head = st.backend.head();
    let after = match q.get("after") {
        None => *head.borrow(),
        Some(a) => a.parse::<u64>().map_err(|_| {
            InputError::field(
                "after",
                format!("after must be a sequence number, got {a:?}"),
            )
        })?,
    };
    let cursor = EventCursor {
        backend: st.backend.clone(),
        last: after,
        head,
        stop: st.stop.clone(),
        buffered: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.buffered.pop_front() {
                c.last = e.seq;
                let mut line = event_json(&e).to_string();
                line.push('\n');
                return Some((Ok::<_, io::Error>(Bytes::from(line)), c));
            }
            if *c.stop.borrow() {
                return None;
            }
            // Mark the head seen before reading, so a commit between the
            // read and the wait still wakes us.
            c.head.borrow_and_update();
            match c.backend.events_after(c.last, EVENT_PAGE) {
                Ok(page) if !page.is_empty() => {
                    c.buffered.extend(page);
                    continue;
                }
                Ok(_) => {}
                Err(e) => return Some((Err(io::Error::other(e.to_string())), c)),
            }
            tokio::select! {
                changed = c.head.changed() => if changed.is_err() { return None },
                _ = c.stop.changed() => return None,
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}
