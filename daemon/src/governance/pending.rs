//! Peers refused at the handshake (unknown certificates), as an admin sees
//! them: accept one after checking its fingerprint against the bundle its
//! admin sent (it becomes a paired partner), or dismiss it for good.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use orgsync_protocol::bundle::Bundle;
use orgsync_protocol::identity::Fingerprint;

use super::{GovError, Governance};
use crate::transport::PendingPeer;

/// Pairs with the organisation of a bundle (stores it in partners.toml and
/// reloads the partner set); returns the partner's name. The daemon gives
/// one to [`Governance::set_pairing`].
pub trait Pairing: Send + Sync + 'static {
    /// Pairs with `bundle`'s organisation.
    fn pair(&self, bundle: &Bundle) -> Result<String, String>;
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn dismissed_key(fp: &Fingerprint) -> Vec<u8> {
    let mut k = b"dismissed".to_vec();
    k.extend_from_slice(&fp.0);
    k
}

/// Refused peers not dismissed and not paired since.
pub fn list(gov: &Governance) -> Result<Vec<PendingPeer>, GovError> {
    let peers = gov.inner.trust.peers();
    let mut out = Vec::new();
    for p in gov.inner.trust.pending() {
        if peers
            .iter()
            .any(|t| t.fingerprint == p.fingerprint && !t.revoked)
        {
            continue;
        }
        let dismissed = gov
            .db()
            .meta
            .contains_key(dismissed_key(&p.fingerprint))
            .map_err(|source| GovError::Db {
                op: "read dismissed",
                source,
            })?;
        if !dismissed {
            out.push(p);
        }
    }
    Ok(out)
}

fn find(gov: &Governance, fingerprint: &str) -> Result<PendingPeer, GovError> {
    let fp: Fingerprint =
        fingerprint
            .parse()
            .map_err(|e: orgsync_protocol::identity::FingerprintError| {
                GovError::Invalid(e.to_string())
            })?;
    list(gov)?
        .into_iter()
        .find(|p| p.fingerprint == fp)
        .ok_or_else(|| GovError::NotFound(format!("no pending peer with fingerprint {fp}")))
}

/// Hides a pending peer for good (it is still refused, and counted).
pub async fn dismiss(gov: &Governance, fingerprint: &str, by: &str) -> Result<(), GovError> {
    let _op = gov.inner.op.lock().await;
    let p = find(gov, fingerprint)?;
    gov.db()
        .meta
        .insert(
            dismissed_key(&p.fingerprint),
            &unix_ms(SystemTime::now()).to_be_bytes(),
        )
        .map_err(|source| GovError::Db {
            op: "write dismissed",
            source,
        })?;
    // Frees its place in the bounded list; if it keeps dialing it is listed
    // again (and still hidden by the marker above).
    gov.inner.trust.forget_pending(&p.fingerprint);
    gov.audit(
        by,
        "partner.dismiss",
        None,
        None,
        format!("pending peer {} dismissed", p.fingerprint),
    )?;
    gov.db().flush().await
}

/// Pairs with a pending peer: `bundle` (sent by its admin) must carry the
/// fingerprint the admin checked and the peer presented. The pairing rules
/// are keytool's (`store_partner`): the account number must belong to the
/// bundle's key, and a known partner's key or certificate is never replaced
/// here. A refusal is logged (warn) and audited as `partner.accept.refused`,
/// and changes nothing.
pub async fn accept(
    gov: &Governance,
    fingerprint: &str,
    bundle: &str,
    by: &str,
) -> Result<String, GovError> {
    let _op = gov.inner.op.lock().await;
    let p = find(gov, fingerprint)?;
    let bundle = Bundle::parse(bundle).map_err(|e| GovError::Invalid(format!("bundle: {e}")))?;
    if bundle.cert_fingerprint != p.fingerprint {
        return Err(GovError::Refused(format!(
            "the bundle's certificate fingerprint {} is not the pending peer's {}: do not pair, call the partner",
            bundle.cert_fingerprint, p.fingerprint
        )));
    }
    let pairing: Arc<dyn Pairing> = gov
        .inner
        .pairing
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .ok_or_else(|| GovError::Invalid("this daemon cannot pair from its API".into()))?;
    let name = match pairing.pair(&bundle) {
        Ok(name) => name,
        Err(reason) => {
            // A refused pairing is a security event (e.g. a bundle claiming
            // a known partner's account number with another key): logged
            // and audited, partners.toml untouched.
            tracing::warn!(
                fingerprint = %p.fingerprint,
                account = %bundle.org_id,
                %reason,
                "pending peer not paired: refused"
            );
            gov.audit(
                by,
                "partner.accept.refused",
                Some(&bundle.org_id),
                None,
                format!("pending peer {} not paired: {reason}", p.fingerprint),
            )?;
            gov.db().flush().await?;
            return Err(GovError::Refused(reason));
        }
    };
    gov.audit(
        by,
        "partner.accept",
        Some(&bundle.org_id),
        None,
        format!("pending peer {} paired as {name}", p.fingerprint),
    )?;
    gov.db().flush().await?;
    Ok(name)
}
