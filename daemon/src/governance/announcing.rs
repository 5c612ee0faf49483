//! Announcements (`Objects` frames) a partner sent that are queued for its
//! frame task and not yet handled.
//!
//! A share's announcement travels on the control stream, the objects it
//! announces on the changes stream; the data often reaches the applier
//! while the announcement still waits in the frame queue. Decided then,
//! the object would be held as unannounced and approved from the inbox
//! once the frame is handled (a second write). Knowing which ids are
//! announced by a queued frame lets the engine wait for that frame first
//! ([`crate::policy::SharePolicy::pending_announcements`]).
//!
//! Nothing here decides anything: a frame is still checked when handled
//! (an id the partner may not announce is refused then, and its change is
//! held or refused as before). A partner gains nothing by announcing: its
//! own data waits for its own frames, at most `ANNOUNCEMENT_WAIT`. Memory
//! is bounded by the frame window: at most `limits.max_queued_frames`
//! frames of at most `MAX_IDS_PER_MESSAGE` ids each are queued.

use std::collections::HashMap;
use std::sync::PoisonError;

use orgsync_protocol::model::{ObjectId, OrgId, SequencedChange};
use orgsync_protocol::share::{ShareBody, ShareFrame};
use tokio::sync::watch;

use super::Governance;
use crate::policy::AnnouncementWait;

/// One partner's queued frames, by local number (the partner's own frame
/// ids are not trusted to be in order).
#[derive(Debug)]
pub(crate) struct Announcing {
    /// Number of the last frame queued.
    queued: u64,
    /// Each id announced by a queued frame → the newest such frame.
    ids: HashMap<ObjectId, u64>,
    /// Number of the last frame handled (frames are handled in order).
    handled: watch::Sender<u64>,
}

impl Default for Announcing {
    fn default() -> Self {
        Announcing {
            queued: 0,
            ids: HashMap::new(),
            handled: watch::channel(0).0,
        }
    }
}

/// The ids a frame announces, if it is an announcement.
pub(super) fn announced_ids(frame: &ShareFrame) -> &[ObjectId] {
    match &frame.body {
        ShareBody::Objects { added, .. } => added,
        _ => &[],
    }
}

/// `frame` of `partner` is about to be queued for its frame task: returns
/// its number, which [`handled`] takes once it is handled.
pub(super) fn queued(gov: &Governance, partner: &OrgId, frame: &ShareFrame) -> u64 {
    let mut all = gov
        .inner
        .announcing
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let a = all.entry(*partner).or_default();
    a.queued += 1;
    let n = a.queued;
    for id in announced_ids(frame) {
        a.ids.insert(*id, n);
    }
    n
}

/// Frame number `n` of `partner`, which announced `ids`, is handled (or
/// failed: either way its announcement is no longer pending).
pub(super) fn handled(gov: &Governance, partner: &OrgId, n: u64, ids: &[ObjectId]) {
    let mut all = gov
        .inner
        .announcing
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(a) = all.get_mut(partner) else {
        return;
    };
    for id in ids {
        // A later frame naming it again keeps it pending.
        if a.ids.get(id) == Some(&n) {
            a.ids.remove(id);
        }
    }
    if a.ids.is_empty() {
        // Give back what a burst of announcements grew.
        a.ids = HashMap::new();
    }
    a.handled.send_replace(n);
}

/// What `changes` of `partner` must wait for: the newest queued frame
/// announcing any of them.
pub(super) fn pending(
    gov: &Governance,
    partner: &OrgId,
    changes: &[SequencedChange],
) -> Option<AnnouncementWait> {
    let all = gov
        .inner
        .announcing
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let a = all.get(partner)?;
    if a.ids.is_empty() {
        return None;
    }
    let mut until = 0;
    let mut waiting = 0;
    for c in changes {
        if let Some(n) = a.ids.get(&c.change.id) {
            until = until.max(*n);
            waiting += 1;
        }
    }
    (waiting > 0).then(|| AnnouncementWait {
        handled: a.handled.subscribe(),
        until,
        changes: waiting,
    })
}
