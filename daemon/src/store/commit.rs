//! Group commit: many writers, one flush.
//!
//! Writers apply their batch to sled (in memory), take a *ticket* and wait
//! until a flush that started after their ticket has completed. One thread
//! does the flushing: it takes the highest ticket issued so far, flushes,
//! and releases every writer up to that ticket at once. Writers that arrive
//! during a flush are released together by the next one. A flush on this
//! kind of machine takes ~0.15 ms, so one flush per record would cap
//! writes near 6k/s; batching lifts that cap with load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

/// Progress of the flusher, published to waiting writers.
#[derive(Clone, Debug, Default)]
struct Flushed {
    /// Every ticket up to this one is durable.
    up_to: u64,
    /// A flush failed: sled can no longer promise durability, so every
    /// later wait fails with this message (sticky on purpose).
    error: Option<Arc<str>>,
}

#[derive(Default)]
struct Pending {
    /// Highest ticket issued.
    issued: u64,
    /// Set when the store is dropped: flush what is pending, then exit.
    stop: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    done: watch::Sender<Flushed>,
    flushes: AtomicU64,
}

/// The group-commit flusher of one sled database.
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the flusher thread. `window` is how long it waits after the
    /// first pending ticket before flushing (0: flush at once).
    pub(crate) fn start(db: sled::Db, window: Duration) -> std::io::Result<GroupCommit> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            done: watch::Sender::new(Flushed::default()),
            flushes: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("orgsync-flusher".into())
            .spawn({
                let shared = shared.clone();
                move || flusher(db, window, &shared)
            })?;
        Ok(GroupCommit {
            shared,
            thread: Some(thread),
        })
    }

    /// Issues a ticket covering every write already applied to sled and
    /// wakes the flusher. Call it after the write, while still holding the
    /// store's writer lock, so ticket order follows log order.
    pub(crate) fn ticket(&self) -> u64 {
        let mut p = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        p.issued += 1;
        self.shared.wake.notify_one();
        p.issued
    }

    /// Waits until `ticket` is durable. Errors when a flush failed.
    pub(crate) async fn wait(&self, ticket: u64) -> Result<(), Arc<str>> {
        let mut rx = self.shared.done.subscribe();
        let state = rx
            .wait_for(|f| f.up_to >= ticket || f.error.is_some())
            .await
            // The sender lives in `self.shared`, which outlives this borrow.
            .map_err(|_| Arc::<str>::from("the store's flusher stopped"))?;
        match &state.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// How many flushes the flusher has done (for tests and metrics).
    pub(crate) fn flush_count(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        {
            let mut p = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            p.stop = true;
        }
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            // A panicking flusher already poisoned nothing we rely on; the
            // join result carries no information worth surfacing in drop.
            let _ = t.join();
        }
    }
}

fn flusher(db: sled::Db, window: Duration, shared: &Shared) {
    let mut flushed = 0u64;
    loop {
        {
            let mut p = shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            while p.issued == flushed && !p.stop {
                p = shared.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
            }
            if p.issued == flushed && p.stop {
                return;
            }
        }
        if !window.is_zero() {
            std::thread::sleep(window);
        }
        // Read the target just before flushing: every ticket issued so far
        // belongs to a write already applied, so this flush covers it.
        let target = shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .issued;
        let result = db.flush();
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => {
                shared.done.send_modify(|f| f.up_to = target);
            }
            Err(e) => {
                tracing::error!(error = %e, "store flush failed; writes are no longer durable");
                shared
                    .done
                    .send_modify(|f| f.error = Some(Arc::from(e.to_string())));
            }
        }
        flushed = target;
    }
}
