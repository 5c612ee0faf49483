//! One connection to one partner: the session driver and its helper tasks.

use std::collections::{HashMap, VecDeque};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use orgsync_protocol::codec::{encode_frame, MAX_FRAME_LEN};
use orgsync_protocol::model::{FieldKey, Kind, SequencedChange, Value};
use orgsync_protocol::session::{Cursors, Effect, Session, SessionError, Transmit};
use orgsync_protocol::share::ShareFrame;
use orgsync_protocol::wire::{Channel, ErrorCode, ErrorMessage, Message};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::{blob, Owned, PartnerInput, PartnerStatus, Shared, Stop};
use crate::store::{BlobEntry, BlobHash, BlobState, PartialBlob, StoreError};
use crate::transport::{
    preferred, FrameReader, PeerConnection, TrustedPeer, CLOSE_DUPLICATE, CLOSE_NORMAL,
    CLOSE_PROTOCOL, CLOSE_REVOKED, CLOSE_SHUTDOWN,
};

/// How a connection ended.
pub(super) enum Outcome {
    /// A preferred duplicate connection replaces this one.
    Replaced(PeerConnection),
    /// The engine is stopping.
    Stopped,
    /// The connection ended on its own.
    Ended {
        /// A session was established on it.
        established: bool,
        /// Why, when it failed.
        error: Option<String>,
    },
}

/// What the helper tasks report to the driver.
pub(super) enum Event {
    /// A frame from any stream, holding its share of the connection's
    /// read budget until the session has taken it.
    Message(Message, OwnedSemaphorePermit),
    /// A stream could not be read (malformed frame, reset).
    ReadFailed(String),
    /// A stream could not be written.
    WriteFailed(String),
    /// The applier finished a batch.
    Applied(Result<Applied, StoreError>),
    /// A blob chunk read for a transfer we serve.
    BlobChunk {
        hash: BlobHash,
        offset: u64,
        total_len: u64,
        data: Vec<u8>,
        permit: OwnedSemaphorePermit,
    },
    /// A blob we serve could not be read.
    BlobReadFailed { hash: BlobHash, error: String },
}

/// A batch made durable by the applier.
pub(super) struct Applied {
    up_to_seq: u64,
    /// Blobs referenced by applied résumés that are not here yet.
    needed: Vec<(BlobHash, BlobEntry)>,
}

struct ApplyJob {
    changes: Vec<SequencedChange>,
    up_to_seq: u64,
}

/// An item for a stream writer task.
struct Outgoing {
    frame: Vec<u8>,
    finish: bool,
    _permit: Option<OwnedSemaphorePermit>,
}

type WriterTx = mpsc::UnboundedSender<Outgoing>;

/// Bytes queued for a stream writer and not yet taken by QUIC.
type Backlog = Arc<std::sync::atomic::AtomicUsize>;

/// Most bytes of control frames (acks, pongs, governance replies) queued
/// for a partner that does not read its control stream: past it the
/// connection is closed rather than the queue grown. Change batches are
/// bounded by the ack window and blob chunks by their read-ahead permits.
const CONTROL_BACKLOG: usize = 64 << 20;

/// Spawns a writer for a stream that `open` produces; it counts down
/// `backlog` by what it wrote.
fn spawn_writer<F>(
    open: F,
    events: mpsc::Sender<Event>,
    backlog: Backlog,
) -> (WriterTx, JoinHandle<()>)
where
    F: std::future::Future<Output = Result<quinn::SendStream, quinn::ConnectionError>>
        + Send
        + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let handle = tokio::spawn(async move {
        let mut send = match open.await {
            Ok(s) => s,
            Err(e) => {
                let _ = events.send(Event::WriteFailed(e.to_string())).await;
                return;
            }
        };
        while let Some(item) = rx.recv().await {
            let len = item.frame.len();
            // Handed over as `Bytes`, the frame is QUIC's send buffer as it
            // is: `write_all(&[u8])` would copy every frame (a 1 MiB blob
            // chunk, a batch of changes) once more.
            if let Err(e) = send.write_chunk(bytes::Bytes::from(item.frame)).await {
                // The driver may be gone already; nothing else to tell.
                let _ = events.send(Event::WriteFailed(e.to_string())).await;
                return;
            }
            backlog.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
            if item.finish {
                break;
            }
        }
        // Finishing a reset stream has nothing left to do.
        let _ = send.finish();
    });
    (tx, handle)
}

/// Bytes of decoded frames one connection may have read and not yet fed
/// to the session: with the bounded applier and governance queues, what
/// caps the memory a partner that ignores every window can make us hold.
const READ_BUDGET: u32 = 64 << 20;

/// What a message costs against [`READ_BUDGET`]: its size (a governance
/// frame may be as large as a batch) plus a little for the decoded form.
fn message_cost(msg: &Message) -> u32 {
    let payload = match msg {
        Message::Changes(env) | Message::BlobChunk(env) => env.ciphertext.len(),
        // Small except governance frames; measuring costs less than
        // handling them.
        other => orgsync_protocol::codec::encoded_len(other).unwrap_or(MAX_FRAME_LEN),
    };
    u32::try_from(payload.saturating_add(256))
        .unwrap_or(READ_BUDGET)
        .min(READ_BUDGET)
}

fn spawn_reader(
    recv: quinn::RecvStream,
    events: mpsc::Sender<Event>,
    budget: Arc<Semaphore>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = FrameReader::new(recv);
        loop {
            match reader.next().await {
                Ok(Some(msg)) => {
                    // Waiting here leaves the stream unread: QUIC flow
                    // control then stops the partner.
                    let Ok(permit) = budget.clone().acquire_many_owned(message_cost(&msg)).await
                    else {
                        return;
                    };
                    if events.send(Event::Message(msg, permit)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = events.send(Event::ReadFailed(e.to_string())).await;
                    return;
                }
            }
        }
    })
}

/// The résumé blob a change references, if any: (hash, size).
fn resume_blob(change: &orgsync_protocol::model::Change) -> Option<(BlobHash, u64)> {
    if change.kind != Kind::Resume {
        return None;
    }
    let hash = match change
        .fields
        .get(&FieldKey::Std("hash".into()))
        .and_then(|s| s.value.as_ref())
    {
        Some(Value::Hash(h)) => *h,
        _ => return None,
    };
    let size = match change
        .fields
        .get(&FieldKey::Std("size".into()))
        .and_then(|s| s.value.as_ref())
    {
        Some(Value::Integer(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    Some((hash, size))
}

/// Most changes merged into one apply: bounds the memory of one batch and
/// the time the store's writer lock is held.
const MAX_MERGED_APPLY: usize = 8_192;

/// Starts the applier of one partner's batches. At most `queue` batches
/// wait for it: when they are all taken the driver stops reading the
/// partner (see [`Driver::stalled`]), so a partner that ignores our ack
/// window cannot grow this queue. Results go to `applied`, which the
/// driver reads even while stalled.
///
/// Once the engine stops, batches still queued are dropped unapplied: the
/// apply in progress finishes, but a full queue applied one after the other
/// on a loaded machine overran the stop budget. Nothing is lost: a dropped
/// batch was never acknowledged, so the partner sends it again.
fn spawn_applier(
    shared: Arc<Shared>,
    peer: TrustedPeer,
    queue: usize,
    mut stop: watch::Receiver<Stop>,
    applied: mpsc::UnboundedSender<Result<Applied, StoreError>>,
) -> (mpsc::Sender<ApplyJob>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<ApplyJob>(queue.max(1));
    let handle = tokio::spawn(async move {
        // Jobs are applied one after the other, in the order the session
        // gave them: cursors only move forward in that order. Jobs that
        // queued up while the previous apply waited for its flush are merged
        // into one apply (their sequences are increasing across jobs), so a
        // backlog costs one flush per round instead of one per batch.
        while let Some(mut job) = rx.recv().await {
            if *stop.borrow() != Stop::Running {
                return;
            }
            while job.changes.len() < MAX_MERGED_APPLY {
                match rx.try_recv() {
                    Ok(next) => {
                        job.changes.extend(next.changes);
                        job.up_to_seq = next.up_to_seq;
                    }
                    Err(_) => break,
                }
            }
            if let Some(wait) = shared.policy.pending_announcements(&peer.org, &job.changes) {
                if !wait_for_announcements(&shared, &peer, wait, &mut stop).await {
                    return;
                }
            }
            let policy = shared.policy.clone();
            let org = peer.org;
            let decide = move |c: &orgsync_protocol::model::Change| policy.incoming(&org, c);
            let result = shared
                .store
                .apply_from_partner_with(peer.org, &job.changes, job.up_to_seq, &decide)
                .await;
            let result = match result {
                Ok(outcome) => {
                    let m = &shared.options.metrics;
                    crate::metrics::add(
                        &m.changes_applied,
                        (outcome.applied - outcome.unchanged) as u64,
                    );
                    crate::metrics::add(&m.changes_unchanged, outcome.unchanged as u64);
                    crate::metrics::add(&m.changes_refused, outcome.invalid as u64);
                    shared
                        .policy
                        .batch_applied(&peer.org, outcome.held, outcome.applied);
                    needed_blobs(&shared, &peer, &job.changes)
                        .await
                        .map(|needed| Applied {
                            up_to_seq: job.up_to_seq,
                            needed,
                        })
                }
                Err(e) => Err(e),
            };
            let failed = result.is_err();
            if applied.send(result).is_err() || failed {
                return;
            }
        }
    });
    (tx, handle)
}

/// Longest a batch waits for the partner's announcements of its objects
/// (received, queued for governance) before it is decided anyway: long
/// enough for a frame queue under load, short enough that a partner whose
/// frames are slow to handle only delays its own data a little.
pub(crate) const ANNOUNCEMENT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits, at most [`ANNOUNCEMENT_WAIT`], until the governance frames that
/// announce objects of the next batch are handled, so that the batch is
/// decided with them (applied once, instead of held and approved later).
/// False when the engine stops meanwhile.
async fn wait_for_announcements(
    shared: &Shared,
    peer: &TrustedPeer,
    mut wait: crate::policy::AnnouncementWait,
    stop: &mut watch::Receiver<Stop>,
) -> bool {
    let m = &shared.options.metrics;
    crate::metrics::add(&m.changes_waited_for_announcement, wait.changes as u64);
    let (until, changes) = (wait.until, wait.changes);
    let handled = tokio::time::timeout(ANNOUNCEMENT_WAIT, wait.handled.wait_for(|n| *n >= until));
    tokio::select! {
        r = handled => {
            if !matches!(r, Ok(Ok(_))) {
                crate::metrics::add(&m.announcement_waits_expired, 1);
                tracing::debug!(partner = %peer.name, changes,
                    "announcements still not handled: the batch is decided without them");
            }
            true
        }
        _ = stop.wait_for(|s| *s != Stop::Running) => false,
    }
}

/// Records blobs referenced by applied résumés that are not stored yet
/// (held or rejected résumés fetch nothing until approved).
async fn needed_blobs(
    shared: &Shared,
    peer: &TrustedPeer,
    changes: &[SequencedChange],
) -> Result<Vec<(BlobHash, BlobEntry)>, StoreError> {
    let mut needed = Vec::new();
    let max = shared.options.limits.max_blob_bytes;
    for c in changes {
        let Some((hash, size)) = resume_blob(&c.change) else {
            continue;
        };
        if size > max {
            // Refused before anything is written: the résumé's record is
            // kept, its content is never asked for.
            shared.policy.limit_refused(
                &peer.org,
                "max_blob_bytes",
                format!(
                    "résumé {} announces a file of {size} bytes, over limits.max_blob_bytes ({max}): not fetched",
                    c.change.id
                ),
            );
            continue;
        }
        // Only résumés that were applied (held or refused ones fetch
        // nothing; asking the policy again would decide a second time).
        match shared.store.get(c.change.id)? {
            Some(o) if o.get_std("hash") == Some(&Value::Hash(hash)) => {}
            _ => continue,
        }
        if shared.store.blob_files().size(&hash)?.is_some() {
            continue;
        }
        let entry = BlobEntry {
            size,
            state: BlobState::Missing,
            object: Some(c.change.id),
        };
        shared.store.set_blob(&hash, entry).await?;
        needed.push((hash, entry));
    }
    Ok(needed)
}

/// What is wrong and what to do when `partner` and this instance have no
/// protocol version in common (`ours`/`theirs`: the version ranges).
pub(crate) fn version_mismatch(
    partner: &str,
    ours: &RangeInclusive<u16>,
    theirs: &RangeInclusive<u16>,
) -> String {
    let (o, t) = (
        format!("{}..={}", ours.start(), ours.end()),
        format!("{}..={}", theirs.start(), theirs.end()),
    );
    if theirs.end() < ours.start() {
        format!(
            "{partner} speaks protocol {t}, this instance needs {o}: upgrade {partner}'s orgsync or lower [sync] min_protocol_version"
        )
    } else {
        format!(
            "{partner} speaks protocol {t}, this instance speaks only {o}: upgrade this instance's orgsync (or raise [sync] max_protocol_version if it was lowered) or ask {partner} to lower its [sync] min_protocol_version"
        )
    }
}

struct Driver<'a> {
    shared: &'a Arc<Shared>,
    peer: &'a TrustedPeer,
    conn: quinn::Connection,
    session: Session,
    events_tx: mpsc::Sender<Event>,
    control: WriterTx,
    /// Bytes queued on `control` (see [`CONTROL_BACKLOG`]).
    control_backlog: Backlog,
    control_task: JoinHandle<()>,
    changes: Option<WriterTx>,
    blob_writers: HashMap<BlobHash, WriterTx>,
    blob_permits: HashMap<BlobHash, VecDeque<OwnedSemaphorePermit>>,
    serving: HashMap<BlobHash, JoinHandle<()>>,
    receiving: HashMap<BlobHash, PartialBlob>,
    applier: Option<mpsc::Sender<ApplyJob>>,
    /// A batch the full applier queue could not take yet: while set, the
    /// partner's streams are not read.
    stalled_apply: Option<ApplyJob>,
    /// A governance frame waiting for a free slot of the policy's window
    /// for this partner; while set, the partner's streams are not read.
    stalled_share: Option<(ShareFrame, Arc<Semaphore>)>,
    status: &'a watch::Sender<PartnerStatus>,
    established: bool,
    error: Option<String>,
    /// Highest governance frame id sent on this connection (see
    /// [`crate::policy::SharePolicy::share_outbox`]).
    share_sent: u64,
    /// The policy's outbox watch as `load` last looked at it: frames queued
    /// since then go out before the next page of changes.
    outbox_seen: Option<watch::Receiver<u64>>,
}

impl Driver<'_> {
    /// Whether the driver waits for room in a bounded queue (applier,
    /// governance): it then takes no message from the partner's streams
    /// and no effect from the session, so the partner is held back by
    /// flow control instead of growing our memory.
    fn stalled(&self) -> bool {
        self.stalled_apply.is_some() || self.stalled_share.is_some()
    }

    fn note_stall(&self, queue: &'static str) {
        crate::metrics::add(&self.shared.options.metrics.partner_stalls, 1);
        tracing::debug!(partner = %self.peer.name, queue, "queue full: partner held back");
    }

    /// Hands a governance frame to the policy, within its window.
    fn share_frame(&mut self, frame: ShareFrame) {
        let policy = &self.shared.policy;
        match policy.share_window(&self.peer.org) {
            None => policy.share_received(&self.peer.org, frame),
            Some(window) => match window.clone().try_acquire_owned() {
                Ok(permit) => policy.share_received_held(&self.peer.org, frame, permit),
                Err(_) => {
                    self.stalled_share = Some((frame, window));
                    self.note_stall("governance frames");
                    return;
                }
            },
        }
        self.send_share_outbox();
    }

    /// Sends the governance frames the policy has queued for this partner
    /// and not yet sent on this connection (unacknowledged ones are resent
    /// on the next connection).
    fn send_share_outbox(&mut self) {
        if !self.session.is_established() {
            return;
        }
        // The policy leaves out the numbered frames up to `share_sent`.
        let frames = self
            .shared
            .policy
            .share_outbox_after(&self.peer.org, self.share_sent);
        for frame in frames {
            let id = frame.id;
            if self.session.send_share(frame).is_err() {
                return;
            }
            self.share_sent = self.share_sent.max(id);
        }
    }

    fn fail(&mut self, code: ErrorCode, message: String) {
        if self.error.is_none() {
            self.error = Some(message.clone());
        }
        self.session
            .close(Some(ErrorMessage::new(code, truncate(&message))));
    }

    fn route(&mut self, t: Transmit) {
        let frame = match encode_frame(&t.message) {
            Ok(f) => f,
            Err(e) => {
                self.fail(
                    ErrorCode::Internal,
                    format!("cannot encode {}: {e}", t.message.name()),
                );
                return;
            }
        };
        if !matches!(t.channel, Channel::Control) {
            crate::metrics::add(&self.shared.options.metrics.bytes_sent, frame.len() as u64);
        }
        match t.channel {
            Channel::Control => {
                let queued = self
                    .control_backlog
                    .fetch_add(frame.len(), std::sync::atomic::Ordering::Relaxed)
                    + frame.len();
                if queued > CONTROL_BACKLOG && !self.session.is_closed() {
                    tracing::warn!(partner = %self.peer.name, queued,
                        "the partner does not read its control stream: closing");
                    self.fail(
                        ErrorCode::Unexpected,
                        format!("{queued} bytes of control frames unread: the partner does not read its control stream"),
                    );
                }
                let _ = self.control.send(Outgoing {
                    frame,
                    finish: false,
                    _permit: None,
                });
            }
            Channel::Changes => {
                let tx = self.changes.get_or_insert_with(|| {
                    let conn = self.conn.clone();
                    spawn_writer(
                        async move { conn.open_uni().await },
                        self.events_tx.clone(),
                        Backlog::default(),
                    )
                    .0
                });
                let _ = tx.send(Outgoing {
                    frame,
                    finish: false,
                    _permit: None,
                });
            }
            Channel::Blob(hash) => {
                let done = matches!(t.message, Message::BlobDone(_));
                let permit = match t.message {
                    Message::BlobChunk(_) => {
                        self.blob_permits.get_mut(&hash).and_then(|q| q.pop_front())
                    }
                    _ => None,
                };
                let tx = self.blob_writers.entry(hash).or_insert_with(|| {
                    let conn = self.conn.clone();
                    spawn_writer(
                        async move { conn.open_uni().await },
                        self.events_tx.clone(),
                        Backlog::default(),
                    )
                    .0
                });
                let _ = tx.send(Outgoing {
                    frame,
                    finish: done,
                    _permit: permit,
                });
                if done {
                    self.blob_writers.remove(&hash);
                    self.blob_permits.remove(&hash);
                    self.serving.remove(&hash);
                }
            }
        }
    }

    /// Sends what the session has to send and performs its effects, until
    /// it has nothing left.
    async fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.session.poll_transmit() {
                self.route(t);
                progressed = true;
            }
            // Stalled: the session's further effects wait with it.
            if !self.stalled() {
                if let Some(effect) = self.session.poll_effect() {
                    self.effect(effect).await;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        let stats = self.session.stats();
        self.status.send_modify(|s| s.session = Some(stats));
    }

    async fn effect(&mut self, effect: Effect) {
        match effect {
            Effect::Established {
                peer_instance,
                features,
                version,
                peer_applied_up_to,
            } => {
                self.established = true;
                // After a restore: once our head is past what this partner
                // applied (any jump it caused was the effect before this
                // one, and is durable), it is a partner like any other and
                // may no longer move our head.
                if self.shared.store.log_head() >= peer_applied_up_to {
                    if let Err(e) = self.shared.store.mark_restore_reconciled(&self.peer.org) {
                        tracing::warn!(partner = %self.peer.name, error = %e,
                            "cannot record that the partner reconciled after the restore");
                    }
                }
                // Before the first load: what the partner may get depends on it.
                self.shared
                    .policy
                    .session_established(&self.peer.org, features);
                let remote = self.conn.remote_address();
                tracing::info!(partner = %self.peer.name, %remote, %peer_instance, protocol = version, "session established");
                self.status.send_modify(|s| {
                    s.connected = true;
                    s.remote = Some(remote);
                    s.last_connected = Some(SystemTime::now());
                    s.last_error = None;
                    s.connections += 1;
                    if s.connections > 1 {
                        crate::metrics::add(&self.shared.options.metrics.reconnects, 1);
                    }
                });
                match self.shared.store.missing_blobs() {
                    Ok(missing) => self.request_blobs(missing),
                    Err(e) => tracing::warn!(error = %e, "cannot list missing blobs"),
                }
                self.send_share_outbox();
            }
            Effect::LogJumped { from, to } => {
                // Before anything else: no local change may get a number
                // the partner already holds (see protocol::session).
                match self.shared.store.jump_log_head(to).await {
                    Ok(_) => tracing::warn!(partner = %self.peer.name, from, to,
                        lost = to - from,
                        "restored from a backup: the partner had applied our log up to {to}, we held {from}; log head moved past it (entries {}..={to} were lost here, the partner keeps its copy)", from + 1),
                    Err(e) => self.fail(
                        ErrorCode::Internal,
                        format!("cannot move the log head: {e}"),
                    ),
                }
            }
            Effect::Share(frame) => self.share_frame(frame),
            Effect::LoadChanges { after, limit } => {
                if let Err(e) = self.load(after, limit) {
                    self.fail(ErrorCode::Internal, format!("cannot read the log: {e}"));
                }
            }
            Effect::Apply { changes, up_to_seq } => {
                if let Some(a) = &self.applier {
                    match a.try_send(ApplyJob { changes, up_to_seq }) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(job)) => {
                            self.stalled_apply = Some(job);
                            self.note_stall("change batches");
                        }
                        // The applier failed; that failure closes the session.
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
            Effect::PeerAcked { up_to_seq } => {
                if let Err(e) = self.shared.store.set_acked(&self.peer.org, up_to_seq) {
                    tracing::warn!(error = %e, "cannot record the partner's ack");
                }
                self.status
                    .send_modify(|s| s.last_sync = Some(SystemTime::now()));
            }
            Effect::ReadBlob {
                hash,
                offset,
                object,
            } => {
                if blob::may_send(self.shared, self.peer, &hash, object) {
                    let task = blob::serve(
                        self.shared.store.blob_files().clone(),
                        hash,
                        offset,
                        self.events_tx.clone(),
                    );
                    self.serving.insert(hash, task);
                } else if let Err(e) = self.session.blob_unavailable(hash) {
                    tracing::warn!(error = %e, "blob refusal not accepted by the session");
                }
            }
            Effect::WriteBlobChunk {
                hash,
                offset,
                total_len,
                data,
            } => self.write_blob_chunk(hash, offset, total_len, &data),
            Effect::BlobComplete { hash, total_len } => self.complete_blob(hash, total_len),
            Effect::BlobUnavailable { hash } => {
                self.receiving.remove(&hash);
                tracing::info!(partner = %self.peer.name, blob = %crate::store::hash_hex(&hash),
                    "partner will not send this blob");
            }
            Effect::Closed { error } => {
                if let Some(e) = error {
                    let message = match &e {
                        SessionError::VersionMismatch { ours, theirs } => {
                            let m = version_mismatch(&self.peer.name, ours, theirs);
                            // Retrying will not help until someone acts.
                            tracing::warn!(partner = %self.peer.name, "{m}");
                            m
                        }
                        other => other.to_string(),
                    };
                    if self.error.is_none() {
                        self.error = Some(message);
                    }
                }
            }
        }
    }

    /// Sends the objects written since `after`: each in its current state,
    /// once, however often it changed since (see
    /// [`crate::store::Store::load_page`]). The stored bytes go into the
    /// batch as they are (an encoded object is the encoding of the change
    /// that sends it whole); objects are decoded only when the policy must
    /// look at them, never re-encoded.
    fn load(&mut self, after: u64, limit: usize) -> Result<(), StoreError> {
        // The reference itself, not a borrow of `self`: the page and the
        // policy stay in use while frames are sent below.
        let shared = self.shared;
        let store = &shared.store;
        let head = store.log_head();
        let policy = &shared.policy;
        let decidable = policy.decidable(&self.peer.org);
        if decidable <= after && head > after {
            // Nothing decidable yet: the session waits (it believes the
            // log ends here) until the policy moves on and we tell it the
            // head again (the outbox watch in `run`).
            if let Err(e) = self.session.load_result_encoded::<&[u8]>(&[], after, after) {
                tracing::error!(error = %e, "session refused a log load");
                self.fail(ErrorCode::Internal, e.to_string());
            }
            return Ok(());
        }
        let page = store.load_page_encoded(after, limit)?;
        let up_to = page.up_to.min(head).min(decidable);
        let everything = policy.shares_everything(&self.peer.org);
        policy.deciding(&self.peer.org, up_to);
        if !everything {
            // Announcements queued before these decisions leave before the
            // objects they announce (see `Governance::deciding`).
            if let Some(rx) = self.outbox_seen.as_mut() {
                if rx.has_changed().unwrap_or(false) {
                    rx.borrow_and_update();
                    self.send_share_outbox();
                }
            }
        }
        let mut entries: Vec<(u64, &[u8])> = Vec::with_capacity(page.entries.len());
        for e in &page.entries {
            // Decided on the object as it is now; a deleted object's
            // tombstone goes to whoever may see the object.
            if e.seq <= up_to && (everything || policy.shares(&self.peer.org, &e.decode()?)) {
                entries.push((e.seq, e.object_bytes()));
            }
        }
        crate::metrics::add(&shared.options.metrics.changes_sent, entries.len() as u64);
        if let Err(e) =
            self.session
                .load_result_encoded(&entries, up_to.max(after), head.max(up_to))
        {
            tracing::error!(error = %e, "session refused a log load");
            self.fail(ErrorCode::Internal, e.to_string());
        }
        Ok(())
    }

    fn request_blobs(&mut self, wanted: Vec<(BlobHash, BlobEntry)>) {
        let max = self.shared.options.limits.max_blob_bytes;
        for (hash, entry) in wanted {
            let Some(object) = entry.object else { continue };
            if self.receiving.contains_key(&hash) {
                continue;
            }
            // Asking names the blob of one of our objects: only a partner
            // the object came from is asked.
            if !self.shared.policy.may_ask_blob(&self.peer.org, &object) {
                continue;
            }
            if entry.size > max {
                // Recorded before the cap was lowered: refused before any
                // byte is written.
                tracing::warn!(partner = %self.peer.name, blob = %crate::store::hash_hex(&hash),
                    size = entry.size, max, "blob over limits.max_blob_bytes: not fetched");
                continue;
            }
            let partial = match self.shared.store.blob_files().partial(&hash, entry.size) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open a partial blob");
                    continue;
                }
            };
            match self.session.request_blob(hash, partial.offset(), object) {
                Ok(()) => {
                    self.receiving.insert(hash, partial);
                }
                // Too many transfers at once: the rest is asked on the next connection.
                Err(e) => tracing::debug!(error = %e, "blob request deferred"),
            }
        }
    }

    fn write_blob_chunk(&mut self, hash: BlobHash, offset: u64, total_len: u64, data: &[u8]) {
        let max = self.shared.options.limits.max_blob_bytes;
        let Some(mut partial) = self.receiving.remove(&hash) else {
            // The session only passes chunks of transfers we asked for.
            self.fail(
                ErrorCode::Internal,
                format!(
                    "blob {} chunk without a transfer",
                    crate::store::hash_hex(&hash)
                ),
            );
            return;
        };
        // The length we asked for is the one the résumé announced; a
        // sender announcing another (more than the résumé said, or over
        // the cap) is cut off before the chunk is written, and the partial
        // file goes: a partner cannot fill our disk past what it announced.
        if total_len != partial.total_len() || total_len > max {
            let announced = partial.total_len();
            let removed = partial.discard();
            let detail = format!(
                "blob {}: the sender streams {total_len} bytes, {announced} were announced (limits.max_blob_bytes {max}); transfer aborted, partial file removed",
                crate::store::hash_hex(&hash)
            );
            if let Err(e) = removed {
                tracing::warn!(error = %e, "cannot remove a refused partial blob");
            }
            // Two kinds of refusal, noticed (rate-limited) separately.
            let limit = if total_len > max {
                "max_blob_bytes"
            } else {
                "blob_length"
            };
            self.shared
                .policy
                .limit_refused(&self.peer.org, limit, detail.clone());
            self.fail(ErrorCode::Malformed, detail);
            return;
        }
        let result = partial.append(offset, data).map(|()| partial);
        match result {
            Ok(p) => {
                self.receiving.insert(hash, p);
            }
            Err(e) => {
                self.fail(ErrorCode::Internal, format!("cannot store blob chunk: {e}"));
            }
        }
    }

    /// Verifies and publishes a received blob off the driver: hashing a
    /// large file must not hold up record changes.
    fn complete_blob(&mut self, hash: BlobHash, total_len: u64) {
        let Some(partial) = self.receiving.remove(&hash) else {
            return;
        };
        let store = self.shared.store.clone();
        let partner = self.peer.name.clone();
        tokio::spawn(async move {
            let hex = crate::store::hash_hex(&hash);
            match tokio::task::spawn_blocking(move || partial.finish()).await {
                Ok(Ok(_)) => {
                    let object = store.blob(&hash).ok().flatten().and_then(|e| e.object);
                    let entry = BlobEntry {
                        size: total_len,
                        state: BlobState::Complete,
                        object,
                    };
                    if let Err(e) = store.set_blob(&hash, entry).await {
                        tracing::warn!(error = %e, "cannot record a received blob");
                    }
                    tracing::info!(%partner, blob = %hex, size = total_len, "blob received");
                }
                // Still indexed as missing: asked again on the next connection.
                Ok(Err(e)) => tracing::warn!(%partner, error = %e, "received blob refused"),
                Err(e) => tracing::error!(%partner, error = %e, "blob verification task failed"),
            }
        });
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Message(msg, permit) => {
                if let Message::Changes(env) | Message::BlobChunk(env) = &msg {
                    let m = &self.shared.options.metrics;
                    crate::metrics::add(&m.bytes_received, env.ciphertext.len() as u64);
                }
                // The session reports violations itself (Closed effect).
                let _ = self.session.handle_message(msg, Instant::now());
                // Taken by the session: what it holds now is bounded by
                // the applier and governance queues.
                drop(permit);
            }
            Event::ReadFailed(e) => {
                tracing::warn!(partner = %self.peer.name, error = %e, "bad stream from partner");
                self.fail(ErrorCode::Malformed, e);
            }
            Event::WriteFailed(e) => {
                if self.error.is_none() {
                    self.error = Some(format!("write failed: {e}"));
                }
                self.session.close(None);
            }
            Event::Applied(Ok(a)) => {
                if let Err(e) = self.session.applied(a.up_to_seq) {
                    tracing::error!(error = %e, "session refused an applied cursor");
                }
                self.status
                    .send_modify(|s| s.last_sync = Some(SystemTime::now()));
                if !a.needed.is_empty() && self.session.is_established() {
                    self.request_blobs(a.needed);
                }
            }
            Event::Applied(Err(e)) => {
                tracing::error!(partner = %self.peer.name, error = %e, "cannot apply partner changes");
                self.applier = None;
                self.fail(ErrorCode::Internal, format!("cannot apply changes: {e}"));
            }
            Event::BlobChunk {
                hash,
                offset,
                total_len,
                data,
                permit,
            } => {
                self.blob_permits.entry(hash).or_default().push_back(permit);
                if let Err(e) = self.session.blob_chunk_ready(hash, offset, total_len, data) {
                    tracing::debug!(error = %e, "blob chunk dropped (transfer over)");
                    self.blob_permits.remove(&hash);
                }
            }
            Event::BlobReadFailed { hash, error } => {
                tracing::warn!(error = %error, "cannot read a blob being sent");
                self.serving.remove(&hash);
                let _ = self.session.blob_unavailable(hash);
            }
        }
    }
}

/// Resolves when the policy's governance outbox changes; never without one.
async fn share_outbox_changed(rx: &mut Option<watch::Receiver<u64>>) {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        // The policy is gone (shutdown): nothing more will be queued.
        std::future::pending::<()>().await;
    }
}

/// The close code for a connection ended by a stop.
fn stop_code<E>(reason: Result<Stop, E>) -> quinn::VarInt {
    match reason {
        Ok(Stop::Revoked) => CLOSE_REVOKED,
        _ => CLOSE_SHUTDOWN,
    }
}

fn truncate(s: &str) -> String {
    let max = orgsync_protocol::wire::MAX_ERROR_MESSAGE_LEN;
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Runs a session over `pc` until it ends, a preferred duplicate replaces
/// it, or the engine stops.
pub(super) async fn run(
    shared: &Arc<Shared>,
    peer: &TrustedPeer,
    pc: PeerConnection,
    input: &mut mpsc::UnboundedReceiver<PartnerInput>,
    status: &watch::Sender<PartnerStatus>,
    stop: &mut watch::Receiver<Stop>,
    dialing: &mut bool,
) -> Outcome {
    let conn = pc.connection.clone();
    let _traffic = shared.options.metrics.quic.track(&conn);
    let ended = |error: String| Outcome::Ended {
        established: false,
        error: Some(error),
    };
    let keys = match shared.keys.pair_keys(peer) {
        Ok(k) => k,
        Err(e) => {
            conn.close(CLOSE_PROTOCOL, b"no pair keys");
            return ended(format!("no pair keys for the partner: {e}"));
        }
    };
    let store = &shared.store;
    let cursor = match store.cursor(&peer.org) {
        Ok(c) => c,
        Err(e) => {
            conn.close(CLOSE_SHUTDOWN, b"store error");
            return ended(format!("cannot read cursors: {e}"));
        }
    };
    let mut head_rx = store.subscribe_head();
    let mut config = shared.options.session_config();
    config.features |= shared.policy.hello_features(&peer.org);
    config.restored = match store.awaits_restore_reconcile(&peer.org) {
        Ok(r) => r,
        Err(e) => {
            conn.close(CLOSE_SHUTDOWN, b"store error");
            return ended(format!("cannot read the restored mark: {e}"));
        }
    };
    let session = Session::new(
        config,
        keys,
        store.instance(),
        Cursors {
            applied_from_peer: cursor.applied_from_peer,
            acked_by_peer: cursor.acked_by_peer,
            local_log_head: *head_rx.borrow_and_update(),
        },
        Instant::now(),
    );

    // The dialer opens the control stream and speaks first (a QUIC stream
    // is only visible to the peer once data is sent on it). A stop does not
    // wait for a partner that is slow to open it.
    let opening = async {
        if pc.dialed_by_us {
            conn.open_bi()
                .await
                .map_err(|e| format!("control stream: {e}"))
        } else {
            match tokio::time::timeout(shared.options.idle_timeout, conn.accept_bi()).await {
                Ok(r) => r.map_err(|e| format!("control stream: {e}")),
                Err(_) => {
                    conn.close(CLOSE_PROTOCOL, b"no control stream");
                    Err("the partner opened no control stream".into())
                }
            }
        }
    };
    let streams = tokio::select! {
        s = opening => s,
        reason = stop.wait_for(|s| *s != Stop::Running) => {
            conn.close(stop_code(reason.map(|r| *r)), b"stopping");
            return Outcome::Stopped;
        }
    };
    let (ctrl_send, ctrl_recv) = match streams {
        Ok(s) => s,
        Err(e) => return ended(e),
    };

    let (events_tx, mut events) = mpsc::channel::<Event>(1024);
    let budget = Arc::new(Semaphore::new(READ_BUDGET as usize));
    let ctrl_reader = Owned(spawn_reader(ctrl_recv, events_tx.clone(), budget.clone()));
    let uni_acceptor = {
        let conn = conn.clone();
        let events_tx = events_tx.clone();
        let budget = budget.clone();
        // Aborting the acceptor drops `streams`, which aborts their readers.
        Owned::spawn(async move {
            let mut streams = Vec::new();
            while let Ok(recv) = conn.accept_uni().await {
                // Forget finished readers: a peer opening stream after
                // stream must not grow this list for the connection's life.
                streams.retain(|s: &Owned| !s.is_finished());
                streams.push(Owned(spawn_reader(recv, events_tx.clone(), budget.clone())));
            }
        })
    };
    let control_backlog = Backlog::default();
    let (control, control_task) = spawn_writer(
        async move { Ok(ctrl_send) },
        events_tx.clone(),
        control_backlog.clone(),
    );
    let (applied_tx, mut applied_rx) = mpsc::unbounded_channel();
    let (applier, applier_task) = spawn_applier(
        shared.clone(),
        peer.clone(),
        shared.options.limits.max_queued_batches,
        stop.clone(),
        applied_tx,
    );
    let mut applier_task = Owned(applier_task);

    let mut d = Driver {
        shared,
        peer,
        conn: conn.clone(),
        session,
        events_tx,
        control,
        control_backlog,
        control_task,
        changes: None,
        blob_writers: HashMap::new(),
        blob_permits: HashMap::new(),
        serving: HashMap::new(),
        receiving: HashMap::new(),
        applier: Some(applier),
        stalled_apply: None,
        stalled_share: None,
        status,
        established: false,
        error: None,
        share_sent: 0,
        outbox_seen: shared.policy.share_outbox_changed(),
    };
    let mut share_outbox = shared.policy.share_outbox_changed();

    let mut replaced = None;
    let mut stopped = false;
    let mut close_code = CLOSE_NORMAL;
    let mut peer_closed = false;
    let mut applier_running = true;
    loop {
        d.pump().await;
        if d.session.is_closed() {
            break;
        }
        let deadline = d
            .session
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + shared.options.idle_timeout);
        // Owned handles for the stalled branches, so that they borrow
        // nothing of `d`.
        let apply_room = d.stalled_apply.as_ref().and_then(|_| d.applier.clone());
        let share_room = d.stalled_share.as_ref().map(|(_, w)| w.clone());
        let stalled = d.stalled();
        tokio::select! {
            room = async move {
                match apply_room {
                    Some(tx) => tx.reserve_owned().await.ok(),
                    None => std::future::pending().await,
                }
            }, if d.stalled_apply.is_some() => {
                let job = d.stalled_apply.take();
                if let (Some(room), Some(job)) = (room, job) {
                    room.send(job);
                }
            }
            permit = async move {
                match share_room {
                    Some(w) => w.acquire_owned().await.ok(),
                    None => std::future::pending().await,
                }
            }, if d.stalled_share.is_some() => {
                if let (Some(permit), Some((frame, _))) = (permit, d.stalled_share.take()) {
                    d.shared.policy.share_received_held(&peer.org, frame, permit);
                    d.send_share_outbox();
                }
            }
            applied = applied_rx.recv(), if applier_running => match applied {
                Some(a) => d.on_event(Event::Applied(a)),
                // The applier stopped (it failed, which closes the session).
                None => applier_running = false,
            },
            reason = stop.wait_for(|s| *s != Stop::Running) => {
                stopped = true;
                close_code = stop_code(reason.map(|r| *r));
                d.session.close(None);
            }
            ev = events.recv(), if !stalled => {
                // `d` holds a sender, so the channel never closes while we run.
                if let Some(ev) = ev {
                    d.on_event(ev);
                }
            }
            changed = head_rx.changed() => {
                if changed.is_ok() {
                    let head = *head_rx.borrow_and_update();
                    d.session.local_log_advanced(head);
                }
            }
            msg = input.recv() => match msg {
                Some(PartnerInput::Connection(candidate)) => {
                    if candidate.dialed_by_us {
                        *dialing = false;
                    }
                    let local = shared.transport.local_org();
                    if preferred(&local, &pc, &candidate) {
                        tracing::debug!(partner = %peer.name, "duplicate connection: switching");
                        close_code = CLOSE_DUPLICATE;
                        d.session.close(None);
                        replaced = Some(candidate);
                    } else {
                        tracing::debug!(partner = %peer.name, "duplicate connection: keeping the current one");
                        candidate.connection.close(CLOSE_DUPLICATE, b"duplicate connection");
                    }
                }
                Some(PartnerInput::DialFailed(_)) => *dialing = false,
                // Trust checks read the reloaded set directly.
                Some(PartnerInput::Reloaded) => {}
                None => {
                    stopped = true;
                    d.session.close(None);
                }
            },
            _ = share_outbox_changed(&mut share_outbox) => {
                d.send_share_outbox();
                // The policy may let more of the log be decided now.
                d.session.local_log_advanced(shared.store.log_head());
            }
            _ = tokio::time::sleep_until(deadline) => d.session.handle_timeout(Instant::now()),
            reason = conn.closed() => {
                let error = match &reason {
                    quinn::ConnectionError::ApplicationClosed(c) if c.error_code == CLOSE_DUPLICATE => None,
                    quinn::ConnectionError::ApplicationClosed(c) if c.error_code == CLOSE_NORMAL || c.error_code == CLOSE_SHUTDOWN => None,
                    other => Some(other.to_string()),
                };
                if d.error.is_none() {
                    d.error = error;
                }
                peer_closed = true;
                d.session.close(None);
            }
        }
    }
    // Let the session's last words (an Error message) out, then stop the
    // helpers. In-progress applies finish before the next session reads
    // the cursors (the session's contract).
    while let Some(t) = d.session.poll_transmit() {
        d.route(t);
    }
    // The readers only feed this driver, which reads no more messages:
    // stop them, so nothing but the applier and blob readers still sends
    // into `events`.
    drop((ctrl_reader, uni_acceptor));
    d.applier = None;
    // The applier reports each batch into `events`, a bounded channel that
    // only this loop empties: awaiting the applier without draining it
    // waited forever once the readers had filled it (a backlog in flight).
    // What arrives now is dropped: the session is over, and the partner
    // resends what was not acked.
    d.stalled_apply = None;
    loop {
        tokio::select! {
            _ = applier_task.join() => break,
            _ = events.recv() => {}
            Some(_) = applied_rx.recv() => {}
        }
    }
    let Driver {
        control,
        control_task,
        changes,
        blob_writers,
        serving,
        established,
        error,
        ..
    } = d;
    drop((control, changes, blob_writers));
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), control_task).await;
    for (_, t) in serving {
        t.abort();
    }
    if close_code == CLOSE_NORMAL && error.is_some() && !peer_closed {
        close_code = CLOSE_PROTOCOL;
    }
    conn.close(close_code, b"session over");
    if let Some(c) = replaced {
        return Outcome::Replaced(c);
    }
    if stopped {
        return Outcome::Stopped;
    }
    Outcome::Ended { established, error }
}
