//! Who may connect: the pinned certificates of paired partners, and the
//! list of refused (pending) peers for admins to look at.
//!
//! [`Trust`] is shared by the TLS verifiers of every handshake; replacing
//! the partner set (after partners.toml changes) takes effect for the next
//! handshake. Lookups compare fingerprints in constant time.
//!
//! The pending list only ever holds fingerprints of peers that *proved*
//! they hold the certificate's private key (the TLS 1.3 CertificateVerify
//! signature checked out, see `tls.rs`): certificates are public, so a
//! fingerprint seen without that proof says nothing about who dialed.
//!
//! The list is bounded so that nobody can push real entries out of it:
//! - at most [`MAX_PENDING_PER_SOURCE`] entries per source (an IPv4 address,
//!   or an IPv6 /64, since one host usually owns a whole /64); further new
//!   fingerprints from that source are not listed, only counted;
//! - at most [`MAX_PENDING`] entries in all; when full, a new fingerprint
//!   replaces the oldest entry of the source with the most entries, and
//!   only when that source would still have more entries than the
//!   newcomer's; otherwise it is not listed, only counted. So the only
//!   entry of a source is never evicted, whoever scans.
//!
//! Unlisted fingerprints are counted ([`Trust::unlisted`], exported as
//! `orgsync_pending_unlisted_total`) and logged.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use orgsync_protocol::identity::Fingerprint;
use orgsync_protocol::model::OrgId;
use tokio::sync::watch;

/// Most pending peers remembered in all (see the module doc for which
/// entry makes room when the list is full).
pub const MAX_PENDING: usize = 256;

/// Most pending peers remembered per source (IPv4 address or IPv6 /64):
/// one scanning host fills at most this many entries.
pub const MAX_PENDING_PER_SOURCE: usize = 8;

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

/// What [`Trust::record_pending`] did with a refused peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingOutcome {
    /// A new entry was added.
    Listed,
    /// The fingerprint was listed already; its entry was updated.
    Updated,
    /// A new entry was added in place of the oldest entry of the source
    /// with the most entries (the list was full).
    ListedEvicting(Fingerprint),
    /// Not listed: its source has [`MAX_PENDING_PER_SOURCE`] entries already.
    SourceFull,
    /// Not listed: the list is full and no source has more entries than
    /// the newcomer's would.
    ListFull,
}

/// Where a pending peer comes from, for the per-source cap: the IPv4
/// address, the /64 of an IPv6 address (an IPv4-mapped IPv6 address counts
/// as IPv4), or "unknown".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    V4([u8; 4]),
    V6Net([u8; 8]),
    Unknown,
}

impl Source {
    fn of(address: Option<SocketAddr>) -> Source {
        match address.map(|a| a.ip().to_canonical()) {
            Some(IpAddr::V4(ip)) => Source::V4(ip.octets()),
            Some(IpAddr::V6(ip)) => {
                let mut net = [0u8; 8];
                net.copy_from_slice(&ip.octets()[..8]);
                Source::V6Net(net)
            }
            None => Source::Unknown,
        }
    }
}

/// The shared trust state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Trust {
    peers: Arc<RwLock<Arc<Vec<TrustedPeer>>>>,
    pending: Arc<Mutex<Vec<PendingPeer>>>,
    pending_count: watch::Sender<u64>,
    unlisted: Arc<AtomicU64>,
}

impl Trust {
    /// Trust in exactly these partners.
    pub fn new(peers: Vec<TrustedPeer>) -> Trust {
        Trust {
            peers: Arc::new(RwLock::new(Arc::new(peers))),
            pending: Arc::default(),
            pending_count: watch::Sender::new(0),
            unlisted: Arc::default(),
        }
    }

    /// Replaces the partner set; new handshakes use it at once. Existing
    /// connections are not touched (the engine closes revoked ones).
    /// Pending entries of peers now paired (not revoked) are forgotten, so
    /// an accepted peer frees its place in the bounded pending list.
    pub fn replace(&self, peers: Vec<TrustedPeer>) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|p| {
                !peers
                    .iter()
                    .any(|t| !t.revoked && t.fingerprint.ct_eq(&p.fingerprint))
            });
        *self.peers.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(peers);
    }

    /// Forgets the pending entry of `fingerprint` (e.g. dismissed by an
    /// admin), freeing its place; true if there was one. A later proven
    /// refusal lists it again.
    pub fn forget_pending(&self, fingerprint: &Fingerprint) -> bool {
        let mut list = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let before = list.len();
        list.retain(|p| p.fingerprint != *fingerprint);
        list.len() != before
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

    /// Records a refused peer that proved it holds its certificate's key
    /// (updating the entry of a known fingerprint), within the bounds
    /// described in the module doc. Every call counts as a refusal
    /// ([`Trust::subscribe_refusals`]), listed or not; unlisted ones also
    /// count in [`Trust::unlisted`]. Existing entries are never evicted for
    /// a newcomer from a source that has as many entries or more.
    pub fn record_pending(
        &self,
        fingerprint: Fingerprint,
        address: Option<SocketAddr>,
        revoked: bool,
    ) -> PendingOutcome {
        let now = SystemTime::now();
        let outcome = {
            let mut list = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            Self::insert(&mut list, fingerprint, address, revoked, now)
        };
        if matches!(
            outcome,
            PendingOutcome::SourceFull | PendingOutcome::ListFull
        ) {
            self.unlisted.fetch_add(1, Ordering::Relaxed);
        }
        self.pending_count.send_modify(|n| *n += 1);
        outcome
    }

    fn insert(
        list: &mut Vec<PendingPeer>,
        fingerprint: Fingerprint,
        address: Option<SocketAddr>,
        revoked: bool,
        now: SystemTime,
    ) -> PendingOutcome {
        if let Some(p) = list.iter_mut().find(|p| p.fingerprint == fingerprint) {
            p.last_seen = now;
            p.attempts += 1;
            p.address = address.or(p.address);
            p.revoked = revoked;
            return PendingOutcome::Updated;
        }
        let source = Source::of(address);
        let mut per_source: HashMap<Source, usize> = HashMap::new();
        for p in list.iter() {
            *per_source.entry(Source::of(p.address)).or_default() += 1;
        }
        let mine = per_source.get(&source).copied().unwrap_or(0);
        if mine >= MAX_PENDING_PER_SOURCE {
            return PendingOutcome::SourceFull;
        }
        let mut outcome = PendingOutcome::Listed;
        if list.len() >= MAX_PENDING {
            // The source with the most entries gives one up, but only if it
            // keeps more than the newcomer's source will have: a scanner
            // spread over many sources cannot evict lone real entries.
            let Some((&largest, &count)) = per_source.iter().max_by_key(|(_, n)| **n) else {
                return PendingOutcome::ListFull;
            };
            if count <= mine + 1 {
                return PendingOutcome::ListFull;
            }
            // The list is oldest first, so the first match is the oldest.
            let Some(i) = list.iter().position(|p| Source::of(p.address) == largest) else {
                return PendingOutcome::ListFull;
            };
            outcome = PendingOutcome::ListedEvicting(list.remove(i).fingerprint);
        }
        list.push(PendingPeer {
            fingerprint,
            address,
            first_seen: now,
            last_seen: now,
            attempts: 1,
            revoked,
        });
        outcome
    }

    /// Refused peers that proved their key but were not listed because of
    /// the bounds (per source or in all).
    pub fn unlisted(&self) -> u64 {
        self.unlisted.load(Ordering::Relaxed)
    }

    /// Peers refused so far, oldest first.
    pub fn pending(&self) -> Vec<PendingPeer> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts refusals of peers that proved they hold their certificate's
    /// key (listed or not); changes each time one is refused.
    pub fn subscribe_refusals(&self) -> watch::Receiver<u64> {
        self.pending_count.subscribe()
    }
}
