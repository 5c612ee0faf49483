//! The sync session: the sans-IO state machine of one partner connection.
//!
//! A [`Session`] owns no socket, no clock and no disk. The daemon feeds it
//! what arrived ([`Session::handle_message`]), what happened locally
//! ([`Session::local_log_advanced`], [`Session::applied`], …) and the time
//! ([`Session::handle_timeout`]); it answers with messages to send
//! ([`Session::poll_transmit`]) and work to do ([`Session::poll_effect`]).
//!
//! # Guarantees
//!
//! - **Nothing lost, nothing applied twice.** The receiver's durable cursor
//!   drives resume: each side's [`Hello`] carries `applied_up_to`, what it
//!   has durably applied from the other, and the sender starts after it. A
//!   batch is acknowledged only after the host confirmed with
//!   [`Session::applied`] that it is durable, and changes at or below the
//!   receiver's cursor are never handed out for applying again.
//! - **No panics on peer input.** Every message from the peer is checked;
//!   a violation closes the session with a [`SessionError`], tells the peer
//!   why with [`Message::Error`] and reports [`Effect::Closed`].
//! - **Blobs never delay records.** Blob chunks travel on their own
//!   [`Channel::Blob`] and are handed out by [`Session::poll_transmit`] only
//!   after control messages and change batches.
//!
//! # After a restore
//!
//! An instance restored from a backup holds an older log than the one its
//! partners applied, and older cursors into theirs. The rule, on our side
//! only:
//! - Our Hello carries our (older) `applied_up_to`: the partner resends
//!   everything after it. What we already had merges to the same object
//!   (merge is idempotent), so nothing is applied twice; the host counts
//!   these as unchanged.
//! - A partner whose `applied_up_to` exceeds our head normally means a
//!   confused peer ([`SessionError::PeerCursorAhead`]). With
//!   [`SessionConfig::restored`] set, we instead jump our head to its
//!   cursor ([`Effect::LogJumped`]): the entries in between were lost with
//!   the old disk, the partner keeps its copy of them, and our next change
//!   gets a number it has never seen. The restored instance also has a new
//!   instance id, so its new versions never equal a lost one's.
//!
//! # Driving a session (the daemon's recipe)
//!
//! 1. On a new connection to partner P, read P's durable cursors from the
//!    store and call [`Session::new`]; it queues our [`Hello`].
//! 2. After every call into the session, drain [`Session::poll_transmit`]
//!    (write each message to the stream named by its [`Channel`]) and
//!    [`Session::poll_effect`] (perform each [`Effect`]), then re-arm the
//!    timer with [`Session::poll_timeout`].
//! 3. Feed every decoded frame from any stream of the connection to
//!    [`Session::handle_message`], and timer expiry to
//!    [`Session::handle_timeout`].
//! 4. When a local change is committed to the log, call
//!    [`Session::local_log_advanced`]. Answer [`Effect::LoadChanges`] with
//!    [`Session::load_result`].
//! 5. Perform [`Effect::Apply`] by writing the changes **and** the cursor
//!    `up_to_seq` in one atomic store batch; once durable, call
//!    [`Session::applied`]. Persist [`Effect::PeerAcked`] as the partner's
//!    "acked" cursor.
//! 6. On [`Effect::Closed`] (or a transport error), send what
//!    `poll_transmit` still yields, close the connection and drop the
//!    session. Before creating the next session for P, let every `Apply`
//!    still in progress either become durable or be abandoned, so that the
//!    cursor read in step 1 is the truth.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use crate::codec::{self, CodecError, MAX_BLOB_CHUNK, MAX_FRAME_LEN};
use crate::envelope::{self, EnvelopeError, ReplayGuard, SealedEnvelope, StreamKind};
use crate::identity::PairKeys;
use crate::model::{InstanceId, ObjectId, OrgId, SequencedChange};
use crate::wire::{
    decode_blob_chunk, decode_change_batch, Ack, BlobChunk, BlobDone, BlobRequest, Channel,
    ClockPong, ErrorCode, ErrorMessage, Hello, Message, CLOCK_PONG_VERSION, FEATURE_BLOBS,
    MAX_CHANGES_PER_BATCH, MAX_CLOCK_MS, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

#[cfg(test)]
mod harness;
#[cfg(test)]
mod tests;

/// Room left in a frame for the envelope header, nonce, tag and framing, so a
/// sealed batch of `n` plaintext bytes always fits in [`MAX_FRAME_LEN`].
const FRAME_OVERHEAD: usize = 4096;

/// Change batches held back while the peer's Hello has not arrived yet:
/// they travel on another stream than the Hello and may overtake it. An
/// honest peer is bounded by its window; this bounds a dishonest one.
const MAX_EARLY_BYTES: usize = 32 << 20;
/// As [`MAX_EARLY_BYTES`], in batches.
const MAX_EARLY_BATCHES: usize = 4096;

/// Tunables of a session. [`SessionConfig::default`] gives production values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Key epochs of the peer we accept besides `keys.epoch` (during a
    /// rotation the daemon lists the old and the new epoch).
    pub accepted_epochs: Vec<u32>,
    /// Feature bits we offer (`FEATURE_*`); the session uses the
    /// intersection with the peer's.
    pub features: u64,
    /// Oldest protocol version we speak.
    pub min_version: u16,
    /// Newest protocol version we speak.
    pub max_version: u16,
    /// Most changes asked of the host in one [`Effect::LoadChanges`] and put
    /// in one batch (capped at [`MAX_CHANGES_PER_BATCH`]).
    pub max_batch_changes: usize,
    /// Largest encoded batch plaintext; a larger load is split.
    pub max_batch_bytes: usize,
    /// Most changes (in log sequence numbers) sent but not yet acknowledged;
    /// loading pauses at this bound and resumes on [`Message::Ack`].
    pub max_unacked_changes: u64,
    /// Silence from the peer after which the session fails with
    /// [`SessionError::Timeout`] (also bounds the handshake).
    pub idle_timeout: Duration,
    /// Silence from the peer after which we send a [`Message::Ping`]; must be
    /// below `idle_timeout`.
    pub keep_alive_interval: Duration,
    /// Most blob transfers in flight per direction.
    pub max_blob_transfers: usize,
    /// This instance was restored from a backup: a peer that has applied
    /// more of our log than we hold makes us jump our log head past its
    /// cursor ([`Effect::LogJumped`]) instead of failing with
    /// [`SessionError::PeerCursorAhead`] (see "After a restore" above).
    /// The daemon sets it per partner, only until that partner's first
    /// session after the restore.
    pub restored: bool,
    /// On a session of protocol version 2 or later, how often the
    /// partner's clock is probed (a Ping answered with a
    /// [`Message::ClockPong`]) even while traffic keeps the connection
    /// alive; the first probe goes out as soon as the session is established.
    pub clock_probe_interval: Duration,
    /// Reads the wall clock, in milliseconds since the Unix epoch, for the
    /// clock pongs we send and the skew we estimate: the one reading of
    /// the system time in this crate, injectable so tests can drive it.
    pub wall_clock: WallClock,
}

/// A source of wall-clock time in milliseconds since the Unix epoch (see
/// [`SessionConfig::wall_clock`]).
#[derive(Clone, Copy)]
pub struct WallClock(pub fn() -> u64);

impl WallClock {
    /// The system's clock.
    pub const SYSTEM: WallClock = WallClock(system_unix_ms);

    fn now_ms(self) -> u64 {
        (self.0)()
    }
}

impl fmt::Debug for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WallClock")
    }
}

// Two configurations differ by their clock only in tests; comparing
// function addresses is unreliable, so clocks compare equal.
impl PartialEq for WallClock {
    fn eq(&self, _: &WallClock) -> bool {
        true
    }
}
impl Eq for WallClock {}

/// The system clock in milliseconds since the Unix epoch (0 before 1970).
pub fn system_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            accepted_epochs: Vec::new(),
            features: FEATURE_BLOBS,
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            max_batch_changes: 1000,
            max_batch_bytes: 1 << 20,
            max_unacked_changes: 16 * 1024,
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(10),
            max_blob_transfers: 16,
            restored: false,
            clock_probe_interval: Duration::from_secs(60),
            wall_clock: WallClock::SYSTEM,
        }
    }
}

/// The durable cursors of one partner, as the host last persisted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursors {
    /// Every change of the partner's log up to this sequence is durably
    /// applied here (persisted with the changes, see [`Effect::Apply`]).
    pub applied_from_peer: u64,
    /// The partner acknowledged our log up to this sequence
    /// (persisted from [`Effect::PeerAcked`]).
    pub acked_by_peer: u64,
    /// Sequence of the newest entry of our change log.
    pub local_log_head: u64,
}

/// A message to send, with the stream it belongs on.
#[derive(Clone, Debug, PartialEq)]
pub struct Transmit {
    /// The stream: control, this direction's change stream, or a blob's stream.
    pub channel: Channel,
    /// The message.
    pub message: Message,
}

/// Work the host must do for the session.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Both Hellos are exchanged and valid: changes and blobs may flow.
    Established {
        /// The peer's instance.
        peer_instance: InstanceId,
        /// The negotiated protocol version.
        version: u16,
        /// The features both sides support.
        features: u64,
        /// The peer's durable cursor into our log; sending resumes after it.
        peer_applied_up_to: u64,
    },
    /// Read entries of the local change log with `seq > after`, at most
    /// `limit` of them, and answer with [`Session::load_result`]. Only one
    /// load is outstanding at a time.
    LoadChanges {
        /// Send entries after this sequence.
        after: u64,
        /// Most entries wanted.
        limit: usize,
    },
    /// Apply these changes of the peer and persist `up_to_seq` as the
    /// peer's cursor, atomically; then call [`Session::applied`]. `changes`
    /// may be empty (the peer's log advanced with nothing shared with us):
    /// the cursor must still be persisted. Several may be outstanding; they
    /// must be made durable in the order given.
    Apply {
        /// New changes, strictly increasing by `seq`, all `<= up_to_seq`.
        changes: Vec<SequencedChange>,
        /// The peer's log is covered up to this sequence once applied.
        up_to_seq: u64,
    },
    /// The peer has durably applied our log up to `up_to_seq`; persist it
    /// (status, lag, log compaction). Strictly increasing within a session.
    PeerAcked {
        /// The peer's durable cursor into our log.
        up_to_seq: u64,
    },
    /// The peer asks for a blob from `offset`. If policy allows sending it
    /// (the blob belongs to `object`, which is shared with this peer),
    /// answer with [`Session::blob_chunk_ready`] until the end, else
    /// [`Session::blob_unavailable`].
    ReadBlob {
        /// BLAKE3 hash of the content.
        hash: [u8; 32],
        /// First byte wanted.
        offset: u64,
        /// The object the blob belongs to.
        object: ObjectId,
    },
    /// Append `data` at `offset` of the temporary file of blob `hash`.
    /// Chunks come in order, without gaps, starting at the offset requested.
    WriteBlobChunk {
        /// BLAKE3 hash of the content.
        hash: [u8; 32],
        /// Where `data` goes.
        offset: u64,
        /// Size of the whole content.
        total_len: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Every byte of blob `hash` has been written: verify its BLAKE3 hash,
    /// then make it visible (fsync, rename). On a mismatch discard it.
    BlobComplete {
        /// BLAKE3 hash of the content.
        hash: [u8; 32],
        /// Size of the whole content.
        total_len: u64,
    },
    /// The peer will not send blob `hash` (unknown, or not shared with us).
    BlobUnavailable {
        /// BLAKE3 hash of the content.
        hash: [u8; 32],
    },
    /// A restored instance (see [`SessionConfig::restored`]) met a peer
    /// that has applied our log up to `to`, beyond our head `from`: the
    /// host must move its log head to `to` durably **before** assigning
    /// another local sequence number, so no new change reuses a number the
    /// peer already holds. Entries `from + 1 ..= to` are lost here (the peer
    /// keeps its copy); the host should log it. Comes before `Established`.
    LogJumped {
        /// Our head before the jump.
        from: u64,
        /// The peer's cursor into our log, our new head.
        to: u64,
    },
    /// A sharing-governance control message from the peer, for the host's
    /// governance layer (the session only carries it).
    Share(crate::share::ShareFrame),
    /// The session is over; no other effect follows. `error` is `None` for
    /// a close asked by the host with [`Session::close`].
    Closed {
        /// Why the session failed.
        error: Option<SessionError>,
    },
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Our Hello is sent; waiting for the peer's.
    Handshake,
    /// Hellos exchanged; changes and blobs flow.
    Established,
    /// Failed or closed; input is ignored.
    Closed,
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionState::Handshake => "handshake",
            SessionState::Established => "established",
            SessionState::Closed => "closed",
        })
    }
}

/// Why a session failed, or why a call from the host was refused.
///
/// Variants up to [`SessionError::Peer`] close the session; the host-side
/// variants ([`SessionError::Misuse`]) only refuse the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No protocol version in common.
    #[error("no common protocol version: this instance speaks protocol {}..={}, the peer speaks {}..={}", .ours.start(), .ours.end(), .theirs.start(), .theirs.end())]
    VersionMismatch {
        /// Our range.
        ours: RangeInclusive<u16>,
        /// The peer's range.
        theirs: RangeInclusive<u16>,
    },
    /// The peer is another organisation than the partner of this session.
    #[error("the peer is organisation {got}, expected partner {expected}")]
    WrongOrg {
        /// The partner this session is for.
        expected: OrgId,
        /// The organisation the peer claims.
        got: OrgId,
    },
    /// The peer's key epoch is not accepted.
    #[error("the peer uses key epoch {theirs}, we accept {accepted:?}")]
    EpochMismatch {
        /// Epochs we accept.
        accepted: Vec<u32>,
        /// The peer's epoch.
        theirs: u32,
    },
    /// An envelope from the peer failed to open.
    #[error("envelope refused: {0}")]
    BadEnvelope(EnvelopeError),
    /// A message or envelope plaintext from the peer could not be decoded.
    #[error("could not decode {what} from the peer: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The codec's reason.
        source: CodecError,
    },
    /// A message from the peer broke a protocol rule.
    #[error("malformed {message} from the peer: {detail}")]
    Malformed {
        /// The message name.
        message: &'static str,
        /// The rule broken.
        detail: String,
    },
    /// A message the protocol does not allow in this state.
    #[error("unexpected {message} message in state {state}")]
    Unexpected {
        /// The message name.
        message: &'static str,
        /// Our state when it arrived.
        state: SessionState,
    },
    /// The peer acknowledged changes we never sent.
    #[error("the peer acknowledged up to {acked}, but only {sent} was sent")]
    AckBeyondSent {
        /// The acknowledged sequence.
        acked: u64,
        /// What we sent.
        sent: u64,
    },
    /// The peer claims to have applied more of our log than exists: our log
    /// was lost or restored from an older backup.
    #[error("the peer claims to have applied our log up to {peer_applied}, but our log ends at {local_head}")]
    PeerCursorAhead {
        /// The peer's cursor.
        peer_applied: u64,
        /// Our log head.
        local_head: u64,
    },
    /// The peer sent blob data we did not ask for.
    #[error("blob {} was not requested", hex(.hash))]
    BlobNotRequested {
        /// The blob.
        hash: [u8; 32],
    },
    /// A blob chunk did not start where the previous one ended.
    #[error("blob {} chunk at offset {got}, expected offset {expected}", hex(.hash))]
    BlobOutOfOrder {
        /// The blob.
        hash: [u8; 32],
        /// The next offset we expected.
        expected: u64,
        /// The offset received.
        got: u64,
    },
    /// The peer asked for more blob transfers at once than allowed.
    #[error("the peer asked for more than {limit} blob transfers at once")]
    TooManyBlobTransfers {
        /// The limit.
        limit: usize,
    },
    /// A local change is too large to be sent in one frame.
    #[error("local change {seq} encodes to {bytes} bytes, more than a frame can carry")]
    ChangeTooLarge {
        /// Its sequence.
        seq: u64,
        /// Its encoded size.
        bytes: usize,
    },
    /// Encoding a local value failed (a bug or an over-limit local record).
    #[error("could not encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The codec's reason.
        source: CodecError,
    },
    /// The peer was silent for longer than the idle timeout.
    #[error("no message from the peer for {idle:?} (state {state})")]
    Timeout {
        /// The idle timeout.
        idle: Duration,
        /// Our state when it expired.
        state: SessionState,
    },
    /// The peer reported an error and closes the connection.
    #[error("the peer reported {code:?}: {message}")]
    Peer {
        /// The peer's reason.
        code: ErrorCode,
        /// The peer's detail.
        message: String,
    },
    /// The host called the session in a way its contract forbids; the call
    /// was refused and the session is unchanged.
    #[error("session call refused: {0}")]
    Misuse(&'static str),
}

impl SessionError {
    /// The code reported to the peer when this error closes the session, or
    /// `None` when nothing is to be reported (the peer is gone or it told us).
    pub fn wire_code(&self) -> Option<ErrorCode> {
        Some(match self {
            SessionError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            SessionError::WrongOrg { .. } => ErrorCode::NotPaired,
            SessionError::EpochMismatch { .. } => ErrorCode::BadEpoch,
            SessionError::BadEnvelope(_) => ErrorCode::BadEnvelope,
            SessionError::Decode { .. }
            | SessionError::Malformed { .. }
            | SessionError::BlobOutOfOrder { .. }
            | SessionError::TooManyBlobTransfers { .. } => ErrorCode::Malformed,
            SessionError::Unexpected { .. }
            | SessionError::AckBeyondSent { .. }
            | SessionError::PeerCursorAhead { .. }
            | SessionError::BlobNotRequested { .. } => ErrorCode::Unexpected,
            SessionError::ChangeTooLarge { .. } | SessionError::Encode { .. } => {
                ErrorCode::Internal
            }
            SessionError::Timeout { .. } | SessionError::Peer { .. } | SessionError::Misuse(_) => {
                return None
            }
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// The largest local log sequence a peer may claim to have applied (2^48:
/// far beyond any real log, and far from `u64` overflow when a restored
/// instance jumps its head to it).
pub const MAX_LOG_SEQ: u64 = 1 << 48;

fn malformed(message: &'static str, detail: impl Into<String>) -> SessionError {
    SessionError::Malformed {
        message,
        detail: detail.into(),
    }
}

/// Figures for `orgsync status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStats {
    /// Where the session is.
    pub state: SessionState,
    /// Negotiated version, once established.
    pub version: Option<u16>,
    /// The peer's instance, once established.
    pub peer_instance: Option<InstanceId>,
    /// Our log head as last told by the host.
    pub local_log_head: u64,
    /// Our log is sent (or found to hold nothing for the peer) up to here.
    pub sent_up_to: u64,
    /// The peer has durably applied our log up to here.
    pub acked_by_peer: u64,
    /// Sequences sent and not yet acknowledged.
    pub unacked: u64,
    /// Our log entries the peer does not have yet (`local_log_head - acked_by_peer`).
    pub outgoing_lag: u64,
    /// The peer's log head as last reported in a batch.
    pub peer_log_head: u64,
    /// The peer's log is received (handed out for applying) up to here.
    pub received_up_to: u64,
    /// The peer's log is durably applied up to here.
    pub applied_up_to: u64,
    /// The peer's log entries not yet durably applied here.
    pub incoming_lag: u64,
    /// Batches dropped because every change in them was already received.
    pub duplicate_batches: u64,
    /// Blob transfers we are serving.
    pub blobs_sending: usize,
    /// Blob transfers we are receiving.
    pub blobs_receiving: usize,
    /// The partner's clock minus ours, in milliseconds, corrected by half
    /// the round trip of the probe; `None` until a [`Message::ClockPong`]
    /// answered our probe (never on a version-1 session).
    pub clock_skew_ms: Option<i64>,
    /// Round trip of the probe behind `clock_skew_ms`.
    pub clock_round_trip: Option<Duration>,
}

/// An outgoing blob transfer (we serve it).
#[derive(Debug)]
struct Outgoing {
    next_offset: u64,
    total_len: Option<u64>,
}

/// An incoming blob transfer (we asked for it).
#[derive(Debug)]
struct Incoming {
    next_offset: u64,
    total_len: Option<u64>,
}

/// The protocol state of one connection to one partner. See the module
/// documentation for how to drive it.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    keys: PairKeys,
    local_instance: InstanceId,
    state: SessionState,
    version: Option<u16>,
    features: u64,
    peer_instance: Option<InstanceId>,

    // Sending our log.
    local_head: u64,
    /// Everything of our log up to here has been sealed and queued (or
    /// found to hold nothing for the peer).
    sent_up_to: u64,
    /// Highest cursor the peer confirmed in this session (Hello or Ack);
    /// the in-flight window is measured from it.
    peer_confirmed: u64,
    /// Highest cursor reported to the host with `PeerAcked`.
    reported_acked: u64,
    /// `after` of the outstanding `LoadChanges`.
    loading: Option<u64>,

    // Receiving the peer's log.
    /// Last batch sequence accepted (= received up to).
    guard: ReplayGuard,
    durable: u64,
    acked_sent: u64,
    peer_log_head: u64,
    duplicate_batches: u64,
    /// Batches that arrived before the peer's Hello, and their size.
    early: VecDeque<SealedEnvelope>,
    early_bytes: usize,

    // Blobs.
    sending_blobs: HashMap<[u8; 32], Outgoing>,
    receiving_blobs: HashMap<[u8; 32], Incoming>,

    // Liveness.
    last_rx: Instant,
    /// The nonce of the ping in flight and when it was sent.
    ping_outstanding: Option<(u64, Instant)>,
    next_ping: u64,
    /// When our last ping went out (clock probes are paced from it).
    last_ping: Option<Instant>,
    clock_skew_ms: Option<i64>,
    clock_round_trip: Option<Duration>,

    // Output, by priority.
    control_q: VecDeque<Transmit>,
    changes_q: VecDeque<Transmit>,
    blob_q: VecDeque<Transmit>,
    effects: VecDeque<Effect>,
}

impl Session {
    /// A session for a fresh connection to the partner `keys.peer`, resuming
    /// from the host's durable `cursors`. Our [`Hello`] is queued at once;
    /// `now` starts the handshake timeout.
    pub fn new(
        config: SessionConfig,
        keys: PairKeys,
        local_instance: InstanceId,
        cursors: Cursors,
        now: Instant,
    ) -> Session {
        let hello = Hello {
            min_version: config.min_version,
            max_version: config.max_version,
            org: keys.local,
            instance: local_instance,
            epoch: keys.epoch,
            features: config.features,
            applied_up_to: cursors.applied_from_peer,
        };
        let mut control_q = VecDeque::new();
        control_q.push_back(Transmit {
            channel: Channel::Control,
            message: Message::Hello(hello),
        });
        Session {
            config,
            keys,
            local_instance,
            state: SessionState::Handshake,
            version: None,
            features: 0,
            peer_instance: None,
            local_head: cursors.local_log_head,
            sent_up_to: 0,
            peer_confirmed: 0,
            reported_acked: cursors.acked_by_peer,
            loading: None,
            guard: ReplayGuard::new(cursors.applied_from_peer),
            durable: cursors.applied_from_peer,
            acked_sent: cursors.applied_from_peer,
            peer_log_head: cursors.applied_from_peer,
            duplicate_batches: 0,
            early: VecDeque::new(),
            early_bytes: 0,
            sending_blobs: HashMap::new(),
            receiving_blobs: HashMap::new(),
            last_rx: now,
            ping_outstanding: None,
            next_ping: 1,
            last_ping: None,
            clock_skew_ms: None,
            clock_round_trip: None,
            control_q,
            changes_q: VecDeque::new(),
            blob_q: VecDeque::new(),
            effects: VecDeque::new(),
        }
    }

    /// Where the session is.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// True once both Hellos are exchanged and until the session closes.
    pub fn is_established(&self) -> bool {
        self.state == SessionState::Established
    }

    /// True once the session failed or was closed.
    pub fn is_closed(&self) -> bool {
        self.state == SessionState::Closed
    }

    /// Our instance, as announced in our Hello.
    pub fn local_instance(&self) -> InstanceId {
        self.local_instance
    }

    /// The negotiated feature bits (0 before establishment).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Figures for status and metrics.
    pub fn stats(&self) -> SessionStats {
        let acked = self.reported_acked.max(self.peer_confirmed);
        SessionStats {
            state: self.state,
            version: self.version,
            peer_instance: self.peer_instance,
            local_log_head: self.local_head,
            sent_up_to: self.sent_up_to,
            acked_by_peer: acked,
            unacked: self.sent_up_to.saturating_sub(self.peer_confirmed),
            outgoing_lag: self.local_head.saturating_sub(acked),
            peer_log_head: self.peer_log_head,
            received_up_to: self.guard.last(),
            applied_up_to: self.durable,
            incoming_lag: self.peer_log_head.saturating_sub(self.durable),
            duplicate_batches: self.duplicate_batches,
            blobs_sending: self.sending_blobs.len(),
            blobs_receiving: self.receiving_blobs.len(),
            clock_skew_ms: self.clock_skew_ms,
            clock_round_trip: self.clock_round_trip,
        }
    }

    // -----------------------------------------------------------------
    // Output
    // -----------------------------------------------------------------

    /// The next message to send. Control messages come first, then change
    /// batches, then blob chunks, so blobs never delay records. After a
    /// failure only the [`Message::Error`] for the peer is left.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.control_q.pop_front() {
            return Some(t);
        }
        // Acks are made here rather than in `applied` so that several
        // confirmations in a row coalesce into one message.
        if self.state == SessionState::Established && self.durable > self.acked_sent {
            self.acked_sent = self.durable;
            return Some(Transmit {
                channel: Channel::Control,
                message: Message::Ack(Ack {
                    up_to_seq: self.durable,
                }),
            });
        }
        self.changes_q
            .pop_front()
            .or_else(|| self.blob_q.pop_front())
    }

    /// The next effect for the host to perform, in order.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next (`None` once closed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == SessionState::Closed {
            return None;
        }
        let idle = self.last_rx + self.config.idle_timeout;
        Some(self.next_ping_at().map_or(idle, |at| idle.min(at)))
    }

    /// When the next ping is due: after `keep_alive_interval` of silence,
    /// and on version 2 or later also `clock_probe_interval` after the
    /// last one (probes go on while traffic keeps the connection alive).
    fn next_ping_at(&self) -> Option<Instant> {
        if self.state != SessionState::Established || self.ping_outstanding.is_some() {
            return None;
        }
        let keep_alive = self.last_rx + self.config.keep_alive_interval;
        if !self.clock_negotiated() {
            return Some(keep_alive);
        }
        let probe = self
            .last_ping
            .map_or(self.last_rx, |at| at + self.config.clock_probe_interval);
        Some(keep_alive.min(probe))
    }

    fn clock_negotiated(&self) -> bool {
        self.version.is_some_and(|v| v >= CLOCK_PONG_VERSION)
    }

    fn send_ping(&mut self, now: Instant) {
        let nonce = self.next_ping;
        self.next_ping = self.next_ping.wrapping_add(1);
        self.ping_outstanding = Some((nonce, now));
        self.last_ping = Some(now);
        self.push_control(Message::Ping(nonce));
    }

    // -----------------------------------------------------------------
    // Input from the peer and the clock
    // -----------------------------------------------------------------

    /// Feeds one message from the peer, from any stream of the connection.
    ///
    /// On a protocol violation the session closes: the error is returned,
    /// reported in [`Effect::Closed`] and, when the peer should learn it,
    /// sent as [`Message::Error`]. Input after the close is ignored.
    pub fn handle_message(&mut self, msg: Message, now: Instant) -> Result<(), SessionError> {
        if self.state == SessionState::Closed {
            return Ok(());
        }
        self.last_rx = self.last_rx.max(now);
        let result = self.dispatch(msg);
        if let Err(e) = &result {
            self.fail(e.clone());
        }
        result
    }

    /// Tells the session the time; sends keep-alive pings and fails the
    /// session with [`SessionError::Timeout`] after the idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == SessionState::Closed {
            return;
        }
        if now >= self.last_rx + self.config.idle_timeout {
            self.fail(SessionError::Timeout {
                idle: self.config.idle_timeout,
                state: self.state,
            });
            return;
        }
        if self.next_ping_at().is_some_and(|at| now >= at) {
            self.send_ping(now);
        }
    }

    fn dispatch(&mut self, msg: Message) -> Result<(), SessionError> {
        match (self.state, msg) {
            (SessionState::Handshake, Message::Hello(h)) => self.on_hello(h),
            (SessionState::Handshake, Message::Changes(env)) => {
                self.early_bytes = self.early_bytes.saturating_add(env.ciphertext.len());
                if self.early_bytes > MAX_EARLY_BYTES || self.early.len() >= MAX_EARLY_BATCHES {
                    return Err(SessionError::Unexpected {
                        message: "changes",
                        state: SessionState::Handshake,
                    });
                }
                self.early.push_back(env);
                Ok(())
            }
            (_, Message::Error(e)) => self.on_error(e),
            (SessionState::Established, Message::Changes(env)) => self.on_changes(env),
            (SessionState::Established, Message::Ack(a)) => self.on_ack(a),
            (SessionState::Established, Message::BlobRequest(r)) => self.on_blob_request(r),
            (SessionState::Established, Message::BlobChunk(env)) => self.on_blob_chunk(env),
            (SessionState::Established, Message::BlobDone(d)) => self.on_blob_done(d),
            (SessionState::Established, Message::Ping(n)) => {
                let answer = if self.clock_negotiated() {
                    Message::ClockPong(ClockPong {
                        nonce: n,
                        unix_ms: self.config.wall_clock.now_ms().min(MAX_CLOCK_MS),
                    })
                } else {
                    Message::Pong(n)
                };
                self.push_control(answer);
                Ok(())
            }
            (SessionState::Established, Message::ClockPong(p)) if self.clock_negotiated() => {
                self.on_clock_pong(p);
                Ok(())
            }
            (SessionState::Established, Message::Share(f)) => {
                self.effects.push_back(Effect::Share(f));
                Ok(())
            }
            (SessionState::Established, Message::Pong(n)) => {
                // A stale nonce is harmless: any message already proved liveness.
                if self.ping_outstanding.is_some_and(|(nonce, _)| nonce == n) {
                    self.ping_outstanding = None;
                }
                Ok(())
            }
            (state, msg) => Err(SessionError::Unexpected {
                message: msg.name(),
                state,
            }),
        }
    }

    /// Estimates the partner's clock skew from the answer to our ping: the
    /// partner read its clock about half a round trip before the pong
    /// arrived here.
    fn on_clock_pong(&mut self, p: ClockPong) {
        let Some((nonce, sent)) = self.ping_outstanding else {
            return;
        };
        if nonce != p.nonce {
            return;
        }
        self.ping_outstanding = None;
        let round_trip = self.last_rx.saturating_duration_since(sent);
        let half_ms = i64::try_from(round_trip.as_millis() / 2).unwrap_or(i64::MAX);
        let ours = i64::try_from(self.config.wall_clock.now_ms()).unwrap_or(i64::MAX);
        // unix_ms <= MAX_CLOCK_MS (2^48), so this cannot overflow.
        let theirs = p.unix_ms as i64;
        self.clock_skew_ms = Some(theirs.saturating_add(half_ms).saturating_sub(ours));
        self.clock_round_trip = Some(round_trip);
    }

    fn on_hello(&mut self, h: Hello) -> Result<(), SessionError> {
        if h.min_version > h.max_version {
            return Err(malformed(
                "hello",
                format!(
                    "version range {}..={} is empty",
                    h.min_version, h.max_version
                ),
            ));
        }
        let low = self.config.min_version.max(h.min_version);
        let high = self.config.max_version.min(h.max_version);
        if low > high {
            return Err(SessionError::VersionMismatch {
                ours: self.config.min_version..=self.config.max_version,
                theirs: h.min_version..=h.max_version,
            });
        }
        if h.org != self.keys.peer {
            return Err(SessionError::WrongOrg {
                expected: self.keys.peer,
                got: h.org,
            });
        }
        if h.epoch != self.keys.epoch && !self.config.accepted_epochs.contains(&h.epoch) {
            let mut accepted = vec![self.keys.epoch];
            accepted.extend(self.config.accepted_epochs.iter().copied());
            return Err(SessionError::EpochMismatch {
                accepted,
                theirs: h.epoch,
            });
        }
        if h.applied_up_to > MAX_LOG_SEQ {
            // A restored instance would jump its head there: a partner that
            // lies must not push it to where the next sequence overflows.
            return Err(malformed(
                "hello",
                format!(
                    "applied_up_to {} is beyond the largest log sequence {MAX_LOG_SEQ}",
                    h.applied_up_to
                ),
            ));
        }
        if h.applied_up_to > self.local_head {
            if !self.config.restored {
                return Err(SessionError::PeerCursorAhead {
                    peer_applied: h.applied_up_to,
                    local_head: self.local_head,
                });
            }
            self.effects.push_back(Effect::LogJumped {
                from: self.local_head,
                to: h.applied_up_to,
            });
            self.local_head = h.applied_up_to;
        }
        self.state = SessionState::Established;
        self.version = Some(high);
        self.features = self.config.features & h.features;
        self.peer_instance = Some(h.instance);
        // The receiver's durable cursor is the truth, even when it is behind
        // what it acknowledged before (a restore from backup): resend from it.
        self.sent_up_to = h.applied_up_to;
        self.peer_confirmed = h.applied_up_to;
        self.effects.push_back(Effect::Established {
            peer_instance: h.instance,
            version: high,
            features: self.features,
            peer_applied_up_to: h.applied_up_to,
        });
        self.report_acked(h.applied_up_to);
        while let Some(env) = self.early.pop_front() {
            self.on_changes(env)?;
        }
        self.early_bytes = 0;
        if self.clock_negotiated() {
            // Probe the partner's clock at once rather than after the
            // first quiet interval, so status shows the skew right away.
            self.send_ping(self.last_rx);
        }
        self.pump_send();
        Ok(())
    }

    fn on_error(&mut self, e: ErrorMessage) -> Result<(), SessionError> {
        if e.code == ErrorCode::BlobUnavailable && self.state == SessionState::Established {
            // Not fatal: the peer refuses one blob, named by its hex hash.
            let hash = data_encoding::HEXLOWER_PERMISSIVE
                .decode(e.message.as_bytes())
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| malformed("error", "blob-unavailable without a blob hash"))?;
            if self.receiving_blobs.remove(&hash).is_none() {
                return Err(SessionError::BlobNotRequested { hash });
            }
            self.effects.push_back(Effect::BlobUnavailable { hash });
            return Ok(());
        }
        Err(SessionError::Peer {
            code: e.code,
            message: e.message,
        })
    }

    fn on_changes(&mut self, env: SealedEnvelope) -> Result<(), SessionError> {
        if env.header.stream != StreamKind::Changes {
            return Err(malformed(
                "changes",
                "envelope is not of the changes stream",
            ));
        }
        let up_to = env.header.sequence;
        let received = self.guard.last();
        if up_to <= received {
            // Everything in it was already handed out for applying; dropping
            // it unopened is safe because it cannot change anything.
            self.duplicate_batches += 1;
            return Ok(());
        }
        let plain = envelope::open(&self.keys, &env).map_err(SessionError::BadEnvelope)?;
        // Bounds, strictly increasing sequences and log head >= last change
        // are checked by the wire validation.
        let batch = decode_change_batch(&plain).map_err(|source| SessionError::Decode {
            what: "change batch",
            source,
        })?;
        let prev = batch.changes.last().map_or(0, |c| c.seq);
        if prev > up_to {
            return Err(malformed(
                "changes",
                format!("change {prev} is beyond the batch sequence {up_to}"),
            ));
        }
        if batch.log_head < up_to {
            return Err(malformed(
                "changes",
                format!(
                    "log head {} is below the batch sequence {up_to}",
                    batch.log_head
                ),
            ));
        }
        self.guard.accept(up_to);
        self.peer_log_head = self.peer_log_head.max(batch.log_head);
        let changes: Vec<SequencedChange> = batch
            .changes
            .into_iter()
            .filter(|c| c.seq > received)
            .collect();
        self.effects.push_back(Effect::Apply {
            changes,
            up_to_seq: up_to,
        });
        Ok(())
    }

    fn on_ack(&mut self, a: Ack) -> Result<(), SessionError> {
        if a.up_to_seq > self.sent_up_to {
            return Err(SessionError::AckBeyondSent {
                acked: a.up_to_seq,
                sent: self.sent_up_to,
            });
        }
        if a.up_to_seq > self.peer_confirmed {
            self.peer_confirmed = a.up_to_seq;
            self.report_acked(a.up_to_seq);
            self.pump_send();
        }
        Ok(())
    }

    fn report_acked(&mut self, up_to: u64) {
        if up_to > self.reported_acked {
            self.reported_acked = up_to;
            self.effects
                .push_back(Effect::PeerAcked { up_to_seq: up_to });
        }
    }

    fn blobs_negotiated(&self) -> bool {
        self.features & FEATURE_BLOBS != 0
    }

    fn on_blob_request(&mut self, r: BlobRequest) -> Result<(), SessionError> {
        if !self.blobs_negotiated() {
            return Err(SessionError::Unexpected {
                message: "blob-request",
                state: self.state,
            });
        }
        if self.sending_blobs.contains_key(&r.hash) {
            return Err(malformed(
                "blob-request",
                format!("blob {} is already being sent", hex(&r.hash)),
            ));
        }
        if self.sending_blobs.len() >= self.config.max_blob_transfers {
            return Err(SessionError::TooManyBlobTransfers {
                limit: self.config.max_blob_transfers,
            });
        }
        self.sending_blobs.insert(
            r.hash,
            Outgoing {
                next_offset: r.offset,
                total_len: None,
            },
        );
        self.effects.push_back(Effect::ReadBlob {
            hash: r.hash,
            offset: r.offset,
            object: r.object,
        });
        Ok(())
    }

    fn on_blob_chunk(&mut self, env: SealedEnvelope) -> Result<(), SessionError> {
        if env.header.stream != StreamKind::Blob {
            return Err(malformed(
                "blob-chunk",
                "envelope is not of the blob stream",
            ));
        }
        // Opened in place: a chunk is up to MAX_BLOB_CHUNK bytes, and a copy
        // per chunk is measurable on the résumé path.
        let sequence = env.header.sequence;
        let plain = envelope::open_owned(&self.keys, env).map_err(SessionError::BadEnvelope)?;
        // Size and range within total_len are checked by the wire validation.
        let chunk = decode_blob_chunk(&plain).map_err(|source| SessionError::Decode {
            what: "blob chunk",
            source,
        })?;
        let t = self
            .receiving_blobs
            .get_mut(&chunk.hash)
            .ok_or(SessionError::BlobNotRequested { hash: chunk.hash })?;
        // Exactly the next offset: this is the per-transfer replay guard, as
        // the envelope sequence is only bound to the offset below.
        if chunk.offset != t.next_offset {
            return Err(SessionError::BlobOutOfOrder {
                hash: chunk.hash,
                expected: t.next_offset,
                got: chunk.offset,
            });
        }
        if chunk.data.is_empty() || chunk.data.len() > MAX_BLOB_CHUNK {
            return Err(malformed(
                "blob-chunk",
                format!("chunk of {} bytes", chunk.data.len()),
            ));
        }
        if t.total_len.is_some_and(|l| l != chunk.total_len) {
            return Err(malformed("blob-chunk", "total length changed mid-transfer"));
        }
        // data.len() <= MAX_BLOB_CHUNK, so this cannot overflow unless offset
        // is near u64::MAX, which checked_add catches.
        let end = chunk
            .offset
            .checked_add(chunk.data.len() as u64)
            .filter(|&end| end <= chunk.total_len)
            .ok_or_else(|| malformed("blob-chunk", "chunk ends beyond the total length"))?;
        if sequence != end {
            return Err(malformed(
                "blob-chunk",
                "envelope sequence does not match the chunk's end offset",
            ));
        }
        t.next_offset = end;
        t.total_len = Some(chunk.total_len);
        self.effects.push_back(Effect::WriteBlobChunk {
            hash: chunk.hash,
            offset: chunk.offset,
            total_len: chunk.total_len,
            data: chunk.data,
        });
        Ok(())
    }

    fn on_blob_done(&mut self, d: BlobDone) -> Result<(), SessionError> {
        let t = self
            .receiving_blobs
            .get(&d.hash)
            .ok_or(SessionError::BlobNotRequested { hash: d.hash })?;
        if t.total_len.is_some_and(|l| l != d.total_len) {
            return Err(malformed(
                "blob-done",
                "total length differs from the chunks'",
            ));
        }
        if t.next_offset != d.total_len {
            return Err(SessionError::BlobOutOfOrder {
                hash: d.hash,
                expected: t.next_offset,
                got: d.total_len,
            });
        }
        self.receiving_blobs.remove(&d.hash);
        self.effects.push_back(Effect::BlobComplete {
            hash: d.hash,
            total_len: d.total_len,
        });
        Ok(())
    }

    // -----------------------------------------------------------------
    // Input from the host
    // -----------------------------------------------------------------

    /// A change was committed to the local log; `head` is the log's newest
    /// sequence. If nothing is loading and the window allows, the session
    /// asks at once for the new entries (live push, no polling).
    pub fn local_log_advanced(&mut self, head: u64) {
        self.local_head = self.local_head.max(head);
        self.pump_send();
    }

    /// The answer to [`Effect::LoadChanges`]: `changes` are the log entries
    /// in `(after, up_to]` the peer may see (the host may leave out entries
    /// not shared with it), and `log_head` is the log's head. `up_to` must
    /// be greater than `after` unless the log has nothing after it.
    ///
    /// The changes are encoded and sent as [`Session::load_result_encoded`]
    /// sends encoded ones.
    pub fn load_result(
        &mut self,
        changes: Vec<SequencedChange>,
        up_to: u64,
        log_head: u64,
    ) -> Result<(), SessionError> {
        let mut encoded = Vec::with_capacity(changes.len());
        for c in &changes {
            match codec::encode(&c.change) {
                Ok(bytes) => encoded.push((c.seq, bytes)),
                Err(source) => {
                    let e = SessionError::Encode {
                        what: "change",
                        source,
                    };
                    self.fail(e.clone());
                    return Err(e);
                }
            }
        }
        self.load_result_encoded(&encoded, up_to, log_head)
    }

    /// [`Session::load_result`] with each change given as its encoding
    /// (`(seq, bytes)`, `bytes` the encoding of a
    /// [`crate::model::Change`]; a stored [`crate::model::Object`]'s
    /// encoding is one), so a host can send what its store holds without
    /// decoding and re-encoding it.
    ///
    /// Guarantees: the changes are put in batches of at most
    /// `max_batch_changes` changes and `max_batch_bytes` plaintext bytes
    /// (a single larger change travels alone if it fits a frame), each
    /// batch built by copying the given bytes once into its plaintext
    /// ([`codec::encode_change_batch_into`], the same bytes on protocol
    /// versions 1 and 2) and sealed with exactly one AEAD call, in place;
    /// each envelope's sequence is the last sequence it covers.
    pub fn load_result_encoded<B: AsRef<[u8]>>(
        &mut self,
        changes: &[(u64, B)],
        up_to: u64,
        log_head: u64,
    ) -> Result<(), SessionError> {
        if self.state == SessionState::Closed {
            return Ok(());
        }
        let after = self
            .loading
            .ok_or(SessionError::Misuse("load_result without a LoadChanges"))?;
        if up_to > log_head {
            return Err(SessionError::Misuse("load_result: up_to beyond log_head"));
        }
        let mut prev = after;
        for (seq, _) in changes {
            if *seq <= prev || *seq > up_to {
                return Err(SessionError::Misuse(
                    "load_result: changes must be strictly increasing within (after, up_to]",
                ));
            }
            prev = *seq;
        }
        if up_to <= after {
            if log_head > after {
                return Err(SessionError::Misuse(
                    "load_result: no progress although the log goes further",
                ));
            }
            // The head we were told was ahead of the log. Believe the log,
            // or we would ask again forever.
            self.loading = None;
            self.local_head = after;
            return Ok(());
        }
        self.loading = None;
        self.local_head = self.local_head.max(log_head);
        let max_changes = self.max_batch_changes();
        let max_bytes = self.config.max_batch_bytes;
        let mut rest = changes;
        loop {
            // Greedy: as many changes as fit both bounds, at least one.
            let mut n = 0;
            let mut bytes = 0usize;
            while n < rest.len() && n < max_changes {
                let size = rest[n].1.as_ref().len() + codec::BATCH_ENTRY_OVERHEAD;
                if n > 0 && bytes + size > max_bytes {
                    break;
                }
                bytes += size;
                n += 1;
            }
            let (batch, tail) = rest.split_at(n);
            let batch_up_to = if tail.is_empty() {
                up_to
            } else {
                batch.last().map_or(up_to, |c| c.0)
            };
            if let Err(e) = self.seal_batch(batch, batch_up_to) {
                self.fail(e.clone());
                return Err(e);
            }
            if tail.is_empty() {
                break;
            }
            rest = tail;
        }
        self.pump_send();
        Ok(())
    }

    fn seal_batch<B: AsRef<[u8]>>(
        &mut self,
        changes: &[(u64, B)],
        up_to: u64,
    ) -> Result<(), SessionError> {
        let log_head = self.local_head.max(up_to);
        let mut plain = Vec::new();
        codec::encode_change_batch_into(changes, log_head, &mut plain).map_err(|source| {
            SessionError::Encode {
                what: "change batch",
                source,
            }
        })?;
        if plain.len() > MAX_FRAME_LEN - FRAME_OVERHEAD {
            return Err(SessionError::ChangeTooLarge {
                seq: up_to,
                bytes: plain.len(),
            });
        }
        plain.reserve_exact(envelope::TAG_LEN);
        let env = envelope::try_seal_owned(&self.keys, StreamKind::Changes, up_to, plain)
            .map_err(SessionError::BadEnvelope)?;
        self.changes_q.push_back(Transmit {
            channel: Channel::Changes,
            message: Message::Changes(env),
        });
        self.sent_up_to = up_to;
        Ok(())
    }

    fn max_batch_changes(&self) -> usize {
        self.config
            .max_batch_changes
            .clamp(1, MAX_CHANGES_PER_BATCH)
    }

    fn pump_send(&mut self) {
        if self.state != SessionState::Established
            || self.loading.is_some()
            || self.sent_up_to >= self.local_head
        {
            return;
        }
        let unacked = self.sent_up_to.saturating_sub(self.peer_confirmed);
        if unacked >= self.config.max_unacked_changes {
            return;
        }
        let room = self.config.max_unacked_changes - unacked;
        let limit = usize::try_from(room)
            .unwrap_or(usize::MAX)
            .min(self.max_batch_changes())
            .max(1);
        self.loading = Some(self.sent_up_to);
        self.effects.push_back(Effect::LoadChanges {
            after: self.sent_up_to,
            limit,
        });
    }

    /// The host has durably applied the peer's changes up to `up_to_seq`
    /// (with the cursor). The ack goes out at the next
    /// [`Session::poll_transmit`]; several calls in a row give one ack.
    pub fn applied(&mut self, up_to_seq: u64) -> Result<(), SessionError> {
        if self.state == SessionState::Closed {
            return Ok(());
        }
        if up_to_seq > self.guard.last() {
            return Err(SessionError::Misuse(
                "applied: beyond what the session handed out",
            ));
        }
        self.durable = self.durable.max(up_to_seq);
        Ok(())
    }

    /// Asks the peer for blob `hash` from `offset` (0, or the length of the
    /// partial temporary file to resume). Chunks arrive as
    /// [`Effect::WriteBlobChunk`], then [`Effect::BlobComplete`] or
    /// [`Effect::BlobUnavailable`].
    pub fn request_blob(
        &mut self,
        hash: [u8; 32],
        offset: u64,
        object: ObjectId,
    ) -> Result<(), SessionError> {
        if self.state != SessionState::Established {
            return Err(SessionError::Misuse("request_blob before establishment"));
        }
        if !self.blobs_negotiated() {
            return Err(SessionError::Misuse(
                "request_blob: the peer does not support blobs",
            ));
        }
        if self.receiving_blobs.contains_key(&hash) {
            return Err(SessionError::Misuse("request_blob: already requested"));
        }
        if self.receiving_blobs.len() >= self.config.max_blob_transfers {
            return Err(SessionError::Misuse("request_blob: too many transfers"));
        }
        self.receiving_blobs.insert(
            hash,
            Incoming {
                next_offset: offset,
                total_len: None,
            },
        );
        self.push_control(Message::BlobRequest(BlobRequest {
            hash,
            offset,
            object,
        }));
        Ok(())
    }

    /// Content of blob `hash` at `offset` (continuing where the previous
    /// call ended, starting at the requested offset), for an
    /// [`Effect::ReadBlob`]. Data longer than [`MAX_BLOB_CHUNK`] is split.
    /// When the data reaches `total_len`, [`Message::BlobDone`] follows; a
    /// request at `total_len` is answered with empty `data`.
    pub fn blob_chunk_ready(
        &mut self,
        hash: [u8; 32],
        offset: u64,
        total_len: u64,
        data: Vec<u8>,
    ) -> Result<(), SessionError> {
        if self.state == SessionState::Closed {
            return Ok(());
        }
        let t = self
            .sending_blobs
            .get(&hash)
            .ok_or(SessionError::Misuse("blob_chunk_ready: no such transfer"))?;
        if offset != t.next_offset {
            return Err(SessionError::Misuse(
                "blob_chunk_ready: offset is not where the previous chunk ended",
            ));
        }
        if t.total_len.is_some_and(|l| l != total_len) {
            return Err(SessionError::Misuse("blob_chunk_ready: total_len changed"));
        }
        let end = offset.checked_add(data.len() as u64);
        if !matches!(end, Some(end) if end <= total_len) {
            return Err(SessionError::Misuse(
                "blob_chunk_ready: data goes beyond total_len",
            ));
        }
        if data.is_empty() && offset != total_len {
            return Err(SessionError::Misuse("blob_chunk_ready: empty chunk"));
        }
        let mut pos = offset;
        // The common case, data of at most one chunk, moves the data into the
        // chunk instead of copying it; larger data is split.
        let pieces: Vec<Vec<u8>> = if data.is_empty() {
            // A request at the end: only BlobDone is sent.
            Vec::new()
        } else if data.len() <= MAX_BLOB_CHUNK {
            vec![data]
        } else {
            data.chunks(MAX_BLOB_CHUNK).map(<[u8]>::to_vec).collect()
        };
        for piece in pieces {
            let end = pos + piece.len() as u64;
            let chunk = BlobChunk {
                hash,
                offset: pos,
                total_len,
                data: piece,
            };
            match self.seal_blob_chunk(&chunk, end) {
                Ok(env) => self.blob_q.push_back(Transmit {
                    channel: Channel::Blob(hash),
                    message: Message::BlobChunk(env),
                }),
                Err(e) => {
                    self.fail(e.clone());
                    return Err(e);
                }
            }
            pos = end;
        }
        if pos == total_len {
            self.sending_blobs.remove(&hash);
            self.blob_q.push_back(Transmit {
                channel: Channel::Blob(hash),
                message: Message::BlobDone(BlobDone { hash, total_len }),
            });
        } else if let Some(t) = self.sending_blobs.get_mut(&hash) {
            t.next_offset = pos;
            t.total_len = Some(total_len);
        }
        Ok(())
    }

    /// Encodes `chunk` into a buffer with room for the tag and seals it in
    /// place: one copy of the data (the encoding) instead of three.
    fn seal_blob_chunk(&self, chunk: &BlobChunk, end: u64) -> Result<SealedEnvelope, SessionError> {
        let encode_err = |source| SessionError::Encode {
            what: "blob chunk",
            source,
        };
        // Hash, two integers and a length prefix: under 64 bytes.
        let mut bytes = Vec::with_capacity(chunk.data.len() + 64 + envelope::TAG_LEN);
        codec::encode_into(chunk, &mut bytes).map_err(encode_err)?;
        envelope::try_seal_owned(&self.keys, StreamKind::Blob, end, bytes)
            .map_err(SessionError::BadEnvelope)
    }

    /// Sends a sharing-governance control message on the control stream.
    /// Only once established; before that (or after a close) the frame is
    /// handed back so the host can send it on a later session.
    pub fn send_share(
        &mut self,
        frame: crate::share::ShareFrame,
    ) -> Result<(), crate::share::ShareFrame> {
        if self.state != SessionState::Established {
            return Err(frame);
        }
        self.push_control(Message::Share(frame));
        Ok(())
    }

    /// Refuses an [`Effect::ReadBlob`] (unknown blob, or not shared with
    /// this peer), or abandons a transfer being served. The peer gets
    /// [`Effect::BlobUnavailable`]; the session stays up.
    pub fn blob_unavailable(&mut self, hash: [u8; 32]) -> Result<(), SessionError> {
        if self.state == SessionState::Closed {
            return Ok(());
        }
        if self.sending_blobs.remove(&hash).is_none() {
            return Err(SessionError::Misuse("blob_unavailable: no such transfer"));
        }
        // Drop chunks not yet sent so the peer never sees data after the refusal.
        self.blob_q.retain(|t| t.channel != Channel::Blob(hash));
        self.push_control(Message::Error(ErrorMessage {
            code: ErrorCode::BlobUnavailable,
            message: hex(&hash),
        }));
        Ok(())
    }

    /// Closes the session from our side (shutdown, partner revoked). With a
    /// `reason`, the peer is told with [`Message::Error`]. Emits
    /// [`Effect::Closed`] with no error.
    pub fn close(&mut self, reason: Option<ErrorMessage>) {
        if self.state == SessionState::Closed {
            return;
        }
        self.state = SessionState::Closed;
        self.clear_output();
        if let Some(e) = reason {
            // Re-cut so that a long reason cannot make the frame invalid.
            self.push_control(Message::Error(ErrorMessage::new(e.code, e.message)));
        }
        self.effects.push_back(Effect::Closed { error: None });
    }

    fn fail(&mut self, error: SessionError) {
        if self.state == SessionState::Closed {
            return;
        }
        self.state = SessionState::Closed;
        self.clear_output();
        if let Some(code) = error.wire_code() {
            self.push_control(Message::Error(ErrorMessage::new(code, error.to_string())));
        }
        self.effects
            .push_back(Effect::Closed { error: Some(error) });
    }

    fn clear_output(&mut self) {
        self.control_q.clear();
        self.changes_q.clear();
        self.blob_q.clear();
        self.loading = None;
    }

    fn push_control(&mut self, message: Message) {
        self.control_q.push_back(Transmit {
            channel: Channel::Control,
            message,
        });
    }
}
