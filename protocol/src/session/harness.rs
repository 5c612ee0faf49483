//! Two fake hosts around two sessions, with an in-memory link between them,
//! and the property test that drives them through writes, cuts, crashes
//! and arbitrary delivery orders.
//!
//! The hosts are deliberately literal about durability: an `Apply` is only
//! durable (changes counted, cursor moved) when the test says so, and a cut
//! may make a prefix of the pending applies durable and lose the rest,
//! which is what a crash between "received" and "committed" looks like.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::clock::Timestamp;
use crate::identity::DirectionKey;
use crate::model::{Change, FieldKey, FieldState, Kind, ObjectId, Value, Version};

pub(super) const ORG_A: OrgId = OrgId([0xaa; 32]);
pub(super) const ORG_B: OrgId = OrgId([0xbb; 32]);
pub(super) const EPOCH: u32 = 3;

/// Pair keys of `local` with `peer`; the direction keys are derived from
/// the (from, to) pair so that A's `send` is B's `recv`.
pub(super) fn keys(local: OrgId, peer: OrgId) -> PairKeys {
    let k = |from: OrgId, to: OrgId| {
        let mut input = from.0.to_vec();
        input.extend_from_slice(&to.0);
        DirectionKey::from_bytes(*blake3::hash(&input).as_bytes())
    };
    PairKeys {
        epoch: EPOCH,
        local,
        peer,
        send: k(local, peer),
        recv: k(peer, local),
    }
}

/// A change of the log of `writer` at `seq`, with content derived from both
/// so that a misrouted or corrupted change is noticed.
pub(super) fn change(seq: u64, writer: InstanceId, payload: usize) -> SequencedChange {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&writer.0.to_be_bytes());
    id[8..].copy_from_slice(&seq.to_be_bytes());
    let mut fields = BTreeMap::new();
    fields.insert(
        FieldKey::Std("name".into()),
        FieldState {
            version: Version {
                hlc: Timestamp::new(1_700_000_000_000 + seq, 0),
                instance: writer,
            },
            value: Some(Value::Text(format!(
                "{writer}-{seq}-{}",
                "x".repeat(payload)
            ))),
        },
    );
    SequencedChange {
        seq,
        change: Change {
            id: ObjectId(id),
            kind: Kind::Contact,
            fields,
            deleted: None,
        },
    }
}

/// One side: a log, a store of what it applied from the peer, durable
/// cursors, blob storage and (while connected) a session.
pub(super) struct Host {
    pub org: OrgId,
    pub peer_org: OrgId,
    pub instance: InstanceId,
    pub config: SessionConfig,
    pub log: Vec<SequencedChange>,
    /// Durable: how many times each of the peer's sequences was applied.
    pub applied_counts: BTreeMap<u64, u32>,
    /// Durable: the peer's changes as applied, by sequence.
    pub store: BTreeMap<u64, Change>,
    /// Durable cursor: the peer's log applied up to here.
    pub applied_cursor: u64,
    /// Durable cursor: the peer acked our log up to here.
    pub acked_by_peer: u64,
    /// Apply effects received but not yet durable.
    pub pending_applies: VecDeque<(Vec<SequencedChange>, u64)>,
    /// An unanswered LoadChanges.
    pub pending_load: Option<(u64, usize)>,
    /// Finished, verified blobs.
    pub blobs: HashMap<[u8; 32], Vec<u8>>,
    /// Temporary files of blobs being received (survive disconnects).
    pub partial: HashMap<[u8; 32], Vec<u8>>,
    /// Blob chunk size used when serving.
    pub serve_chunk: usize,
    /// Blobs the peer said it will not send.
    pub unavailable: Vec<[u8; 32]>,
    /// Blob completions whose hash did not verify.
    pub corrupt: Vec<[u8; 32]>,
    /// Answer loads, applies and blob reads as soon as they are asked.
    pub eager: bool,
    pub session: Option<Session>,
    pub closes: Vec<Option<SessionError>>,
    pub established: Vec<Effect>,
    pub peer_acks: Vec<u64>,
}

impl Host {
    pub fn new(org: OrgId, peer_org: OrgId, instance: u64, config: SessionConfig) -> Host {
        Host {
            org,
            peer_org,
            instance: InstanceId(instance),
            config,
            log: Vec::new(),
            applied_counts: BTreeMap::new(),
            store: BTreeMap::new(),
            applied_cursor: 0,
            acked_by_peer: 0,
            pending_applies: VecDeque::new(),
            pending_load: None,
            blobs: HashMap::new(),
            partial: HashMap::new(),
            serve_chunk: 1000,
            unavailable: Vec::new(),
            corrupt: Vec::new(),
            eager: true,
            session: None,
            closes: Vec::new(),
            established: Vec::new(),
            peer_acks: Vec::new(),
        }
    }

    pub fn cursors(&self) -> Cursors {
        Cursors {
            applied_from_peer: self.applied_cursor,
            acked_by_peer: self.acked_by_peer,
            local_log_head: self.log.len() as u64,
        }
    }

    pub fn connect(&mut self, now: Instant) {
        assert!(
            self.pending_applies.is_empty(),
            "the recipe: finish or abandon applies before reconnecting"
        );
        self.pending_load = None;
        self.session = Some(Session::new(
            self.config.clone(),
            keys(self.org, self.peer_org),
            self.instance,
            self.cursors(),
            now,
        ));
    }

    pub fn session(&mut self) -> &mut Session {
        self.session.as_mut().expect("test host has a session")
    }

    /// Commits a new change to the local log and tells the session.
    pub fn write(&mut self, payload: usize) {
        let seq = self.log.len() as u64 + 1;
        self.log.push(change(seq, self.instance, payload));
        if let Some(s) = self.session.as_mut() {
            s.local_log_advanced(seq);
        }
    }

    /// Performs every queued effect (and, when eager, the work they ask for).
    pub fn process_effects(&mut self) {
        loop {
            let Some(effect) = self.session.as_mut().and_then(|s| s.poll_effect()) else {
                return;
            };
            match effect {
                Effect::Established { .. } => self.established.push(effect),
                Effect::Share(_) | Effect::LogJumped { .. } => {}
                Effect::LoadChanges { after, limit } => {
                    assert!(self.pending_load.is_none(), "one load at a time");
                    self.pending_load = Some((after, limit));
                    if self.eager {
                        self.serve_load();
                    }
                }
                Effect::Apply { changes, up_to_seq } => {
                    self.pending_applies.push_back((changes, up_to_seq));
                    if self.eager {
                        self.make_durable();
                    }
                }
                Effect::PeerAcked { up_to_seq } => {
                    assert!(up_to_seq > self.acked_by_peer || self.acked_by_peer == 0);
                    self.acked_by_peer = self.acked_by_peer.max(up_to_seq);
                    self.peer_acks.push(up_to_seq);
                }
                Effect::ReadBlob { hash, offset, .. } => self.serve_blob(hash, offset),
                Effect::WriteBlobChunk {
                    hash, offset, data, ..
                } => {
                    let file = self.partial.entry(hash).or_default();
                    assert_eq!(file.len() as u64, offset, "chunks append without gaps");
                    file.extend_from_slice(&data);
                }
                Effect::BlobComplete { hash, total_len } => {
                    let file = self.partial.remove(&hash).unwrap_or_default();
                    if file.len() as u64 == total_len && *blake3::hash(&file).as_bytes() == hash {
                        self.blobs.insert(hash, file);
                    } else {
                        self.corrupt.push(hash);
                    }
                }
                Effect::BlobUnavailable { hash } => self.unavailable.push(hash),
                Effect::Closed { error } => self.closes.push(error),
            }
        }
    }

    /// Answers the pending LoadChanges from the log.
    pub fn serve_load(&mut self) {
        let Some((after, limit)) = self.pending_load.take() else {
            return;
        };
        let start = after as usize;
        let end = (start + limit).min(self.log.len());
        let changes: Vec<SequencedChange> = self.log[start.min(end)..end].to_vec();
        let up_to = changes.last().map_or(after, |c| c.seq);
        let head = self.log.len() as u64;
        if let Some(s) = self.session.as_mut() {
            s.load_result(changes, up_to, head)
                .expect("host answers loads correctly");
        }
    }

    /// Makes the oldest pending Apply durable: changes and cursor together.
    pub fn make_durable(&mut self) -> bool {
        let Some((changes, up_to)) = self.pending_applies.pop_front() else {
            return false;
        };
        self.commit(changes, up_to);
        if let Some(s) = self.session.as_mut() {
            s.applied(up_to)
                .expect("applied within what was handed out");
        }
        true
    }

    fn commit(&mut self, changes: Vec<SequencedChange>, up_to: u64) {
        assert!(up_to > self.applied_cursor, "cursor only moves forward");
        for c in changes {
            assert!(c.seq > self.applied_cursor && c.seq <= up_to);
            let n = self.applied_counts.entry(c.seq).or_insert(0);
            *n += 1;
            assert_eq!(*n, 1, "change {} applied twice", c.seq);
            self.store.insert(c.seq, c.change);
        }
        self.applied_cursor = up_to;
    }

    /// The connection is gone: the first `keep` pending applies still become
    /// durable, the rest are lost (crash before commit).
    pub fn drop_session(&mut self, keep: usize) {
        self.session = None;
        self.pending_load = None;
        let pending = std::mem::take(&mut self.pending_applies);
        for (i, (changes, up_to)) in pending.into_iter().enumerate() {
            if i < keep {
                self.commit(changes, up_to);
            }
        }
    }

    fn serve_blob(&mut self, hash: [u8; 32], offset: u64) {
        let Some(content) = self.blobs.get(&hash).cloned() else {
            self.session()
                .blob_unavailable(hash)
                .expect("transfer exists");
            return;
        };
        let total = content.len() as u64;
        let mut pos = offset.min(total) as usize;
        if pos == content.len() {
            self.session()
                .blob_chunk_ready(hash, total, total, Vec::new())
                .expect("valid chunk");
        }
        while pos < content.len() {
            let end = (pos + self.serve_chunk).min(content.len());
            self.session()
                .blob_chunk_ready(hash, pos as u64, total, content[pos..end].to_vec())
                .expect("valid chunk");
            pos = end;
        }
    }
}

/// The messages in flight in one direction: one ordered queue per stream.
#[derive(Default)]
pub(super) struct Link {
    pub queues: Vec<(Channel, VecDeque<Message>)>,
}

impl Link {
    fn push(&mut self, t: Transmit) {
        // Through the real frame codec, as on the wire.
        let frame = codec::encode_frame(&t.message).expect("frame encodes");
        let (msg, used) = codec::decode_frame(&frame)
            .expect("frame decodes")
            .expect("frame is complete");
        assert_eq!(used, frame.len());
        match self.queues.iter_mut().find(|(c, _)| *c == t.channel) {
            Some((_, q)) => q.push_back(msg),
            None => self.queues.push((t.channel, VecDeque::from([msg]))),
        }
    }

    fn pop(&mut self, pick: usize) -> Option<Message> {
        self.queues.retain(|(_, q)| !q.is_empty());
        if self.queues.is_empty() {
            return None;
        }
        let i = pick % self.queues.len();
        self.queues[i].1.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(|(_, q)| q.is_empty())
    }
}

/// Two hosts and the link between them.
pub(super) struct Pair {
    pub a: Host,
    pub b: Host,
    /// `links[0]`: A to B; `links[1]`: B to A.
    pub links: [Link; 2],
    pub now: Instant,
}

impl Pair {
    pub fn new(config: SessionConfig) -> Pair {
        Pair {
            a: Host::new(ORG_A, ORG_B, 0xa1, config.clone()),
            b: Host::new(ORG_B, ORG_A, 0xb2, config),
            links: [Link::default(), Link::default()],
            now: Instant::now(),
        }
    }

    pub fn connected(&self) -> bool {
        self.a.session.is_some() && self.b.session.is_some()
    }

    pub fn connect(&mut self) {
        self.a.connect(self.now);
        self.b.connect(self.now);
        self.pump();
    }

    /// Drops both sessions and everything in flight.
    pub fn cut(&mut self, keep_a: usize, keep_b: usize) {
        self.a.drop_session(keep_a);
        self.b.drop_session(keep_b);
        self.links = [Link::default(), Link::default()];
    }

    /// Moves every transmit onto the link and performs every effect.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            for (host, link) in [(&mut self.a, 0), (&mut self.b, 1)] {
                host.process_effects();
                while let Some(t) = host.session.as_mut().and_then(|s| s.poll_transmit()) {
                    self.links[link].push(t);
                    moved = true;
                }
                host.process_effects();
            }
            if !moved {
                return;
            }
        }
    }

    /// Delivers one message in direction `dir` (0: A to B), picking the
    /// stream with `pick`. Returns the session's verdict, or `None` when
    /// nothing was in flight.
    pub fn deliver(&mut self, dir: usize, pick: usize) -> Option<Result<(), SessionError>> {
        let msg = self.links[dir].pop(pick)?;
        let to = if dir == 0 { &mut self.b } else { &mut self.a };
        let now = self.now;
        let r = to.session.as_mut().map(|s| s.handle_message(msg, now));
        self.pump();
        r
    }

    /// Delivers everything in flight, both ways, until the link is quiet.
    pub fn deliver_all(&mut self) {
        for _ in 0..1_000_000 {
            self.pump();
            if self.deliver(0, 0).is_none() && self.deliver(1, 0).is_none() {
                return;
            }
        }
        panic!("the link never went quiet");
    }

    /// Runs to quiescence: delivers, loads and commits until nothing moves.
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            self.deliver_all();
            let mut busy = false;
            for host in [&mut self.a, &mut self.b] {
                if host.pending_load.is_some() {
                    host.serve_load();
                    busy = true;
                }
                while host.make_durable() {
                    busy = true;
                }
            }
            self.pump();
            if !busy && self.links[0].is_empty() && self.links[1].is_empty() {
                return;
            }
        }
        panic!("the sessions never settled");
    }

    pub fn tick(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        for host in [&mut self.a, &mut self.b] {
            if let Some(s) = host.session.as_mut() {
                if s.poll_timeout().is_some_and(|t| t <= now) {
                    s.handle_timeout(now);
                }
            }
        }
        self.pump();
    }

    /// True when either session closed (the connection would be torn down).
    pub fn any_closed(&self) -> bool {
        [&self.a, &self.b]
            .iter()
            .any(|h| h.session.as_ref().is_some_and(|s| s.is_closed()))
    }
}

// ---------------------------------------------------------------------
// The property test
// ---------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Write { side: usize, payload: usize },
    Deliver { dir: usize, pick: usize },
    Durable { side: usize },
    Load { side: usize },
    Cut { keep_a: usize, keep_b: usize },
    Connect,
    Tick { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, prop_oneof![3 => Just(0usize), 1 => 0..400usize])
            .prop_map(|(side, payload)| Op::Write { side, payload }),
        8 => (0..2usize, 0..4usize).prop_map(|(dir, pick)| Op::Deliver { dir, pick }),
        3 => (0..2usize).prop_map(|side| Op::Durable { side }),
        3 => (0..2usize).prop_map(|side| Op::Load { side }),
        1 => (0..4usize, 0..4usize).prop_map(|(keep_a, keep_b)| Op::Cut { keep_a, keep_b }),
        1 => Just(Op::Connect),
        1 => (0..25_000u64).prop_map(|ms| Op::Tick { ms }),
    ]
}

fn config() -> impl Strategy<Value = SessionConfig> {
    (
        1..6usize,
        1..12u64,
        prop_oneof![Just(1usize << 20), 200..2000usize],
    )
        .prop_map(
            |(max_batch_changes, max_unacked_changes, max_batch_bytes)| SessionConfig {
                max_batch_changes,
                max_unacked_changes,
                max_batch_bytes,
                ..SessionConfig::default()
            },
        )
}

fn run(config: SessionConfig, ops: Vec<Op>) {
    let mut p = Pair::new(config);
    // Some hosts answer at once, others only when the ops say so.
    p.a.eager = false;
    p.b.eager = false;
    p.connect();
    for op in ops {
        match op {
            Op::Write { side, payload } => {
                let h = if side == 0 { &mut p.a } else { &mut p.b };
                h.write(payload);
                p.pump();
            }
            Op::Deliver { dir, pick } => {
                if let Some(r) = p.deliver(dir, pick) {
                    r.expect("honest peers never violate the protocol");
                }
            }
            Op::Durable { side } => {
                let h = if side == 0 { &mut p.a } else { &mut p.b };
                h.make_durable();
                p.pump();
            }
            Op::Load { side } => {
                let h = if side == 0 { &mut p.a } else { &mut p.b };
                h.serve_load();
                p.pump();
            }
            Op::Cut { keep_a, keep_b } => p.cut(keep_a, keep_b),
            Op::Connect => {
                if !p.connected() {
                    p.connect();
                }
            }
            Op::Tick { ms } => p.tick(Duration::from_millis(ms)),
        }
        if p.any_closed() {
            // A timeout is the only legitimate failure between honest peers.
            for h in [&p.a, &p.b] {
                for e in h.closes.iter().flatten() {
                    assert!(
                        matches!(e, SessionError::Timeout { .. }),
                        "unexpected session failure: {e}"
                    );
                }
            }
            p.cut(usize::MAX, usize::MAX);
        }
    }
    // Heal: reconnect and run to quiescence.
    if !p.connected() {
        p.connect();
    }
    p.settle();
    assert!(p.a.session().is_established() && p.b.session().is_established());
    for (me, peer) in [(&p.a, &p.b), (&p.b, &p.a)] {
        let head = peer.log.len() as u64;
        assert_eq!(me.applied_cursor, head, "cursor reaches the peer's head");
        assert_eq!(me.applied_counts.len() as u64, head, "every change applied");
        assert!(me.applied_counts.values().all(|&n| n == 1), "exactly once");
        for c in &peer.log {
            assert_eq!(
                me.store.get(&c.seq),
                Some(&c.change),
                "content of {}",
                c.seq
            );
        }
        assert_eq!(peer.acked_by_peer, me.applied_cursor, "acked == applied");
        for e in me.closes.iter().flatten() {
            assert!(matches!(e, SessionError::Timeout { .. }), "failure: {e}");
        }
    }
    let sa = p.a.session.as_ref().map(Session::stats).expect("connected");
    assert_eq!(sa.unacked, 0);
    assert_eq!(sa.outgoing_lag, 0);
    assert_eq!(sa.incoming_lag, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the writes, cuts, crashes and delivery orders, after healing
    /// each side has applied every change of the other exactly once and the
    /// cursors agree.
    #[test]
    fn converges_exactly_once_across_cuts(
        config in config(),
        ops in proptest::collection::vec(op(), 0..160),
    ) {
        run(config, ops);
    }
}
