//! The sharing policy: the two decisions governance makes, behind one trait.
//!
//! The sync engine asks [`SharePolicy::shares`] before it sends an object to
//! a partner, and [`SharePolicy::incoming`] for every change a partner sends.
//! Until the governance work lands, [`AllowAll`] shares everything with every
//! paired partner and applies everything received.

use orgsync_protocol::model::{Change, Object, OrgId};

/// What happens to a change received from a partner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Merge it into the local objects.
    Apply,
    /// Keep it in the inbox until an admin approves or rejects it.
    Hold,
    /// Drop it (still counted as received, so it is not sent again).
    Reject,
}

/// Decides what each partner gets and what happens to what it sends.
///
/// Implementations must be cheap and must not block: they are called for
/// every object sent and every change received.
pub trait SharePolicy: Send + Sync + 'static {
    /// Whether `partner` may receive `object`.
    fn shares(&self, partner: &OrgId, object: &Object) -> bool;
    /// What to do with `change` received from `partner`.
    fn incoming(&self, partner: &OrgId, change: &Change) -> Incoming;

    /// True when `partner` gets every object: lets the engine skip loading
    /// each object to ask [`SharePolicy::shares`].
    fn shares_everything(&self, _partner: &OrgId) -> bool {
        false
    }
}

/// Shares every object with every paired partner and applies every change.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl SharePolicy for AllowAll {
    fn shares(&self, _partner: &OrgId, _object: &Object) -> bool {
        true
    }
    fn incoming(&self, _partner: &OrgId, _change: &Change) -> Incoming {
        Incoming::Apply
    }
    fn shares_everything(&self, _partner: &OrgId) -> bool {
        true
    }
}
