//! `orgsync doctor`: checks an instance and says, one line each, what is
//! wrong and how to fix it. File modes, disk and port are checked on this
//! machine (they work with the daemon stopped); partners, pending peers
//! and the inbox come from the running daemon's local API.

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use orgsync_daemon::client::{Client, Method};
use orgsync_keytool::outln;
use serde_json::{json, Value as Json};

use super::{array, text_of, Failure, Format, Table};

/// A partner clock this far from ours (either way) is a warning: merges
/// order concurrent edits by hybrid clocks, so a clock far ahead wins every
/// conflict.
const SKEW_WARN_MS: i64 = 2000;
/// A partner this far behind on acknowledging our changes is lagging.
const LAG_WARN_MS: u64 = 5 * 60 * 1000;
/// Free space below this is a warning, below a tenth of it a failure: sled
/// needs room to rewrite its segments, and backups and imports land there.
const DISK_WARN_BYTES: f64 = 1024.0 * 1024.0 * 1024.0;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    /// Could not be checked (e.g. a partner's clock while it is offline);
    /// not a problem, not a pass either.
    Info,
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the report.
struct Finding {
    level: Level,
    check: &'static str,
    detail: String,
    fix: Option<String>,
}

fn ok(check: &'static str, detail: String) -> Finding {
    Finding {
        level: Level::Ok,
        check,
        detail,
        fix: None,
    }
}

fn bad(level: Level, check: &'static str, detail: String, fix: String) -> Finding {
    Finding {
        level,
        check,
        detail,
        fix: Some(fix),
    }
}

/// Runs every check, prints the report, and fails (exit 1) when a check
/// failed; warnings alone leave the exit status 0.
pub async fn run(dir: &Path, client: &Client, format: Format) -> Result<(), Failure> {
    let mut report = file_modes(dir);
    report.push(disk(dir));
    report.push(store_size(dir));
    let status = client.status().await;
    let running = status.is_ok();
    report.push(match &status {
        Ok(s) => ok(
            "daemon",
            format!("orgsyncd answers (log head {})", text_of(&s["log_head"])),
        ),
        Err(e) => bad(
            Level::Fail,
            "daemon",
            orgsync_keytool::cli::error_chain(e),
            format!(
                "systemctl start orgsyncd (or orgsyncd --dir {})",
                dir.display()
            ),
        ),
    });
    report.push(port(dir, running));
    if let Ok(s) = &status {
        report.extend(partners(s));
        report.extend(
            array(s, "partners")
                .iter()
                .filter(|p| p["state"].as_str() != Some("revoked"))
                .map(clock_skew),
        );
        if let Ok(p) = client.partners().await {
            report.push(pending(&p));
        }
        // The inbox exists only with governance; without it there is
        // nothing waiting.
        if let Ok(inbox) = client.call(Method::GET, "/v1/inbox", None).await {
            report.push(inbox_waiting(&inbox));
        }
    }
    print(&report, format);
    let failed = report.iter().filter(|f| f.level == Level::Fail).count();
    if failed > 0 {
        return Err(Failure {
            code: 1,
            message: format!("doctor: {failed} problem(s) found"),
        });
    }
    Ok(())
}

fn print(report: &[Finding], format: Format) {
    if format == Format::Csv {
        let mut t = Table::new(&["STATUS", "CHECK", "DETAIL", "FIX"]);
        for f in report {
            t.row(vec![
                json!(f.level.label()),
                json!(f.check),
                json!(f.detail),
                json!(f.fix),
            ]);
        }
        t.print(format);
        return;
    }
    if format.is_json() {
        let v: Vec<Json> = report
            .iter()
            .map(|f| {
                json!({"check": f.check, "status": f.level.label(), "detail": f.detail, "fix": f.fix})
            })
            .collect();
        super::print_json(&Json::Array(v));
        return;
    }
    for f in report {
        match &f.fix {
            Some(fix) => outln!(
                "{:<4}  {}: {} (fix: {fix})",
                f.level.label(),
                f.check,
                f.detail
            ),
            None => outln!("{:<4}  {}: {}", f.level.label(), f.check, f.detail),
        }
    }
}

/// The instance directory must not be writable by others; secrets and
/// partners.toml must be readable by the owner only.
fn file_modes(dir: &Path) -> Vec<Finding> {
    let inst = orgsync_keytool::InstanceDir::new(dir);
    let mut wanted: Vec<(std::path::PathBuf, u32, &str)> = vec![
        (dir.to_path_buf(), 0o022, "700"),
        (inst.secrets_dir(), 0o077, "700"),
        (inst.partners_path(), 0o077, "600"),
    ];
    if let Ok(entries) = std::fs::read_dir(inst.secrets_dir()) {
        for e in entries.flatten() {
            wanted.push((e.path(), 0o077, "600"));
        }
    }
    let mut out = Vec::new();
    let mut checked = 0;
    for (path, forbidden, mode) in wanted {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        checked += 1;
        let actual = meta.permissions().mode() & 0o777;
        if actual & forbidden != 0 {
            out.push(bad(
                Level::Fail,
                "file modes",
                format!(
                    "{} has mode {actual:o}: other users can {}",
                    path.display(),
                    if forbidden == 0o022 {
                        "write it"
                    } else {
                        "read it"
                    }
                ),
                format!("chmod {mode} {}", path.display()),
            ));
        }
    }
    if out.is_empty() {
        out.push(ok(
            "file modes",
            format!("{checked} files and directories private to their owner"),
        ));
    }
    out
}

fn disk(dir: &Path) -> Finding {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return bad(
            Level::Warn,
            "disk",
            "the directory name holds a NUL byte".into(),
            "use another --dir".into(),
        );
    };
    // SAFETY: statvfs writes only into `st`; c_path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        let e = std::io::Error::last_os_error();
        return bad(
            Level::Warn,
            "disk",
            format!("cannot read free space of {}: {e}", dir.display()),
            "check that the directory exists".into(),
        );
    }
    let block = st.f_frsize as f64;
    let total = st.f_blocks as f64 * block;
    let free = st.f_bavail as f64 * block;
    let percent = if total > 0.0 {
        free * 100.0 / total
    } else {
        100.0
    };
    let detail = format!(
        "{:.1} GiB free of {:.1} GiB ({percent:.0}%)",
        free / 1073741824.0,
        total / 1073741824.0
    );
    let fix = format!("free space on the disk of {}", dir.display());
    if free < DISK_WARN_BYTES / 10.0 {
        bad(Level::Fail, "disk", detail, fix)
    } else if free < DISK_WARN_BYTES {
        bad(Level::Warn, "disk", detail, fix)
    } else {
        ok("disk", detail)
    }
}

/// Size on disk of the sled store, for comparison with the data it holds.
fn store_size(dir: &Path) -> Finding {
    fn size(path: &Path) -> u64 {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| size(&e.path()))
                .sum(),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    let store = size(&dir.join("store"));
    ok(
        "store",
        format!(
            "{:.1} MiB on disk in {}",
            store as f64 / 1048576.0,
            dir.join("store").display()
        ),
    )
}

/// The QUIC port: held by orgsyncd when it runs, free for it otherwise.
fn port(dir: &Path, running: bool) -> Finding {
    let listen: SocketAddr = match orgsync_daemon::config::Config::load(dir) {
        Ok(c) => c.listen,
        Err(e) => {
            return bad(
                Level::Fail,
                "port",
                orgsync_keytool::cli::error_chain(&e),
                format!("correct {}", dir.join("orgsync.toml").display()),
            )
        }
    };
    let free = UdpSocket::bind(listen).is_ok();
    match (running, free) {
        (true, false) => ok("port", format!("orgsyncd listens on {listen} (UDP)")),
        (true, true) => bad(
            Level::Fail,
            "port",
            format!("orgsyncd runs but nothing listens on {listen} (UDP)"),
            "restart orgsyncd and read its log".into(),
        ),
        (false, true) => ok("port", format!("{listen} (UDP) is free for orgsyncd")),
        (false, false) => bad(
            Level::Fail,
            "port",
            format!("{listen} (UDP) is in use by another process"),
            format!(
                "stop that process (ss -ulpn 'sport = :{}') or change listen in orgsync.toml",
                listen.port()
            ),
        ),
    }
}

fn partners(status: &Json) -> Vec<Finding> {
    let list: Vec<Json> = array(status, "partners")
        .into_iter()
        .filter(|p| p["state"].as_str() != Some("revoked"))
        .collect();
    if list.is_empty() {
        return vec![bad(
            Level::Warn,
            "partners",
            "no partners".into(),
            "pair one: orgsync-keytool invite (or export / import)".into(),
        )];
    }
    list.iter()
        .map(|p| {
            let name = text_of(&p["name"]);
            let not_acked = p["not_acked"].as_u64().unwrap_or(0);
            let lag_ms = p["lag_ms"].as_u64().unwrap_or(0);
            if p["connected"].as_bool() != Some(true) {
                let error = p["last_error"].as_str().unwrap_or("no connection yet");
                let lower = error.to_lowercase();
                let fix = if lower.contains("certificate") || lower.contains("fingerprint") {
                    format!("its certificate does not match the one paired: ask {name}'s admin for a new bundle and import it (orgsync-keytool import)")
                } else {
                    format!(
                        "check that {name}'s orgsyncd runs and that {} is reachable over UDP",
                        p["addresses"]
                            .as_array()
                            .map(|a| a.iter().map(text_of).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default()
                    )
                };
                bad(
                    Level::Fail,
                    "partner",
                    format!("{name}: not connected ({error}); {not_acked} change(s) waiting"),
                    fix,
                )
            } else if not_acked > 0 && lag_ms > LAG_WARN_MS {
                bad(
                    Level::Warn,
                    "partner",
                    format!(
                        "{name}: connected but {not_acked} change(s) unacknowledged for {:.0} s",
                        lag_ms as f64 / 1000.0
                    ),
                    format!("orgsync wait-synced; if it stays, read both daemons' logs about {name}"),
                )
            } else {
                ok(
                    "partner",
                    format!(
                        "{name}: connected, certificate as paired, {not_acked} change(s) unacknowledged"
                    ),
                )
            }
        })
        .collect()
}

/// The partner's clock against ours, from `clock_skew_ms` of its status
/// entry (partner clock minus ours). Null or absent (not connected, or a
/// partner whose orgsyncd does not report its clock) is an INFO line.
fn clock_skew(partner: &Json) -> Finding {
    let name = text_of(&partner["name"]);
    let Some(skew) = partner.get("clock_skew_ms").and_then(Json::as_i64) else {
        return Finding {
            level: Level::Info,
            check: "clock",
            detail: format!(
                "{name}: skew unknown (not connected, or its orgsyncd does not report its clock)"
            ),
            fix: None,
        };
    };
    let secs = skew.unsigned_abs() as f64 / 1000.0;
    if skew.unsigned_abs() < SKEW_WARN_MS.unsigned_abs() {
        return ok("clock", format!("{name}: clocks agree within {secs:.3} s"));
    }
    let way = if skew > 0 { "ahead of" } else { "behind" };
    bad(
        Level::Warn,
        "clock",
        format!("{name}: its clock is {secs:.1} s {way} ours ({skew:+} ms)"),
        "run NTP/chrony on both machines; merges use hybrid clocks, a clock far ahead wins every conflict".into(),
    )
}

fn pending(partners: &Json) -> Finding {
    let pending = array(partners, "pending");
    if pending.is_empty() {
        return ok(
            "pending peers",
            "no unknown instance tried to connect".into(),
        );
    }
    let who: Vec<String> = pending
        .iter()
        .map(|p| {
            format!(
                "{} from {}",
                text_of(&p["fingerprint"]),
                text_of(&p["address"])
            )
        })
        .collect();
    bad(
        Level::Warn,
        "pending peers",
        format!(
            "{} unpaired instance(s) tried to connect: {}",
            who.len(),
            who.join("; ")
        ),
        "check the fingerprint with its admin, then orgsync partner accept (or dismiss)".into(),
    )
}

fn inbox_waiting(inbox: &Json) -> Finding {
    let n = array(inbox, "items").len();
    if n == 0 {
        ok("inbox", "nothing waiting for approval".into())
    } else {
        bad(
            Level::Warn,
            "inbox",
            format!("{n} object(s) from partners wait for approval"),
            "orgsync inbox list, then approve or reject".into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skew(v: Json) -> Finding {
        clock_skew(&json!({"name": "Globex", "connected": true, "clock_skew_ms": v}))
    }

    #[test]
    fn clock_skew_is_ok_under_two_seconds_and_a_named_warning_above() {
        let f = skew(json!(1999));
        assert!(
            f.level == Level::Ok && f.detail.starts_with("Globex"),
            "{}",
            f.detail
        );
        let f = skew(json!(-1999));
        assert!(f.level == Level::Ok, "{}", f.detail);
        let f = skew(json!(2000));
        assert!(f.level == Level::Warn, "{}", f.detail);
        assert!(
            f.detail.contains("Globex") && f.detail.contains("2.0 s ahead of ours"),
            "{}",
            f.detail
        );
        assert!(f.fix.as_deref().is_some_and(|x| x.contains("NTP/chrony")));
        let f = skew(json!(-90_500));
        assert!(
            f.level == Level::Warn && f.detail.contains("90.5 s behind ours (-90500 ms)"),
            "{}",
            f.detail
        );
        // i64::MIN has no positive counterpart: still a warning, no panic.
        assert!(skew(json!(i64::MIN)).level == Level::Warn);
    }

    #[test]
    fn clock_skew_null_absent_or_malformed_is_unknown() {
        let absent = clock_skew(&json!({"name": "Globex"}));
        for f in [
            absent,
            skew(json!(null)),
            skew(json!("soon")),
            skew(json!(1.5)),
        ] {
            assert!(f.level == Level::Info, "{}", f.detail);
            assert!(f.detail.contains("Globex: skew unknown"), "{}", f.detail);
        }
    }
}
