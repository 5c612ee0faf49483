//! Idle trim: after a burst of writes or sync traffic, an idle daemon gives
//! memory back to the system instead of keeping its peak.
//!
//! A task samples the daemon's activity (log head, changes sent and
//! applied, API requests, drop-folder records) every [`SAMPLE_EVERY`]. When
//! nothing moved for the idle period, it trims once: the allocator hook
//! (installed by the binary that chose the allocator, see
//! [`set_release_hook`]) returns freed pages to the system. sled's page
//! cache is not shrunk: sled 0.34 has no call for it (it evicts only when
//! pages are read), so what the store holds stays. It trims again only after the
//! next activity has come and gone, so an idle daemon costs one sample per
//! second and nothing else.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::{self, Metrics};

/// How long without activity before the daemon trims.
pub const IDLE_AFTER: Duration = Duration::from_secs(10);

/// How often activity is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Returns freed allocator memory to the system; set once per process by
/// the binary that chose the global allocator.
static RELEASE_HOOK: OnceLock<fn()> = OnceLock::new();

/// Installs the allocator's release function, run on the blocking pool at
/// each trim. Only the first call counts (one allocator per process).
pub fn set_release_hook(hook: fn()) {
    let _ = RELEASE_HOOK.set(hook);
}

/// What moved since the last sample, read from counters that only grow.
fn activity(head: &watch::Receiver<u64>, m: &Metrics) -> [u64; 6] {
    [
        *head.borrow(),
        m.changes_sent.load(Ordering::Relaxed),
        m.changes_applied.load(Ordering::Relaxed),
        m.changes_unchanged.load(Ordering::Relaxed),
        m.api_requests.load(Ordering::Relaxed),
        m.records_imported.load(Ordering::Relaxed),
    ]
}

/// Trims now: runs the allocator hook on the blocking pool (it may take
/// some milliseconds). Counts the trim in `orgsync_idle_trims_total`.
pub async fn trim(m: &Metrics) {
    let done = tokio::task::spawn_blocking(move || {
        if let Some(hook) = RELEASE_HOOK.get() {
            hook();
        }
    })
    .await;
    if let Err(e) = done {
        tracing::warn!(error = %e, "idle trim did not finish");
        return;
    }
    metrics::add(&m.idle_trims, 1);
    tracing::debug!("idle: memory trimmed");
}

/// Starts the idle watcher: trims once after `after` without activity,
/// then waits for activity again. `head` is the store's log head
/// ([`crate::store::Store::subscribe_head`]): the task holds no store
/// handle, so aborting it is all a stop needs (nothing to wait for).
pub fn spawn(head: watch::Receiver<u64>, m: Arc<Metrics>, after: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = activity(&head, &m);
        let mut quiet = Duration::ZERO;
        let mut trimmed = true; // nothing to give back before any activity
        let mut tick = tokio::time::interval(SAMPLE_EVERY.min(after));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = activity(&head, &m);
            if now != last {
                last = now;
                quiet = Duration::ZERO;
                trimmed = false;
                continue;
            }
            quiet += SAMPLE_EVERY.min(after);
            if !trimmed && quiet >= after {
                trim(&m).await;
                trimmed = true;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Edit, Store};
    use orgsync_protocol::model::{Kind, ObjectId, Value};
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    static RELEASES: AtomicU64 = AtomicU64::new(0);

    fn count_release() {
        RELEASES.fetch_add(1, Ordering::SeqCst);
    }

    async fn wait_trims(m: &Metrics, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while m.idle_trims.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "no trim {n} in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trims_once_after_each_burst() {
        set_release_hook(count_release);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        let m = Arc::new(Metrics::new());
        let task = spawn(
            store.subscribe_head(),
            m.clone(),
            Duration::from_millis(200),
        );
        let write = |i: u64| {
            Edit::new(ObjectId::new_v7(1_700_000_000_000 + i), Kind::Contact)
                .set_std("first_name", Value::Text(format!("Idle{i}")))
        };
        store.write(vec![write(1)]).await.unwrap();
        wait_trims(&m, 1).await;
        assert!(RELEASES.load(Ordering::SeqCst) >= 1, "the hook ran");
        store.write(vec![write(2)]).await.unwrap();
        wait_trims(&m, 2).await;
        // Quiet since: no third trim, however many samples pass (each
        // sample is 200 ms; 5 of them is well past the idle period).
        let quiet_until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < quiet_until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(m.idle_trims.load(Ordering::SeqCst), 2);
        task.abort();
        eprintln!("idle: 2 trims for 2 bursts, none while idle after");
    }
}
