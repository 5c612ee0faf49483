//! A client of the local API (see [`crate::api`]) over its Unix socket: what
//! the `orgsync` CLI uses, and what host applications written in Rust can use.
//!
//! Every call opens its own connection (the socket is local, so this is
//! cheap) and maps failures to [`ClientError`], which tells "daemon not
//! running", "not found" and "bad input" apart.

use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value as Json};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use crate::api::{MAX_BODY, SOCKET_NAME};

pub use hyper::Method;

/// Longest line accepted from the event stream.
const MAX_LINE: usize = 1024 * 1024;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens on the socket.
    #[error("orgsyncd is not running for {dir} (no API socket at {socket}); start it with `orgsyncd --dir {dir}`", dir = .dir.display(), socket = .socket.display())]
    NotRunning {
        /// The instance directory.
        dir: PathBuf,
        /// The socket tried.
        socket: PathBuf,
    },
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
        /// The field at fault, when the daemon named one.
        field: Option<String>,
    },
    /// The socket exists but talking to it failed.
    #[error("cannot talk to orgsyncd at {socket}: {source}", socket = .socket.display())]
    Io {
        /// The socket.
        socket: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP error talking to orgsyncd: {0}")]
    Http(#[from] hyper::Error),
    /// The daemon sent something this client does not understand.
    #[error("unexpected answer from orgsyncd: {0}")]
    Protocol(String),
    /// The request is larger than the daemon accepts; it was not sent.
    #[error("request of {size} bytes is larger than the API limit of {max} bytes")]
    TooLarge {
        /// Size of the request body.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A local file could not be written.
    #[error("cannot write {path}: {source}", path = .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl ClientError {
    /// The daemon said the object (or route) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }

    /// The daemon refused the request as invalid.
    pub fn is_bad_input(&self) -> bool {
        match self {
            ClientError::Api { status, .. } => (400..500).contains(status) && *status != 404,
            ClientError::TooLarge { .. } => true,
            _ => false,
        }
    }
}

/// A client of one instance's local API.
#[derive(Clone, Debug)]
pub struct Client {
    dir: PathBuf,
    socket: PathBuf,
}

impl Client {
    /// A client for the instance directory `dir`, using `DIR/api.sock`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let socket = dir.join(SOCKET_NAME);
        Client { dir, socket }
    }

    /// A client for `dir` whose daemon listens on `socket`.
    pub fn with_socket(dir: impl Into<PathBuf>, socket: impl Into<PathBuf>) -> Self {
        Client {
            dir: dir.into(),
            socket: socket.into(),
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Json>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = match UnixStream::connect(&self.socket).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(ClientError::NotRunning {
                    dir: self.dir.clone(),
                    socket: self.socket.clone(),
                })
            }
            Err(source) => {
                return Err(ClientError::Io {
                    socket: self.socket.clone(),
                    source,
                })
            }
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // The connection ends when the response body is done or dropped.
            let _ = conn.await;
        });
        let bytes = match body {
            Some(b) => Bytes::from(b.to_string()),
            None => Bytes::new(),
        };
        // The daemon would refuse it anyway, possibly before reading it all,
        // which surfaces as a broken pipe instead of its message.
        if bytes.len() > MAX_BODY {
            return Err(ClientError::TooLarge {
                size: bytes.len(),
                max: MAX_BODY,
            });
        }
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "orgsyncd");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Protocol(format!("bad request {path}: {e}")))?;
        Ok(sender.send_request(req).await?)
    }

    /// Turns an error status into [`ClientError::Api`] with the daemon's message.
    async fn check(resp: Response<Incoming>) -> Result<Response<Incoming>, ClientError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.into_body().collect().await?.to_bytes();
        let parsed: Option<Json> = serde_json::from_slice(&body).ok();
        let message = parsed
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Json::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(500)])
                )
            });
        let field = parsed
            .as_ref()
            .and_then(|j| j.get("field"))
            .and_then(Json::as_str)
            .map(str::to_string);
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
            field,
        })
    }

    /// Sends a request and returns the JSON answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Json>,
    ) -> Result<Json, ClientError> {
        let resp = Self::check(self.send(method, path, body).await?).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("{path} did not answer JSON: {e}")))
    }

    /// Sends a POST without a body and returns the raw answer (`/v1/backup`).
    pub async fn post_bytes(&self, path: &str) -> Result<Bytes, ClientError> {
        let resp = Self::check(self.send(Method::POST, path, None).await?).await?;
        Ok(resp.into_body().collect().await?.to_bytes())
    }

    /// Sends a GET and returns the body as text (for `/metrics`).
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let resp = Self::check(self.send(Method::GET, path, None).await?).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        String::from_utf8(body.to_vec())
            .map_err(|_| ClientError::Protocol(format!("{path} did not answer UTF-8 text")))
    }

    /// `POST /v1/objects`.
    pub async fn create(&self, body: &Json) -> Result<Json, ClientError> {
        self.call(Method::POST, "/v1/objects", Some(body)).await
    }

    /// `GET /v1/objects/{id}`.
    pub async fn get(&self, id: &str) -> Result<Json, ClientError> {
        self.call(Method::GET, &format!("/v1/objects/{}", encode(id)), None)
            .await
    }

    /// `PATCH /v1/objects/{id}`.
    pub async fn update(&self, id: &str, body: &Json) -> Result<Json, ClientError> {
        self.call(
            Method::PATCH,
            &format!("/v1/objects/{}", encode(id)),
            Some(body),
        )
        .await
    }

    /// `DELETE /v1/objects/{id}`.
    pub async fn delete(&self, id: &str) -> Result<Json, ClientError> {
        self.call(Method::DELETE, &format!("/v1/objects/{}", encode(id)), None)
            .await
    }

    /// One page of `GET /v1/objects`.
    pub async fn list_page(
        &self,
        kind: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Json, ClientError> {
        let mut path = format!("/v1/objects?limit={limit}");
        if let Some(k) = kind {
            path.push_str(&format!("&kind={}", encode(k)));
        }
        if let Some(a) = after {
            path.push_str(&format!("&after={}", encode(a)));
        }
        self.call(Method::GET, &path, None).await
    }

    /// Every live object (of `kind` if given), following pages.
    pub async fn list_all(&self, kind: Option<&str>) -> Result<Vec<Json>, ClientError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list_page(kind, after.as_deref(), 1000).await?;
            if let Some(objs) = page.get("objects").and_then(Json::as_array) {
                out.extend(objs.iter().cloned());
            }
            match page.get("next").and_then(Json::as_str) {
                Some(next) => after = Some(next.to_string()),
                None => return Ok(out),
            }
        }
    }

    /// `POST /v1/resumes`: `path` must be absolute (the daemon reads it).
    pub async fn attach_resume(&self, contact: &str, path: &Path) -> Result<Json, ClientError> {
        self.call(
            Method::POST,
            "/v1/resumes",
            Some(&json!({"contact": contact, "path": path.to_string_lossy()})),
        )
        .await
    }

    /// Writes a résumé's content to `out` (through a temporary file renamed
    /// into place, so `out` is never left half-written). Returns the size.
    pub async fn download_resume(&self, id: &str, out: &Path) -> Result<u64, ClientError> {
        let path = format!("/v1/resumes/{}/content", encode(id));
        let resp = Self::check(self.send(Method::GET, &path, None).await?).await?;
        let file_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ClientError::File { path, source }
        };
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "resume".into());
        let tmp = out.with_file_name(format!(".{name}.part"));
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(file_err(&tmp))?;
        let mut body = resp.into_body();
        let mut size = 0u64;
        let result: Result<(), ClientError> = async {
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    size += data.len() as u64;
                    file.write_all(&data).await.map_err(file_err(&tmp))?;
                }
            }
            file.sync_all().await.map_err(file_err(&tmp))?;
            tokio::fs::rename(&tmp, out).await.map_err(file_err(out))
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        Ok(size)
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Json, ClientError> {
        self.call(Method::GET, "/v1/status", None).await
    }

    /// `GET /v1/partners`.
    pub async fn partners(&self) -> Result<Json, ClientError> {
        self.call(Method::GET, "/v1/partners", None).await
    }

    /// Follows `GET /v1/events` (from `after` if given).
    pub async fn events(&self, after: Option<u64>) -> Result<EventStream, ClientError> {
        let path = match after {
            Some(a) => format!("/v1/events?after={a}"),
            None => "/v1/events".to_string(),
        };
        let resp = Self::check(self.send(Method::GET, &path, None).await?).await?;
        Ok(EventStream {
            body: resp.into_body(),
            buf: BytesMut::new(),
        })
    }
}

/// Percent-encodes a path segment or query value (ids and kinds are plain,
/// but user input may not be).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The event stream of `GET /v1/events`, one JSON value per line.
pub struct EventStream {
    body: Incoming,
    buf: BytesMut,
}

impl EventStream {
    /// The next event, or `None` when the daemon closed the stream.
    pub async fn next(&mut self) -> Result<Option<Json>, ClientError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                let line = &line[..pos];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| ClientError::Protocol(format!("bad event line: {e}")));
            }
            if self.buf.len() > MAX_LINE {
                return Err(ClientError::Protocol(format!(
                    "event line longer than {MAX_LINE} bytes"
                )));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(mut data) = frame?.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            let n = chunk.len();
                            self.buf.extend_from_slice(chunk);
                            data.advance(n);
                        }
                    }
                }
            }
        }
    }
}
