//! `orgsync doctor` on a real pair of daemons: all OK when healthy; each
//! problem named, with its fix, when broken (a secret readable by others,
//! a stopped partner, the port taken by another process).

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use orgsync_keytool::InstanceDir;
use support::{stderr, stdout, wait_for, Instance};

/// Runs `orgsync doctor` on `inst`: exit code, report, time taken.
fn doctor(inst: &Instance) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let out = inst.cli(&["doctor"]);
    let took = started.elapsed();
    assert!(
        !stderr(&out).contains("panicked"),
        "doctor panicked: {}",
        stderr(&out)
    );
    (out.status.code(), stdout(&out), took)
}

/// The FAIL line of `report` containing `needle`.
fn fail(report: &str, needle: &str) -> String {
    report
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains(needle))
        .unwrap_or_else(|| panic!("no FAIL line with {needle:?}:\n{report}"))
        .to_string()
}

fn connected(inst: &Instance, partner: &str) -> bool {
    inst.status()["partners"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["name"] == partner && p["connected"] == true)
}

#[test]
fn doctor_passes_a_healthy_pair_and_names_each_problem_of_a_broken_one() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    Instance::pair(&a, &b);
    a.start();
    b.start();
    wait_for("Acme and Globex connected", Duration::from_secs(60), || {
        connected(&a, "Globex").then_some(())
    });

    // Protocol 2 measures the partner's clock right after the session is
    // established: wait for the measurement, then doctor must judge it.
    let skew = wait_for(
        "Globex's clock skew measured",
        Duration::from_secs(60),
        || {
            a.status()["partners"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == "Globex")?["clock_skew_ms"]
                .as_i64()
        },
    );
    let (code, report, took) = doctor(&a);
    assert_eq!(code, Some(0), "healthy pair:\n{report}");
    let lines: Vec<&str> = report.lines().collect();
    assert!(lines.len() >= 8, "too few checks:\n{report}");
    let clock = lines
        .iter()
        .find(|l| l.contains("clock: Globex"))
        .unwrap_or_else(|| panic!("no clock line for Globex:\n{report}"));
    assert!(
        clock.starts_with("OK ") && clock.contains("clocks agree"),
        "skew {skew} ms on loopback: {clock}"
    );
    for line in &lines {
        assert!(
            line.starts_with("OK "),
            "not OK on a healthy pair: {line}\n{report}"
        );
    }
    for check in [
        "file modes",
        "disk",
        "daemon",
        "port",
        "partner: Globex",
        "pending peers",
        "inbox",
        "clock",
    ] {
        assert!(report.contains(check), "no {check} check:\n{report}");
    }
    eprintln!(
        "doctor: healthy pair: {} checks OK in {:.0} ms",
        lines.len(),
        took.as_secs_f64() * 1000.0
    );

    // Broken: a secret readable by others, and the partner stopped.
    let key = InstanceDir::new(&a.dir).tls_key_path();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    b.stop();
    let (code, report) = wait_for("doctor to see Globex gone", Duration::from_secs(60), || {
        let (code, report, _) = doctor(&a);
        report
            .contains("Globex: not connected")
            .then_some((code, report))
    });
    assert_eq!(code, Some(1), "broken pair must fail:\n{report}");
    let key_line = fail(&report, "tls.key");
    assert!(
        key_line.contains("644") && key_line.contains("fix: chmod 600"),
        "{key_line}"
    );
    let partner_line = fail(&report, "Globex: not connected");
    assert!(
        partner_line.contains("fix: check that Globex's orgsyncd runs"),
        "{partner_line}"
    );
    eprintln!("doctor: broken pair:\n{}", report.trim_end());

    // Stopped, with another process on its port.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    a.stop();
    let squatter = std::net::UdpSocket::bind(("127.0.0.1", a.port)).expect("take the port");
    let (code, report, _) = doctor(&a);
    assert_eq!(code, Some(1), "stopped daemon, port taken:\n{report}");
    assert!(fail(&report, "daemon").contains("not running"), "{report}");
    assert!(
        fail(&report, "port").contains("in use by another process"),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("OK") && l.contains("file modes")),
        "modes fixed:\n{report}"
    );
    eprintln!("doctor: stopped, port taken:\n{}", report.trim_end());
    drop(squatter);
}
