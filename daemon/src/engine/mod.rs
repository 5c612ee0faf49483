//! The sync engine: one task per partner drives the sans-IO
//! [`Session`](orgsync_protocol::session::Session) over a QUIC connection.
//!
//! - **Connections.** An acceptor task completes inbound handshakes and
//!   hands each connection to its partner's task. A partner task with no
//!   live connection dials the partner's addresses with exponential backoff
//!   and jitter. When two connections to one partner are alive (both sides
//!   dialed), [`crate::transport::preferred`] picks the same one on both
//!   sides and the other is closed with `CLOSE_DUPLICATE`.
//! - **Streams.** The dialer opens the bidirectional control stream; each
//!   side opens one uni stream for its change batches and one uni stream per
//!   blob transfer. Every received stream is read by its own task and every
//!   frame is fed to the session, which knows what each message means.
//!   Writes go through per-stream writer tasks, so the driver never waits
//!   on the network (no deadlock when both sides are flow-controlled);
//!   memory stays bounded by the session's unacked window.
//! - **Effects.** `LoadChanges` reads the store's durable log (filtered by
//!   the [`SharePolicy`]); `Apply` goes, in order, to an applier task that
//!   calls [`Store::apply_from_partner_with`] (changes and cursor in one
//!   durable batch) and only then reports `applied`, which lets the session
//!   ack; `PeerAcked` persists the acked cursor; blob effects read and write
//!   [`crate::store::BlobFiles`].
//! - **Live push.** The driver watches the store's durable log head and
//!   tells the session the moment it moves (no polling).

mod blob;
mod connection;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use orgsync_protocol::identity::PairKeys;
use orgsync_protocol::model::OrgId;
use orgsync_protocol::session::{SessionConfig, SessionStats};
use orgsync_protocol::wire::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::policy::SharePolicy;
use crate::stop::{StopReport, Stopper, STOP_BUDGET};
use crate::store::Store;
use crate::transport::{Backoff, PeerConnection, Transport, TrustedPeer};

/// Gives the pair keys for a partner (derived from the organisation key
/// and the partner's public key for the current epoch).
pub trait KeySource: Send + Sync + 'static {
    /// Fresh pair keys for `partner`, or why there are none.
    fn pair_keys(&self, partner: &TrustedPeer) -> Result<PairKeys, String>;
}

/// Settings of the engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Most changes per batch.
    pub max_batch_changes: usize,
    /// Most changes in flight per partner.
    pub max_unacked: u64,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
    /// Session idle timeout (pings go out at a third of it).
    pub idle_timeout: Duration,
    /// The daemon's counters (changes and bytes sent and applied,
    /// reconnects), shared with the local API's `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What one partner may make us hold (`[limits]`): the blob size cap
    /// and the per-partner queue bounds.
    pub limits: crate::config::LimitsConfig,
    /// Wire-protocol versions offered to partners (`[sync]
    /// min_protocol_version..=max_protocol_version`).
    pub protocol_versions: RangeInclusive<u16>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_batch_changes: crate::config::DEFAULT_MAX_BATCH_CHANGES,
            max_unacked: crate::config::DEFAULT_MAX_UNACKED,
            reconnect_min: Duration::from_millis(crate::config::DEFAULT_RECONNECT_MIN_MS),
            reconnect_max: Duration::from_millis(crate::config::DEFAULT_RECONNECT_MAX_MS),
            idle_timeout: Duration::from_secs(30),
            metrics: Arc::default(),
            limits: crate::config::LimitsConfig::default(),
            protocol_versions: MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION,
        }
    }
}

impl EngineOptions {
    /// From the `[sync]` section of the configuration.
    pub fn from_config(sync: &crate::config::SyncConfig) -> Self {
        EngineOptions {
            max_batch_changes: sync.max_batch_changes,
            max_unacked: sync.max_unacked,
            reconnect_min: Duration::from_millis(sync.reconnect_min_ms),
            reconnect_max: Duration::from_millis(sync.reconnect_max_ms),
            protocol_versions: sync.min_protocol_version..=sync.max_protocol_version,
            ..EngineOptions::default()
        }
    }

    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            max_batch_changes: self.max_batch_changes,
            max_unacked_changes: self.max_unacked,
            idle_timeout: self.idle_timeout,
            keep_alive_interval: self.idle_timeout / 3,
            min_version: *self.protocol_versions.start(),
            max_version: *self.protocol_versions.end(),
            ..SessionConfig::default()
        }
    }
}

/// What `orgsync status` shows for one partner.
#[derive(Clone, Debug, Default)]
pub struct PartnerStatus {
    /// A session is established right now.
    pub connected: bool,
    /// Address of the current connection.
    pub remote: Option<SocketAddr>,
    /// When the last session was established.
    pub last_connected: Option<SystemTime>,
    /// When a batch was last applied from or acked by the partner.
    pub last_sync: Option<SystemTime>,
    /// Why the last connection or dial ended, if it failed.
    pub last_error: Option<String>,
    /// Figures of the current (or last) session.
    pub session: Option<SessionStats>,
    /// Connections established since start.
    pub connections: u64,
}

/// Why the engine could not do something.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The partner is unknown or revoked.
    #[error("partner {0:?} is not paired")]
    NotPaired(OrgId),
}

struct PartnerTask {
    /// The partner's name (for the logs of a stop).
    name: String,
    input: mpsc::UnboundedSender<PartnerInput>,
    status: watch::Receiver<PartnerStatus>,
    handle: JoinHandle<()>,
    stop: watch::Sender<Stop>,
}

/// Whether a partner task should stop, and why (the close code differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    Running,
    Shutdown,
    Revoked,
}

enum PartnerInput {
    Connection(PeerConnection),
    DialFailed(String),
    /// The partner set was reloaded: re-read addresses.
    Reloaded,
}

pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) transport: Transport,
    pub(crate) policy: Arc<dyn SharePolicy>,
    pub(crate) keys: Arc<dyn KeySource>,
    pub(crate) options: EngineOptions,
}

/// The running sync engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    partners: Arc<Mutex<HashMap<OrgId, PartnerTask>>>,
    acceptor: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Engine {
    /// Starts the acceptor and one task per paired partner in the
    /// transport's trust set. Must be called inside a tokio runtime.
    pub fn start(
        store: Store,
        transport: Transport,
        policy: Arc<dyn SharePolicy>,
        keys: Arc<dyn KeySource>,
        options: EngineOptions,
    ) -> Engine {
        let engine = Engine {
            shared: Arc::new(Shared {
                store,
                transport,
                policy,
                keys,
                options,
            }),
            partners: Arc::default(),
            acceptor: Arc::default(),
        };
        engine.reload_partners();
        let acceptor = tokio::spawn(accept_loop(engine.clone()));
        *engine
            .acceptor
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(acceptor);
        engine
    }

    /// Brings the partner tasks in line with the transport's trust set
    /// (call after [`crate::transport::Trust::replace`]): starts tasks for
    /// new partners, stops those of revoked or removed ones.
    pub fn reload_partners(&self) {
        let peers = self.shared.transport.trust().peers();
        let mut tasks = self.partners.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|org, task| {
            let keep = peers.iter().any(|p| p.org == *org && !p.revoked);
            if !keep {
                task.stop.send_replace(Stop::Revoked);
            }
            keep
        });
        for task in tasks.values() {
            // A task that is gone has nothing to re-read.
            let _ = task.input.send(PartnerInput::Reloaded);
        }
        for peer in peers.iter().filter(|p| !p.revoked) {
            tasks
                .entry(peer.org)
                .or_insert_with(|| self.spawn_partner(peer.clone()));
        }
    }

    fn spawn_partner(&self, peer: TrustedPeer) -> PartnerTask {
        let (input_tx, input_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(PartnerStatus::default());
        let (stop_tx, stop_rx) = watch::channel(Stop::Running);
        let name = peer.name.clone();
        let handle = tokio::spawn(partner_loop(
            self.shared.clone(),
            peer,
            input_tx.clone(),
            input_rx,
            status_tx,
            stop_rx,
        ));
        PartnerTask {
            name,
            input: input_tx,
            status: status_rx,
            handle,
            stop: stop_tx,
        }
    }

    /// Status of every partner with a task.
    pub fn status(&self) -> Vec<(OrgId, PartnerStatus)> {
        let tasks = self.partners.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = tasks
            .iter()
            .map(|(org, t)| (*org, t.status.borrow().clone()))
            .collect();
        out.sort_by_key(|(org, _)| *org);
        out
    }

    /// A watch of one partner's status (to wait for "connected" or "synced").
    pub fn subscribe_status(
        &self,
        partner: &OrgId,
    ) -> Result<watch::Receiver<PartnerStatus>, EngineError> {
        let tasks = self.partners.lock().unwrap_or_else(PoisonError::into_inner);
        tasks
            .get(partner)
            .map(|t| t.status.clone())
            .ok_or(EngineError::NotPaired(*partner))
    }

    /// The store the engine syncs.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Stops the engine within [`STOP_BUDGET`] (plus a fraction of a
    /// second for each step that overran): stops accepting, tells every partner
    /// task to close its session (an apply in progress becomes durable
    /// first), closes the endpoint (peers are told, for up to a second) and
    /// flushes the store. A partner task or step that does not finish in
    /// time is logged by name and aborted; the report lists them.
    pub async fn stop(&self) -> StopReport {
        let mut stopper = Stopper::new("engine", STOP_BUDGET);
        self.stop_with(&mut stopper).await;
        stopper.finish()
    }

    pub(crate) async fn stop_with(&self, s: &mut Stopper) {
        let acceptor = self
            .acceptor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(a) = acceptor {
            // With it go the handshakes it started (its JoinSet).
            a.abort();
            s.join("connection acceptor", a, Some(ABORT_WAIT)).await;
        }
        let tasks: Vec<PartnerTask> = self
            .partners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, t)| t)
            .collect();
        for t in &tasks {
            t.stop.send_replace(Stop::Shutdown);
        }
        let handles = tasks
            .into_iter()
            .map(|t| (format!("partner task {}", t.name), t.handle))
            .collect();
        s.join_all(handles, None).await;
        // Closes every connection still open (those of aborted partner
        // tasks too, which ends their stream tasks).
        self.shared.transport.close();
        // Past this the peers learn it from their idle timeout (normal when
        // one is unreachable: a connection closed in its handshake drains
        // for seconds).
        s.best_effort(
            "telling peers the endpoint closed",
            CLOSE_GRACE,
            self.shared.transport.wait_idle(),
        )
        .await;
        let draining = self.shared.transport.open_connections();
        if draining > 0 {
            // The listen port is free when the stop returns: a restart in
            // this process must not wait for the drain.
            match self.shared.transport.release_port() {
                Ok(()) => tracing::debug!(draining, "listen port released"),
                Err(e) => tracing::warn!(error = %e, draining,
                    "cannot release the listen port; it stays bound until the closed connections drain"),
            }
        }
        let flushed = s.step("final store flush", None, self.shared.store.flush());
        if let Some(Err(e)) = flushed.await {
            tracing::error!(error = %e, "final store flush failed");
        }
    }
}

/// How long a stop waits for peers to be told that the endpoint closed.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a stop waits for an aborted task to be dropped.
const ABORT_WAIT: Duration = Duration::from_millis(100);

/// A spawned task that is aborted when this handle is dropped, so that a
/// task aborted by a stop takes its helper tasks with it.
pub(crate) struct Owned(pub(crate) JoinHandle<()>);

impl Owned {
    pub(crate) fn spawn<F>(future: F) -> Owned
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        Owned(tokio::spawn(future))
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Waits until the task ends (a panic or an abort counts as ended).
    pub(crate) async fn join(&mut self) {
        // A panic was reported by the runtime; an abort is what we asked.
        let _ = (&mut self.0).await;
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn accept_loop(engine: Engine) {
    // Handshakes in progress: aborted with this task when the engine stops
    // (each holds the engine, so the store, until its peer answers).
    let mut handshakes = tokio::task::JoinSet::new();
    while let Some(hs) = engine.shared.transport.next_incoming().await {
        while handshakes.try_join_next().is_some() {}
        let engine = engine.clone();
        handshakes.spawn(async move {
            let remote = hs.remote_address();
            match hs.complete().await {
                Ok(pc) => {
                    let org = pc.partner.org;
                    let input = engine
                        .partners
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&org)
                        .map(|t| t.input.clone());
                    match input {
                        Some(tx) => {
                            if let Err(mpsc::error::SendError(PartnerInput::Connection(pc))) =
                                tx.send(PartnerInput::Connection(pc))
                            {
                                pc.connection
                                    .close(crate::transport::CLOSE_SHUTDOWN, b"shutting down");
                            }
                        }
                        None => pc
                            .connection
                            .close(crate::transport::CLOSE_REVOKED, b"not paired"),
                    }
                }
                Err(e) => tracing::debug!(%remote, error = %e, "inbound handshake failed"),
            }
        });
    }
}

async fn resolve(addresses: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for a in addresses {
        match tokio::net::lookup_host(a.as_str()).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => tracing::debug!(address = %a, error = %e, "cannot resolve partner address"),
        }
    }
    out
}

async fn dial(transport: Transport, peer: TrustedPeer) -> Result<PeerConnection, String> {
    // Addresses as they are now: partners.toml may have been reloaded.
    let peer = transport.trust().peer(&peer.org).unwrap_or(peer);
    let addrs = resolve(&peer.addresses).await;
    let mut last = String::from("no address resolves");
    for addr in addrs {
        match transport.connect(peer.org, addr).await {
            Ok(pc) => return Ok(pc),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

async fn partner_loop(
    shared: Arc<Shared>,
    peer: TrustedPeer,
    input_tx: mpsc::UnboundedSender<PartnerInput>,
    mut input: mpsc::UnboundedReceiver<PartnerInput>,
    status: watch::Sender<PartnerStatus>,
    mut stop: watch::Receiver<Stop>,
) {
    let opts = &shared.options;
    let mut backoff = Backoff::new(opts.reconnect_min, opts.reconnect_max);
    let can_dial = || {
        let current = shared.transport.trust().peer(&peer.org);
        current.map_or(!peer.addresses.is_empty(), |p| !p.addresses.is_empty())
    };
    let mut next_dial = tokio::time::Instant::now();
    let mut dialing = false;
    // The dial in progress: aborted when this task ends or is aborted (it
    // holds the endpoint, which otherwise waits out the handshake).
    let mut dial_task: Option<Owned> = None;
    let mut next: Option<PeerConnection> = None;
    loop {
        let pc = match next.take() {
            Some(pc) => pc,
            None => tokio::select! {
                _ = stop.wait_for(|s| *s != Stop::Running) => break,
                msg = input.recv() => match msg {
                    Some(PartnerInput::Connection(pc)) => {
                        if pc.dialed_by_us {
                            dialing = false;
                        }
                        pc
                    }
                    Some(PartnerInput::DialFailed(e)) => {
                        dialing = false;
                        tracing::debug!(partner = %peer.name, error = %e, "dial failed");
                        status.send_modify(|s| s.last_error = Some(e));
                        next_dial = tokio::time::Instant::now() + backoff.next_delay();
                        continue;
                    }
                    Some(PartnerInput::Reloaded) => continue,
                    None => break,
                },
                _ = tokio::time::sleep_until(next_dial), if !dialing && can_dial() => {
                    dialing = true;
                    let tx = input_tx.clone();
                    let transport = shared.transport.clone();
                    let peer = peer.clone();
                    dial_task = Some(Owned::spawn(async move {
                        let msg = match dial(transport, peer).await {
                            Ok(pc) => PartnerInput::Connection(pc),
                            Err(e) => PartnerInput::DialFailed(e),
                        };
                        // The partner task is gone: the connection drops and closes.
                        let _ = tx.send(msg);
                    }));
                    continue;
                }
            },
        };
        let outcome = connection::run(
            &shared,
            &peer,
            pc,
            &mut input,
            &status,
            &mut stop,
            &mut dialing,
        )
        .await;
        match outcome {
            connection::Outcome::Replaced(pc) => next = Some(pc),
            connection::Outcome::Stopped => break,
            connection::Outcome::Ended { established, error } => {
                if established {
                    backoff.reset();
                }
                if let Some(e) = &error {
                    tracing::info!(partner = %peer.name, error = %e, "connection ended");
                }
                status.send_modify(|s| {
                    s.connected = false;
                    s.remote = None;
                    if error.is_some() {
                        s.last_error = error.clone();
                    }
                });
                next_dial = tokio::time::Instant::now() + backoff.next_delay();
            }
        }
    }
    drop(dial_task);
    status.send_modify(|s| {
        s.connected = false;
        s.remote = None;
    });
}

#[cfg(test)]
mod tests;
