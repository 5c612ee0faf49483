//! orgsyncd under a service manager, played for real without systemd: the
//! test binds the `$NOTIFY_SOCKET` datagram socket systemd would, and hands
//! the daemon a `$JOURNAL_STREAM` naming its stderr.

use crate::support;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{bin, wait_for, Guard, Instance};

/// Starts orgsyncd for `inst` with `env`, stderr into `log`.
fn spawn(inst: &Instance, env: &[(&str, String)], log: &Path) -> Guard {
    let err = std::fs::File::create(log).expect("log file");
    let mut cmd = Command::new(bin("orgsyncd"));
    cmd.arg("--dir")
        .arg(&inst.dir)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Guard(Some(cmd.spawn().expect("spawn orgsyncd")))
}

/// The next datagram on `sock`, within `timeout`.
fn recv(sock: &UnixDatagram, timeout: Duration) -> String {
    sock.set_read_timeout(Some(timeout)).expect("timeout");
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification within {timeout:?}: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Plays one start and stop under `NOTIFY_SOCKET=address`, `sock` being
/// the bound socket; returns the time from spawn to READY=1.
fn ready_then_stopping(inst: &Instance, sock: &UnixDatagram, address: String) -> Duration {
    let log = inst.dir.join("orgsyncd-notify.log");
    let started = Instant::now();
    let mut daemon = spawn(inst, &[("NOTIFY_SOCKET", address)], &log);
    let ready = recv(sock, Duration::from_secs(60));
    let took = started.elapsed();
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first notification: {ready:?}"
    );
    // Ready means listening: the API answers and the QUIC port is taken,
    // with no waiting in between.
    let out = inst.cli(&["status", "--json"]);
    assert!(
        out.status.success(),
        "API not answering at READY=1: {}",
        support::stderr(&out)
    );
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", inst.port)).is_err(),
        "UDP port {} still free at READY=1",
        inst.port
    );
    daemon.sigterm();
    let stopping = recv(sock, Duration::from_secs(30));
    assert_eq!(stopping, "STOPPING=1");
    let status = wait_for("orgsyncd to exit", Duration::from_secs(60), || {
        daemon.try_exited()
    });
    assert!(status.success(), "orgsyncd exited with {status}");
    took
}

#[test]
fn orgsyncd_tells_systemd_ready_once_listening_and_stopping_on_sigterm() {
    let inst = Instance::new("Acme");
    let path = inst.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    let took = ready_then_stopping(&inst, &sock, path.to_str().expect("utf-8").to_string());

    // systemd may also hand out an abstract socket, spelled "@name".
    use std::os::linux::net::SocketAddrExt;
    let name = format!("orgsync-test-{}", std::process::id());
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
    let abstract_sock = UnixDatagram::bind_addr(&addr).expect("bind abstract socket");
    let took_abstract = ready_then_stopping(&inst, &abstract_sock, format!("@{name}"));
    eprintln!(
        "service: READY=1 {:.0} ms after spawn (path socket), {:.0} ms (abstract socket); STOPPING=1 on SIGTERM, exit 0",
        took.as_secs_f64() * 1000.0,
        took_abstract.as_secs_f64() * 1000.0
    );
}

#[test]
fn orgsyncd_logs_to_the_journal_without_timestamps_or_colours() {
    let inst = Instance::new("Acme");
    let journal = inst.dir.join("journal.log");
    let plain = inst.dir.join("plain.log");
    std::fs::File::create(&journal).expect("create");
    let meta = std::fs::metadata(&journal).expect("stat");
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let runs = [
        // stderr is the stream JOURNAL_STREAM names: the journal.
        (&journal, stream.clone(), false),
        // The variable inherited, stderr elsewhere: keep the timestamps.
        (&plain, stream, true),
    ];
    for (log, value, stamped) in runs {
        // `spawn` truncates the file, keeping its inode.
        let mut daemon = spawn(&inst, &[("JOURNAL_STREAM", value)], log);
        let text = wait_for("orgsyncd started", Duration::from_secs(60), || {
            let t = std::fs::read_to_string(log).ok()?;
            t.contains("local API listening").then_some(t)
        });
        daemon.terminate(Duration::from_secs(60));
        let first = text.lines().next().unwrap_or("");
        let has_time = first.starts_with("20") && first.get(10..11) == Some("T");
        assert_eq!(has_time, stamped, "first line: {first:?}");
        assert!(!text.contains('\u{1b}'), "colour codes in {text}");
        if !stamped {
            assert!(
                first.starts_with(" INFO") || first.starts_with("INFO"),
                "{first:?}"
            );
            eprintln!("service: journal line: {first}");
        }
    }
}
