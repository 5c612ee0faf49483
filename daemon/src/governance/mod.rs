//! Sharing governance (DESIGN.md §5): what each partner gets, what happens
//! to what partners send, share requests, access types, revocation with
//! erase, terms, share codes and the audit log.
//!
//! [`Governance`] is the daemon's [`SharePolicy`]: the engine asks it what
//! to send and what to do with what arrives, and carries its control frames
//! ([`orgsync_protocol::share::ShareFrame`]) to the partner's daemon. The
//! rules themselves (status machine, access types, selections) live sans-IO
//! in [`orgsync_protocol::share`]; this module keeps the state in trees of
//! its own in the daemon's sled database ([`db`]) and does the I/O.
//!
//! - [`shares`]: outgoing shares, membership (objects entering are re-logged
//!   whole, objects leaving are withdrawn), revocation, codes, terms.
//! - [`inbox`]: incoming decisions (approve as new, link, reject, auto).
//! - [`declined`]: received shares our admin rejected.
//! - [`requests`]: share requests between two daemons.
//! - [`audit`]: the append-only audit log and the webhook.
//! - [`pending`]: peers refused at the handshake, accepted or dismissed.

pub(crate) mod announcing;
pub mod audit;
pub mod db;
pub mod declined;
pub(crate) mod expected;
pub mod inbox;
pub mod mirror;
pub mod pending;
pub mod provenance;
pub mod requests;
pub mod shares;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use orgsync_protocol::model::{Change, Object, ObjectId, OrgId};
use orgsync_protocol::share::{ShareBody, ShareFrame};
use serde::Deserialize;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::policy::{Incoming, SharePolicy};
use crate::store::{Store, StoreError};
use crate::transport::Trust;
use audit::AuditEntry;
use db::{GovDb, OutShare, PartnerSettings};

/// Name of the governance settings file in the instance directory.
pub const CONFIG_FILE: &str = "governance.toml";

/// Environment variable shifting the governance clock by whole seconds
/// (may be negative). For tests of time rules (the 72-hour manager revoke
/// window, code expiry) without waiting; leave unset in production.
pub const CLOCK_OFFSET_ENV: &str = "ORGSYNC_CLOCK_OFFSET_SECS";

/// Why a governance operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GovError {
    /// A database operation failed.
    #[error("governance database: {op}: {source}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// The error.
        source: sled::Error,
    },
    /// A stored value does not decode.
    #[error("governance database: damaged {what}: {source}")]
    Corrupt {
        /// Which kind of value.
        what: &'static str,
        /// The error.
        source: orgsync_protocol::codec::CodecError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blob files failed.
    #[error(transparent)]
    Blob(#[from] crate::store::BlobError),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is not acceptable; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// A rule forbids it; the message says which.
    #[error("{0}")]
    Refused(String),
    /// `governance.toml` is unreadable or invalid.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The settings of `DIR/governance.toml` (all optional).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovConfig {
    /// Replaced by mirrors; kept only to refuse it with a message that says
    /// what to do instead.
    #[serde(default)]
    share_all_partners: Option<bool>,
    /// Make every paired partner our mirror (`partner set P --mirror true`
    /// for each, now and for partners paired later). For two instances of
    /// one organisation and for test rigs; each partner must say the same
    /// for anything to flow.
    #[serde(default)]
    pub mirror_all_partners: bool,
    /// A shell command run for notifications (a partner received a share,
    /// an erase was acknowledged), with the audit entry as JSON on stdin.
    #[serde(default)]
    pub webhook: Option<String>,
    /// The `[limits]` of `orgsync.toml` (not read from this file): inbox
    /// and open-request caps, the frame window, the webhook rate.
    #[serde(skip)]
    pub limits: crate::config::LimitsConfig,
}

impl GovConfig {
    /// These settings with the `[limits]` of `orgsync.toml`.
    pub fn with_limits(mut self, limits: crate::config::LimitsConfig) -> GovConfig {
        self.limits = limits;
        self
    }

    /// Reads `dir/governance.toml`; defaults when it does not exist.
    pub fn load(dir: &Path) -> Result<GovConfig, GovError> {
        let path = dir.join(CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let config: GovConfig = toml::from_str(&text).map_err(|e| GovError::Config {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                if config.share_all_partners.is_some() {
                    return Err(GovError::Config {
                        path: path.display().to_string(),
                        message: "share_all_partners is gone: to keep two copies of one \
                            organisation in step, run `orgsync partner set PARTNER --mirror true` \
                            on both sides; to share with a partner, `orgsync share add`"
                            .into(),
                    });
                }
                Ok(config)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GovConfig::default()),
            Err(e) => Err(GovError::Config {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }
}

/// The clock governance rules read (Unix ms). Injectable for tests.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock shifted by [`CLOCK_OFFSET_ENV`] seconds, if set.
pub fn system_clock() -> Clock {
    let offset_ms: i64 = std::env::var(CLOCK_OFFSET_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map(|s| s.saturating_mul(1000))
        .unwrap_or(0);
    Arc::new(move || {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        now.saturating_add(offset_ms).max(0) as u64
    })
}

pub(crate) struct Inner {
    pub(crate) us: OrgId,
    /// Woken after each partner batch is durable (the linked loop waits).
    pub(crate) batch_applied: tokio::sync::Notify,
    /// Whether any copy here came under a partner's share (then a mirror
    /// does not get everything: such copies stay here).
    pub(crate) holds_share_copies: std::sync::atomic::AtomicBool,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) store: Store,
    pub(crate) db: GovDb,
    pub(crate) trust: Trust,
    pub(crate) config: GovConfig,
    pub(crate) clock: Clock,
    /// Outgoing shares, mirrored from `gov_out` for the per-object checks.
    pub(crate) shares: Mutex<Vec<OutShare>>,
    /// Partner settings, mirrored from `gov_partner`.
    pub(crate) settings: Mutex<HashMap<OrgId, PartnerSettings>>,
    /// Per partner, the highest log entry the engine has begun deciding on
    /// (see [`SharePolicy::deciding`]): an entry above it will be decided
    /// after any membership written now, so it needs no re-log.
    pub(crate) deciding: Mutex<HashMap<OrgId, u64>>,
    /// Our log entries up to here have been through the membership loop
    /// (their objects announced to and made members of the shares they
    /// entered): the engine decides no further for a partner with a
    /// flowing share, so an entering object goes with its own entry.
    pub(crate) members_up_to: std::sync::atomic::AtomicU64,
    /// Objects whose send check failed on a database error, to re-log.
    pub(crate) recheck: Mutex<std::collections::BTreeSet<ObjectId>>,
    /// Wakes the membership loop to re-log `recheck`.
    pub(crate) recheck_wanted: tokio::sync::Notify,
    /// Test hook: the send check fails as on a database error.
    #[cfg(test)]
    pub(crate) fail_share_checks: std::sync::atomic::AtomicBool,
    /// Replies (frame id 0) waiting for the engine, per partner.
    replies: Mutex<HashMap<OrgId, Vec<ShareFrame>>>,
    outbox_changed: watch::Sender<u64>,
    /// Each partner's frame queue, handled by a task of its own so that
    /// one partner's flood does not delay another's frames behind it.
    frames: Mutex<HashMap<OrgId, mpsc::UnboundedSender<QueuedFrame>>>,
    /// Each partner's frame window (`limits.max_queued_frames`): the
    /// engine takes a permit per frame, so a queue never holds more.
    windows: Mutex<HashMap<OrgId, Arc<Semaphore>>>,
    /// When each (partner, limit) refusal was last audited and told to
    /// the partner, and how many were refused quietly since.
    limit_notices: Mutex<HashMap<(OrgId, &'static str), LimitNotice>>,
    /// Changes held in the inbox per partner, counted at the first use
    /// and recounted when the cap is reached (admins' decisions remove).
    pub(crate) inbox_held: Mutex<HashMap<OrgId, inbox::HeldCount>>,
    /// Objects held because no share had announced them yet, per partner:
    /// decided but maybe not yet in the inbox, then (once the partner's
    /// batch is durable) to be looked at again, in case the announcement
    /// was handled between the decision and the inbox write.
    pub(crate) unannounced: Mutex<HashMap<OrgId, inbox::Unannounced>>,
    /// Announcements queued for each partner's frame task, not yet handled.
    pub(crate) announcing: Mutex<HashMap<OrgId, announcing::Announcing>>,
    /// Per incoming share, how many ids `gov_expected` holds (counted at
    /// the first announcement after start; see [`expected`]).
    pub(crate) expected_count:
        Mutex<HashMap<orgsync_protocol::share::ShareId, expected::ExpectedCount>>,
    /// The rate-limited webhook.
    webhook: audit::Webhook,
    /// Serialises state-changing operations (API calls, frames, events).
    pub(crate) op: tokio::sync::Mutex<()>,
    /// How to pair with an accepted pending peer (set by the daemon).
    pub(crate) pairing: Mutex<Option<Arc<dyn pending::Pairing>>>,
    /// The background tasks, stopped by [`Governance::shutdown`]: each
    /// holds a clone of the governance (and so of the store), which would
    /// otherwise keep the sled database open after the daemon stops.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The daemon's sharing governance. Cheap to clone.
#[derive(Clone)]
pub struct Governance {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Governance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governance").finish_non_exhaustive()
    }
}

/// Who did something, for the audit log.
pub const DAEMON: &str = "daemon";

impl Governance {
    /// Opens the governance trees of `store`'s database and starts the
    /// background tasks (control frames, membership tracking, the inbox
    /// of linked objects). Must be called inside a tokio runtime.
    /// `us`: this instance's organisation; `metrics`: where refusals are
    /// counted.
    pub fn start(
        us: OrgId,
        store: Store,
        trust: Trust,
        config: GovConfig,
        clock: Clock,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Governance, GovError> {
        let db = GovDb::open(store.db())?;
        let shares: Vec<OutShare> = db.all(&db.out, "share")?;
        let mut settings = HashMap::new();
        for kv in db.partner.iter() {
            let (k, v) = kv.map_err(|source| GovError::Db {
                op: "read partner settings",
                source,
            })?;
            if let Ok(org) = <[u8; 32]>::try_from(k.as_ref()) {
                settings.insert(OrgId(org), db::decode("partner settings", &v)?);
            }
        }
        let mut holds_share_copies = false;
        for kv in db.prov.iter() {
            let (_, v) = kv.map_err(|source| GovError::Db {
                op: "read provenance",
                source,
            })?;
            let r: db::ProvRecord = db::decode("provenance", &v)?;
            if matches!(
                r.prov.source,
                orgsync_protocol::authority::Source::Share { .. }
            ) {
                holds_share_copies = true;
                break;
            }
        }
        let (outbox_changed, _) = watch::channel(0);
        let webhook = audit::Webhook::new(config.webhook.clone(), &config.limits, metrics.clone());
        let gov = Governance {
            inner: Arc::new(Inner {
                us,
                batch_applied: tokio::sync::Notify::new(),
                holds_share_copies: std::sync::atomic::AtomicBool::new(holds_share_copies),
                metrics,
                store,
                db,
                trust,
                config,
                clock,
                shares: Mutex::new(shares),
                settings: Mutex::new(settings),
                deciding: Mutex::default(),
                members_up_to: std::sync::atomic::AtomicU64::new(0),
                recheck: Mutex::default(),
                recheck_wanted: tokio::sync::Notify::new(),
                #[cfg(test)]
                fail_share_checks: std::sync::atomic::AtomicBool::new(false),
                replies: Mutex::default(),
                outbox_changed,
                frames: Mutex::default(),
                windows: Mutex::default(),
                limit_notices: Mutex::default(),
                inbox_held: Mutex::default(),
                unannounced: Mutex::default(),
                announcing: Mutex::default(),
                expected_count: Mutex::default(),
                webhook,
                op: tokio::sync::Mutex::new(()),
                pairing: Mutex::new(None),
                tasks: Mutex::default(),
            }),
        };
        // Subscribed here, not in the task: no change committed after
        // start may be missed.
        let events = gov.store().subscribe_events();
        // Entries written before we started were decided on before.
        gov.membership_done(gov.store().log_head());
        if gov.inner.config.mirror_all_partners {
            for p in gov.inner.trust.peers().iter() {
                mirror::declare(&gov, &p.org)?;
            }
        }
        let tasks = vec![
            tokio::spawn(shares::membership_loop(gov.clone(), events)),
            tokio::spawn(inbox::linked_loop(gov.clone())),
        ];
        *gov.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = tasks;
        Ok(gov)
    }

    /// Stops the background tasks and forgets the pairing hook, so that
    /// nothing keeps the store open once the daemon has stopped. Called by
    /// the daemon after the engine stopped (no more frames arrive).
    pub async fn shutdown(&self) {
        let tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            // Cancelled is the expected outcome; a panic was logged already.
            let _ = t.await;
        }
        self.inner
            .pairing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Lets admins accept pending peers: `pairing` pairs with a bundle.
    pub fn set_pairing(&self, pairing: Arc<dyn pending::Pairing>) {
        *self
            .inner
            .pairing
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(pairing);
    }

    /// The governance clock (Unix ms).
    pub fn now_ms(&self) -> u64 {
        (self.inner.clock)()
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn db(&self) -> &GovDb {
        &self.inner.db
    }

    /// The partner named `who`: its name in partners.toml or its account
    /// number.
    pub fn resolve_partner(&self, who: &str) -> Result<OrgId, GovError> {
        let peers = self.inner.trust.peers();
        if let Some(p) = peers.iter().find(|p| p.name == who) {
            return Ok(p.org);
        }
        match who.parse::<OrgId>() {
            Ok(org) if peers.iter().any(|p| p.org == org) => Ok(org),
            Ok(org) => Err(GovError::NotFound(format!(
                "{} is not a paired partner",
                org.account_number()
            ))),
            Err(_) => Err(GovError::NotFound(format!(
                "no partner named {who:?} (give its name or account number; see `orgsync partners`)"
            ))),
        }
    }

    /// The display name of a partner.
    pub fn partner_name(&self, org: &OrgId) -> String {
        self.inner
            .trust
            .peer(org)
            .map(|p| p.name)
            .unwrap_or_else(|| org.short())
    }

    pub(crate) fn settings_of(&self, partner: &OrgId) -> PartnerSettings {
        self.inner
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(partner)
            .cloned()
            .unwrap_or_default()
    }

    /// Changes a partner's settings with `f` and stores them.
    pub async fn update_settings(
        &self,
        partner: &OrgId,
        who: &str,
        what: &str,
        f: impl FnOnce(&mut PartnerSettings),
    ) -> Result<PartnerSettings, GovError> {
        let _op = self.inner.op.lock().await;
        let mut s = self.db().settings(partner)?;
        f(&mut s);
        self.db()
            .put(&self.db().partner, "partner settings", &partner.0, &s)?;
        self.inner
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*partner, s.clone());
        self.audit(
            who,
            "partner.settings",
            Some(partner),
            None,
            what.to_string(),
        )?;
        self.db().flush().await?;
        Ok(s)
    }

    /// Every partner's settings, with names.
    pub fn all_settings(&self) -> Vec<(OrgId, String, PartnerSettings)> {
        self.inner
            .trust
            .peers()
            .iter()
            .map(|p| (p.org, p.name.clone(), self.settings_of(&p.org)))
            .collect()
    }

    /// Appends an audit entry (and runs the webhook for notifications).
    pub(crate) fn audit(
        &self,
        who: &str,
        action: &str,
        partner: Option<&OrgId>,
        share: Option<String>,
        detail: String,
    ) -> Result<AuditEntry, GovError> {
        self.audit_claim(who, action, partner, share, detail, None)
    }

    /// [`Governance::audit`] with a name the partner claims (sanitised by
    /// the caller), kept apart from `who`.
    pub(crate) fn audit_claim(
        &self,
        who: &str,
        action: &str,
        partner: Option<&OrgId>,
        share: Option<String>,
        detail: String,
        claimed_by: Option<String>,
    ) -> Result<AuditEntry, GovError> {
        let entry = audit::append(
            self.db(),
            AuditEntry {
                seq: 0,
                at_ms: self.now_ms(),
                who: who.to_string(),
                action: action.to_string(),
                partner: partner.map(|p| p.account_number()),
                partner_name: partner.map(|p| self.partner_name(p)),
                share,
                detail,
                claimed_by,
            },
        )?;
        if matches!(action, "share.received" | "erase.acked" | "terms.accepted") {
            self.inner.webhook.notify(&entry);
        }
        Ok(entry)
    }

    /// The audit log, filtered.
    pub fn audit_log(&self, filter: &audit::AuditFilter) -> Result<Vec<AuditEntry>, GovError> {
        audit::read(self.db(), filter)
    }

    /// The membership loop has handled our log up to `seq`: the engine
    /// may decide on it (see [`SharePolicy::decidable`]).
    pub(crate) fn membership_done(&self, seq: u64) {
        let before = self
            .inner
            .members_up_to
            .fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
        if seq > before {
            self.inner.outbox_changed.send_modify(|n| *n += 1);
        }
    }

    /// Queues a control frame for `partner` and wakes the engine.
    pub(crate) fn send(&self, partner: &OrgId, body: ShareBody) -> Result<(), GovError> {
        self.db().enqueue(partner, body)?;
        self.inner.outbox_changed.send_modify(|n| *n += 1);
        Ok(())
    }

    fn reply(&self, partner: &OrgId, body: ShareBody) {
        self.inner
            .replies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(*partner)
            .or_default()
            .push(ShareFrame { id: 0, body });
        self.inner.outbox_changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn lookup(&self) -> impl Fn(ObjectId) -> Option<Object> + '_ {
        // A read error counts as "absent": selection rules then select less.
        move |id| self.store().get(id).ok().flatten()
    }

    async fn handle_frame(&self, partner: OrgId, frame: ShareFrame) -> Result<(), GovError> {
        let _op = self.inner.op.lock().await;
        if frame.id <= self.db().handled(&partner)? {
            // Already handled: the ack was lost. Only ack again.
            self.reply(&partner, ShareBody::Delivered(frame.id));
            return Ok(());
        }
        let name = frame.body.name();
        let result = match frame.body {
            ShareBody::Delivered(_) => Ok(()),
            ShareBody::Grant(g) => shares::on_grant(self, partner, g),
            ShareBody::Objects {
                share,
                owner,
                added,
            } => shares::on_objects(self, partner, share, owner, added).await,
            ShareBody::Mirror { on } => mirror::on_mirror(self, partner, on).await,
            ShareBody::Withdraw { share, objects } => {
                shares::on_withdraw(self, partner, share, objects).await
            }
            ShareBody::Erase {
                share,
                objects,
                revoked,
            } => shares::on_erase(self, partner, share, objects, revoked).await,
            ShareBody::EraseAck {
                share,
                erased,
                onward,
            } => shares::on_erase_ack(self, partner, share, erased, onward),
            ShareBody::TermsAccepted { share, by, at_ms } => {
                shares::on_terms_accepted(self, partner, share, by, at_ms).await
            }
            ShareBody::Received { share, objects } => {
                shares::on_received(self, partner, share, objects)
            }
            ShareBody::Redeem { code } => shares::on_redeem(self, partner, code).await,
            // The partner refused something over one of its limits (our
            // admin reads why in the audit log), or a share code.
            ShareBody::Refused { reason } if reason.starts_with(LIMIT_PREFIX) => self
                .audit(DAEMON, "partner.limit", Some(&partner), None, reason)
                .map(|_| ()),
            ShareBody::Refused { reason } => self
                .audit(DAEMON, "redeem.refused", Some(&partner), None, reason)
                .map(|_| ()),
            ShareBody::Request(r) => requests::on_request(self, partner, r),
            ShareBody::Status(s) => requests::on_status(self, partner, s),
        };
        if let Err(e) = &result {
            // A frame we cannot act on is acknowledged anyway (resending it
            // would fail the same way) and recorded.
            tracing::warn!(partner = %self.partner_name(&partner), frame = name, error = %e,
                "governance frame refused");
            self.audit(
                DAEMON,
                "frame.refused",
                Some(&partner),
                None,
                format!("{name}: {e}"),
            )?;
        }
        self.db().set_handled(&partner, frame.id)?;
        self.db().flush().await?;
        self.store().flush().await?;
        self.reply(&partner, ShareBody::Delivered(frame.id));
        Ok(())
    }
}

/// A frame waiting to be handled, with its window permit if the engine
/// took one and its number (see [`announcing::queued`]).
type QueuedFrame = (ShareFrame, Option<OwnedSemaphorePermit>, u64);

/// When a (partner, limit) refusal was last noticed (Unix ms, 0 for
/// never) and how many were refused quietly since.
type LimitNotice = (u64, u64);

/// Start of the reason of a [`ShareBody::Refused`] sent for a limit.
pub const LIMIT_PREFIX: &str = "limit ";

/// How often one (partner, limit) refusal is audited and told to the
/// partner; the refusals in between are counted.
const LIMIT_NOTICE_EVERY_MS: u64 = 60_000;

async fn frame_loop(gov: Governance, partner: OrgId, mut rx: mpsc::UnboundedReceiver<QueuedFrame>) {
    while let Some((frame, permit, n)) = rx.recv().await {
        let ids = announcing::announced_ids(&frame).to_vec();
        if let Err(e) = gov.handle_frame(partner, frame).await {
            tracing::error!(error = %e, "cannot handle a governance frame");
        }
        announcing::handled(&gov, &partner, n, &ids);
        // Handled: the partner may send the next one.
        drop(permit);
    }
}

impl Governance {
    /// Queues a frame for `partner`'s frame task (started on first use).
    fn queue_frame(
        &self,
        partner: &OrgId,
        frame: ShareFrame,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        if let ShareBody::Delivered(id) = frame.body {
            if let Err(e) = self.db().delivered(partner, id) {
                tracing::warn!(error = %e, "cannot drop a delivered governance frame");
            }
            return;
        }
        let mut frames = self
            .inner
            .frames
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tx = frames.entry(*partner).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(frame_loop(self.clone(), *partner, rx));
            self.inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(task);
            tx
        });
        let n = announcing::queued(self, partner, &frame);
        // The task lives as long as the governance (until shutdown).
        let _ = tx.send((frame, permit, n));
    }

    /// Records that something `partner` sent is over limit `limit` (a
    /// `[limits]` key) and was refused; `detail` says what. Nothing stored
    /// changes. Counted every time; a warning, an audit entry
    /// (`limit.refused`) and a [`ShareBody::Refused`] to the partner (its
    /// admin sees it in its audit log as `partner.limit`) at most once a
    /// minute per partner and limit, with the count refused in between,
    /// so a flood cannot grow the audit log or the outbox either.
    pub(crate) fn over_limit(&self, partner: &OrgId, limit: &'static str, detail: String) {
        crate::metrics::add(&self.inner.metrics.limits_refused, 1);
        let now = self.now_ms();
        let quiet = {
            let mut notices = self
                .inner
                .limit_notices
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = notices.entry((*partner, limit)).or_insert((0, 0));
            if n.0 != 0 && now < n.0.saturating_add(LIMIT_NOTICE_EVERY_MS) {
                n.1 += 1;
                None
            } else {
                n.0 = now.max(1);
                Some(std::mem::take(&mut n.1))
            }
        };
        let Some(quiet) = quiet else {
            tracing::debug!(partner = %self.partner_name(partner), limit, %detail, "refused: over a limit");
            return;
        };
        let mut detail = detail;
        if quiet > 0 {
            detail.push_str(&format!(
                " ({quiet} more refused for this limit since the last notice)"
            ));
        }
        tracing::warn!(partner = %self.partner_name(partner), limit, %detail, "refused: over a limit");
        if let Err(e) = self.audit(
            DAEMON,
            "limit.refused",
            Some(partner),
            None,
            format!("{limit}: {detail}"),
        ) {
            tracing::error!(error = %e, "cannot record a refusal in the audit log");
        }
        let mut reason = format!("{LIMIT_PREFIX}{limit}: {detail}");
        let max = orgsync_protocol::share::MAX_NOTE_LEN;
        if reason.len() > max {
            let mut end = max;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        if let Err(e) = self.send(partner, ShareBody::Refused { reason }) {
            tracing::warn!(error = %e, "cannot tell the partner about a refusal");
        }
    }
}

impl SharePolicy for Governance {
    fn shares(&self, partner: &OrgId, object: &Object) -> bool {
        shares::shares_with(self, partner, object)
    }

    fn deciding(&self, partner: &OrgId, up_to: u64) {
        // Under the lock: `shares::enter` writes memberships, then reads
        // this under the same lock, so either it sees our entry as passed
        // (and re-logs) or our decisions that follow see the membership.
        let mut deciding = self
            .inner
            .deciding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let at = deciding.entry(*partner).or_default();
        *at = (*at).max(up_to);
    }

    fn decidable(&self, partner: &OrgId) -> u64 {
        let shared = self
            .inner
            .shares
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|s| s.partner.as_ref() == Some(partner) && s.is_flowing());
        if shared {
            self.inner
                .members_up_to
                .load(std::sync::atomic::Ordering::SeqCst)
        } else {
            u64::MAX
        }
    }

    fn incoming(&self, partner: &OrgId, change: &Change) -> Incoming {
        inbox::decide_incoming(self, partner, change)
    }

    fn pending_announcements(
        &self,
        partner: &OrgId,
        changes: &[orgsync_protocol::model::SequencedChange],
    ) -> Option<crate::policy::AnnouncementWait> {
        announcing::pending(self, partner, changes)
    }

    fn batch_applied(&self, partner: &OrgId, held: usize, applied: usize) {
        if held > 0 {
            inbox::unannounced_written(self, partner);
        }
        if held + applied > 0 {
            self.inner.batch_applied.notify_one();
        }
    }

    fn hello_features(&self, partner: &OrgId) -> u64 {
        if self.settings_of(partner).mirror {
            orgsync_protocol::wire::FEATURE_MIRROR
        } else {
            0
        }
    }

    fn session_established(&self, partner: &OrgId, features: u64) {
        mirror::on_session(self, partner, features);
    }

    fn shares_everything(&self, partner: &OrgId) -> bool {
        // A mirror gets every object owned by either side; when we hold no
        // copy received under a share, that is every object we hold.
        self.is_mirror(partner)
            && !self
                .inner
                .holds_share_copies
                .load(std::sync::atomic::Ordering::Acquire)
    }

    fn share_outbox(&self, partner: &OrgId) -> Vec<ShareFrame> {
        self.share_outbox_after(partner, 0)
    }

    fn share_outbox_after(&self, partner: &OrgId, after: u64) -> Vec<ShareFrame> {
        let mut frames = match self.db().outbox_after(partner, after) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the governance outbox");
                Vec::new()
            }
        };
        if let Some(replies) = self
            .inner
            .replies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(partner)
        {
            frames.extend(replies);
        }
        frames
    }

    fn share_received(&self, partner: &OrgId, frame: ShareFrame) {
        self.queue_frame(partner, frame, None);
    }

    fn share_window(&self, partner: &OrgId) -> Option<Arc<Semaphore>> {
        let max = self.inner.config.limits.max_queued_frames;
        Some(
            self.inner
                .windows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(*partner)
                .or_insert_with(|| Arc::new(Semaphore::new(max.max(1))))
                .clone(),
        )
    }

    fn share_received_held(
        &self,
        partner: &OrgId,
        frame: ShareFrame,
        permit: OwnedSemaphorePermit,
    ) {
        self.queue_frame(partner, frame, Some(permit));
    }

    fn may_ask_blob(&self, partner: &OrgId, object: &ObjectId) -> bool {
        use orgsync_protocol::authority::Source;
        match self.provenance_of(object) {
            Ok(p) => match p.source {
                // A copy: only the partner it came from has its content.
                Source::Share { from, .. } | Source::Mirror { from } => from == *partner,
                // Ours (e.g. received before provenance was recorded):
                // only our own organisation's other copies are asked.
                Source::Own => self.is_mirror(partner),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a copy's provenance; blob not asked");
                false
            }
        }
    }

    fn limit_refused(&self, partner: &OrgId, limit: &'static str, detail: String) {
        self.over_limit(partner, limit, detail);
    }

    fn share_outbox_changed(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.outbox_changed.subscribe())
    }
}

#[cfg(test)]
mod tests;
