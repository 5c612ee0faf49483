//! A server-sent-events reader for the console's `/events`: a background
//! thread reads the stream and hands each event (name, data) over a
//! channel; tests wait for the one they want with a deadline.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// One event of the stream.
#[derive(Debug, Clone)]
pub struct Event {
    /// `event:` name (`message` when absent).
    pub name: String,
    /// `data:` lines joined.
    pub data: String,
}

/// An open `/events` stream.
pub struct Sse {
    /// The response's status code.
    pub status: u16,
    /// The response's content type.
    pub content_type: String,
    rx: Receiver<Event>,
    stream: TcpStream,
}

impl Sse {
    /// Opens `GET /events` on the console at `addr` with `cookie`
    /// (`name=value`, or empty for none).
    pub fn open(addr: SocketAddr, cookie: &str) -> Sse {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        let mut req =
            format!("GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        if !cookie.is_empty() {
            req.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).expect("send");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut status_line = String::new();
        r.read_line(&mut status_line).expect("status line");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut content_type = String::new();
        let mut chunked = false;
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-type:") {
                content_type = v.trim().to_string();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let (mut name, mut data) = (String::new(), Vec::<String>::new());
            loop {
                let mut l = String::new();
                match r.read_line(&mut l) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let l = l.trim_end_matches(['\r', '\n']);
                // Chunk-size lines of a chunked body are hex numbers alone.
                if chunked && !l.is_empty() && l.chars().all(|c| c.is_ascii_hexdigit()) {
                    continue;
                }
                if l.is_empty() {
                    if !data.is_empty() {
                        let ev = Event {
                            name: if name.is_empty() {
                                "message".into()
                            } else {
                                name.clone()
                            },
                            data: data.join("\n"),
                        };
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                    name.clear();
                    data.clear();
                } else if let Some(v) = l.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = l.strip_prefix("data:") {
                    data.push(v.trim_start().to_string());
                }
            }
        });
        Sse {
            status,
            content_type,
            rx,
            stream: s,
        }
    }

    /// The first event (from now) for which `want` is true, parsed as
    /// JSON; panics naming `what` after `timeout`.
    pub fn wait(
        &self,
        what: &str,
        timeout: Duration,
        mut want: impl FnMut(&str, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let ev = self
                .rx
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no SSE event {what} within {timeout:?} ({e})"));
            let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
            if want(&ev.name, &v) {
                return v;
            }
        }
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
