//! Who may connect: the pinned certificates of paired partners, and the
//! list of refused (pending) peers for admins to look at.
//!
//! [`Trust`] is shared by the TLS verifiers of every handshake; replacing
//! the partner set (after partners.toml changes) takes effect for the next
//! handshake. Lookups compare fingerprints in constant time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use orgsync_protocol::identity::Fingerprint;
use orgsync_protocol::model::OrgId;
use tokio::sync::watch;

/// Most pending peers remembered; the oldest are forgotten first, so a
/// scanner cannot grow the list without bound.
pub const MAX_PENDING: usize = 256;

/// A partner whose certificate is pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedPeer {
    /// The partner's organisation.
    pub org: OrgId,
    /// Display name.
    pub name: String,
    /// SHA-256 of the partner instance's certificate (DER).
    pub fingerprint: Fingerprint,
    /// Addresses to dial (`host:port`), possibly none.
    pub addresses: Vec<String>,
    /// A revoked partner is refused like an unknown one (and logged as revoked).
    pub revoked: bool,
}

/// A peer refused at the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingPeer {
    /// Its certificate fingerprint.
    pub fingerprint: Fingerprint,
    /// Where it came from (or where we dialed), when known.
    pub address: Option<SocketAddr>,
    /// First refusal.
    pub first_seen: SystemTime,
    /// Latest refusal.
    pub last_seen: SystemTime,
    /// Refusals so far.
    pub attempts: u64,
    /// The certificate belongs to a revoked partner.
    pub revoked: bool,
}

/// Result of checking a certificate fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A paired partner.
    Paired(TrustedPeer),
    /// A revoked partner.
    Revoked(TrustedPeer),
    /// Nobody we know.
    Unknown,
}

/// The shared trust state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Trust {
    peers: Arc<RwLock<Arc<Vec<TrustedPeer>>>>,
    pending: Arc<Mutex<Vec<PendingPeer>>>,
    pending_count: watch::Sender<u64>,
}

impl Trust {
    /// Trust in exactly these partners.
    pub fn new(peers: Vec<TrustedPeer>) -> Trust {
        Trust {
            peers: Arc::new(RwLock::new(Arc::new(peers))),
            pending: Arc::default(),
            pending_count: watch::Sender::new(0),
        }
    }

    /// Replaces the partner set; new handshakes use it at once. Existing
    /// connections are not touched (the engine closes revoked ones).
    pub fn replace(&self, peers: Vec<TrustedPeer>) {
        *self.peers.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(peers);
    }

    /// The current partner set.
    pub fn peers(&self) -> Arc<Vec<TrustedPeer>> {
        self.peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The partner with this organisation id, if any (paired or revoked).
    pub fn peer(&self, org: &OrgId) -> Option<TrustedPeer> {
        self.peers().iter().find(|p| p.org == *org).cloned()
    }

    /// Checks a certificate fingerprint against every partner. Every
    /// entry is compared, in constant time, whatever matches.
    pub fn check(&self, fingerprint: &Fingerprint) -> Verdict {
        let peers = self.peers();
        let mut found: Option<&TrustedPeer> = None;
        for p in peers.iter() {
            if p.fingerprint.ct_eq(fingerprint) {
                found = Some(p);
            }
        }
        match found {
            Some(p) if p.revoked => Verdict::Revoked(p.clone()),
            Some(p) => Verdict::Paired(p.clone()),
            None => Verdict::Unknown,
        }
    }

    /// Records a refused peer (updating the entry of a known fingerprint).
    pub fn record_pending(
        &self,
        fingerprint: Fingerprint,
        address: Option<SocketAddr>,
        revoked: bool,
    ) {
        let now = SystemTime::now();
        let mut list = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = list.iter_mut().find(|p| p.fingerprint == fingerprint) {
            p.last_seen = now;
            p.attempts += 1;
            p.address = address.or(p.address);
            p.revoked = revoked;
        } else {
            if list.len() >= MAX_PENDING {
                list.remove(0);
            }
            list.push(PendingPeer {
                fingerprint,
                address,
                first_seen: now,
                last_seen: now,
                attempts: 1,
                revoked,
            });
        }
        self.pending_count.send_modify(|n| *n += 1);
    }

    /// Peers refused so far, oldest first.
    pub fn pending(&self) -> Vec<PendingPeer> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts refusals; changes each time a peer is refused.
    pub fn subscribe_refusals(&self) -> watch::Receiver<u64> {
        self.pending_count.subscribe()
    }
}
