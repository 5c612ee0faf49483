//! A minimal blocking HTTP/1.0 client for Syncthing's REST API on
//! loopback: one connection per request, read to the end (HTTP/1.0 keeps
//! the server from chunking), the API key in a header.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long one request may take (a scan of the 256 MiB file included).
const TIMEOUT: Duration = Duration::from_secs(300);

/// `method path` on `127.0.0.1:port`; the body of a 2xx answer as JSON
/// (`null` when empty), otherwise an error with the status and body.
pub fn call(method: &str, port: u16, path: &str, api_key: &str) -> Result<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {api_key}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to {method} {path}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} {path}: no HTTP header in {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{method} {path}: no status in {head:?}"))?;
    if !(200..300).contains(&status) {
        bail!("{method} {path} answered {status}: {}", body.trim());
    }
    if body.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(body).with_context(|| format!("{method} {path}: not JSON: {body:?}"))
}
