//! Partner status for the API from the sync engine, the trust set and the
//! store's cursors.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{PartnerSource, PartnerStatus};
use crate::engine::Engine;
use crate::transport::Trust;

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A [`PartnerSource`] over a running engine: every partner in the trust
/// set (paired or revoked), with its connection state from the engine and
/// its acknowledgement cursor from the store.
#[derive(Clone)]
pub struct EnginePartners {
    engine: Engine,
    trust: Trust,
}

impl EnginePartners {
    /// Partner status from `engine`, named after the peers in `trust`.
    pub fn new(engine: Engine, trust: Trust) -> Self {
        EnginePartners { engine, trust }
    }
}

impl PartnerSource for EnginePartners {
    fn pending(&self) -> Vec<crate::transport::PendingPeer> {
        self.trust.pending()
    }

    fn partners(&self) -> Vec<PartnerStatus> {
        let store = self.engine.store();
        let head = store.log_head();
        let statuses = self.engine.status();
        let now = unix_ms(SystemTime::now());
        self.trust
            .peers()
            .iter()
            .map(|peer| {
                let status = statuses
                    .iter()
                    .find(|(org, _)| *org == peer.org)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_default();
                // A failed read shows as "nothing acked": status must not fail.
                let acked = store
                    .cursor(&peer.org)
                    .map(|c| c.acked_by_peer)
                    .unwrap_or(0);
                let not_acked = head.saturating_sub(acked);
                let lag_ms = if not_acked == 0 {
                    0
                } else {
                    store
                        .load_page(acked, 1)
                        .ok()
                        .and_then(|page| page.entries.into_iter().next())
                        .and_then(|(_, obj)| obj.max_version())
                        .map(|v| now.saturating_sub(v.hlc.physical_ms()))
                        .unwrap_or(0)
                };
                // Figures of the last session only while it is live.
                let live = status.session.as_ref().filter(|_| status.connected);
                PartnerStatus {
                    name: peer.name.clone(),
                    org: peer.org,
                    state: if peer.revoked { "revoked" } else { "paired" }.into(),
                    addresses: peer.addresses.clone(),
                    connected: status.connected,
                    last_sync_ms: status.last_sync.map(unix_ms),
                    not_acked,
                    lag_ms,
                    incoming_lag: status.session.as_ref().map_or(0, |s| s.incoming_lag),
                    last_error: status.last_error.clone(),
                    protocol_version: live.and_then(|s| s.version),
                    clock_skew_ms: live.and_then(|s| s.clock_skew_ms),
                }
            })
            .collect()
    }
}
