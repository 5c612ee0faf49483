//! Cost per change (issue 16 item 7): CPU seconds per 100,000 replicated
//! changes, from the kernel's per-process counters, and bytes on the wire
//! per change, from the daemons' QUIC counters.

use anyhow::{Context, Result};

use crate::report::Row;

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, fixed at
/// 100 by the Linux ABI whatever the kernel's own tick rate).
const USER_HZ: f64 = 100.0;

/// The payload of one change the scenarios write (a contact of about 262
/// bytes): what a wire figure is compared with.
pub const CHANGE_BYTES: f64 = 262.0;

/// CPU seconds (user + system, all threads) process `pid` has used so far;
/// `None` reads this process.
pub fn cpu_secs(pid: Option<u32>) -> Result<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces; the rest follows its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: no ')' after the command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; `rest`
    // starts at field 3.
    let tick = |i: usize| -> Result<f64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64 / USER_HZ)
            .with_context(|| format!("{path}: field {i} is not a tick count"))
    };
    Ok(tick(14)? + tick(15)?)
}

/// CPU seconds per 100,000 changes.
pub fn per_100k(cpu: f64, changes: u64) -> f64 {
    cpu / changes.max(1) as f64 * 1e5
}

/// A CPU row next to the raw sled baseline's CPU per 100,000 records.
pub fn cpu_row(scenario: String, secs_per_100k: f64, sled_cpu: f64) -> Row {
    Row {
        scenario,
        metric: "CPU s/100k".into(),
        value: secs_per_100k,
        baseline: Some(sled_cpu).filter(|c| *c > 0.0),
        target: "-".into(),
        pass: None,
    }
}

/// A wire row next to the change's own size.
pub fn wire_row(scenario: String, bytes_per_change: f64) -> Row {
    Row {
        scenario,
        metric: "B/change".into(),
        value: bytes_per_change,
        baseline: Some(CHANGE_BYTES),
        target: "-".into(),
        pass: None,
    }
}

/// The value of counter `name` in a Prometheus text exposition.
pub fn counter(metrics: &str, name: &str) -> Result<u64> {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .with_context(|| format!("no counter {name} in /metrics"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_counters() {
        let t = cpu_secs(None).unwrap();
        assert!(t >= 0.0);
        let text = "# TYPE orgsync_quic_bytes_sent_total counter\norgsync_quic_bytes_sent_total 1234\norgsync_quic_bytes_sent_total_x 9\n";
        assert_eq!(
            counter(text, "orgsync_quic_bytes_sent_total").unwrap(),
            1234
        );
        assert!(counter(text, "orgsync_quic_bytes_received_total").is_err());
    }
}
