//! Test support for orgsync.
//!
//! [`FaultProxy`] is a UDP proxy for loopback tests: it sits between a QUIC
//! client and server and can drop, duplicate, reorder and delay datagrams at
//! set rates in both directions, and cut the link entirely (a partition) and
//! heal it, while the test runs. Point the dialing daemon at
//! [`FaultProxy::local_addr`] instead of the partner's real address.
//!
//! Randomness comes from a seeded generator so a failing scenario can be
//! replayed with the same seed (timing on a shared machine still varies).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Largest datagram forwarded (QUIC never sends more than this on loopback).
const MAX_DATAGRAM: usize = 65_535;

/// What the proxy does to datagrams, in both directions. Rates are
/// probabilities in `0.0..=1.0` applied to each datagram independently.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back by [`FaultConfig::reorder_by`]
    /// so that later datagrams overtake it.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_by: Duration,
    /// Fixed delay added to every datagram.
    pub delay: Duration,
    /// Random extra delay, uniform in `0..=jitter`, added to every datagram.
    pub jitter: Duration,
    /// When true, every datagram is dropped (the link is cut).
    pub partitioned: bool,
}

impl FaultConfig {
    /// A clean link: everything forwarded at once.
    pub fn clean() -> Self {
        FaultConfig::default()
    }

    /// A lossy link: `loss` drop rate, with `reorder` of the datagrams held
    /// back by 5 ms.
    pub fn lossy(loss: f64, reorder: f64) -> Self {
        FaultConfig {
            loss,
            reorder,
            reorder_by: Duration::from_millis(5),
            ..FaultConfig::default()
        }
    }
}

/// Counters of what the proxy did, over both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Datagrams received from either side.
    pub received: u64,
    /// Datagrams sent on (including duplicates).
    pub forwarded: u64,
    /// Datagrams dropped by loss or partition.
    pub dropped: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Datagrams held back to be overtaken.
    pub reordered: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
}

struct Shared {
    config: Mutex<FaultConfig>,
    rng: Mutex<SmallRng>,
    counters: Counters,
}

/// What to do with one datagram, decided under the locks and carried out
/// outside them.
struct Plan {
    /// One delay per copy to send; empty when the datagram is dropped.
    sends: Vec<Duration>,
}

impl Shared {
    fn plan(&self) -> Plan {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        // A poisoned lock only means a test thread panicked while holding it;
        // the config inside is still a plain value, so keep going.
        let cfg = self
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if cfg.partitioned || rng.gen_bool(cfg.loss.clamp(0.0, 1.0)) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return Plan { sends: Vec::new() };
        }
        let copies = if rng.gen_bool(cfg.duplicate.clamp(0.0, 1.0)) {
            self.counters.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        let mut sends = Vec::with_capacity(copies);
        for _ in 0..copies {
            let mut delay = cfg.delay;
            if !cfg.jitter.is_zero() {
                delay += cfg.jitter.mul_f64(rng.gen_range(0.0..=1.0));
            }
            if rng.gen_bool(cfg.reorder.clamp(0.0, 1.0)) {
                self.counters.reordered.fetch_add(1, Ordering::Relaxed);
                delay += cfg.reorder_by;
            }
            sends.push(delay);
        }
        Plan { sends }
    }

    /// Sends `data` to `to` through `socket` as the plan says; delayed copies
    /// go through spawned tasks so they do not hold up later datagrams.
    async fn deliver(
        &self,
        plan: Plan,
        socket: &Arc<UdpSocket>,
        to: SocketAddr,
        data: &[u8],
        tasks: &mut JoinSet<()>,
    ) {
        for delay in plan.sends {
            self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            if delay.is_zero() {
                // UDP is lossy by nature; a failed send is one more lost datagram.
                let _ = socket.send_to(data, to).await;
            } else {
                let socket = socket.clone();
                let data = data.to_vec();
                tasks.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = socket.send_to(&data, to).await;
                });
            }
        }
    }
}

/// A running fault-injecting proxy. Dropping it (or [`FaultProxy::stop`])
/// stops it.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` that forwards to `upstream`.
    pub async fn start(
        upstream: SocketAddr,
        config: FaultConfig,
        seed: u64,
    ) -> io::Result<FaultProxy> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            counters: Counters::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(front, upstream, shared.clone(), stopped));
        Ok(FaultProxy {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    /// The address clients should send to instead of the upstream.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the fault configuration; applies to the next datagram.
    pub fn set_config(&self, config: FaultConfig) {
        *self.shared.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// The current fault configuration.
    pub fn config(&self) -> FaultConfig {
        self.shared
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Cuts the link: every datagram is dropped until [`FaultProxy::heal`].
    pub fn partition(&self) {
        self.shared
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .partitioned = true;
    }

    /// Restores the link after [`FaultProxy::partition`] (other faults stay).
    pub fn heal(&self) {
        self.shared
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .partitioned = false;
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            received: c.received.load(Ordering::Relaxed),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            duplicated: c.duplicated.load(Ordering::Relaxed),
            reordered: c.reordered.load(Ordering::Relaxed),
        }
    }

    /// Stops the proxy and waits until its sockets are closed.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The proxy loop: one front socket facing clients, one back socket per
/// client facing the upstream (so the upstream sees distinct peers).
async fn run(
    front: Arc<UdpSocket>,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, client) = tokio::select! {
            r = front.recv_from(&mut buf) => match r {
                Ok(v) => v,
                // ICMP errors surface as recv errors on some systems; keep serving.
                Err(_) => continue,
            },
            _ = stopped.changed() => break,
        };
        let back = match backs.get(&client) {
            Some(b) => b.clone(),
            None => {
                let Ok(sock) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                let back = Arc::new(sock);
                backs.insert(client, back.clone());
                tasks.spawn(reply_loop(
                    back.clone(),
                    front.clone(),
                    client,
                    shared.clone(),
                    stopped.clone(),
                ));
                back
            }
        };
        let plan = shared.plan();
        shared
            .deliver(plan, &back, upstream, &buf[..len], &mut tasks)
            .await;
        // Reap finished delayed sends so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
    }
    tasks.shutdown().await;
}

/// Forwards the upstream's replies on one back socket to its client.
async fn reply_loop(
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let len = tokio::select! {
            r = back.recv_from(&mut buf) => match r {
                Ok((len, _)) => len,
                Err(_) => continue,
            },
            _ = stopped.changed() => break,
        };
        let plan = shared.plan();
        shared
            .deliver(plan, &front, client, &buf[..len], &mut tasks)
            .await;
        while tasks.try_join_next().is_some() {}
    }
    tasks.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// An echo server; returns its address and a handle that stops it.
    async fn echo_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((len, from)) = sock.recv_from(&mut buf).await {
                let _ = sock.send_to(&buf[..len], from).await;
            }
        });
        (addr, task)
    }

    async fn client(proxy: &FaultProxy) -> UdpSocket {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(proxy.local_addr()).await.unwrap();
        sock
    }

    /// Receives datagrams until `n` arrived or `deadline` passed.
    async fn recv_up_to(sock: &UdpSocket, n: usize, deadline: Duration) -> Vec<u32> {
        let mut got = Vec::new();
        let end = tokio::time::Instant::now() + deadline;
        let mut buf = [0u8; 16];
        while got.len() < n {
            match tokio::time::timeout_at(end, sock.recv(&mut buf)).await {
                Ok(Ok(4)) => got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]])),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        got
    }

    /// Polls `cond` until true or the deadline passes.
    async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if cond() {
                return true;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        cond()
    }

    #[tokio::test]
    async fn clean_link_forwards_everything_both_ways() {
        let (echo, server) = echo_server().await;
        let proxy = FaultProxy::start(echo, FaultConfig::clean(), 1)
            .await
            .unwrap();
        let sock = client(&proxy).await;
        for i in 0..100u32 {
            sock.send(&i.to_be_bytes()).await.unwrap();
        }
        let got = recv_up_to(&sock, 100, Duration::from_secs(10)).await;
        assert_eq!(got.len(), 100);
        assert_eq!(proxy.stats().dropped, 0);
        assert_eq!(proxy.stats().forwarded, 200);
        proxy.stop().await;
        server.abort();
    }

    #[tokio::test]
    async fn partition_drops_everything_until_healed() {
        let (echo, server) = echo_server().await;
        let proxy = FaultProxy::start(echo, FaultConfig::clean(), 2)
            .await
            .unwrap();
        let sock = client(&proxy).await;
        proxy.partition();
        for i in 0..20u32 {
            sock.send(&i.to_be_bytes()).await.unwrap();
        }
        assert!(
            wait_for(|| proxy.stats().dropped == 20).await,
            "{:?}",
            proxy.stats()
        );
        let mut buf = [0u8; 16];
        assert!(
            sock.try_recv(&mut buf).is_err(),
            "nothing crosses a partition"
        );
        proxy.heal();
        sock.send(&7u32.to_be_bytes()).await.unwrap();
        assert_eq!(recv_up_to(&sock, 1, Duration::from_secs(10)).await, vec![7]);
        proxy.stop().await;
        server.abort();
    }

    #[tokio::test]
    async fn loss_duplication_and_reordering_happen_at_their_rates() {
        let (echo, server) = echo_server().await;
        let cfg = FaultConfig {
            loss: 0.1,
            duplicate: 0.1,
            reorder: 0.2,
            reorder_by: Duration::from_millis(50),
            ..FaultConfig::default()
        };
        let proxy = FaultProxy::start(echo, cfg, 3).await.unwrap();
        let sock = client(&proxy).await;
        let n = 1000u32;
        for i in 0..n {
            sock.send(&i.to_be_bytes()).await.unwrap();
        }
        // Each datagram crosses the proxy twice (there and back); wait until
        // the proxy has decided the fate of every one.
        let got = recv_up_to(&sock, n as usize * 2, Duration::from_secs(2)).await;
        let s = proxy.stats();
        assert!(s.received >= u64::from(n), "{s:?}");
        // Expected drops ~ 10% of ~1900 decisions; allow a wide band.
        assert!(s.dropped > 100 && s.dropped < 350, "{s:?}");
        assert!(s.duplicated > 80 && s.duplicated < 300, "{s:?}");
        assert!(s.reordered > 200, "{s:?}");
        assert!(got.len() < n as usize * 2 && !got.is_empty());
        let mut seen = got.clone();
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() < got.len(), "some datagrams arrived twice");
        assert!(
            got.windows(2).any(|w| w[0] > w[1]),
            "some datagrams were overtaken"
        );
        proxy.stop().await;
        server.abort();
    }

    #[tokio::test]
    async fn config_changes_apply_to_the_next_datagram() {
        let (echo, server) = echo_server().await;
        let proxy = FaultProxy::start(echo, FaultConfig::lossy(1.0, 0.0), 4)
            .await
            .unwrap();
        let sock = client(&proxy).await;
        sock.send(&1u32.to_be_bytes()).await.unwrap();
        assert!(wait_for(|| proxy.stats().dropped == 1).await);
        proxy.set_config(FaultConfig::clean());
        assert_eq!(proxy.config(), FaultConfig::clean());
        sock.send(&2u32.to_be_bytes()).await.unwrap();
        assert_eq!(recv_up_to(&sock, 1, Duration::from_secs(10)).await, vec![2]);
        proxy.stop().await;
        server.abort();
    }
}
