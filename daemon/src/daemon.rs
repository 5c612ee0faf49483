//! A whole running instance: configuration, identity, store, transport and
//! sync engine, started from an instance directory and stopped cleanly.
//! `orgsyncd` is a thin wrapper around [`Daemon`]; tests and the quickstart
//! run daemons in-process with it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use orgsync_keytool::{Identity, InstanceDir, KeytoolError, Partner, PartnerState};
use orgsync_protocol::identity::PairKeys;
use orgsync_protocol::model::Schema;
use tokio::sync::watch;

use crate::api::ServiceTasks;
use crate::config::{Config, ConfigError};
use crate::engine::{Engine, EngineOptions, KeySource};
use crate::governance::{system_clock, GovConfig, GovError, Governance};
use crate::policy::SharePolicy;
use crate::stop::{StopReport, Stopper, STOP_BUDGET};
use crate::store::{Store, StoreError, StoreOptions};
use crate::transport::{
    LocalIdentity, Transport, TransportError, TransportOptions, Trust, TrustedPeer,
};

/// Why the daemon could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// `orgsync.toml` is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The identity or partners could not be loaded (or secrets are exposed).
    // keytool's message is shown in this one's and not exposed as the
    // error's source: with both, a printed cause chain (`{:#}`) said it twice.
    #[error("instance directory {dir}: {reason}")]
    Identity {
        /// The instance directory.
        dir: PathBuf,
        /// keytool's error (boxed: it is large and rare).
        reason: Box<KeytoolError>,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sharing governance could not start (`governance.toml`, its trees).
    #[error(transparent)]
    Governance(#[from] GovError),
    /// The QUIC endpoint could not be set up.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Pair keys from the keytool identity and the partners on file.
struct KeytoolKeys {
    identity: Arc<Identity>,
    partners: Arc<RwLock<Vec<Partner>>>,
}

impl KeySource for KeytoolKeys {
    fn pair_keys(&self, peer: &TrustedPeer) -> Result<PairKeys, String> {
        let partners = self.partners.read().unwrap_or_else(PoisonError::into_inner);
        let partner = partners
            .iter()
            .find(|p| p.org_id == peer.org)
            .ok_or_else(|| format!("partner {} is not in partners.toml", peer.name))?;
        let epoch = self.identity.pair_epoch(partner);
        self.identity
            .pair_keys(partner, epoch)
            .map_err(|e| e.to_string())
    }
}

fn trusted(partners: &[Partner]) -> Vec<TrustedPeer> {
    partners
        .iter()
        .map(|p| TrustedPeer {
            org: p.org_id,
            name: p.name.clone(),
            fingerprint: p.cert_fingerprint,
            addresses: p.addresses.clone(),
            revoked: p.state == PartnerState::Revoked,
        })
        .collect()
}

/// Re-reads partners.toml into the trust set, the key source and the engine.
#[derive(Clone)]
struct PartnerReloader {
    dir: InstanceDir,
    partners: Arc<RwLock<Vec<Partner>>>,
    transport: Transport,
    engine: Engine,
}

impl PartnerReloader {
    fn reload(&self) -> Result<(), DaemonError> {
        let partners = self
            .dir
            .load_partners()
            .map_err(|source| DaemonError::Identity {
                dir: self.dir.path().to_path_buf(),
                reason: Box::new(source),
            })?;
        self.transport.trust().replace(trusted(&partners));
        *self
            .partners
            .write()
            .unwrap_or_else(PoisonError::into_inner) = partners;
        self.engine.reload_partners();
        Ok(())
    }
}

/// Accepting a pending peer: its bundle goes to partners.toml, then the
/// partner set is reloaded (the peer is paired from then on). keytool's
/// `store_partner` refuses a bundle whose account number does not belong to
/// its key and never replaces a known partner's key or certificate.
impl crate::governance::pending::Pairing for PartnerReloader {
    fn pair(&self, bundle: &orgsync_protocol::bundle::Bundle) -> Result<String, String> {
        let me = self.dir.load_identity().map_err(|e| e.to_string())?;
        let (partner, _) = orgsync_keytool::pairing::store_partner(&self.dir, &me, bundle)
            .map_err(|e| e.to_string())?;
        self.reload().map_err(|e| e.to_string())?;
        Ok(partner.name)
    }
}

/// What `orgsync.toml` sets that can change while the daemon runs.
#[derive(Clone)]
struct LiveConfig {
    dir: PathBuf,
    /// The configuration read at start: keys that need a restart are
    /// compared against it, so a change is reported until the restart.
    started: Arc<Config>,
    schema: watch::Sender<Schema>,
    log_level: watch::Sender<String>,
}

impl LiveConfig {
    /// Re-reads `orgsync.toml`: applies the custom fields and the log level,
    /// and names the keys that changed but need a restart. A file that does
    /// not validate changes nothing.
    fn reload(&self) -> Result<Vec<&'static str>, DaemonError> {
        let new = Config::load(&self.dir)?;
        let restart = self.started.restart_needed(&new);
        self.schema.send_if_modified(|s| {
            let changed = *s != new.schema;
            *s = new.schema.clone();
            changed
        });
        self.log_level.send_if_modified(|l| {
            let changed = *l != new.log.level;
            l.clone_from(&new.log.level);
            changed
        });
        Ok(restart)
    }
}

/// Watches the instance directory and reloads partners.toml and
/// orgsync.toml when they change (keytool and most editors write by
/// renaming onto the name, which is seen here too).
struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

/// Which watched file changed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watched {
    Partners,
    Config,
}

impl DirWatcher {
    fn start(reloader: PartnerReloader, live: LiveConfig) -> Result<DirWatcher, notify::Error> {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Watched>();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(ev) = res else { return };
                for name in ev.paths.iter().filter_map(|p| p.file_name()) {
                    let which = if name == PARTNERS_FILE {
                        Watched::Partners
                    } else if name == crate::config::CONFIG_FILE {
                        Watched::Config
                    } else {
                        continue;
                    };
                    // The daemon is stopping when nobody listens.
                    let _ = tx.send(which);
                }
            })?;
        watcher.watch(reloader.dir.path(), notify::RecursiveMode::NonRecursive)?;
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // One write makes several events: let them settle, then
                // reload each file once.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let (mut partners, mut config) =
                    (first == Watched::Partners, first == Watched::Config);
                while let Ok(w) = rx.try_recv() {
                    partners |= w == Watched::Partners;
                    config |= w == Watched::Config;
                }
                if partners {
                    match reloader.reload() {
                        Ok(()) => tracing::info!("partners.toml changed: partners reloaded"),
                        Err(e) => tracing::error!(error = %e,
                            "partners.toml changed but cannot be read; keeping the previous partners"),
                    }
                }
                if config {
                    log_config_reload(&live.reload());
                }
            }
        });
        Ok(DirWatcher {
            _watcher: watcher,
            task,
        })
    }
}

fn log_config_reload(result: &Result<Vec<&'static str>, DaemonError>) {
    match result {
        Ok(restart) if restart.is_empty() => {
            tracing::info!("orgsync.toml changed: log level and custom fields reloaded")
        }
        Ok(restart) => tracing::warn!(
            keys = %restart.join(", "),
            "orgsync.toml changed: log level and custom fields reloaded; the other changed keys take effect at the next restart"
        ),
        Err(e) => tracing::error!(error = %e,
            "orgsync.toml changed but is not valid; keeping the previous configuration"),
    }
}

const PARTNERS_FILE: &str = "partners.toml";

/// A running instance.
pub struct Daemon {
    config: Config,
    identity: Arc<Identity>,
    store: Store,
    transport: Transport,
    engine: Engine,
    metrics: Arc<crate::metrics::Metrics>,
    reloader: PartnerReloader,
    live: LiveConfig,
    watcher: Option<DirWatcher>,
    governance: Option<Governance>,
    /// Local API and drop folder started for this daemon (stopped with it).
    services: Mutex<Vec<Arc<ServiceTasks>>>,
    /// The web console, when started (stopped with the daemon).
    web: Mutex<Option<crate::web::WebServer>>,
    /// The idle trim task ([`crate::idle`]); holds no store handle.
    idle: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Loads `DIR/orgsync.toml`, the identity and partners (refusing
    /// exposed secrets), opens the store, binds the endpoint and starts
    /// syncing with every paired partner. Must be called inside a tokio
    /// runtime.
    ///
    /// Sharing follows [`Governance`] (settings in `DIR/governance.toml`):
    /// a partner receives nothing until a share selects something for it.
    pub async fn start(dir: &Path) -> Result<Daemon, DaemonError> {
        Daemon::start_inner(dir, None).await
    }

    /// [`Daemon::start`] with another sharing policy (e.g.
    /// [`crate::policy::AllowAll`]);
    /// the daemon then has no [`Governance`].
    pub async fn start_with_policy(
        dir: &Path,
        policy: Arc<dyn SharePolicy>,
    ) -> Result<Daemon, DaemonError> {
        Daemon::start_inner(dir, Some(policy)).await
    }

    async fn start_inner(
        dir: &Path,
        policy: Option<Arc<dyn SharePolicy>>,
    ) -> Result<Daemon, DaemonError> {
        let config = Config::load(dir)?;
        let instance = InstanceDir::new(dir);
        let id_err = |source| DaemonError::Identity {
            dir: dir.to_path_buf(),
            reason: Box::new(source),
        };
        let identity = Arc::new(instance.load_identity().map_err(id_err)?);
        let partners = instance.load_partners().map_err(id_err)?;
        let store = Store::open_with(
            dir,
            StoreOptions {
                cache_capacity_bytes: config.store.cache_capacity_bytes,
                flush_window: Duration::from_millis(config.store.flush_every_ms),
                instance: Some(identity.instance_id),
                ..StoreOptions::default()
            },
        )?;
        let trust = Trust::new(trusted(&partners));
        let tls = LocalIdentity {
            cert_der: identity.cert_der.clone(),
            key_der: Arc::new(identity.key_der.clone()),
        };
        let transport = Transport::bind(
            TransportOptions::new(config.listen, tls, identity.org_id),
            trust,
        )?;
        // [limits]: the blob cap holds for every way a blob is stored.
        store
            .blob_files()
            .set_max_bytes(config.limits.max_blob_bytes);
        let mut engine_options = EngineOptions::from_config(&config.sync);
        engine_options.limits = config.limits.clone();
        let metrics = engine_options.metrics.clone();
        let (policy, governance) = match policy {
            Some(p) => (p, None),
            None => {
                let g = Governance::start(
                    identity.org_id,
                    store.clone(),
                    transport.trust().clone(),
                    GovConfig::load(dir)?.with_limits(config.limits.clone()),
                    system_clock(),
                    metrics.clone(),
                )?;
                (Arc::new(g.clone()) as Arc<dyn SharePolicy>, Some(g))
            }
        };
        let partners = Arc::new(RwLock::new(partners));
        let keys = Arc::new(KeytoolKeys {
            identity: identity.clone(),
            partners: partners.clone(),
        });
        let engine = Engine::start(
            store.clone(),
            transport.clone(),
            policy,
            keys,
            engine_options.clone(),
        );
        tracing::info!(
            org = %identity.org_name,
            account = %identity.org_id,
            instance = %identity.instance_id,
            fingerprint = %identity.fingerprint,
            listen = %transport.local_addr()?,
            partners = partners.read().unwrap_or_else(PoisonError::into_inner).len(),
            "orgsyncd started"
        );
        let reloader = PartnerReloader {
            dir: instance,
            partners,
            transport: transport.clone(),
            engine: engine.clone(),
        };
        if let Some(g) = &governance {
            g.set_pairing(Arc::new(reloader.clone()));
        }
        let live = LiveConfig {
            dir: dir.to_path_buf(),
            started: Arc::new(config.clone()),
            schema: watch::Sender::new(config.schema.clone()),
            log_level: watch::Sender::new(config.log.level.clone()),
        };
        let watcher = match DirWatcher::start(reloader.clone(), live.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e,
                    "cannot watch partners.toml and orgsync.toml; reload them with SIGHUP");
                None
            }
        };
        // Gives memory back once a burst is over (issue 16 item 4).
        let idle = crate::idle::spawn(
            store.subscribe_head(),
            metrics.clone(),
            crate::idle::IDLE_AFTER,
        );
        Ok(Daemon {
            idle,
            config,
            identity,
            store,
            transport,
            engine,
            metrics,
            reloader,
            live,
            watcher,
            governance,
            services: Mutex::default(),
            web: Mutex::default(),
        })
    }

    /// Re-reads `partners.toml`: new partners start syncing, revoked ones
    /// are disconnected and refused at the next handshake. Done
    /// automatically when the file changes; also on SIGHUP.
    pub fn reload_partners(&self) -> Result<(), DaemonError> {
        self.reloader.reload()
    }

    /// The configuration read at start (see [`Daemon::schema`] and
    /// [`Daemon::log_level`] for what changes while running).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Re-reads `orgsync.toml` (done automatically when it changes; also on
    /// SIGHUP): the log level and custom fields apply at once. Returns the
    /// keys that changed but take effect only at the next restart.
    pub fn reload_config(&self) -> Result<Vec<&'static str>, DaemonError> {
        let result = self.live.reload();
        log_config_reload(&result);
        result
    }

    /// The custom-field schema in force, updated when `orgsync.toml` changes.
    pub fn schema(&self) -> watch::Receiver<Schema> {
        self.live.schema.subscribe()
    }

    /// The `log.level` filter in force, updated when `orgsync.toml` changes
    /// (`orgsyncd` applies it to its log subscriber).
    pub fn log_level(&self) -> watch::Receiver<String> {
        self.live.log_level.subscribe()
    }

    /// This instance's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The store (for the local API and the drop folder).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The daemon's counters, exported by the local API as `/metrics`.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The sync engine (status, partners).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The transport (bound address, pending peers).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Sharing governance (absent when started with another policy).
    pub fn governance(&self) -> Option<&Governance> {
        self.governance.as_ref()
    }

    /// Starts the web console on `[web] listen` when the configuration
    /// asks for it (see [`crate::config::WebEnabled`]); returns its bound
    /// address, or `None` when it is not wanted. A second call does nothing
    /// while it runs. Stopped by [`Daemon::stop`].
    pub async fn start_web(
        &self,
        dir: &Path,
    ) -> Result<Option<std::net::SocketAddr>, crate::web::WebError> {
        use crate::web::{About, WebServer, WebState};
        if let Some(w) = self
            .web
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(Some(w.local_addr()));
        }
        let cfg = &self.config.web;
        if !WebServer::wanted(cfg, dir)? {
            return Ok(None);
        }
        let id = &self.identity;
        let about = About {
            org_name: id.org_name.clone(),
            account: id.org_id.account_number(),
            fingerprint: id.fingerprint.to_string(),
            epoch: id.epoch,
            instance: id.instance_id.to_string(),
        };
        let partners =
            crate::api::EnginePartners::new(self.engine.clone(), self.transport.trust().clone());
        let state = WebState::new(
            dir,
            self.governance.clone(),
            Arc::new(partners),
            about,
            cfg.tls_cert.is_some(),
            cfg.listen,
        );
        let reloader = self.reloader.clone();
        let control = crate::web::pairing::PartnerControl::new(
            InstanceDir::new(dir),
            Arc::new(move || reloader.reload().map_err(|e| e.to_string())),
        );
        let state = state.with_instance(control, self.store.clone());
        let server = WebServer::start(cfg, state).await?;
        let addr = server.local_addr();
        *self.web.lock().unwrap_or_else(PoisonError::into_inner) = Some(server);
        Ok(Some(addr))
    }

    /// Lets [`Daemon::stop`] stop the local API and drop folder started
    /// for this daemon, if they still run then.
    pub(crate) fn attach_services(&self, services: Arc<ServiceTasks>) {
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(services);
    }

    /// Stops the daemon in bounded time, whatever its tasks are doing:
    /// [`STOP_BUDGET`] for the graceful part, plus a fifth of a second for
    /// each step that overran it (under four seconds in all when
    /// everything overruns, however many partners; about a second
    /// normally, most of it telling peers).
    ///
    /// In order: the web console, the local API and drop folder started for it (open
    /// requests and a file being imported may finish), the directory
    /// watcher, the sync engine (every partner task closes its session,
    /// letting an apply in progress become durable; the endpoint closes and
    /// peers are told; the store is flushed), then governance's background
    /// tasks. A task or step still running at the deadline is logged by
    /// name (warning) and aborted, and listed in the report.
    ///
    /// When it returns, the listen port is free (connections still
    /// draining do so on a throwaway port), so the instance can be started
    /// again in this process at once; the store closes as soon as the last
    /// aborted task is dropped ([`Daemon::start`] waits up to 3 s for it).
    pub async fn stop(self) -> StopReport {
        self.stop_within(STOP_BUDGET).await
    }

    /// [`Daemon::stop`] with another budget for the graceful part.
    pub async fn stop_within(self, budget: Duration) -> StopReport {
        let mut s = Stopper::new("daemon", budget);
        let web = self
            .web
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = web {
            w.stop_with(&mut s).await;
        }
        let services =
            std::mem::take(&mut *self.services.lock().unwrap_or_else(PoisonError::into_inner));
        for svc in services {
            svc.stop_with(&mut s).await;
        }
        if let Some(w) = self.watcher {
            w.task.abort();
            s.join("config watcher", w.task, Some(Duration::ZERO)).await;
        }
        // It holds no store handle and has nothing to finish: aborted, not
        // waited for (a loaded runtime may take longer than a stop step's
        // floor to drop it, which would count as a task that did not stop).
        self.idle.abort();
        self.engine.stop_with(&mut s).await;
        if let Some(g) = &self.governance {
            s.step("governance background tasks", None, g.shutdown())
                .await;
        }
        let report = s.finish();
        if report.is_clean() {
            tracing::info!(
                elapsed_ms = report.elapsed.as_millis() as u64,
                "orgsyncd stopped"
            );
        } else {
            tracing::warn!(
                elapsed_ms = report.elapsed.as_millis() as u64,
                aborted = %report.aborted.join(", "),
                "orgsyncd stopped; some tasks did not stop in time and were aborted"
            );
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Edit;
    use orgsync_keytool::pairing::store_partner;
    use orgsync_protocol::model::{Kind, ObjectId, Value};

    fn free_port() -> u16 {
        // Racy in theory (the port could be taken before the daemon binds),
        // fine on a test machine; keytool refuses port 0.
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn pair(a: &Path, b: &Path) {
        let (da, db) = (InstanceDir::new(a), InstanceDir::new(b));
        let (ia, ib) = (da.load_identity().unwrap(), db.load_identity().unwrap());
        for (dir, me, other, other_dir) in [(&da, &ia, &ib, &db), (&db, &ib, &ia, &da)] {
            let listen = other_dir.listen_address().unwrap().unwrap();
            let bundle = other.bundle(vec![listen]);
            store_partner(dir, me, &bundle).unwrap();
            // These tests are about syncing, not about what is shared.
            std::fs::write(
                dir.path().join(crate::governance::CONFIG_FILE),
                "mirror_all_partners = true\n",
            )
            .unwrap();
        }
    }

    /// Acme and Globex, paired, with their daemons started. The temp dir
    /// must outlive the daemons.
    async fn two_paired_daemons() -> (tempfile::TempDir, PathBuf, Daemon, Daemon) {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        InstanceDir::create(&a, "Acme", &format!("127.0.0.1:{}", free_port())).unwrap();
        InstanceDir::create(&b, "Globex", &format!("127.0.0.1:{}", free_port())).unwrap();
        pair(&a, &b);
        let da = Daemon::start(&a).await.unwrap();
        let db = Daemon::start(&b).await.unwrap();
        (root, b, da, db)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_daemons_from_instance_dirs_sync() {
        let (_root, _, da, db) = two_paired_daemons().await;
        assert_eq!(da.store().instance(), da.identity().instance_id);
        let edit = Edit::new(ObjectId::new_v7(1_700_000_000_000), Kind::Contact)
            .set_std("first_name", Value::Text("Ada".into()));
        let id = edit.id;
        let mut events = db.store().subscribe_events();
        da.store().write(vec![edit]).await.unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("change arrives")
            .unwrap();
        assert_eq!(ev.id, id);
        assert_eq!(
            db.store().get(id).unwrap().unwrap().get_std("first_name"),
            Some(&Value::Text("Ada".into()))
        );
        // The engine counts into the daemon's registry (what /metrics shows).
        use std::sync::atomic::Ordering::Relaxed;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while db.metrics().changes_applied.load(Relaxed) < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "changes_applied never counted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(da.metrics().changes_sent.load(Relaxed) >= 1);
        assert!(da.metrics().bytes_sent.load(Relaxed) > 0);
        assert!(db.metrics().bytes_received.load(Relaxed) > 0);
        assert!(da.stop().await.is_clean());
        assert!(db.stop().await.is_clean());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn editing_partners_toml_revokes_at_once() {
        let (_root, b, da, db) = two_paired_daemons().await;
        let org_a = da.identity().org_id;
        let org_b = db.identity().org_id;
        let mut status = da.engine().subscribe_status(&org_b).unwrap();
        tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.connected))
            .await
            .expect("connected")
            .unwrap();

        // b's admin revokes a by editing partners.toml (as keytool does).
        let mut refusals = db.transport().trust().subscribe_refusals();
        let dir_b = InstanceDir::new(&b);
        let mut partners = dir_b.load_partners().unwrap();
        let idx = partners.iter().position(|p| p.org_id == org_a).unwrap();
        assert!(orgsync_keytool::partners::revoke(
            &mut partners,
            idx,
            "2026-01-02T00:00:00Z"
        ));
        dir_b.save_partners(&partners).unwrap();

        tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| !s.connected))
            .await
            .expect("a is disconnected without a restart")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), refusals.wait_for(|n| *n >= 1))
            .await
            .expect("a's redial is refused")
            .unwrap();
        assert!(db.transport().trust().pending().iter().any(|p| p.revoked));
        assert!(da.stop().await.is_clean());
        assert!(db.stop().await.is_clean());
    }

    #[tokio::test]
    async fn start_refuses_a_directory_without_identity() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("orgsync.toml"),
            "listen = \"127.0.0.1:7700\"\n",
        )
        .unwrap();
        assert!(matches!(
            Daemon::start(dir.path()).await,
            Err(DaemonError::Identity { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            Daemon::start(empty.path()).await,
            Err(DaemonError::Config(ConfigError::Read { .. }))
        ));
    }
}
