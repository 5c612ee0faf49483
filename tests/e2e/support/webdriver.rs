//! A minimal W3C WebDriver client (the handful of commands the browser
//! tests use) over blocking HTTP/1.1 to a local `chromedriver`, and a
//! guard that starts and stops `chromedriver` itself.
//!
//! Written here rather than taken from fantoccini/thirtyfour: those pull a
//! second HTTP/URL stack (~60 crates) into the workspace for six commands.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value as Json};

/// The element key of W3C WebDriver responses.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&rest[..nl]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        rest = &rest[nl + 2..];
        if size == 0 || rest.len() < size {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or(&[]);
    }
}

/// Reads one response: the lower-cased head and the body, by
/// Content-Length or up to the last chunk (chromedriver keeps connections
/// open whatever `Connection: close` says, so reading to EOF would hang).
fn read_response(s: &mut TcpStream, method: &str, path: &str) -> (String, Vec<u8>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("chromedriver {method} {path}: read: {e}"));
        raw.extend_from_slice(&buf[..n]);
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let body = &raw[split + 4..];
            let done = if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                body.len() >= len
            } else if head.contains("transfer-encoding: chunked") {
                body.ends_with(b"0\r\n\r\n")
            } else {
                n == 0
            };
            if done || n == 0 {
                return (head, body.to_vec());
            }
        } else if n == 0 {
            panic!("chromedriver {method} {path}: connection closed before a response");
        }
    }
}

/// One JSON request to the driver; the response's `value`, or a panic with
/// the driver's error.
pub fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Json>) -> Json {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect to chromedriver at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send to chromedriver");
    let (head, payload) = read_response(&mut s, method, path);
    let payload = if head.contains("transfer-encoding: chunked") {
        dechunk(&payload)
    } else {
        payload
    };
    let v: Json = serde_json::from_slice(&payload).unwrap_or_else(|e| {
        panic!(
            "chromedriver {method} {path}: not JSON ({e}): {}",
            String::from_utf8_lossy(&payload)
        )
    });
    let value = v.get("value").cloned().unwrap_or(Json::Null);
    if let Some(err) = value.get("error") {
        panic!(
            "chromedriver {method} {path}: {err}: {}",
            value.get("message").cloned().unwrap_or(Json::Null)
        );
    }
    value
}

/// A running `chromedriver`, killed when dropped.
pub struct Driver {
    /// Its address.
    pub addr: SocketAddr,
    child: Child,
}

impl Driver {
    /// Starts `/usr/bin/chromedriver` on a free loopback port and waits
    /// until it reports ready.
    pub fn start() -> Driver {
        let bin = Path::new("/usr/bin/chromedriver");
        assert!(
            bin.exists(),
            "/usr/bin/chromedriver is missing: run testkit/install-browser.sh"
        );
        let port = crate::support::free_port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let d = Driver { addr, child };
        crate::support::wait_for("chromedriver to be ready", Duration::from_secs(30), || {
            TcpStream::connect(addr).ok()?;
            let v = call(addr, "GET", "/status", None);
            (v["ready"] == true).then_some(())
        });
        d
    }

    /// A new headless Chromium session with a fresh profile in `profile`.
    pub fn session(&self, profile: &Path) -> Session {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let v = call(self.addr, "POST", "/session", Some(caps));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {v}"))
            .to_string();
        Session {
            addr: self.addr,
            id,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session; closed (the browser quits) when dropped.
pub struct Session {
    addr: SocketAddr,
    id: String,
}

impl Session {
    fn call(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        call(
            self.addr,
            method,
            &format!("/session/{}{path}", self.id),
            body,
        )
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The page source.
    pub fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The id of the element matching the CSS selector `css`.
    pub fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Types `text` into the element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Empties the input matching `css`.
    pub fn clear(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/clear"), Some(json!({})));
    }

    /// Clicks the element matching `css`.
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    /// Resizes the window.
    pub fn window_size(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let v = self.call("GET", "/screenshot", None);
        base64(v.as_str().expect("base64 screenshot"))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Best effort: the driver kills the browser when it exits anyway.
        let path = format!("/session/{}", self.id);
        if let Ok(mut s) = TcpStream::connect(self.addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
            let _ = s.write_all(
                format!(
                    "DELETE {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                    self.addr
                )
                .as_bytes(),
            );
            // One read: the answer comes once the browser has quit.
            let _ = s.read(&mut [0u8; 4096]);
        }
    }
}

/// Decodes standard base64 (with or without padding; whitespace ignored).
pub fn base64(text: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
