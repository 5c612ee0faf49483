//! A keep-alive HTTP/1.1 client of one instance's local API socket: one
//! unix-socket connection reused for every request, as a long-lived
//! application would hold it (the CLI's `Client` connects per request,
//! which would add a connect and a handshake to every latency sample).

use std::path::Path;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;
use tokio::net::UnixStream;

/// One open connection to `DIR/api.sock`.
pub struct KeepAlive {
    sender: SendRequest<Full<Bytes>>,
}

impl KeepAlive {
    /// Connects to the API socket of the instance in `dir`.
    pub async fn connect(dir: &Path) -> Result<KeepAlive> {
        let socket = dir.join(orgsync_daemon::api::SOCKET_NAME);
        let stream = UnixStream::connect(&socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the daemon closes.
            let _ = conn.await;
        });
        Ok(KeepAlive { sender })
    }

    /// `POST path` with a JSON body on the open connection; the JSON answer.
    pub async fn post(&mut self, path: &str, body: &Json) -> Result<Json> {
        self.sender.ready().await?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(hyper::header::HOST, "orgsyncd")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{path}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}
