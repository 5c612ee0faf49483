//! Received shares our admin rejected (Home's Reject): what such a share
//! announces is dropped, now and later, and its terms can no longer be
//! accepted. Copies an admin already approved or linked stay (they are ours
//! now); the owner is not told (no frame for it: its share just delivers
//! nothing here).

use orgsync_protocol::authority::{Provenance, Source};
use orgsync_protocol::share::ShareId;

use super::db::{Declined, InShare};
use super::inbox::{self, Action};
use super::{shares, GovError, Governance};

/// Who rejected the received share `id` and when, if it was rejected.
pub fn get(gov: &Governance, id: &ShareId) -> Result<Option<Declined>, GovError> {
    gov.db().get(&gov.db().declined, "declined share", &id.0)
}

/// Whether an object of this provenance came under a share we rejected.
pub(super) fn drops(gov: &Governance, prov: Option<&Provenance>) -> Result<bool, GovError> {
    match prov.map(|p| &p.source) {
        Some(Source::Share { share, .. }) => Ok(get(gov, share)?.is_some()),
        _ => Ok(false),
    }
}

/// Rejects the received share `id`: records who and when, rejects what of
/// it waits in the inbox (as `orgsync inbox reject` would), and from then
/// on drops what it announces. Refused when the share is unknown or
/// already rejected.
pub async fn reject(gov: &Governance, id: &ShareId, by: &str) -> Result<InShare, GovError> {
    let share = {
        let _op = gov.inner.op.lock().await;
        let share = shares::in_share(gov, id)?;
        if let Some(d) = get(gov, id)? {
            return Err(GovError::Invalid(format!(
                "share {id} ({}) is already rejected, by {}",
                share.label, d.by
            )));
        }
        let rec = Declined {
            by: by.to_string(),
            at_ms: gov.now_ms(),
        };
        gov.db()
            .put(&gov.db().declined, "declined share", &id.0, &rec)?;
        gov.audit(
            by,
            "share.reject",
            Some(&share.partner),
            Some(id.to_string()),
            format!(
                "received share {:?} rejected: what it announces is dropped",
                share.label
            ),
        )?;
        share
    };
    // Whatever arrives from now on is dropped by `drops`; what already
    // waits is decided here (under the inbox's own lock).
    let waiting: Vec<_> = inbox::list(gov, Some(&share.partner))?
        .into_iter()
        .filter(|i| i.share.as_deref() == Some(id.to_string().as_str()))
        .map(|i| i.id)
        .collect();
    if !waiting.is_empty() {
        inbox::decide(gov, &waiting, Action::Reject, None, by).await?;
    }
    gov.db().flush().await?;
    Ok(share)
}
