//! Shared test support: an in-process API server over a real store and a
//! real Unix socket in a temporary instance directory.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orgsync_daemon::api::{self, ApiState, Identity};
use orgsync_daemon::client::Client;
use orgsync_daemon::metrics::Metrics;
use orgsync_daemon::store::Store;
use orgsync_protocol::model::OrgId;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running API server; [`TestServer::stop`] shuts it down.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub state: ApiState,
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), api::ApiError>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), 4 << 20).expect("open store");
        let identity = Identity {
            org_name: Some("Test Org".into()),
            org: OrgId(*blake3::hash(dir.path().to_string_lossy().as_bytes()).as_bytes()),
            instance: store.instance(),
        };
        let state = ApiState::new(store.clone(), identity, Arc::new(Metrics::new()));
        let socket = dir.path().join(api::SOCKET_NAME);
        let listener = api::bind_socket(&socket).await.expect("bind API socket");
        let (stop, stopped) = oneshot::channel::<()>();
        let st = state.clone();
        let task = tokio::spawn(async move {
            api::serve_listener(st, listener, async {
                let _ = stopped.await;
            })
            .await;
            Ok(())
        });
        let client = Client::new(dir.path());
        TestServer {
            dir,
            store,
            state,
            client,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("server result");
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some` or `deadline` passes.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
