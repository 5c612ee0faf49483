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
//! | `POST /v1/backup?secrets=` | a consistent snapshot as a backup payload (octet-stream, see `backup.rs`) |
//! | `/v1/shares`, `/v1/inbox`, `/v1/requests`, `/v1/audit`, ... | sharing governance (see `governance.rs`) |
//!
//! Every write is validated completely before anything is stored, and is
//! durable before the response is sent.

mod backup;
mod events;
mod governance;
mod handlers;
mod partners;
mod services;
mod state;

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use orgsync_protocol::merge::MergeError;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::net::{UnixListener, UnixStream};

pub use events::event_json;
pub use handlers::{attach_resume_file, attach_resume_handle, media_type_for, ResumeError};
pub use partners::EnginePartners;
pub use services::LocalServices;
pub(crate) use services::ServiceTasks;
pub use state::{ApiState, Identity, PartnerSource, PartnerStatus};

use crate::json::InputError;
use crate::metrics;
use crate::store::StoreError;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// Default page size of `GET /v1/objects`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size of `GET /v1/objects`.
pub const MAX_LIMIT: usize = 1000;
/// How long shutdown waits for open requests to finish (within the
/// daemon's stop budget, [`crate::stop::STOP_BUDGET`]).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The name of the API socket inside the instance directory.
pub const SOCKET_NAME: &str = "api.sock";

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
/// resolves, then stops accepting, ends event streams, waits up to two
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
    // The connections: dropped with this future, so aborting the task that
    // serves the API aborts the requests still open too.
    let mut connections = tokio::task::JoinSet::new();
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
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
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
        tracing::warn!(
            open = connections.len(),
            "API requests still open after the shutdown grace period; dropping them"
        );
    }
}

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/v1/objects",
            post(handlers::create_object).get(handlers::list_objects),
        )
        .route(
            "/v1/objects/:id",
            get(handlers::get_object)
                .patch(handlers::update_object)
                .delete(handlers::delete_object),
        )
        .route("/v1/resumes", post(handlers::attach_resume))
        .route("/v1/resumes/:id/content", get(handlers::resume_content))
        .route("/v1/partners", get(handlers::partners))
        .route("/v1/status", get(handlers::status))
        .route("/v1/events", get(events::events))
        .route("/metrics", get(handlers::metrics_text))
        .route("/v1/backup", post(backup::backup))
        .merge(governance::routes())
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
pub(crate) struct Failure {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl Failure {
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Failure {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            field: None,
        }
    }
}

impl Failure {
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(error = %message, "API request failed");
        Failure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message,
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

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Merge {
                source: MergeError::KindMismatch { .. },
                ..
            } => Failure {
                status: StatusCode::BAD_REQUEST,
                message: e.to_string(),
                field: Some("kind".into()),
            },
            StoreError::NotFound(id) => Failure::not_found(format!("no object {id}")),
            e => {
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

pub(crate) type ApiResult<T> = Result<T, Failure>;

async fn not_found_route(req: Request) -> Failure {
    Failure::not_found(format!(
        "no such API route: {} {} (routes live under /v1/)",
        req.method(),
        req.uri().path()
    ))
}

/// A JSON body whose every rejection (too large, not JSON, wrong shape) is a
/// JSON error response.
pub(crate) struct JsonBody<T>(pub(crate) T);

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
