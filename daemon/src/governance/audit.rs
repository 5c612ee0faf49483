//! The audit log: every decision, delivery, acceptance of terms and erase,
//! appended (never rewritten) to the `gov_audit` tree, plus the optional
//! webhook command run for notifications.

use std::process::Stdio;

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

/// Runs the webhook command (through `sh -c`) with the entry as JSON on
/// its standard input; failures are logged, never fatal.
pub(super) fn notify(webhook: Option<&String>, entry: &AuditEntry) {
    let Some(cmd) = webhook.cloned() else { return };
    let Ok(json) = serde_json::to_vec(entry) else {
        return;
    };
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(mut child) => {
                if let Some(mut stdin) = child.stdin.take() {
                    let _ = stdin.write_all(&json);
                }
                match child.wait() {
                    Ok(s) if s.success() => {}
                    Ok(s) => tracing::warn!(command = %cmd, status = %s, "webhook failed"),
                    Err(e) => tracing::warn!(command = %cmd, error = %e, "webhook failed"),
                }
            }
            Err(e) => tracing::warn!(command = %cmd, error = %e, "cannot run webhook"),
        }
    });
}
