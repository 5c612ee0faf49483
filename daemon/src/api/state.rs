//! What the API handlers share: the store, who this instance is, the
//! custom-field schema, where partner status comes from, and the metrics.

use std::sync::Arc;

use orgsync_protocol::model::{InstanceId, OrgId, Schema};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::store::Store;

/// Who this instance is.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// The organisation's name, if known.
    pub org_name: Option<String>,
    /// The organisation.
    pub org: OrgId,
    /// This instance.
    pub instance: InstanceId,
}

/// One partner as the API reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct PartnerStatus {
    /// The partner organisation's name.
    pub name: String,
    /// Its organisation id (shown as the account number).
    pub org: OrgId,
    /// Pairing state (`pending`, `paired`, `revoked`).
    pub state: String,
    /// Addresses the daemon dials.
    pub addresses: Vec<String>,
    /// A sync session is established right now.
    pub connected: bool,
    /// When the partner last acknowledged our changes or we applied theirs
    /// (Unix milliseconds).
    pub last_sync_ms: Option<u64>,
    /// Local log entries the partner has not acknowledged yet.
    pub not_acked: u64,
    /// Age of the oldest change the partner has not acknowledged, in
    /// milliseconds (0 when everything is acknowledged).
    pub lag_ms: u64,
    /// The partner's changes received but not yet durably applied here.
    pub incoming_lag: u64,
    /// Why the last connection attempt or session failed, if it did.
    pub last_error: Option<String>,
    /// The wire-protocol version of the current session (`None` when not
    /// connected).
    pub protocol_version: Option<u16>,
    /// The partner's clock minus ours in milliseconds, corrected by half
    /// the round trip (`None` when not connected, not measured yet, or the
    /// session speaks protocol 1, which carries no clock).
    pub clock_skew_ms: Option<i64>,
}

/// Where the API gets the partner list and each partner's sync state (the
/// sync engine implements it). Must be cheap and must not block.
pub trait PartnerSource: Send + Sync + 'static {
    /// Every known partner.
    fn partners(&self) -> Vec<PartnerStatus>;

    /// Peers refused at the handshake (unknown or revoked certificates),
    /// oldest first, for an admin to check and pair or ignore.
    fn pending(&self) -> Vec<crate::transport::PendingPeer> {
        Vec::new()
    }
}

impl<F> PartnerSource for F
where
    F: Fn() -> Vec<PartnerStatus> + Send + Sync + 'static,
{
    fn partners(&self) -> Vec<PartnerStatus> {
        self()
    }
}

/// What the API handlers share. Cloning is cheap.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) store: Store,
    pub(crate) identity: Identity,
    pub(crate) schema: watch::Receiver<Schema>,
    pub(crate) partners: Arc<dyn PartnerSource>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stop_tx: Arc<watch::Sender<bool>>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) governance: Option<crate::governance::Governance>,
}

impl ApiState {
    /// State for an API over `store`, with no partners and no custom-field
    /// definitions (custom fields are then typed by their JSON type).
    pub fn new(store: Store, identity: Identity, metrics: Arc<Metrics>) -> Self {
        // Set when the server shuts down, to end open event streams.
        let (stop_tx, stop) = watch::channel(false);
        let (_, schema) = watch::channel(Schema::default());
        ApiState {
            store,
            identity,
            schema,
            partners: Arc::new(Vec::new),
            metrics,
            stop_tx: Arc::new(stop_tx),
            stop,
            governance: None,
        }
    }

    /// Serves the sharing-governance routes from `governance`.
    pub fn with_governance(mut self, governance: Option<crate::governance::Governance>) -> Self {
        self.governance = governance;
        self
    }

    /// Uses `source` for `/v1/partners`, `/v1/status` and the per-partner metrics.
    pub fn with_partners(mut self, source: Arc<dyn PartnerSource>) -> Self {
        self.partners = source;
        self
    }

    /// Types custom fields by the schema in `schema` (which may change, e.g.
    /// when the configuration is reloaded).
    pub fn with_schema(mut self, schema: watch::Receiver<Schema>) -> Self {
        self.schema = schema;
        self
    }

    /// The store behind the API.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The current custom-field schema.
    pub fn schema(&self) -> Schema {
        self.schema.borrow().clone()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
