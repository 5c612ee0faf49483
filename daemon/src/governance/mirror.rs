//! Mirrors: two instances of one organisation that keep the same records
//! both ways (the seeds' ObjectSync between "multiple copies").
//!
//! `orgsync partner set P --mirror true` on both sides: each side tells the
//! other with a [`ShareBody::Mirror`] frame, and only when both said so do
//! changes flow both ways, each side allowed to edit the other's objects
//! (merged per field). One side alone enables nothing. A mirror carries the
//! objects owned by either side, never data received from third parties
//! (their access types bind the instance that received them).

use orgsync_protocol::authority;
use orgsync_protocol::model::{Change, OrgId};
use orgsync_protocol::share::ShareBody;

use super::{GovError, Governance, DAEMON};

/// Sets whether we make `partner` our mirror and tells it.
pub async fn set(gov: &Governance, partner: &OrgId, on: bool, by: &str) -> Result<(), GovError> {
    let before = gov.is_mirror(partner);
    let what = if on {
        "mirror: on (works once the partner says so too)"
    } else {
        "mirror: off"
    };
    gov.update_settings(partner, by, what, |s| s.mirror = on)
        .await?;
    let _op = gov.inner.op.lock().await;
    gov.send(partner, ShareBody::Mirror { on })?;
    if !before && gov.is_mirror(partner) {
        send_all(gov, partner).await?;
        adopt_held(gov, partner).await?;
    }
    gov.db().flush().await
}

/// With `mirror_all_partners`: makes `partner` our mirror and tells it,
/// unless that was done before.
pub(super) fn declare(gov: &Governance, partner: &OrgId) -> Result<(), GovError> {
    let mut s = gov.db().settings(partner)?;
    if s.mirror {
        return Ok(());
    }
    s.mirror = true;
    store_settings(gov, partner, &s)?;
    gov.send(partner, ShareBody::Mirror { on: true })?;
    gov.audit(
        DAEMON,
        "partner.settings",
        Some(partner),
        None,
        "mirror: on (mirror_all_partners in governance.toml)".into(),
    )?;
    Ok(())
}

fn store_settings(
    gov: &Governance,
    partner: &OrgId,
    s: &super::db::PartnerSettings,
) -> Result<(), GovError> {
    gov.db()
        .put(&gov.db().partner, "partner settings", &partner.0, s)?;
    gov.inner
        .settings
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(*partner, s.clone());
    Ok(())
}

/// The partner says whether it makes us its mirror.
pub(super) async fn on_mirror(gov: &Governance, partner: OrgId, on: bool) -> Result<(), GovError> {
    let before = gov.is_mirror(&partner);
    if on && gov.inner.config.mirror_all_partners {
        // A partner paired after start.
        declare(gov, &partner)?;
    }
    let mut s = gov.db().settings(&partner)?;
    s.peer_mirror = on;
    store_settings(gov, &partner, &s)?;
    gov.audit(
        DAEMON,
        "mirror.partner",
        Some(&partner),
        None,
        format!(
            "the partner {} us as its mirror{}",
            if on { "makes" } else { "no longer makes" },
            match (on, s.mirror) {
                (true, true) => ": mirror active",
                (true, false) =>
                    " (we do not: nothing flows until `partner set --mirror true` here)",
                _ => "",
            }
        ),
    )?;
    if !before && s.is_mirror() {
        send_all(gov, &partner).await?;
        adopt_held(gov, &partner).await?;
    }
    Ok(())
}

/// A session with `partner` started with the negotiated `features`: when we
/// offered to mirror it, the session says whether it offered too (the
/// Hello carries it, so the mirror is in force before the first change is
/// loaded for the partner).
pub(super) fn on_session(gov: &Governance, partner: &OrgId, features: u64) {
    let mut s = gov.settings_of(partner);
    if !s.mirror {
        return;
    }
    let both = features & orgsync_protocol::wire::FEATURE_MIRROR != 0;
    if s.peer_mirror == both {
        return;
    }
    let before = s.is_mirror();
    s.peer_mirror = both;
    if let Err(e) = store_settings(gov, partner, &s) {
        tracing::error!(error = %e, "cannot record the partner's mirror setting");
        return;
    }
    if !before && s.is_mirror() {
        let gov = gov.clone();
        let partner = *partner;
        // Not awaited here (the engine's callback must not block); the
        // op lock orders it with frames and admin actions.
        tokio::spawn(async move {
            let _op = gov.inner.op.lock().await;
            let result = async {
                gov.audit(
                    DAEMON,
                    "mirror.partner",
                    Some(&partner),
                    None,
                    "mirror active (both sides said so in the session Hello)".into(),
                )?;
                send_all(&gov, &partner).await?;
                adopt_held(&gov, &partner).await?;
                gov.db().flush().await
            }
            .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot start the mirror");
            }
        });
    }
}

/// Applies what the partner sent before the mirror was in force on our
/// side (the Mirror frame and the data it lets through travel on different
/// streams): held changes of objects no share announced, or of objects a
/// mirror may edit, become the mirror's copies.
async fn adopt_held(gov: &Governance, partner: &OrgId) -> Result<(), GovError> {
    let mut adopt = Vec::new();
    for (seq, c) in gov.store().inbox(partner)? {
        let prov = gov.provenance(&c.id)?;
        match authority::check_change(c.id, prov.as_ref(), partner, true) {
            Ok(authority::ChangeVerdict::NewFromMirror) => {
                gov.set_provenance(
                    &c.id,
                    &super::db::ProvRecord {
                        prov: authority::Provenance {
                            owner: *partner,
                            source: authority::Source::Mirror { from: *partner },
                        },
                        detached: false,
                    },
                )?;
                adopt.push((seq, c));
            }
            Ok(_)
                if !matches!(
                    prov.map(|p| p.source),
                    Some(authority::Source::Share { .. })
                ) =>
            {
                adopt.push((seq, c))
            }
            // A third party's copy waits for its own inbox decision.
            _ => {}
        }
    }
    if adopt.is_empty() {
        return Ok(());
    }
    let changes: Vec<Change> = adopt.iter().map(|(_, c)| c.clone()).collect();
    gov.store().write_changes(changes).await?;
    for (seq, _) in &adopt {
        gov.store().remove_from_inbox(partner, *seq).await?;
    }
    gov.audit(
        DAEMON,
        "mirror.adopt",
        Some(partner),
        None,
        format!(
            "{} change(s) that arrived before the mirror was in force applied",
            adopt.len()
        ),
    )?;
    Ok(())
}

/// Re-logs every object the mirror should hold, so the engine sends them
/// (objects written before the mirror was on were skipped for it).
async fn send_all(gov: &Governance, partner: &OrgId) -> Result<(), GovError> {
    if gov.store().cursor(partner)?.acked_by_peer == 0 {
        // The partner has acknowledged nothing of our log yet: the whole
        // log goes to it anyway, nothing needs re-logging.
        return Ok(());
    }
    let mut relog = Vec::new();
    for obj in super::shares::all_objects(gov)? {
        let prov = gov.provenance_of(&obj.id)?;
        if authority::mirror_sends(&prov) {
            relog.push(Change::from_object(&obj));
        }
    }
    let n = relog.len();
    for chunk in relog.chunks(1000) {
        gov.store().write_changes(chunk.to_vec()).await?;
    }
    gov.audit(
        DAEMON,
        "mirror.sync",
        Some(partner),
        None,
        format!("mirror active: {n} object(s) sent"),
    )?;
    Ok(())
}
