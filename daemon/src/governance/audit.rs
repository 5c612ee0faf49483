//! The audit log: every decision, delivery, acceptance of terms and erase,
//! appended (never rewritten) to the `gov_audit` tree, plus the optional
//! webhook command run for notifications.

use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use orgsync_protocol::model::OrgId;
use serde::{Deserialize, Serialize};

use super::db::GovDb;
use super::GovError;

/// One audit entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log (increasing).
    pub seq: u64,
    /// When (Unix ms, governance clock).
    pub at_ms: u64,
    /// Who: an admin's name, or `daemon` for automatic steps.
    pub who: String,
    /// What happened, e.g. `share.create`, `inbox.approve`, `erase.ack`.
    pub action: String,
    /// The partner concerned (account number), if any.
    pub partner: Option<String>,
    /// The partner's name, when known.
    pub partner_name: Option<String>,
    /// The share or request concerned, if any.
    pub share: Option<String>,
    /// Free details (object ids, counts, reasons).
    pub detail: String,
    /// A name the partner *claims* (e.g. who accepted terms on its side):
    /// never an actor here, control characters stripped and length bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
}

/// Filters of [`read`].
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only entries about this partner.
    pub partner: Option<OrgId>,
    /// Only entries at or after this time (Unix ms).
    pub since_ms: Option<u64>,
}

/// Appends an entry; durable once the governance trees are flushed.
pub(super) fn append(db: &GovDb, mut entry: AuditEntry) -> Result<AuditEntry, GovError> {
    entry.seq = db.next_audit_seq()?;
    let bytes = serde_json::to_vec(&entry).map_err(|e| GovError::Invalid(e.to_string()))?;
    db.audit
        .insert(entry.seq.to_be_bytes(), bytes)
        .map_err(|source| GovError::Db {
            op: "append audit",
            source,
        })?;
    tracing::info!(action = %entry.action, who = %entry.who, partner = ?entry.partner_name,
        share = ?entry.share, detail = %entry.detail, "audit");
    Ok(entry)
}

/// Entries matching `filter`, oldest first.
pub fn read(db: &GovDb, filter: &AuditFilter) -> Result<Vec<AuditEntry>, GovError> {
    let partner = filter.partner.map(|p| p.account_number());
    let mut out = Vec::new();
    for kv in db.audit.iter() {
        let (_, v) = kv.map_err(|source| GovError::Db {
            op: "read audit",
            source,
        })?;
        let e: AuditEntry =
            serde_json::from_slice(&v).map_err(|e| GovError::Invalid(format!("audit: {e}")))?;
        if partner.is_some() && e.partner != partner {
            continue;
        }
        if filter.since_ms.is_some_and(|s| e.at_ms < s) {
            continue;
        }
        out.push(e);
    }
    Ok(out)
}

/// The webhook command (`governance.toml` `webhook`), run through `sh -c`
/// with the audit entry as JSON on its standard input, within
/// `[limits] webhook_concurrency` processes at once and
/// `webhook_per_minute` starts per minute: a partner whose frames cause
/// notifications cannot make us run an unbounded number of processes.
/// Notifications over either bound are skipped, counted in
/// `orgsync_webhooks_skipped_total` and reported by one warning per minute.
pub(crate) struct Webhook {
    cmd: Option<String>,
    running: Arc<Semaphore>,
    per_minute: u64,
    window: Mutex<Window>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// The current minute of the webhook rate.
struct Window {
    started: Instant,
    runs: u64,
    skipped: u64,
}

/// Length of a webhook rate window.
const WEBHOOK_WINDOW: Duration = Duration::from_secs(60);

impl Webhook {
    pub(crate) fn new(
        cmd: Option<String>,
        limits: &crate::config::LimitsConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Webhook {
        Webhook {
            cmd,
            running: Arc::new(Semaphore::new(limits.webhook_concurrency.max(1))),
            per_minute: limits.webhook_per_minute.max(1),
            window: Mutex::new(Window {
                started: Instant::now(),
                runs: 0,
                skipped: 0,
            }),
            metrics,
        }
    }

    /// Runs the webhook for `entry` if the rate allows; failures are
    /// logged, never fatal.
    pub(crate) fn notify(&self, entry: &AuditEntry) {
        let Some(cmd) = self.cmd.clone() else { return };
        let permit = self.running.clone().try_acquire_owned().ok();
        let allowed = {
            let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            if w.started.elapsed() >= WEBHOOK_WINDOW {
                if w.skipped > 0 {
                    tracing::info!(
                        skipped = w.skipped,
                        "webhook rate limit: notifications skipped in the last window"
                    );
                }
                *w = Window {
                    started: Instant::now(),
                    runs: 0,
                    skipped: 0,
                };
            }
            if permit.is_some() && w.runs < self.per_minute {
                w.runs += 1;
                true
            } else {
                w.skipped += 1;
                if w.skipped == 1 {
                    tracing::warn!(
                        running = self.running.available_permits() == 0,
                        per_minute = self.per_minute,
                        action = %entry.action,
                        "webhook rate limit reached: notifications are skipped (counted in orgsync_webhooks_skipped_total) until the rate allows"
                    );
                }
                false
            }
        };
        if !allowed {
            crate::metrics::add(&self.metrics.webhooks_skipped, 1);
            return;
        }
        let Ok(json) = serde_json::to_vec(entry) else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            run_webhook(&cmd, &json);
            // Released when the process has exited.
            drop(permit);
        });
    }
}

/// Runs `cmd` through `sh -c` with `json` on its standard input and waits.
fn run_webhook(cmd: &str, json: &[u8]) {
    use std::io::Write;
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(mut child) => {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(json);
            }
            match child.wait() {
                Ok(s) if s.success() => {}
                Ok(s) => tracing::warn!(command = %cmd, status = %s, "webhook failed"),
                Err(e) => tracing::warn!(command = %cmd, error = %e, "webhook failed"),
            }
        }
        Err(e) => tracing::warn!(command = %cmd, error = %e, "cannot run webhook"),
    }
}
