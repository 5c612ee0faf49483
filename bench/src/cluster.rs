//! Real orgsync instances for the scenarios: instance directories created
//! and paired through the keytool library, whole daemons (store, QUIC
//! transport on loopback, engine, optionally the local API socket) started
//! in this process with [`Daemon::start`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use orgsync_daemon::api::LocalServices;
use orgsync_daemon::daemon::Daemon;
use orgsync_daemon::store::{Edit, Store, StoreOptions};
use orgsync_keytool::pairing::store_partner;
use orgsync_keytool::InstanceDir;
use orgsync_protocol::codec;
use orgsync_protocol::model::{Kind, ObjectId, OrgId, Value};

use crate::progress;

/// One instance directory and, while started, its daemon.
pub struct Node {
    /// The instance directory.
    pub dir: PathBuf,
    /// The account number.
    pub org: OrgId,
    daemon: Option<Daemon>,
    api: Option<LocalServices>,
}

fn free_port() -> Result<u16> {
    // keytool refuses port 0; the port could in theory be taken before the
    // daemon binds it, which is fine on a bench machine.
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Node {
    /// Creates an instance directory `root/name` listening on a free
    /// loopback port, with `orgsync.toml` defaults.
    pub fn create(root: &Path, name: &str) -> Result<Node> {
        let dir = root.join(name);
        let listen = format!("127.0.0.1:{}", free_port()?);
        InstanceDir::create(&dir, name, &listen)
            .with_context(|| format!("creating instance {}", dir.display()))?;
        // The bench measures sync, so every partner gets everything.
        std::fs::write(
            dir.join(orgsync_daemon::governance::CONFIG_FILE),
            "mirror_all_partners = true\n",
        )?;
        crate::procs::cache_override(&dir)?;
        let org = InstanceDir::new(&dir).load_identity()?.org_id;
        Ok(Node {
            dir,
            org,
            daemon: None,
            api: None,
        })
    }

    /// The instance's name (its directory's).
    pub fn name(&self) -> String {
        self.dir.file_name().map_or_else(
            || self.dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// Starts the daemon (and the local API socket if `api`).
    pub async fn start(&mut self, api: bool) -> Result<()> {
        progress::waiting_for(format!("{} to start", self.name()));
        let daemon = Daemon::start(&self.dir)
            .await
            .with_context(|| format!("starting daemon in {}", self.dir.display()))?;
        if api {
            self.api = Some(LocalServices::start(&daemon, &self.dir).await?);
        }
        self.daemon = Some(daemon);
        Ok(())
    }

    /// The running daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon started")
    }

    /// Stops the daemon and, with it, the API; fails naming the tasks the
    /// daemon had to abort (they did not stop in time).
    pub async fn stop(&mut self) -> Result<()> {
        // The daemon stops the services started for it, in one deadline.
        drop(self.api.take());
        if let Some(d) = self.daemon.take() {
            progress::waiting_for(format!("{} to stop", self.name()));
            let report = d.stop().await;
            if !report.is_clean() {
                bail!(
                    "stopping {}: aborted after {:?}: {}",
                    self.dir.display(),
                    report.elapsed,
                    report.aborted.join(", ")
                );
            }
        }
        Ok(())
    }
}

/// Makes `a` and `b` partners of each other (what `orgsync-keytool
/// import` does on both sides), then reloads running daemons.
pub fn pair(a: &Node, b: &Node) -> Result<()> {
    let (da, db) = (InstanceDir::new(&a.dir), InstanceDir::new(&b.dir));
    let (ia, ib) = (da.load_identity()?, db.load_identity()?);
    for (dir, me, other, other_dir) in [(&da, &ia, &ib, &db), (&db, &ib, &ia, &da)] {
        let listen = other_dir
            .listen_address()?
            .context("instance has no listen address")?;
        let bundle = other.bundle(vec![listen]);
        store_partner(dir, me, &bundle)?;
    }
    for n in [a, b] {
        if let Some(d) = &n.daemon {
            d.reload_partners()?;
        }
    }
    Ok(())
}

/// Waits until `node` has a live session with `partner`.
pub async fn wait_connected(node: &Node, partner: &Node, timeout: Duration) -> Result<()> {
    progress::waiting_for(format!("{} to connect to {}", node.name(), partner.name()));
    let partner = &partner.org;
    let deadline = Instant::now() + timeout;
    loop {
        let up = node
            .daemon()
            .engine()
            .status()
            .iter()
            .any(|(org, s)| org == partner && s.connected);
        if up {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no session with the partner after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `receiver` has durably applied `sender`'s log up to `seq`
/// (its `applied_from_peer` cursor, written in the same batch as the
/// changes). Polls every `every`.
pub async fn wait_applied(
    receiver: &Node,
    sender: &OrgId,
    seq: u64,
    every: Duration,
    timeout: Duration,
) -> Result<()> {
    progress::waiting_for(format!(
        "{} to apply partner {sender}'s log up to {seq}",
        receiver.name()
    ));
    let deadline = Instant::now() + timeout;
    let store = receiver.daemon().store();
    loop {
        if store.cursor(sender)?.applied_from_peer >= seq {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "receiver applied only {} of {seq} after {timeout:?}",
                store.cursor(sender)?.applied_from_peer
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// A contact whose logged change encodes to about 262 bytes.
pub fn contact(i: u64) -> Edit {
    Edit::new(ObjectId::new_v7(1_700_000_000_000 + i), Kind::Contact)
        .set_std("first_name", Value::Text(format!("First{i:08}")))
        .set_std("last_name", Value::Text(format!("Lastname{i:08}")))
        .set_std("email", Value::Text(format!("person{i:015}@example.org")))
        .set_std("phone", Value::Text(format!("+44 20 {i:010}")))
        .set_std("role", Value::Text("Procurement lead".into()))
}

/// The encoded size of the first change in `node`'s log.
pub fn logged_change_len(node: &Node) -> Result<usize> {
    let log = node.daemon().store().load_log(0, 1)?;
    let first = log.first().context("empty log")?;
    Ok(codec::encode(&first.change)?.len())
}

/// Opens the store of the stopped instance in `dir` as its daemon would
/// (default config, the instance's own id), to fill it before a scenario.
pub fn open_store(dir: &Path) -> Result<Store> {
    let instance = InstanceDir::new(dir).load_identity()?.instance_id;
    Ok(Store::open_with(
        dir,
        StoreOptions {
            instance: Some(instance),
            ..StoreOptions::default()
        },
    )?)
}
