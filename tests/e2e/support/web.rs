//! A minimal blocking HTTP/1.1 client for the web console tests (one
//! request per connection, a cookie jar), and helpers to give an
//! [`Instance`] a console and accounts.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{bin, wait_for, Instance};

/// One response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Resp {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of the first `name="csrf"` hidden input of the page.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in the page:\n{}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("end of value")].to_string()
    }
}

/// A browser-like client: keeps cookies, sends its own origin on POSTs
/// unless told otherwise.
pub struct Browser {
    /// The console's address.
    pub addr: SocketAddr,
    /// Cookies received (name → value).
    pub cookies: BTreeMap<String, String>,
}

/// What a POST says about where it comes from.
#[derive(Clone, Copy)]
pub enum From<'a> {
    /// `Origin: http://ADDR` (a form of the console itself).
    SameOrigin,
    /// `Origin: <other>` (a page of another site).
    Origin(&'a str),
    /// Neither Origin nor Referer.
    Nothing,
}

impl Browser {
    /// A client of the console at `addr`.
    pub fn new(addr: SocketAddr) -> Browser {
        Browser {
            addr,
            cookies: BTreeMap::new(),
        }
    }

    /// This console's origin.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn request(&mut self, method: &str, path: &str, extra: &[(&str, String)], body: &str) -> Resp {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect to the console at {}: {e}", self.addr));
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req.push_str(&format!("Cookie: {}\r\n", c.join("; ")));
        }
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).expect("send request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read response");
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        for (k, v) in &headers {
            if k == "set-cookie" {
                if let Some((name, rest)) = v.split_once('=') {
                    let value = rest.split(';').next().unwrap_or("").to_string();
                    if value.is_empty() {
                        self.cookies.remove(name);
                    } else {
                        self.cookies.insert(name.to_string(), value);
                    }
                }
            }
        }
        // The console answers with Content-Length bodies (no chunking for
        // these small pages); a chunked body is kept raw, which still
        // contains the text the tests look for.
        Resp {
            status,
            headers,
            body: body.to_string(),
        }
    }

    /// GET `path`.
    pub fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, &[], "")
    }

    /// POST a form to `path`, saying it comes from `from`.
    pub fn post(&mut self, path: &str, form: &[(&str, &str)], from: From<'_>) -> Resp {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        let mut extra = vec![(
            "Content-Type",
            "application/x-www-form-urlencoded".to_string(),
        )];
        match from {
            From::SameOrigin => extra.push(("Origin", self.origin())),
            From::Origin(o) => extra.push(("Origin", o.to_string())),
            From::Nothing => {}
        }
        self.request("POST", path, &extra, &body.join("&"))
    }

    /// Signs in with a password (no second factor): asserts it worked.
    pub fn sign_in(&mut self, name: &str, password: &str) {
        let page = self.get("/login");
        assert_eq!(page.status, 200, "{}", page.body);
        let csrf = page.csrf();
        let r = self.post(
            "/login",
            &[("csrf", &csrf), ("name", name), ("password", password)],
            From::SameOrigin,
        );
        assert_eq!(r.status, 303, "sign in as {name}: {}", r.body);
        assert_eq!(r.header("location"), Some("/"));
    }
}

/// Form-urlencodes one value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A loopback TCP port that was free a moment ago (see
/// [`crate::support::free_port`]).
pub fn free_tcp_port() -> u16 {
    crate::support::free_port()
}

/// Turns the console on for `inst` (a free loopback port); its address.
pub fn enable_console(inst: &Instance) -> SocketAddr {
    let port = free_tcp_port();
    let mut cfg = std::fs::OpenOptions::new()
        .append(true)
        .open(inst.dir.join("orgsync.toml"))
        .expect("orgsync.toml");
    writeln!(
        cfg,
        "\n[web]\nenabled = true\nlisten = \"127.0.0.1:{port}\""
    )
    .expect("write orgsync.toml");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `orgsync admin add NAME --role ROLE --password-stdin`, asserting success.
pub fn add_account(inst: &Instance, name: &str, role: &str, password: &str) {
    admin_with_password(inst, &["add", name, "--role", role], password);
}

/// `orgsync admin passwd NAME --password-stdin`, asserting success.
pub fn set_password(inst: &Instance, name: &str, password: &str) {
    admin_with_password(inst, &["passwd", name], password);
}

fn admin_with_password(inst: &Instance, args: &[&str], password: &str) {
    let mut child = Command::new(bin("orgsync"))
        .arg("--dir")
        .arg(&inst.dir)
        .arg("admin")
        .args(args)
        .arg("--password-stdin")
        .env_remove("ORGSYNC_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn orgsync admin add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    let out = child.wait_with_output().expect("orgsync admin add");
    assert!(
        out.status.success(),
        "orgsync admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (30 s at most) until the console at `addr` accepts connections.
pub fn wait_console(addr: SocketAddr) {
    wait_for("the web console to answer", Duration::from_secs(30), || {
        TcpStream::connect(addr).ok()
    });
}

/// The ids of the items in `inst`'s inbox (through the CLI), sorted.
pub fn inbox_ids(inst: &Instance) -> Vec<String> {
    let mut ids: Vec<String> = inst.cli_json(&["inbox", "list"])["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// The accounts named in `inst`'s audit log for `action`, oldest first.
pub fn audit_who(inst: &Instance, action: &str) -> Vec<String> {
    inst.cli_json(&["audit"])["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == action)
        .map(|e| e["who"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The shares `inst` receives (`orgsync share list`).
pub fn received(inst: &Instance) -> Vec<serde_json::Value> {
    inst.cli_json(&["share", "list"])["received"]
        .as_array()
        .expect("received")
        .clone()
}
