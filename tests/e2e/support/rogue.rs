//! A hostile peer for end-to-end tests: a real paired identity (an instance
//! directory made by `orgsync-keytool init`, paired with the daemon under
//! test), real QUIC with the pinned certificates of the daemon's own
//! [`Transport`], the real session [`Hello`](orgsync_protocol::wire::Hello)
//! from [`Session`], and then whatever crafted frames a test wants to send:
//! envelopes sealed for another organisation, tampered, replayed or of an
//! old key epoch, oversized or garbage frames, floods of streams.
//!
//! Everything is reused from the daemon and protocol crates (transport,
//! frame reader/writer, session, envelope sealing); only the misbehaviour
//! is written here. Tests are synchronous, so the rogue owns a small tokio
//! runtime and its methods block.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orgsync_daemon::transport::{
    FrameReader, FrameWriter, LocalIdentity, PeerConnection, Transport, TransportError,
    TransportOptions, Trust, TrustedPeer,
};
use orgsync_keytool::{Identity, InstanceDir, Partner};
use orgsync_protocol::clock::Timestamp;
use orgsync_protocol::codec;
use orgsync_protocol::envelope::{self, SealedEnvelope, StreamKind};
use orgsync_protocol::identity::PairKeys;
use orgsync_protocol::model::{
    Change, FieldKey, FieldState, Kind, ObjectId, SequencedChange, Value, Version,
};
use orgsync_protocol::session::{Cursors, Session, SessionConfig};
use orgsync_protocol::share::{ShareBody, ShareFrame};
use orgsync_protocol::wire::{ChangeBatch, Channel, Message, FEATURE_MIRROR};

/// How long the rogue waits for the daemon at each step.
const STEP: Duration = Duration::from_secs(30);

/// A paired identity that misbehaves. Built from an instance directory
/// whose partners.toml holds the daemon under test.
pub struct Rogue {
    rt: tokio::runtime::Runtime,
    transport: Transport,
    identity: Identity,
    target: Partner,
    addr: SocketAddr,
}

/// How a connection ended, as the rogue saw it.
#[derive(Debug)]
pub struct Closed {
    /// quinn's reason (for an application close: the code and reason).
    pub reason: String,
}

/// An established session with the daemon under test, on which the test
/// sends crafted input.
pub struct RogueConn<'a> {
    rogue: &'a Rogue,
    pc: PeerConnection,
    session: Session,
    control: FrameWriter,
    keys: PairKeys,
    /// Every message the target sent on the control stream after the
    /// handshake (acks, pings, blob requests, governance frames).
    received: Arc<Mutex<Vec<Message>>>,
}

/// A flood of frames written by a background task of the rogue's runtime
/// (so the test can watch the target meanwhile); stops when dropped.
pub struct Flood {
    sent: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Flood {
    /// Frames written so far (accepted by QUIC: the target's flow control
    /// holds the writer back once its windows are full).
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Whether the writer has stopped (all written, or the stream failed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Rogue {
    /// Loads the identity of `dir` and its partner entry for `target_name`
    /// (which must listen at `target_addr`), and binds a QUIC endpoint on an
    /// ephemeral loopback port (not the instance's configured one, so the
    /// daemon's own dials to the rogue fail and never replace its
    /// connection).
    pub fn new(dir: &Path, target_name: &str, target_addr: SocketAddr) -> Rogue {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("rogue runtime");
        let inst = InstanceDir::new(dir);
        let identity = inst.load_identity().expect("rogue identity");
        let target = inst
            .load_partners()
            .expect("rogue partners")
            .into_iter()
            .find(|p| p.name == target_name)
            .unwrap_or_else(|| panic!("the rogue is not paired with {target_name}"));
        let tls = LocalIdentity {
            cert_der: identity.cert_der.clone(),
            key_der: std::sync::Arc::new(identity.key_der.clone()),
        };
        let trust = Trust::new(vec![TrustedPeer {
            org: target.org_id,
            name: target.name.clone(),
            fingerprint: target.cert_fingerprint,
            addresses: vec![target_addr.to_string()],
            revoked: false,
        }]);
        let opts =
            TransportOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), tls, identity.org_id);
        let transport = {
            let _guard = rt.enter();
            Transport::bind(opts, trust).expect("rogue endpoint")
        };
        Rogue {
            rt,
            transport,
            identity,
            target,
            addr: target_addr,
        }
    }

    /// Pair keys with the target for pair epoch `epoch` (the current one is
    /// [`Rogue::current_epoch`]).
    pub fn keys(&self, epoch: u32) -> PairKeys {
        self.identity
            .pair_keys(&self.target, epoch)
            .expect("rogue pair keys")
    }

    /// The pair epoch an honest instance would use now.
    pub fn current_epoch(&self) -> u32 {
        self.identity.pair_epoch(&self.target)
    }

    /// Keys that seal for `other` instead of the target: what a partner of
    /// both would use to send the target something meant for someone else.
    pub fn keys_for(&self, other: &Partner) -> PairKeys {
        let epoch = self.identity.pair_epoch(other);
        self.identity
            .pair_keys(other, epoch)
            .expect("pair keys with the other partner")
    }

    /// The rogue's partner entry named `name`.
    pub fn partner(&self, dir: &Path, name: &str) -> Partner {
        InstanceDir::new(dir)
            .load_partners()
            .expect("rogue partners")
            .into_iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("the rogue has no partner {name}"))
    }

    /// Dials the target with the pinned certificates (the TLS handshake only).
    pub fn dial(&self) -> Result<PeerConnection, TransportError> {
        self.rt
            .block_on(self.transport.connect(self.target.org_id, self.addr))
    }

    /// Dials and expects to be refused: in TLS 1.3 the client may finish
    /// its side of the handshake before the server checks the client's
    /// certificate, so a refusal is either a failed dial or a connection
    /// the server closes at once without opening a stream. Returns the
    /// reason, or panics if the connection stays usable for `timeout`.
    pub fn expect_refused(&self, timeout: Duration) -> String {
        let pc = match self.dial() {
            Err(e) => return e.to_string(),
            Ok(pc) => pc,
        };
        let conn = pc.connection.clone();
        let outcome = self.rt.block_on(async move {
            tokio::select! {
                reason = conn.closed() => Ok(reason.to_string()),
                // Anything the server sends would come on a stream.
                s = conn.accept_uni() => match s {
                    Err(closed) => Ok(closed.to_string()),
                    Ok(_) => Err("the server opened a stream".to_string()),
                },
                _ = tokio::time::sleep(timeout) => Err(format!("the connection stayed open for {timeout:?}")),
            }
        });
        outcome.unwrap_or_else(|e| panic!("a refused peer was not refused: {e}"))
    }

    /// Dials and performs the real session handshake with the current
    /// epoch: the rogue is an established partner when this returns.
    pub fn connect(&self) -> RogueConn<'_> {
        self.connect_with(self.current_epoch())
    }

    /// Dials and performs the session handshake with the pair keys of
    /// `epoch` (which goes into the Hello).
    pub fn connect_with(&self, epoch: u32) -> RogueConn<'_> {
        self.connect_offering(epoch, SessionConfig::default().features | FEATURE_MIRROR)
    }

    /// [`Rogue::connect`] without offering to be the target's mirror: the
    /// target then treats the rogue as an ordinary partner (its new
    /// records wait in the inbox for an admin).
    pub fn connect_as_partner(&self) -> RogueConn<'_> {
        self.connect_offering(self.current_epoch(), SessionConfig::default().features)
    }

    /// The handshake of [`Rogue::connect_with`], offering `features`.
    fn connect_offering(&self, epoch: u32, features: u64) -> RogueConn<'_> {
        self.handshake(epoch, features, 0)
            .unwrap_or_else(|e| panic!("the rogue's session handshake failed: {e}"))
    }

    /// Dials and tries the session handshake claiming to have applied the
    /// target's log up to `applied` (a lie when the target's log is
    /// shorter): the established session, or why the target refused it.
    pub fn connect_claiming(&self, applied: u64) -> Result<RogueConn<'_>, String> {
        self.handshake(
            self.current_epoch(),
            SessionConfig::default().features | FEATURE_MIRROR,
            applied,
        )
    }

    /// The session handshake with the pair keys of `epoch`, offering
    /// `features` and claiming `applied` of the target's log.
    fn handshake(&self, epoch: u32, features: u64, applied: u64) -> Result<RogueConn<'_>, String> {
        // PairKeys is not Clone (secret): derive one copy for the session
        // and one for sealing crafted envelopes.
        let keys = self.keys(epoch);
        let pc = self.dial().map_err(|e| format!("TLS handshake: {e}"))?;
        let session = Session::new(
            SessionConfig {
                // By default offers to be the target's mirror, like a test
                // rig daemon (`mirror_all_partners`); a target that does
                // not offer it back enables nothing.
                features,
                ..SessionConfig::default()
            },
            self.keys(epoch),
            self.identity.instance_id,
            // A long log of its own, so the target's cursor for the rogue
            // is never "ahead". With `applied` 0 it claims nothing applied
            // from the target (which resends its log; the rogue ignores it).
            Cursors {
                local_log_head: 1 << 40,
                applied_from_peer: applied,
                ..Cursors::default()
            },
            Instant::now(),
        );
        let (send, recv) = self
            .rt
            .block_on(pc.connection.open_bi())
            .map_err(|e| format!("control stream: {e}"))?;
        let mut conn = RogueConn {
            rogue: self,
            pc,
            session,
            control: FrameWriter::new(send),
            keys,
            received: Arc::default(),
        };
        conn.flush_control();
        // Read the target's Hello (and whatever follows) until established.
        let mut reader = FrameReader::new(recv);
        let deadline = Instant::now() + STEP;
        let mut last_error = None;
        while !conn.session.is_established() {
            if conn.session.is_closed() {
                return Err(format!(
                    "the session closed in the handshake: {last_error:?}"
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match self
                .rt
                .block_on(async { tokio::time::timeout(left, reader.next()).await })
            {
                Err(_) => return Err(format!("no Hello within {STEP:?}")),
                Ok(Err(e)) => return Err(format!("reading the control stream: {e}")),
                Ok(Ok(None)) => {
                    return Err(format!(
                        "the control stream ended before the Hello (last error: {last_error:?})"
                    ))
                }
                Ok(Ok(Some(msg))) => msg,
            };
            // A Hello from the target: the session checks it like a daemon's.
            if let Err(e) = conn.session.handle_message(msg, Instant::now()) {
                last_error = Some(e);
            }
        }
        // Keep draining the control stream (pings, acks, errors) so the
        // target is never flow-controlled by the rogue; kept for the test.
        let received = conn.received.clone();
        self.rt.spawn(async move {
            while let Ok(Some(msg)) = reader.next().await {
                received
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(msg);
            }
        });
        Ok(conn)
    }
}

impl RogueConn<'_> {
    /// Writes what the session queued for the control stream (its Hello).
    fn flush_control(&mut self) {
        while let Some(t) = self.session.poll_transmit() {
            if t.channel == Channel::Control {
                let msg = t.message;
                self.rogue
                    .rt
                    .block_on(self.control.write(&msg))
                    .expect("writing to the control stream");
            }
        }
    }

    /// Sends a governance frame (`id`, `body`) on the control stream, as a
    /// daemon does.
    pub fn send_share(&mut self, id: u64, body: ShareBody) {
        let msg = Message::Share(ShareFrame { id, body });
        // The target may already have closed the connection.
        let _ = self.rogue.rt.block_on(self.control.write(&msg));
    }

    /// The keys of this session.
    pub fn keys(&self) -> &PairKeys {
        &self.keys
    }

    /// Sends `frames` (raw bytes, framed or not) on a new uni stream and
    /// finishes it.
    pub fn send_uni_raw(&self, bytes: &[u8]) {
        let conn = self.pc.connection.clone();
        let bytes = bytes.to_vec();
        let r = self.rogue.rt.block_on(async move {
            let send = conn.open_uni().await?;
            let mut w = FrameWriter::new(send);
            w.write_raw(&bytes).await?;
            w.finish();
            Ok::<_, TransportError>(())
        });
        // The target may already have closed the connection: that is what
        // most scenarios wait for next, so a failed write is not an error.
        let _ = r;
    }

    /// Sends `messages` as frames on one new uni stream (the way a daemon
    /// sends its change batches) and finishes it.
    pub fn send_uni(&self, messages: &[Message]) {
        let mut bytes = Vec::new();
        for m in messages {
            codec::encode_frame_into(m, &mut bytes).expect("a valid message encodes");
        }
        self.send_uni_raw(&bytes);
    }

    /// Opens `n` uni streams one after the other, each carrying `frame`,
    /// until the connection closes; returns how many were opened.
    pub fn flood_streams(&self, n: usize, frame: &[u8]) -> usize {
        let conn = self.pc.connection.clone();
        let frame = frame.to_vec();
        self.rogue.rt.block_on(async move {
            let mut opened = 0;
            for _ in 0..n {
                let Ok(Ok(send)) =
                    tokio::time::timeout(Duration::from_secs(2), conn.open_uni()).await
                else {
                    break;
                };
                let mut w = FrameWriter::new(send);
                if w.write_raw(&frame).await.is_err() {
                    break;
                }
                // Left open: a flood holds its streams.
                std::mem::forget(w);
                opened += 1;
            }
            opened
        })
    }

    /// Writes `frames` one after the other on a new uni stream from a
    /// background task, without waiting for anything the target says (no
    /// window, no ack): a flood. See [`Flood`].
    pub fn flood_uni(&self, frames: impl Iterator<Item = Message> + Send + 'static) -> Flood {
        let conn = self.pc.connection.clone();
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let task = self.rogue.rt.spawn(async move {
            let Ok(send) = conn.open_uni().await else {
                return;
            };
            let mut w = FrameWriter::new(send);
            for m in frames {
                if w.write(&m).await.is_err() {
                    return;
                }
                counter.fetch_add(1, Ordering::Relaxed);
            }
            w.finish();
        });
        Flood { sent, task }
    }

    /// The messages the target sent on the control stream so far.
    pub fn received(&self) -> Vec<Message> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until the target has sent a control message for which `f`
    /// gives something; that.
    pub fn wait_received<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Message) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.received().iter().find_map(&mut f) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "the target sent no {what} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the target closes the connection; its reason.
    pub fn closed(&self, timeout: Duration) -> Closed {
        let conn = self.pc.connection.clone();
        let reason = self
            .rogue
            .rt
            .block_on(async move { tokio::time::timeout(timeout, conn.closed()).await })
            .unwrap_or_else(|_| panic!("the target kept the connection open for {timeout:?}"));
        Closed {
            reason: reason.to_string(),
        }
    }

    /// Whether the connection is still open.
    pub fn is_open(&self) -> bool {
        self.pc.connection.close_reason().is_none()
    }
}

/// A one-change batch creating a contact named `name` (object `id`) at log
/// sequence `seq`, as plaintext for an envelope.
pub fn contact_batch(id: ObjectId, name: &str, seq: u64, instance: u64) -> Vec<u8> {
    let version = Version {
        hlc: Timestamp::new(now_ms(), 0),
        instance: orgsync_protocol::model::InstanceId(instance),
    };
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        FieldKey::Std("first_name".into()),
        FieldState {
            version,
            value: Some(Value::Text(name.into())),
        },
    );
    let batch = ChangeBatch {
        changes: vec![SequencedChange {
            seq,
            change: Change {
                id,
                kind: Kind::Contact,
                fields,
                deleted: None,
            },
        }],
        log_head: seq,
    };
    codec::encode(&batch).expect("a valid batch encodes")
}

/// Seals `plain` as the change batch ending at `seq` with `keys`.
pub fn seal_changes(keys: &PairKeys, seq: u64, plain: &[u8]) -> SealedEnvelope {
    envelope::seal(keys, StreamKind::Changes, seq, plain)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A batch of `n` contacts (names `name_len` bytes long) at log sequences
/// `first_seq..first_seq + n`, as plaintext for an envelope sealed at the
/// last of them.
pub fn contacts_batch(first_seq: u64, n: u64, name_len: usize, instance: u64) -> Vec<u8> {
    let version = Version {
        hlc: Timestamp::new(now_ms(), 0),
        instance: orgsync_protocol::model::InstanceId(instance),
    };
    let name = "x".repeat(name_len);
    let changes = (0..n)
        .map(|i| {
            let mut fields = std::collections::BTreeMap::new();
            fields.insert(
                FieldKey::Std("first_name".into()),
                FieldState {
                    version,
                    value: Some(Value::Text(name.clone())),
                },
            );
            SequencedChange {
                seq: first_seq + i,
                change: Change {
                    id: ObjectId::new_v7(now_ms()),
                    kind: Kind::Contact,
                    fields,
                    deleted: None,
                },
            }
        })
        .collect();
    let batch = ChangeBatch {
        changes,
        log_head: first_seq + n - 1,
    };
    codec::encode(&batch).expect("a valid batch encodes")
}

/// A one-change batch creating résumé `id` announcing blob `hash` of
/// `size` bytes, at log sequence `seq`, as plaintext for an envelope.
pub fn resume_batch(id: ObjectId, hash: [u8; 32], size: u64, seq: u64, instance: u64) -> Vec<u8> {
    let version = Version {
        hlc: Timestamp::new(now_ms(), 0),
        instance: orgsync_protocol::model::InstanceId(instance),
    };
    let mut fields = std::collections::BTreeMap::new();
    let mut set = |k: &str, v: Value| {
        fields.insert(
            FieldKey::Std(k.into()),
            FieldState {
                version,
                value: Some(v),
            },
        );
    };
    set("file_name", Value::Text("cv.pdf".into()));
    set("media_type", Value::Text("application/pdf".into()));
    set("hash", Value::Hash(hash));
    set("size", Value::Integer(size as i64));
    let batch = ChangeBatch {
        changes: vec![SequencedChange {
            seq,
            change: Change {
                id,
                kind: Kind::Resume,
                fields,
                deleted: None,
            },
        }],
        log_head: seq,
    };
    codec::encode(&batch).expect("a valid batch encodes")
}

/// A blob chunk of `hash` at `offset` announcing `total_len`, sealed as
/// a sender's session seals it (envelope sequence = end offset).
pub fn blob_chunk(
    keys: &PairKeys,
    hash: [u8; 32],
    offset: u64,
    total_len: u64,
    data: Vec<u8>,
) -> Message {
    let end = offset + data.len() as u64;
    let chunk = orgsync_protocol::wire::BlobChunk {
        hash,
        offset,
        total_len,
        data,
    };
    let plain = codec::encode(&chunk).expect("a valid chunk encodes");
    Message::BlobChunk(envelope::seal(keys, StreamKind::Blob, end, &plain))
}
