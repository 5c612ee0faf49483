//! What the local API and the drop folder need from the rest of the daemon:
//! reads of objects, atomic durable local writes, the change log, partner
//! status and blob storage.
//!
//! The API never touches the store directly; it goes through [`Backend`] so
//! that the HTTP layer can be tested against any implementation and the
//! store can evolve without the API changing.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use orgsync_protocol::model::{FieldKey, InstanceId, Kind, Object, ObjectId, OrgId, Schema, Value};
use tokio::sync::watch;

/// A boxed future, so that [`Backend`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One local write to one object, before it is versioned. The backend gives
/// every field write and the deletion a fresh version from the instance's
/// clock when it commits.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalEdit {
    /// The object written; a new id creates the object.
    pub id: ObjectId,
    /// Its kind. Writing to an existing object of another kind is refused.
    pub kind: Kind,
    /// Field writes: `Some` sets the value, `None` clears the field.
    pub set: BTreeMap<FieldKey, Option<Value>>,
    /// Deletes the object (after applying `set`, which is then normally empty).
    pub delete: bool,
}

impl LocalEdit {
    /// An edit of `id` that writes nothing yet.
    pub fn new(id: ObjectId, kind: Kind) -> Self {
        LocalEdit {
            id,
            kind,
            set: BTreeMap::new(),
            delete: false,
        }
    }
}

/// Where a committed change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Written on this instance (API, CLI, drop folder).
    Local,
    /// Applied from a partner organisation.
    Partner(OrgId),
}

/// One entry of the change log, as host applications see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeEvent {
    /// Position in the local change log; strictly increasing from 1.
    pub seq: u64,
    /// The object changed.
    pub id: ObjectId,
    /// Its kind.
    pub kind: Kind,
    /// Who wrote it.
    pub origin: Origin,
    /// True when the change deleted the object.
    pub deleted: bool,
}

/// Who this instance is.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// The organisation's name, if configured.
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
}

/// A blob stored in the instance's blob directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// BLAKE3 of the content.
    pub hash: [u8; 32],
    /// Size in bytes.
    pub size: u64,
}

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A write names an existing object with another kind.
    #[error("object {id} is a {existing}, not a {requested}")]
    KindMismatch {
        /// The object.
        id: ObjectId,
        /// Its stored kind.
        existing: Kind,
        /// The kind the write claimed.
        requested: Kind,
    },
    /// A file given to [`Backend::put_blob`] could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The store failed (disk full, corruption, I/O error); nothing was written.
    #[error("store error: {0}")]
    Store(String),
}

/// The daemon-side services behind the local API and the drop folder.
///
/// Implementations guarantee: [`Backend::commit`] applies all edits or none,
/// and returns only once the batch is durable; every committed change gets a
/// log entry visible through [`Backend::events_after`] and advances
/// [`Backend::head`].
pub trait Backend: Send + Sync + 'static {
    /// Who this instance is.
    fn identity(&self) -> Identity;

    /// The custom-field definitions in force.
    fn schema(&self) -> Schema;

    /// The stored object, deleted or not.
    fn get(&self, id: ObjectId) -> Result<Option<Object>, BackendError>;

    /// Up to `limit` live (not deleted) objects in id order, of `kind` if
    /// given, with ids greater than `after` if given.
    fn list(
        &self,
        kind: Option<Kind>,
        after: Option<ObjectId>,
        limit: usize,
    ) -> Result<Vec<Object>, BackendError>;

    /// Versions and writes `edits` as one atomic batch, durable before the
    /// future resolves. Returns the log entries written, in order.
    fn commit(
        &self,
        edits: Vec<LocalEdit>,
    ) -> BoxFuture<'_, Result<Vec<ChangeEvent>, BackendError>>;

    /// Up to `limit` log entries with sequence numbers greater than `after`.
    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, BackendError>;

    /// The sequence number of the newest log entry, updated on every commit.
    fn head(&self) -> watch::Receiver<u64>;

    /// Every partner with its sync state.
    fn partners(&self) -> Vec<PartnerStatus>;

    /// Copies the file at `path` into the blob store (verified, durable) and
    /// returns its hash and size.
    fn put_blob<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<BlobInfo, BackendError>>;

    /// The path of a blob's complete content, or `None` while it is absent
    /// (for example still transferring from a partner).
    fn blob_path(&self, hash: &[u8; 32]) -> Option<PathBuf>;
}
