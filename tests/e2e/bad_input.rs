//! End-to-end: bad local input against a real `orgsyncd`. Malformed API
//! requests, a bad configuration, hostile drop files, key files readable by
//! others and a full disk each get a clear error, and nothing already
//! stored is lost (the digest of the store is unchanged, or every
//! acknowledged write is still there).

use crate::support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use orgsync_keytool::InstanceDir;
use support::{bin, stderr, Instance};

/// One raw HTTP/1.1 request on the API socket; (status, body).
fn http(sock: &Path, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(sock).expect("connect to api.sock");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let req = format!(
        "{head}\r\nHost: orgsync\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // The server may answer (413) and close before reading a huge body.
    let _ = s.write_all(req.as_bytes()).and_then(|()| s.write_all(body));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    (status, text)
}

/// Runs `orgsyncd --dir DIR` expecting it to refuse to start; its output.
fn daemon_refuses(dir: &Path) -> Output {
    let mut child = Command::new(bin("orgsyncd"))
        .arg("--dir")
        .arg(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn orgsyncd");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("orgsyncd started despite bad input: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn seeded(name: &str) -> (Instance, (usize, String)) {
    let mut a = Instance::new(name);
    a.start();
    for i in 0..5 {
        a.put("contact", &["--set", &format!("first_name=Kept {i}")]);
    }
    let digest = a.digest();
    (a, digest)
}

#[test]
fn malformed_api_requests_get_clear_errors_and_change_nothing() {
    let (mut a, before) = seeded("Acme");
    let sock = a.dir.join("api.sock");
    let post = "POST /v1/objects HTTP/1.1";
    let cases: [(&str, &str, Vec<u8>, u16, &str); 6] = [
        (
            "bad JSON",
            post,
            b"{\"kind\": \"contact\",".to_vec(),
            400,
            "error",
        ),
        (
            "unknown kind",
            post,
            br#"{"kind":"spaceship"}"#.to_vec(),
            400,
            "spaceship",
        ),
        (
            "wrong field type",
            post,
            br#"{"kind":"contact","fields":{"first_name":42}}"#.to_vec(),
            400,
            "first_name",
        ),
        (
            "unknown key",
            post,
            br#"{"kind":"contact","colour":"red"}"#.to_vec(),
            400,
            "colour",
        ),
        (
            "huge body",
            post,
            {
                let mut v = br#"{"kind":"contact","fields":{"first_name":""#.to_vec();
                v.extend(std::iter::repeat_n(b'x', 4 << 20));
                v.extend_from_slice(br#""}}"#);
                v
            },
            413,
            "limit",
        ),
        (
            "invalid UTF-8",
            post,
            b"{\"kind\":\"\xff\xfe\"}".to_vec(),
            400,
            "error",
        ),
    ];
    for (what, head, body, want, needle) in &cases {
        let (status, text) = http(&sock, head, body);
        assert_eq!(status, *want, "{what}: {text}");
        assert!(
            text.contains(needle),
            "{what}: the error does not mention {needle:?}: {text}"
        );
        eprintln!("bad input: API {what}: {status}");
    }
    // Not HTTP at all: the connection is dropped, the daemon keeps serving.
    let mut s = UnixStream::connect(&sock).expect("connect");
    let _ = s.write_all(b"\x00\x01garbage\r\n\r\n");
    let _ = s.read_to_end(&mut Vec::new());
    assert_eq!(a.digest(), before, "a refused request changed the store");
    a.stop();
}

#[test]
fn bad_config_refuses_to_start_naming_the_key_and_loses_nothing() {
    let (mut a, before) = seeded("Acme");
    a.stop();
    let path = a.dir.join("orgsync.toml");
    let good = std::fs::read_to_string(&path).expect("orgsync.toml");
    // Instance::new ends the file with a [sync] table: these lines land in it.
    for (what, extra, needle) in [
        (
            "unknown key",
            "\nreconnect_sometimes_ms = 5\n",
            "reconnect_sometimes_ms",
        ),
        ("bad value", "\nmax_unacked = \"lots\"\n", "max_unacked"),
        (
            "out of range",
            "\nmax_batch_changes = 0\n",
            "max_batch_changes",
        ),
        ("not TOML", "\n[sync\n", "orgsync.toml:"),
    ] {
        std::fs::write(&path, format!("{good}{extra}")).expect("write config");
        let out = daemon_refuses(&a.dir);
        let err = stderr(&out);
        assert!(!out.status.success(), "{what}: exit status");
        assert!(
            err.contains(needle),
            "{what}: {needle:?} not named in: {err}"
        );
        eprintln!("bad input: config {what}: {}", err.trim());
    }
    std::fs::write(&path, good).expect("restore config");
    a.start();
    assert_eq!(a.digest(), before, "records lost across the refused starts");
    a.stop();
}

#[test]
fn hostile_drop_files_fail_with_the_line_and_store_nothing() {
    let (mut a, before) = seeded("Acme");
    let mut huge = b"{\"kind\":\"contact\",\"fields\":{\"first_name\":\"ok\"}}\n".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 2 << 20)); // one 2 MiB line
    huge.push(b'\n');
    let mut utf8 = b"{\"kind\":\"contact\",\"fields\":{\"first_name\":\"ok\"}}\n".to_vec();
    utf8.extend_from_slice(b"{\"kind\":\"contact\",\"fields\":{\"first_name\":\"\xc3\x28\"}}\n");
    let cases: [(&str, &[u8], &str); 5] = [
        ("huge-line.ndjson", &huge, "line 2"),
        ("bad-utf8.ndjson", &utf8, "UTF-8"),
        (
            "contacts-columns.csv",
            b"first_name,email\nAda,ada@example.org\nBo,bo@example.org,extra\n",
            "line 3",
        ),
        (
            "contacts-header.csv",
            b"first_name,shoe_size\nAda,42\n",
            "shoe_size",
        ),
        ("binary.ndjson", b"\x00\x01\x02\x03\xff\xfe\n", "line 1"),
    ];
    for (name, body, needle) in cases {
        a.drop_file(name, body);
        assert_eq!(
            a.import_outcome(name, Duration::from_secs(60)),
            "failed",
            "{name}"
        );
        let reason =
            std::fs::read_to_string(a.import_dir().join("failed").join(format!("{name}.error")))
                .expect("reason file");
        assert!(
            reason.contains(needle),
            "{name}: {needle:?} not in {reason}"
        );
        eprintln!("bad input: drop file {name}: {}", reason.trim());
    }
    assert_eq!(a.digest(), before, "a refused drop file stored something");
    a.stop();
}

#[test]
fn key_files_readable_by_others_are_refused() {
    let (mut a, before) = seeded("Acme");
    a.stop();
    let inst = InstanceDir::new(&a.dir);
    for key in [inst.tls_key_path(), inst.org_key_path(0)] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let out = daemon_refuses(&a.dir);
        let err = stderr(&out);
        let file = key.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(
            err.contains(file) && err.contains("600"),
            "orgsyncd: no clear refusal for {file}: {err}"
        );
        assert_eq!(
            err.matches("refusing to use it").count(),
            1,
            "the reason is said once: {err}"
        );
        let kt = support::run(
            Command::new(bin("orgsync-keytool"))
                .arg("--dir")
                .arg(&a.dir)
                .args(["export", "-o", "-"]),
        );
        assert!(!kt.status.success(), "keytool used an exposed key");
        assert!(stderr(&kt).contains(file), "keytool: {}", stderr(&kt));
        eprintln!("bad input: key file 0644: {}", err.trim());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    a.start();
    assert_eq!(a.digest(), before);
    a.stop();
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    support::run(Command::new("id").arg("-u"))
        .stdout
        .starts_with(b"0\n")
}

#[test]
fn full_disk_during_writes_keeps_every_acknowledged_write() {
    if !is_root() {
        eprintln!("SKIPPED full-disk test: it mounts a small tmpfs and needs root");
        return;
    }
    let mut a = Instance::new("Acme");
    let tmp = tempfile::tempdir().expect("tmp");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mnt");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED full-disk test: mount -t tmpfs failed (no privilege in this container)");
        return;
    }
    let fs = Tmpfs(mnt.clone());
    // Move the instance onto the small file system.
    let dir = mnt.join("inst");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&a.dir)
        .arg(&dir)
        .status()
        .expect("cp");
    assert!(cp.success());
    a.dir = dir;
    a.start();
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(a.put("contact", &["--set", &format!("first_name=Before {i}")]));
    }
    // Fill what is left.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    // Writes now fail with an error that says why; none is acknowledged
    // without being stored.
    let mut refused = None;
    for i in 0..200 {
        let out = a.cli(&["put", "contact", "--set", &format!("first_name=Full {i}")]);
        if out.status.success() {
            acked.push(support::stdout(&out).trim().to_string());
        } else {
            refused = Some(stderr(&out));
            break;
        }
    }
    let refused = refused.expect("200 writes succeeded on a full disk");
    assert!(
        refused.to_lowercase().contains("space")
            || refused.contains("storage")
            || refused.contains("not running"),
        "unclear error on a full disk: {refused}"
    );
    eprintln!("bad input: full disk: {}", refused.trim());
    // Space comes back: the daemon (restarted if it had to stop) has every
    // acknowledged write and takes new ones.
    std::fs::remove_file(&filler).expect("remove filler");
    if a.cli(&["status", "--json"]).status.success() {
        a.stop();
    } else {
        a.kill9();
    }
    a.start();
    for id in &acked {
        assert!(
            a.cli(&["get", id]).status.success(),
            "acknowledged write {id} lost"
        );
    }
    a.put("contact", &["--set", "first_name=After"]);
    a.stop();
    drop(fs);
}
