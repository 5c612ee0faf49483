//! The sharing policy: the two decisions governance makes, behind one trait.
//!
//! The sync engine asks [`SharePolicy::shares`] before it sends an object to
//! a partner, and [`SharePolicy::incoming`] for every change a partner sends.
//! The daemon's policy is [`crate::governance::Governance`] (DESIGN.md §5);
//! [`AllowAll`] shares everything with every paired partner and applies
//! everything received (embedded uses, engine tests).
//!
//! Governance also needs to talk to the partner's daemon (share requests,
//! withdrawals, erasures): the engine carries those control frames on the
//! partner connection through [`SharePolicy::share_outbox`] and
//! [`SharePolicy::share_received`], and knows nothing of what they mean.

use orgsync_protocol::model::{Change, Object, ObjectId, OrgId, SequencedChange};
use orgsync_protocol::share::ShareFrame;
use tokio::sync::watch;

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

/// Governance frames of a partner, received and not yet handled, that
/// may change the decision on some changes of a batch (see
/// [`SharePolicy::pending_announcements`]).
#[derive(Debug)]
pub struct AnnouncementWait {
    /// The number of the last frame handled so far.
    pub handled: watch::Receiver<u64>,
    /// The batch may be decided once `handled` reaches this.
    pub until: u64,
    /// How many changes of the batch wait for it.
    pub changes: usize,
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

    /// The engine is about to decide, with [`SharePolicy::shares`], on the
    /// entries of our log up to `up_to` for `partner`. Called before the
    /// first of those decisions: a policy that changes what it shares can
    /// tell from it whether an entry is still to be decided (and so will
    /// see the change) or may already have been passed over.
    fn deciding(&self, _partner: &OrgId, _up_to: u64) {}

    /// The highest entry of our log the engine may decide on for `partner`
    /// now: a policy whose answers for new entries are not settled yet
    /// (share memberships still being worked out) holds the engine back
    /// there, and changes [`SharePolicy::share_outbox_changed`] when it
    /// moves on.
    fn decidable(&self, _partner: &OrgId) -> u64 {
        u64::MAX
    }

    /// Called before a batch of `partner`'s `changes` is decided: when a
    /// governance frame of the partner announcing some of their objects
    /// has been received but not yet handled, what to wait for so that
    /// [`SharePolicy::incoming`] sees the announcement (the data of an
    /// object may overtake its announcement on the other stream). The
    /// engine waits a bounded time, never longer: the decisions are the
    /// same either way, only held-then-approved becomes applied once.
    fn pending_announcements(
        &self,
        _partner: &OrgId,
        _changes: &[SequencedChange],
    ) -> Option<AnnouncementWait> {
        None
    }

    /// Governance frames to send to `partner`, in id order: every frame not
    /// yet acknowledged (the engine sends those above the highest id it
    /// sent on the current connection, and all again on a new one) plus
    /// unacknowledged replies with id 0, which are handed out only once.
    fn share_outbox(&self, _partner: &OrgId) -> Vec<ShareFrame> {
        Vec::new()
    }

    /// [`SharePolicy::share_outbox`] without the numbered frames up to
    /// `after` (those already sent on this connection): a policy that can
    /// skip them without reading them saves decoding its whole backlog of
    /// unacknowledged frames each time a frame is queued.
    fn share_outbox_after(&self, partner: &OrgId, after: u64) -> Vec<ShareFrame> {
        let mut frames = self.share_outbox(partner);
        frames.retain(|f| f.id == 0 || f.id > after);
        frames
    }

    /// A governance frame received from `partner`. Must not block: the
    /// policy handles it in its own task.
    fn share_received(&self, _partner: &OrgId, _frame: ShareFrame) {}

    /// The window of governance frames `partner` may have queued here and
    /// not yet handled, if the policy bounds it. The engine takes one
    /// permit per frame before [`SharePolicy::share_received_held`] and
    /// stops reading the partner's streams while none is free, so a
    /// partner that floods frames waits (QUIC flow control) instead of
    /// growing our memory.
    fn share_window(&self, _partner: &OrgId) -> Option<std::sync::Arc<tokio::sync::Semaphore>> {
        None
    }

    /// [`SharePolicy::share_received`] with the window permit taken for
    /// the frame; the policy releases it once the frame is handled.
    fn share_received_held(
        &self,
        partner: &OrgId,
        frame: ShareFrame,
        _permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        self.share_received(partner, frame);
    }

    /// Whether the content of a blob referenced by `object` may be asked
    /// of `partner`: asking tells the partner which blob belongs to which
    /// of our objects, so only a partner we received the object from
    /// should be asked. Everything, without governance.
    fn may_ask_blob(&self, _partner: &OrgId, _object: &ObjectId) -> bool {
        true
    }

    /// Something `partner` sent was refused because it is over one of the
    /// `[limits]` (`limit` names the key; `detail` says what and why).
    /// Nothing stored changes. Governance audits it and tells the partner;
    /// without it, a warning.
    fn limit_refused(&self, partner: &OrgId, limit: &'static str, detail: String) {
        tracing::warn!(partner = %partner.short(), limit, %detail, "refused: over a limit");
    }

    /// A batch of `partner`'s changes is durable: `held` went to the inbox,
    /// `applied` were merged. Must not block.
    fn batch_applied(&self, _partner: &OrgId, _held: usize, _applied: usize) {}

    /// Extra feature bits this side offers `partner` in the session Hello
    /// (e.g. [`orgsync_protocol::wire::FEATURE_MIRROR`]).
    fn hello_features(&self, _partner: &OrgId) -> u64 {
        0
    }

    /// A session with `partner` is established with the negotiated
    /// `features` (both sides offered them). Called before anything of our
    /// log is loaded for the partner. Must not block.
    fn session_established(&self, _partner: &OrgId, _features: u64) {}

    /// Changes whenever [`SharePolicy::share_outbox`] may have something new.
    fn share_outbox_changed(&self) -> Option<watch::Receiver<u64>> {
        None
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
