//! Process counters exported as Prometheus text on the local API (`/metrics`).
//!
//! Counters are plain atomics: cheap enough to bump on every change, and
//! readable at any time without locks. One [`Metrics`] is shared (in an
//! `Arc`) by the store, the sync engine, the API and the drop folder of one
//! daemon, so two daemons in one test process do not mix their numbers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::api::PartnerStatus;

/// The daemon's counters. All only ever increase.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Local changes committed to the change log.
    pub changes_written: AtomicU64,
    /// Changes sent to partners (counted once per partner).
    pub changes_sent: AtomicU64,
    /// Changes received from partners and applied that changed something
    /// (those that changed nothing count in `changes_unchanged`).
    pub changes_applied: AtomicU64,
    /// Payload bytes sent to partners (envelopes and blob chunks).
    pub bytes_sent: AtomicU64,
    /// Payload bytes received from partners.
    pub bytes_received: AtomicU64,
    /// Connections to partners re-established after a loss.
    pub reconnects: AtomicU64,
    /// Handshakes refused (unknown, revoked or impersonating peers).
    pub refused_handshakes: AtomicU64,
    /// Refused peers that proved their key but were not listed as pending
    /// (per-source or total bound of the pending list reached).
    pub pending_unlisted: AtomicU64,
    /// Requests served by the local API.
    pub api_requests: AtomicU64,
    /// Drop-folder files ingested.
    pub imports_done: AtomicU64,
    /// Drop-folder files refused (moved to `failed/`).
    pub imports_failed: AtomicU64,
    /// Records ingested from the drop folder.
    pub records_imported: AtomicU64,
    /// Partner changes applied that changed nothing (already known): a
    /// steady rise means changes are going round in circles.
    pub changes_unchanged: AtomicU64,
    /// Partner changes refused by the authority rules (the sender may not
    /// change that object): dropped whole, audited.
    pub changes_refused: AtomicU64,
    /// Governance frames (or parts of them) refused by the authority rules.
    pub governance_refused: AtomicU64,
    /// Times a partner's streams stopped being read because one of its
    /// bounded queues (change batches, governance frames) was full.
    pub partner_stalls: AtomicU64,
    /// Things partners sent refused for being over a `[limits]` bound
    /// (blob size, inbox items, open share requests).
    pub limits_refused: AtomicU64,
    /// Webhook notifications skipped by the webhook rate limit.
    pub webhooks_skipped: AtomicU64,
    /// Objects held back because whether they may be sent could not be
    /// read (a governance database error); each is decided again later.
    pub share_check_errors: AtomicU64,
    /// Times the daemon trimmed its memory after being idle (see
    /// [`crate::idle`]).
    pub idle_trims: AtomicU64,
    /// Partner changes held in the inbox because no share of the partner
    /// had announced their object when they were decided.
    pub changes_held_unannounced: AtomicU64,
    /// Held partner changes applied once their share announced them, or
    /// when auto-approve was turned on for the partner (a second write
    /// each).
    pub changes_approved_on_announcement: AtomicU64,
    /// Partner changes whose announcement had been received but not yet
    /// handled when they were to be decided: their apply waited for it
    /// instead of holding them.
    pub changes_waited_for_announcement: AtomicU64,
    /// Such waits that ran out (`ANNOUNCEMENT_WAIT`): the batch was then
    /// decided as things stood.
    pub announcement_waits_expired: AtomicU64,
    /// Object ids a partner's share announced that were not tracked as
    /// expected because the share already had
    /// `limits.max_expected_objects` of them.
    pub expected_refused: AtomicU64,
    /// UDP bytes of partner connections (QUIC headers, handshakes,
    /// acknowledgements and retransmissions included).
    pub quic: QuicTraffic,
}

/// UDP bytes sent and received on partner connections, as quinn counts
/// them: closed connections' totals plus the live ones' so far, so the
/// figures only ever increase while the daemon runs.
#[derive(Debug, Default)]
pub struct QuicTraffic {
    closed_sent: AtomicU64,
    closed_received: AtomicU64,
    live: Mutex<HashMap<usize, quinn::Connection>>,
}

/// Keeps one connection counted in [`QuicTraffic`]; when dropped, its
/// final figures move to the closed totals.
#[must_use = "the connection is counted only while the guard lives"]
pub struct TrackedConnection<'a> {
    traffic: &'a QuicTraffic,
    id: usize,
}

impl QuicTraffic {
    /// Counts `conn` until the returned guard is dropped.
    pub fn track(&self, conn: &quinn::Connection) -> TrackedConnection<'_> {
        let id = conn.stable_id();
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, conn.clone());
        TrackedConnection { traffic: self, id }
    }

    /// UDP bytes (sent, received) so far.
    pub fn totals(&self) -> (u64, u64) {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.values().fold(
            (
                self.closed_sent.load(Ordering::Relaxed),
                self.closed_received.load(Ordering::Relaxed),
            ),
            |(tx, rx), c| {
                let s = c.stats();
                (tx + s.udp_tx.bytes, rx + s.udp_rx.bytes)
            },
        )
    }
}

impl Drop for TrackedConnection<'_> {
    fn drop(&mut self) {
        let mut live = self
            .traffic
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Moved under the lock, so a concurrent `totals` sees it once.
        if let Some(c) = live.remove(&self.id) {
            let s = c.stats();
            add(&self.traffic.closed_sent, s.udp_tx.bytes);
            add(&self.traffic.closed_received, s.udp_rx.bytes);
        }
    }
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// A registry with every counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The Prometheus text exposition of the counters plus the per-partner
    /// gauges from `partners`.
    pub fn render(&self, partners: &[PartnerStatus]) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 25] = [
            (
                "orgsync_changes_written_total",
                "Local changes committed to the change log.",
                &self.changes_written,
            ),
            (
                "orgsync_changes_sent_total",
                "Changes sent to partners.",
                &self.changes_sent,
            ),
            (
                "orgsync_changes_applied_total",
                "Changes received from partners that changed something here.",
                &self.changes_applied,
            ),
            (
                "orgsync_bytes_sent_total",
                "Payload bytes sent to partners.",
                &self.bytes_sent,
            ),
            (
                "orgsync_bytes_received_total",
                "Payload bytes received from partners.",
                &self.bytes_received,
            ),
            (
                "orgsync_reconnects_total",
                "Partner connections re-established.",
                &self.reconnects,
            ),
            (
                "orgsync_refused_handshakes_total",
                "Handshakes refused (unknown or revoked peers).",
                &self.refused_handshakes,
            ),
            (
                "orgsync_pending_unlisted_total",
                "Refused peers not listed as pending (pending list bounds reached).",
                &self.pending_unlisted,
            ),
            (
                "orgsync_api_requests_total",
                "Requests served by the local API.",
                &self.api_requests,
            ),
            (
                "orgsync_imports_done_total",
                "Drop-folder files ingested.",
                &self.imports_done,
            ),
            (
                "orgsync_imports_failed_total",
                "Drop-folder files refused.",
                &self.imports_failed,
            ),
            (
                "orgsync_records_imported_total",
                "Records ingested from the drop folder.",
                &self.records_imported,
            ),
            (
                "orgsync_changes_unchanged_total",
                "Partner changes applied that changed nothing.",
                &self.changes_unchanged,
            ),
            (
                "orgsync_changes_refused_total",
                "Partner changes refused by the authority rules.",
                &self.changes_refused,
            ),
            (
                "orgsync_governance_refused_total",
                "Governance frames or items refused by the authority rules.",
                &self.governance_refused,
            ),
            (
                "orgsync_partner_stalls_total",
                "Times a partner was held back because one of its queues was full.",
                &self.partner_stalls,
            ),
            (
                "orgsync_limits_refused_total",
                "Partner input refused for being over a [limits] bound.",
                &self.limits_refused,
            ),
            (
                "orgsync_webhooks_skipped_total",
                "Webhook notifications skipped by the webhook rate limit.",
                &self.webhooks_skipped,
            ),
            (
                "orgsync_share_check_errors_total",
                "Objects held back because their send check failed on a database error.",
                &self.share_check_errors,
            ),
            (
                "orgsync_idle_trims_total",
                "Times the daemon returned memory after being idle.",
                &self.idle_trims,
            ),
            (
                "orgsync_changes_held_unannounced_total",
                "Partner changes held because no share had announced their object yet.",
                &self.changes_held_unannounced,
            ),
            (
                "orgsync_changes_approved_on_announcement_total",
                "Held partner changes applied once their share announced them.",
                &self.changes_approved_on_announcement,
            ),
            (
                "orgsync_changes_waited_for_announcement_total",
                "Partner changes applied after waiting for their received announcement.",
                &self.changes_waited_for_announcement,
            ),
            (
                "orgsync_announcement_waits_expired_total",
                "Waits for a received announcement that ran out.",
                &self.announcement_waits_expired,
            ),
            (
                "orgsync_expected_refused_total",
                "Announced object ids not tracked: over limits.max_expected_objects.",
                &self.expected_refused,
            ),
        ];
        for (name, help, c) in counters {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let (quic_sent, quic_received) = self.quic.totals();
        for (name, help, v) in [
            (
                "orgsync_quic_bytes_sent_total",
                "UDP bytes sent on partner connections (QUIC overhead included).",
                quic_sent,
            ),
            (
                "orgsync_quic_bytes_received_total",
                "UDP bytes received on partner connections (QUIC overhead included).",
                quic_received,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let gauges: [Gauge; 3] = [
            (
                "orgsync_partner_connected",
                "1 while a sync session with the partner is up.",
                |p| u64::from(p.connected),
            ),
            (
                "orgsync_partner_not_acked",
                "Local changes the partner has not acknowledged.",
                |p| p.not_acked,
            ),
            (
                "orgsync_partner_lag_seconds",
                "Age of the oldest change the partner has not acknowledged.",
                |p| p.lag_ms,
            ),
        ];
        for (name, help, get) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for p in partners {
                let value = get(p);
                let account = p.org.account_number();
                let partner = escape_label(&p.name);
                if name.ends_with("_seconds") {
                    let _ = writeln!(
                        out,
                        "{name}{{partner=\"{partner}\",account=\"{account}\"}} {:.3}",
                        value as f64 / 1000.0
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "{name}{{partner=\"{partner}\",account=\"{account}\"}} {value}"
                    );
                }
            }
        }
        out
    }
}

/// A per-partner gauge: name, help, how to read it.
type Gauge = (&'static str, &'static str, fn(&PartnerStatus) -> u64);

/// Escapes a Prometheus label value (backslash, quote, newline).
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use orgsync_protocol::model::OrgId;

    #[test]
    fn renders_counters_and_partner_gauges() {
        let m = Metrics::new();
        add(&m.changes_written, 3);
        let p = PartnerStatus {
            name: "Acme \"HQ\"".into(),
            org: OrgId([1; 32]),
            state: "paired".into(),
            addresses: vec![],
            connected: true,
            last_sync_ms: None,
            not_acked: 7,
            lag_ms: 1500,
            incoming_lag: 0,
            last_error: None,
            protocol_version: Some(2),
            clock_skew_ms: None,
        };
        let text = m.render(&[p]);
        assert!(text.contains("orgsync_changes_written_total 3\n"));
        assert!(text.contains("orgsync_partner_not_acked{partner=\"Acme \\\"HQ\\\"\""));
        assert!(text.contains("} 1.500\n"));
    }
}
