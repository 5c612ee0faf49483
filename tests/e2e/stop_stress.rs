//! Issue 17: stopping must finish in bounded time, whatever the daemon is
//! doing. A hub and 20 partners (each paired with the hub) are started,
//! synced, given a backlog in flight and stopped, round after round: once
//! as 21 instances in this process (what the bench, the quickstart and
//! host applications do), once as 21 `orgsyncd` processes under SIGTERM.
//! Every stop must be over within 5 s. The next round's sync proves that
//! what was in flight at the stop arrives after the restart.
//!
//! Rounds: 2 by default in debug builds (CI), 30 in release builds
//! (`cargo test --release --test e2e stop_stress::`); `ORGSYNC_STOP_ROUNDS`
//! overrides both. `ORGSYNC_STOP_VERBOSE=1` prints every round's times.

use crate::support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use orgsync::daemon::api::LocalServices;
use orgsync::daemon::daemon::Daemon;
use orgsync::daemon::store::Edit;
use orgsync::protocol::model::{Kind, ObjectId, Value};
use support::{contacts_ndjson, wait_for, Instance};

const PARTNERS: usize = 20;
/// The bound every stop must meet.
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// Starting, connecting and catching up, per round (debug builds on a
/// loaded 2-core machine included).
const SYNC_TIMEOUT: Duration = Duration::from_secs(180);

fn rounds() -> usize {
    std::env::var("ORGSYNC_STOP_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 2 } else { 30 })
}

/// `ORGSYNC_STOP_VERBOSE`: every round's times on stderr, and the
/// daemons' logs (RUST_LOG, default warnings) of the in-process instances.
fn verbose() -> bool {
    static LOGS: std::sync::Once = std::sync::Once::new();
    let on = std::env::var_os("ORGSYNC_STOP_VERBOSE").is_some();
    if on {
        LOGS.call_once(|| {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
            // Another test of this binary may have set one up already.
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        });
    }
    on
}

/// A hub and `PARTNERS` partners, each paired with the hub (keytool export
/// and import on both sides, as admins do), sharing everything.
fn star() -> (Instance, Vec<Instance>) {
    let hub = Instance::new("Hub");
    let partners: Vec<Instance> = (0..PARTNERS)
        .map(|i| Instance::new(&format!("P{i:02}")))
        .collect();
    for p in &partners {
        Instance::pair(&hub, p);
    }
    (hub, partners)
}

/// Fails the test binary when the test makes no progress for `limit`. A
/// process whose runtime threads are all blocked (sled's I/O pool
/// deadlock of issue 17 did that) cannot fire the async timeouts, and the
/// test would hang CI instead of failing.
struct Watchdog {
    last: Arc<Mutex<(Instant, String)>>,
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(limit: Duration) -> Watchdog {
        let last = Arc::new(Mutex::new((Instant::now(), String::from("starting"))));
        let done = Arc::new(AtomicBool::new(false));
        std::thread::spawn({
            let (last, done) = (last.clone(), done.clone());
            move || {
                while !done.load(Ordering::SeqCst) {
                    let (at, step) = last.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    if at.elapsed() > limit {
                        eprintln!(
                            "stop_stress: no progress for {limit:?}; the process is wedged while: {step}"
                        );
                        std::process::exit(101);
                    }
                    // A timer, not synchronisation: checks twice a second.
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        });
        Watchdog { last, done }
    }

    fn step(&self, what: impl Into<String>) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = (Instant::now(), what.into());
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// Stop times over all rounds, for the summary line.
#[derive(Default)]
struct Times {
    all: Vec<Duration>,
}

impl Times {
    fn add(&mut self, d: Duration) {
        self.all.push(d);
    }

    fn summary(&mut self) -> String {
        self.all.sort();
        let n = self.all.len();
        let at = |q: f64| self.all[((n - 1) as f64 * q).round() as usize];
        format!(
            "{n} stops: median {:?}, p99 {:?}, max {:?}",
            at(0.5),
            at(0.99),
            at(1.0)
        )
    }
}

fn contact(round: usize, who: usize, i: usize) -> Edit {
    // Distinct ids per round, writer and index (time part in the past).
    let ms = 1_700_000_000_000 + ((round * 100 + who) * 100_000 + i) as u64;
    Edit::new(ObjectId::new_v7(ms), Kind::Contact)
        .set_std("first_name", Value::Text(format!("R{round}W{who}N{i}")))
        .set_std(
            "email",
            Value::Text(format!("r{round}w{who}n{i}@example.org")),
        )
}

/// Waits until every partner has a session with the hub and has
/// acknowledged the hub's whole log (the backlog of the previous round
/// included), following the hub's status of each partner.
async fn wait_synced(hub: &Daemon, partners: &[Daemon]) {
    let deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
    let head = hub.store().log_head();
    for p in partners {
        let org = p.identity().org_id;
        let name = &p.identity().org_name;
        let mut status = hub.engine().subscribe_status(&org).expect("partner task");
        let synced = async {
            let caught_up = status.wait_for(|s| {
                s.connected && s.session.as_ref().is_some_and(|x| x.acked_by_peer >= head)
            });
            caught_up.await.map(|_| ())
        };
        match tokio::time::timeout_at(deadline, synced).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => panic!("the hub's task for {name} ended"),
            Err(_) => panic!(
                "{name} had not acknowledged the hub's log head {head} after {SYNC_TIMEOUT:?}: {:?}",
                hub.engine()
                    .status()
                    .into_iter()
                    .find(|(o, _)| *o == org)
                    .map(|(_, s)| s)
            ),
        }
    }
}

/// Stops `daemons` at once, each in a task of its own; asserts each stop
/// is under [`STOP_LIMIT`] and aborted nothing; returns the times.
async fn stop_together(daemons: Vec<Daemon>, what: &str) -> Vec<(String, Duration)> {
    let mut set = tokio::task::JoinSet::new();
    for d in daemons {
        set.spawn(async move {
            let name = d.identity().org_name.clone();
            let t = Instant::now();
            let report = d.stop().await;
            (name, t.elapsed(), report)
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (name, took, report) = joined.expect("stop task");
        check_stop(&name, took, &report, what);
        out.push((name, took));
    }
    out
}

fn check_stop(name: &str, took: Duration, report: &orgsync::daemon::stop::StopReport, what: &str) {
    assert!(
        took < STOP_LIMIT,
        "{what}: stopping {name} took {took:?} (aborted: {:?})",
        report.aborted
    );
    assert!(
        report.is_clean(),
        "{what}: stopping {name} had to abort {:?} after {:?}",
        report.aborted,
        report.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_hub_and_20_partners_stop_within_5s_every_round() {
    let rounds = rounds();
    verbose();
    let (hub, partners) = tokio::task::spawn_blocking(star).await.expect("star");
    let watchdog = Watchdog::start(SYNC_TIMEOUT + 2 * STOP_LIMIT);
    let mut times = Times::default();
    let started = Instant::now();
    for round in 0..rounds {
        let t = Instant::now();
        watchdog.step(format!("round {round}: starting and syncing"));
        let hub_d = Daemon::start(&hub.dir).await.expect("start hub");
        // The hub also serves its API socket and drop folder (stopped by
        // its daemon's stop).
        let services = LocalServices::start(&hub_d, &hub.dir)
            .await
            .expect("hub API");
        let mut ps = Vec::with_capacity(PARTNERS);
        for p in &partners {
            ps.push(Daemon::start(&p.dir).await.expect("start partner"));
        }
        wait_synced(&hub_d, &ps).await;
        let synced = t.elapsed();
        watchdog.step(format!("round {round}: writing the backlog"));

        // A backlog in flight at the stop: the hub writes 4,000 contacts,
        // every partner 100, and everything stops without waiting.
        let store = hub_d.store().clone();
        for b in 0..4 {
            store
                .write(
                    (0..1_000)
                        .map(|i| contact(round, 0, b * 1_000 + i))
                        .collect(),
                )
                .await
                .expect("hub write");
        }
        for (w, p) in ps.iter().enumerate() {
            p.store()
                .write((0..100).map(|i| contact(round, w + 1, i)).collect())
                .await
                .expect("partner write");
        }
        let in_flight = ps
            .iter()
            .filter(|p| {
                store
                    .cursor(&p.identity().org_id)
                    .map(|c| c.acked_by_peer < store.log_head())
                    .unwrap_or(false)
            })
            .count();
        drop((store, services));
        watchdog.step(format!("round {round}: stopping"));

        // Three orders: all at once; the hub first, then the partners at
        // once; the hub first, then the partners one by one (the bench's
        // order when it hung: each partner is redialing a gone hub).
        let what = format!("round {round}");
        let mut stops = Vec::new();
        match round % 3 {
            0 => {
                ps.push(hub_d);
                stops.extend(stop_together(ps, &what).await);
            }
            1 => {
                stops.extend(stop_together(vec![hub_d], &what).await);
                stops.extend(stop_together(ps, &what).await);
            }
            _ => {
                stops.extend(stop_together(vec![hub_d], &what).await);
                for p in ps {
                    stops.extend(stop_together(vec![p], &what).await);
                }
            }
        }

        // Stopped means released: every listen port can be bound again
        // (closed connections drain on a throwaway socket).
        let released = tokio::time::Instant::now() + Duration::from_secs(1);
        for inst in std::iter::once(&hub).chain(partners.iter()) {
            while std::net::UdpSocket::bind(("127.0.0.1", inst.port)).is_err() {
                assert!(
                    tokio::time::Instant::now() < released,
                    "{what}: {}'s port {} is still bound 1 s after its stop",
                    inst.name,
                    inst.port
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let worst = stops.iter().map(|(_, d)| *d).max().unwrap_or_default();
        for (_, d) in &stops {
            times.add(*d);
        }
        if verbose() {
            eprintln!(
                "in-process round {round} (order {}): synced in {synced:?}, {in_flight} partners behind at the stop, slowest stop {worst:?}",
                round % 3
            );
        }
    }
    // What was in flight at the last stop arrives after a restart.
    watchdog.step("final restart, sync and stop");
    let hub_d = Daemon::start(&hub.dir).await.expect("start hub");
    let mut ps = Vec::new();
    for p in &partners {
        ps.push(Daemon::start(&p.dir).await.expect("start partner"));
    }
    wait_synced(&hub_d, &ps).await;
    ps.push(hub_d);
    for (_, d) in stop_together(ps, "final").await {
        times.add(d);
    }
    eprintln!(
        "in-process: {rounds} rounds of 21 instances in {:.1?}; {}",
        started.elapsed(),
        times.summary()
    );
}

#[test]
fn orgsyncd_hub_and_20_partners_stop_on_sigterm_within_5s_every_round() {
    let rounds = rounds();
    let (mut hub, mut partners) = star();
    let mut times = Times::default();
    let started = Instant::now();
    let mut next = 0;
    for round in 0..=rounds {
        let t = Instant::now();
        hub.start();
        for p in partners.iter_mut() {
            p.start();
        }
        wait_for(
            "the hub to have a session with all 20 partners",
            SYNC_TIMEOUT,
            || {
                let s = hub.status();
                let up = s["partners"]
                    .as_array()
                    .map_or(0, |a| a.iter().filter(|p| p["connected"] == true).count());
                (up == PARTNERS).then_some(())
            },
        );
        hub.wait_synced(SYNC_TIMEOUT);
        let synced = t.elapsed();
        if round == rounds {
            // The last start only checks that the last backlog arrived.
            let mut all: Vec<&mut Instance> = partners.iter_mut().collect();
            all.push(&mut hub);
            for (_, d) in Instance::stop_all(&mut all, STOP_LIMIT) {
                times.add(d);
            }
            break;
        }
        // A backlog in flight: 3,000 contacts through the hub's drop
        // folder (one atomic batch), and SIGTERM to all 21 the moment the
        // hub's log holds them.
        let head = hub.log_head();
        hub.drop_file(
            &format!("round{round}.ndjson"),
            &contacts_ndjson(&format!("r{round}"), next, 3_000),
        );
        next += 3_000;
        wait_for("the hub to ingest the drop file", SYNC_TIMEOUT, || {
            (hub.log_head() >= head + 3_000).then_some(())
        });
        let mut all: Vec<&mut Instance> = partners.iter_mut().collect();
        all.push(&mut hub);
        let stops = Instance::stop_all(&mut all, STOP_LIMIT);
        let worst = stops.iter().map(|(_, d)| *d).max().unwrap_or_default();
        for (_, d) in stops {
            times.add(d);
        }
        if verbose() {
            eprintln!("orgsyncd round {round}: synced in {synced:?}, slowest stop {worst:?}");
        }
    }
    eprintln!(
        "orgsyncd: {rounds} rounds of 21 processes in {:.1?}; {}",
        started.elapsed(),
        times.summary()
    );
}
