//! Starting and stopping the local API and the drop folder of a running
//! [`Daemon`] together.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{bind_socket, serve_listener, ApiError, ApiState, EnginePartners, Identity};
use crate::daemon::Daemon;
use crate::import::{Importer, IMPORT_DIR};
use crate::metrics::Metrics;
use crate::stop::{StopReport, Stopper, STOP_BUDGET};

/// The local API (on the configured socket, normally `DIR/api.sock`) and
/// the drop folder `DIR/import/` of one daemon. Stopped by
/// [`LocalServices::stop`], or by [`Daemon::stop`] if still running then.
pub struct LocalServices {
    tasks: Arc<ServiceTasks>,
    metrics: Arc<Metrics>,
}

/// The tasks of a [`LocalServices`], shared with its daemon so that
/// [`Daemon::stop`] stops them too.
pub(crate) struct ServiceTasks {
    stop: watch::Sender<bool>,
    /// Emptied by the first stop.
    tasks: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl ServiceTasks {
    /// Tells every task to stop and awaits each until the stopper's
    /// deadline; a task still running then is logged by name and aborted.
    /// A second call finds nothing left to do.
    pub(crate) async fn stop_with(&self, s: &mut Stopper) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        let tasks = tasks.into_iter().map(|(n, h)| (n.to_string(), h)).collect();
        s.join_all(tasks, None).await;
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone: stop too.
    let _ = rx.wait_for(|s| *s).await;
}

impl LocalServices {
    /// Binds the API socket (refusing to start if another daemon answers
    /// on it) and starts serving it and watching `dir/import/`.
    pub async fn start(daemon: &Daemon, dir: &Path) -> Result<LocalServices, ApiError> {
        // The engine counts changes and bytes into the daemon's registry.
        let metrics = daemon.metrics().clone();
        let id = daemon.identity();
        let identity = Identity {
            org_name: Some(id.org_name.clone()),
            org: id.org_id,
            instance: id.instance_id,
        };
        let partners =
            EnginePartners::new(daemon.engine().clone(), daemon.transport().trust().clone());
        let state = ApiState::new(daemon.store().clone(), identity, metrics.clone())
            .with_partners(Arc::new(partners))
            .with_schema(daemon.schema())
            .with_governance(daemon.governance().cloned());
        let socket = daemon.config().api.socket.clone();
        let listener = bind_socket(&socket).await?;
        tracing::info!(socket = %socket.display(), "local API listening");
        let (stop, stop_rx) = watch::channel(false);
        let api = tokio::spawn({
            let stop_rx = stop_rx.clone();
            async move {
                serve_listener(state, listener, stopped(stop_rx)).await;
                let _ = std::fs::remove_file(&socket);
            }
        });
        let importer = Importer::new(daemon.store().clone(), dir.join(IMPORT_DIR))
            .with_metrics(metrics.clone())
            .with_schema(daemon.schema())
            .with_governance(daemon.governance().cloned());
        let import = tokio::spawn(async move {
            if let Err(e) = importer.run(stopped(stop_rx)).await {
                tracing::error!(error = %e, "drop folder stopped");
            }
        });
        // Refused handshakes are counted by the trust set; mirror the count.
        let refusals = tokio::spawn({
            let metrics = metrics.clone();
            let trust = daemon.transport().trust().clone();
            let mut refused = trust.subscribe_refusals();
            let mut stop_rx = stop.subscribe();
            async move {
                loop {
                    let n = *refused.borrow_and_update();
                    metrics
                        .refused_handshakes
                        .store(n, std::sync::atomic::Ordering::Relaxed);
                    metrics
                        .pending_unlisted
                        .store(trust.unlisted(), std::sync::atomic::Ordering::Relaxed);
                    tokio::select! {
                        changed = refused.changed() => if changed.is_err() { break },
                        _ = stop_rx.wait_for(|s| *s) => break,
                    }
                }
            }
        });
        let tasks = Arc::new(ServiceTasks {
            stop,
            tasks: Mutex::new(vec![
                ("local API", api),
                ("drop folder", import),
                ("refusal counter", refusals),
            ]),
        });
        daemon.attach_services(tasks.clone());
        Ok(LocalServices { tasks, metrics })
    }

    /// The metrics registry the API exports.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops accepting API requests, ends event streams, lets open requests
    /// and a file being imported finish, and removes the socket, all within
    /// [`STOP_BUDGET`] (plus a fraction of a second per task that overran):
    /// a task still running then is logged by name and aborted (an import
    /// cut short leaves its file in the folder: nothing of it was written,
    /// or all of it was, and ingesting the file again yields the same records).
    pub async fn stop(self) -> StopReport {
        let mut s = Stopper::new("local services", STOP_BUDGET);
        self.tasks.stop_with(&mut s).await;
        s.finish()
    }
}
