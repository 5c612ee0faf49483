//! Starting and stopping the local API and the drop folder of a running
//! [`Daemon`] together.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{bind_socket, serve_listener, ApiError, ApiState, EnginePartners, Identity};
use crate::daemon::Daemon;
use crate::import::{Importer, IMPORT_DIR};
use crate::metrics::Metrics;

/// The local API (on the configured socket, normally `DIR/api.sock`) and
/// the drop folder `DIR/import/` of one daemon.
pub struct LocalServices {
    stop: watch::Sender<bool>,
    api: JoinHandle<()>,
    import: JoinHandle<()>,
    refusals: JoinHandle<()>,
    metrics: Arc<Metrics>,
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
            let mut refused = daemon.transport().trust().subscribe_refusals();
            let mut stop_rx = stop.subscribe();
            async move {
                loop {
                    let n = *refused.borrow_and_update();
                    metrics
                        .refused_handshakes
                        .store(n, std::sync::atomic::Ordering::Relaxed);
                    tokio::select! {
                        changed = refused.changed() => if changed.is_err() { break },
                        _ = stop_rx.wait_for(|s| *s) => break,
                    }
                }
            }
        });
        Ok(LocalServices {
            stop,
            api,
            import,
            refusals,
            metrics,
        })
    }

    /// The metrics registry the API exports.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops accepting API requests, ends event streams, lets open requests
    /// and a file being imported finish, and removes the socket.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.api.await;
        let _ = self.import.await;
        let _ = self.refusals.await;
    }
}
