//! The embedded store: objects, the local change log, partner cursors,
//! the inbox and the blob index, in one sled database under `DIR/store/`;
//! blob contents are files under `DIR/blobs/` (see [`BlobFiles`]).
//!
//! Guarantees:
//! - [`Store::write`] and [`Store::apply_from_partner`] return only once
//!   what they wrote is durable (group commit: concurrent callers share one
//!   flush; see the `commit` module).
//! - A local write merges into the objects and appends a reference to the
//!   object (its id, 16 bytes) to the log in one sled batch, instead of a
//!   copy of the change (store format 3, see the `records` module); applying a partner's batch merges into the objects and
//!   advances that partner's cursor in one batch. Every section lives in
//!   one tree (see the `keys` module) and sled applies a batch atomically,
//!   so a crash never keeps one half without the other. All batches are
//!   built and applied under the writer lock, so the reads they are based
//!   on cannot go stale.
//! - The log is a changes feed: each object written here has one entry,
//!   at the seq of its latest local write (a write removes the object's
//!   previous entry in the same batch), so seqs only grow but have gaps.
//!   Readers ([`Store::load_log`], [`Store::load_page`]) get each object's
//!   current state at that seq: an object changed ten times before a
//!   partner catches up is sent once. Readers only ever see durable
//!   entries (an object whose record names a seq beyond the durable head
//!   is left for the next read), so a change sent to a partner can never
//!   be lost locally by a crash and its number reused.
//! - Changes received from partners are *not* appended to the local log:
//!   each instance sends only its own writes, so nothing echoes back and
//!   data received from one partner is never passed on to another behind
//!   the owner's back (re-sharing is a governance decision).

mod blobs;
mod commit;
pub mod format;
mod keys;
mod migrate_refs;
mod records;
pub mod snapshot;

pub use blobs::{hash_hex, BlobError, BlobFiles, BlobHash, PartialBlob};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orgsync_protocol::clock::{Clock, ClockError, Timestamp, DEFAULT_MAX_DRIFT_MS};
use orgsync_protocol::codec::{self, CodecError};
use orgsync_protocol::merge::{self, MergeError};
use orgsync_protocol::model::{
    Change, FieldKey, FieldState, InstanceId, Kind, Object, ObjectId, OrgId, SequencedChange,
    Value, Version,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::policy::Incoming;
use commit::GroupCommit;

/// How many change events a slow event subscriber may fall behind before it
/// sees [`broadcast::error::RecvError::Lagged`]. Partner changes are not in
/// the local log, so a lagged subscriber cannot replay them: the buffer must
/// cover a catch-up burst (a partner's backlog arrives in 1000-change batches
/// faster than an NDJSON reader drains them; 4096 was seen to overflow on a
/// 10,000-change catch-up). An event is a few dozen bytes: 64 Ki of them is a
/// few MiB at most.
pub const EVENT_CAPACITY: usize = 64 * 1024;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The sled database could not be opened.
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The database directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// A sled operation failed.
    #[error("store {op} failed: {source}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// sled's error.
        source: sled::Error,
    },
    /// A flush failed: durability can no longer be promised.
    #[error("store flush failed, writes may not be durable: {0}")]
    Flush(Arc<str>),
    /// A stored value does not decode: the database is damaged.
    #[error("corrupt entry in tree {tree} at key {key}: {source}")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// Hex of the key.
        key: String,
        /// The decode error.
        source: CodecError,
    },
    /// A value could not be encoded (e.g. an object grew past the bounds).
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// The codec error.
        source: CodecError,
    },
    /// A change could not be merged into its object.
    #[error("cannot merge change into object {id}: {source}")]
    Merge {
        /// The object.
        id: ObjectId,
        /// The merge error.
        source: MergeError,
    },
    /// The object does not exist.
    #[error("object {0} not found")]
    NotFound(ObjectId),
    /// The store was written by a newer release, in a format this build
    /// cannot read; nothing was changed.
    #[error("the store is in format {found}, written by a newer orgsync; this build reads formats up to {supported}: upgrade orgsync (or restore a backup taken before the upgrade)")]
    FormatTooNew {
        /// The store's format.
        found: u32,
        /// The newest format this build reads.
        supported: u32,
    },
    /// No migration leads from the store's format to the current one.
    #[error("no migration from store format {from}: this build cannot open the store")]
    NoMigration {
        /// The store's format.
        from: u32,
    },
    /// The mark of an interrupted format 2 to 3 migration is not one this
    /// build wrote.
    #[error("the store's migration mark is unreadable ({value}): the store was changed by something other than orgsync")]
    MigrationMark {
        /// Hex of the stored mark.
        value: String,
    },
    /// The recorded format version is not a 4-byte number.
    #[error("the store's format version is unreadable ({len} bytes, expected 4)")]
    FormatUnreadable {
        /// Length of the stored value.
        len: usize,
    },
    /// The store belongs to another instance.
    #[error("the store belongs to instance {stored}, not {given}")]
    InstanceMismatch {
        /// Instance recorded in the store.
        stored: InstanceId,
        /// Instance asked for.
        given: InstanceId,
    },
    /// A partner's batch is not consistent (e.g. a change beyond `up_to_seq`).
    #[error("invalid batch from partner {partner:?}: {reason}")]
    InvalidBatch {
        /// The partner.
        partner: OrgId,
        /// What is wrong.
        reason: String,
    },
    /// A partner's change carries a clock too far in the future.
    #[error("change from partner {partner:?} refused: {source}")]
    ClockDrift {
        /// The partner.
        partner: OrgId,
        /// The clock check.
        source: ClockError,
    },
    /// The blob directory failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The flusher thread could not be started.
    #[error("cannot start the store flusher: {0}")]
    Thread(std::io::Error),
}

fn db_err(op: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |source| StoreError::Db { op, source }
}

/// Options of [`Store::open_with`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// sled page cache size in bytes (a soft limit).
    pub cache_capacity_bytes: u64,
    /// Group-commit window: how long the flusher gathers writers before it
    /// flushes. Zero flushes at once.
    pub flush_window: Duration,
    /// The instance this store belongs to. `None`: the recorded one, or a
    /// new random one for a new store.
    pub instance: Option<InstanceId>,
    /// Largest lead of a partner's clock accepted, in milliseconds.
    pub max_drift_ms: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity_bytes: crate::config::DEFAULT_CACHE_CAPACITY_MB * 1024 * 1024,
            flush_window: Duration::ZERO,
            instance: None,
            max_drift_ms: DEFAULT_MAX_DRIFT_MS,
        }
    }
}

/// A local edit of one object, given versions by the store when written.
#[derive(Clone, Debug, PartialEq)]
pub struct Edit {
    /// The object.
    pub id: ObjectId,
    /// Its kind.
    pub kind: Kind,
    /// Fields to set (`Some`) or clear (`None`).
    pub fields: Vec<(FieldKey, Option<Value>)>,
    /// Delete the object (before the field writes of this edit, if any).
    pub delete: bool,
}

impl Edit {
    /// An edit of object `id` that changes nothing yet.
    pub fn new(id: ObjectId, kind: Kind) -> Edit {
        Edit {
            id,
            kind,
            fields: Vec::new(),
            delete: false,
        }
    }

    /// Sets a field.
    pub fn set(mut self, key: FieldKey, value: Value) -> Edit {
        self.fields.push((key, Some(value)));
        self
    }

    /// Sets a standard field.
    pub fn set_std(self, name: &str, value: Value) -> Edit {
        self.set(FieldKey::Std(name.into()), value)
    }

    /// Clears a field (a versioned tombstone).
    pub fn clear(mut self, key: FieldKey) -> Edit {
        self.fields.push((key, None));
        self
    }
}

/// What a local write produced.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteReceipt {
    /// The log entries appended, in order.
    pub changes: Vec<SequencedChange>,
    /// The objects after the write, in the order of the changes.
    pub objects: Vec<Object>,
}

/// One page of the log (see [`Store::load_page`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogPage {
    /// Each object written in the page, in its current state, at the seq
    /// of its latest local write, in seq order.
    pub entries: Vec<(u64, Object)>,
    /// Every entry up to this seq was read: the next page starts after it.
    pub up_to: u64,
}

/// One page of the log as stored bytes (see [`Store::load_page_encoded`]).
#[derive(Clone, Debug, Default)]
pub struct EncodedLogPage {
    /// Each object written in the page, as stored, at the seq of its
    /// latest durable local write, in seq order.
    pub entries: Vec<EncodedEntry>,
    /// Every entry up to this seq was read: the next page starts after it.
    pub up_to: u64,
}

/// One object of an [`EncodedLogPage`]: its record as the store holds it.
#[derive(Clone, Debug)]
pub struct EncodedEntry {
    /// The seq of the object's latest local write.
    pub seq: u64,
    id: ObjectId,
    record: sled::IVec,
}

impl EncodedEntry {
    /// The encoded object, as stored: also the encoding of the change that
    /// sends the object whole ([`Change::from_object`]), so a sender can
    /// put these bytes on the wire as they are.
    pub fn object_bytes(&self) -> &[u8] {
        &self.record[records::OBJECT_OFFSET..]
    }

    /// The object, decoded (for a policy that looks at its fields).
    pub fn decode(&self) -> Result<Object, StoreError> {
        decode_at("objects", &keys::object(&self.id), self.object_bytes())
    }
}

/// What applying a partner's batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Changes merged into objects.
    pub applied: usize,
    /// Of those, changes that changed nothing (already known): not stored
    /// again and not announced to event subscribers.
    pub unchanged: usize,
    /// Changes put in the inbox.
    pub held: usize,
    /// Changes dropped by the policy (or because they cannot merge).
    pub rejected: usize,
    /// Of those, changes that cannot merge into the stored object (another
    /// kind for a known id).
    pub invalid: usize,
    /// Changes at or below the cursor, already applied before.
    pub skipped: usize,
    /// The partner's cursor after the batch.
    pub cursor: u64,
}

/// One partner's two cursors into the logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Every change of the partner's log up to this sequence is applied here.
    pub applied_from_peer: u64,
    /// The partner has acknowledged our log up to this sequence.
    pub acked_by_peer: u64,
}

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Written on this instance.
    Local,
    /// Received from this partner.
    Partner(OrgId),
}

/// A committed (durable) change to an object, as seen by event subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreEvent {
    /// Where it came from.
    pub origin: Origin,
    /// Its local log sequence (local writes only).
    pub seq: Option<u64>,
    /// The object.
    pub id: ObjectId,
    /// Its kind.
    pub kind: Kind,
    /// Whether the object is deleted after this change.
    pub deleted: bool,
}

/// State of a blob in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobState {
    /// Referenced by an object but not (fully) here yet.
    Missing,
    /// Complete and verified in the blob directory.
    Complete,
}

/// Index entry of one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// Size in bytes.
    pub size: u64,
    /// Whether the content is here.
    pub state: BlobState,
    /// The résumé object that references it (the sender's policy check
    /// for a blob request is about this object).
    pub object: Option<ObjectId>,
}

/// State only one writer may touch at a time.
struct Writer {
    next_seq: u64,
    clock: Clock,
}

struct Inner {
    // Field order matters for drop: the flusher must stop (flushing what is
    // pending) while the database is still open.
    commit: GroupCommit,
    db: sled::Db,
    /// The one tree holding every section (see `keys`).
    data: sled::Tree,
    writer: Mutex<Writer>,
    durable_head: AtomicU64,
    head: watch::Sender<u64>,
    events: broadcast::Sender<StoreEvent>,
    instance: InstanceId,
    blob_files: BlobFiles,
    path: PathBuf,
}

/// A handle to the store of one instance. Cloning is cheap (an `Arc`);
/// every clone sees the same data. Must not be opened twice at once (sled
/// locks the directory).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("instance", &self.inner.instance)
            .field("log_head", &self.log_head())
            .finish()
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn decode_at<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|source| StoreError::Corrupt {
        tree,
        key: data_encoding::HEXLOWER.encode(key),
        source,
    })
}

fn encode_as<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    codec::encode(value).map_err(|source| StoreError::Encode { what, source })
}

impl Store {
    /// Opens (creating if needed) the store of the instance directory `dir`:
    /// sled in `dir/store`, blobs in `dir/blobs`.
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<Store, StoreError> {
        Store::open_with(
            dir,
            StoreOptions {
                cache_capacity_bytes,
                ..StoreOptions::default()
            },
        )
    }

    /// [`Store::open`] with every option.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let path = dir.join("store");
        let db =
            open_sled(&path, options.cache_capacity_bytes).map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let data = db.open_tree(keys::TREE).map_err(db_err("open tree"))?;
        let upgrade = format::upgrade(&db, &data)?;
        if upgrade.migrated() {
            tracing::info!(from = ?upgrade.found, to = upgrade.now, path = %path.display(), "store migrated");
        }

        let stored = data
            .get(keys::META_INSTANCE)
            .map_err(db_err("read instance"))?
            .map(|v| keys::u64_value("meta", keys::META_INSTANCE, &v).map(InstanceId))
            .transpose()?;
        let instance = match (stored, options.instance) {
            (Some(stored), Some(given)) if stored != given => {
                return Err(StoreError::InstanceMismatch { stored, given })
            }
            (Some(stored), _) => stored,
            (None, given) => {
                let id = given.unwrap_or_else(InstanceId::random);
                data.insert(keys::META_INSTANCE, &id.0.to_be_bytes())
                    .map_err(db_err("record instance"))?;
                db.flush().map_err(db_err("flush"))?;
                id
            }
        };
        let last_hlc = data
            .get(keys::META_HLC)
            .map_err(db_err("read clock"))?
            .map(|v| keys::u64_value("meta", keys::META_HLC, &v))
            .transpose()?
            .unwrap_or(0);
        // A restored store may have jumped past its last entry.
        let head = snapshot::log_head_of(&data)?;

        let blob_files = BlobFiles::open(dir.join("blobs"))?;
        let commit =
            GroupCommit::start(db.clone(), options.flush_window).map_err(StoreError::Thread)?;
        Ok(Store {
            inner: Arc::new(Inner {
                commit,
                db,
                data,
                writer: Mutex::new(Writer {
                    next_seq: head + 1,
                    clock: Clock::resume(Timestamp(last_hlc), options.max_drift_ms),
                }),
                durable_head: AtomicU64::new(head),
                head: watch::Sender::new(head),
                events: broadcast::Sender::new(EVENT_CAPACITY),
                instance,
                blob_files,
                path,
            }),
        })
    }

    /// The instance this store belongs to.
    pub fn instance(&self) -> InstanceId {
        self.inner.instance
    }

    /// The blob directory.
    pub fn blob_files(&self) -> &BlobFiles {
        &self.inner.blob_files
    }

    /// How many flushes the group-commit flusher has done since open.
    pub fn flush_count(&self) -> u64 {
        self.inner.commit.flush_count()
    }

    // -----------------------------------------------------------------
    // Local writes
    // -----------------------------------------------------------------

    /// Writes local edits: each gets versions from the store's hybrid
    /// logical clock, is merged into its object and appended to the log, all
    /// in one atomic batch. Returns once the write is durable.
    pub async fn write(&self, edits: Vec<Edit>) -> Result<WriteReceipt, StoreError> {
        let instance = self.inner.instance;
        self.commit_local(move |clock, wall| {
            edits
                .into_iter()
                .map(|edit| {
                    let mut change = Change {
                        id: edit.id,
                        kind: edit.kind,
                        fields: Default::default(),
                        deleted: None,
                    };
                    if edit.delete {
                        change.deleted = Some(Version {
                            hlc: clock.now(wall),
                            instance,
                        });
                    }
                    if !edit.fields.is_empty() {
                        let version = Version {
                            hlc: clock.now(wall),
                            instance,
                        };
                        for (key, value) in edit.fields {
                            change.fields.insert(key, FieldState { version, value });
                        }
                    }
                    change
                })
                .collect()
        })
        .await
    }

    /// Writes changes that already carry their versions (e.g. re-imported
    /// data); the clock observes them so later local writes come after.
    pub async fn write_changes(&self, changes: Vec<Change>) -> Result<WriteReceipt, StoreError> {
        self.commit_local(move |clock, wall| {
            for c in &changes {
                for v in c.fields.values().map(|s| s.version).chain(c.deleted) {
                    // A far-future local timestamp is the caller's choice;
                    // only partners' clocks are bounded.
                    if clock.observe(v.hlc, wall).is_err() {
                        let _ = clock.now(wall);
                    }
                }
            }
            changes
        })
        .await
    }

    /// Deletes an object (a versioned tombstone that partners receive).
    pub async fn delete(&self, id: ObjectId) -> Result<WriteReceipt, StoreError> {
        let obj = self.get(id)?.ok_or(StoreError::NotFound(id))?;
        let mut edit = Edit::new(id, obj.kind);
        edit.delete = true;
        self.write(vec![edit]).await
    }

    async fn commit_local(
        &self,
        build: impl FnOnce(&mut Clock, u64) -> Vec<Change>,
    ) -> Result<WriteReceipt, StoreError> {
        let (ticket, receipt) = {
            let mut w = self
                .inner
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let changes = build(&mut w.clock, wall_ms());
            if changes.is_empty() {
                return Ok(WriteReceipt {
                    changes: Vec::new(),
                    objects: Vec::new(),
                });
            }
            let first = w.next_seq;
            let mut batch = sled::Batch::default();
            let mut merged = Merged::default();
            for (i, change) in changes.iter().enumerate() {
                // A local write is logged even when it changes nothing:
                // governance re-logs whole objects to send them onward.
                merged.merge(&self.inner.data, &mut batch, change, Some(first + i as u64))?;
            }
            batch.insert(keys::META_HLC, &w.clock.last().0.to_be_bytes());
            self.inner
                .data
                .apply_batch(batch)
                .map_err(db_err("write"))?;
            let objects = merged.objects;
            w.next_seq = first + changes.len() as u64;
            let receipt = WriteReceipt {
                changes: changes
                    .into_iter()
                    .enumerate()
                    .map(|(i, change)| SequencedChange {
                        seq: first + i as u64,
                        change,
                    })
                    .collect(),
                objects,
            };
            (self.inner.commit.ticket(), receipt)
        };
        self.inner
            .commit
            .wait(ticket)
            .await
            .map_err(StoreError::Flush)?;

        // Receipt is non-empty here (checked above).
        let last = receipt.changes.last().map(|c| c.seq).unwrap_or(0);
        let prev = self.inner.durable_head.fetch_max(last, Ordering::AcqRel);
        if last > prev {
            self.inner.head.send_if_modified(|h| {
                let grew = last > *h;
                *h = (*h).max(last);
                grew
            });
        }
        for (c, obj) in receipt.changes.iter().zip(&receipt.objects) {
            // No subscriber is not an error.
            let _ = self.inner.events.send(StoreEvent {
                origin: Origin::Local,
                seq: Some(c.seq),
                id: obj.id,
                kind: obj.kind,
                deleted: obj.is_deleted(),
            });
        }
        Ok(receipt)
    }

    // -----------------------------------------------------------------
    // Partner changes
    // -----------------------------------------------------------------

    /// Applies a batch of a partner's log and advances that partner's
    /// `applied_from_peer` cursor to `up_to_seq`, in one atomic batch, and
    /// returns once that is durable: the caller may then acknowledge
    /// `up_to_seq`. Changes at or below the cursor are skipped (already
    /// applied). Every change must have `seq <= up_to_seq`.
    pub async fn apply_from_partner(
        &self,
        partner: OrgId,
        changes: &[SequencedChange],
        up_to_seq: u64,
    ) -> Result<ApplyOutcome, StoreError> {
        self.apply_from_partner_with(partner, changes, up_to_seq, &|_| Incoming::Apply)
            .await
    }

    /// [`Store::apply_from_partner`] with a decision per change: applied,
    /// held in the inbox, or rejected (dropped), all in the same batch.
    pub async fn apply_from_partner_with(
        &self,
        partner: OrgId,
        changes: &[SequencedChange],
        up_to_seq: u64,
        decide: &(dyn Fn(&Change) -> Incoming + Sync),
    ) -> Result<ApplyOutcome, StoreError> {
        if let Some(c) = changes.iter().find(|c| c.seq > up_to_seq || c.seq == 0) {
            return Err(StoreError::InvalidBatch {
                partner,
                reason: format!("change seq {} outside 1..={up_to_seq}", c.seq),
            });
        }
        if changes.windows(2).any(|w| w[0].seq >= w[1].seq) {
            return Err(StoreError::InvalidBatch {
                partner,
                reason: "sequence numbers not strictly increasing".into(),
            });
        }
        let decisions: Vec<Incoming> = changes.iter().map(|c| decide(&c.change)).collect();
        let applied_key = keys::cursor(&partner, keys::CURSOR_APPLIED);
        let data = &self.inner.data;
        let (ticket, outcome, events) = {
            let mut w = self
                .inner
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let wall = wall_ms();
            let newest = changes
                .iter()
                .flat_map(|c| {
                    c.change
                        .fields
                        .values()
                        .map(|s| s.version)
                        .chain(c.change.deleted)
                })
                .map(|v| v.hlc)
                .max();
            if let Some(newest) = newest {
                w.clock
                    .check(newest, wall)
                    .map_err(|source| StoreError::ClockDrift { partner, source })?;
            }
            let cursor = match data.get(applied_key).map_err(db_err("read cursor"))? {
                Some(v) => keys::u64_value("cursors", &applied_key, &v)?,
                None => 0,
            };
            let mut batch = sled::Batch::default();
            let mut merged = Merged::default();
            let mut outcome = ApplyOutcome::default();
            let mut events = Vec::new();
            for (c, d) in changes.iter().zip(&decisions) {
                if c.seq <= cursor {
                    outcome.skipped += 1;
                    continue;
                }
                match d {
                    Incoming::Apply => {
                        let (obj, changed) = match merged.merge(data, &mut batch, &c.change, None) {
                            Ok(r) => r,
                            // A partner's change that cannot merge (another
                            // kind for a known id) is refused alone: failing
                            // the batch would block the partner forever.
                            Err(StoreError::Merge { id, source }) => {
                                tracing::warn!(partner = %partner.short(), %id, error = %source,
                                    "partner change refused");
                                outcome.rejected += 1;
                                outcome.invalid += 1;
                                continue;
                            }
                            Err(e) => return Err(e),
                        };
                        outcome.applied += 1;
                        if !changed {
                            // Nothing new (a copy coming back, a resend):
                            // no event, so nobody passes it on again.
                            outcome.unchanged += 1;
                            continue;
                        }
                        events.push(StoreEvent {
                            origin: Origin::Partner(partner),
                            seq: None,
                            id: obj.id,
                            kind: obj.kind,
                            deleted: obj.is_deleted(),
                        });
                    }
                    Incoming::Hold => {
                        let bytes = encode_as("held change", &c.change)?;
                        batch.insert(&keys::inbox(&partner, c.seq)[..], bytes);
                        outcome.held += 1;
                    }
                    Incoming::Reject => outcome.rejected += 1,
                }
            }
            outcome.cursor = cursor.max(up_to_seq);
            if outcome.cursor != cursor {
                batch.insert(&applied_key[..], &outcome.cursor.to_be_bytes()[..]);
            }
            if !events.is_empty() {
                // Later local writes must order after what we applied.
                if let Some(newest) = newest {
                    let _ = w.clock.observe(newest, wall);
                    batch.insert(keys::META_HLC, &w.clock.last().0.to_be_bytes());
                }
            }
            data.apply_batch(batch)
                .map_err(db_err("apply partner batch"))?;
            (self.inner.commit.ticket(), outcome, events)
        };
        self.inner
            .commit
            .wait(ticket)
            .await
            .map_err(StoreError::Flush)?;
        for e in events {
            let _ = self.inner.events.send(e);
        }
        Ok(outcome)
    }

    /// The changes held in the inbox for `partner`, by the partner's sequence.
    pub fn inbox(&self, partner: &OrgId) -> Result<Vec<(u64, Change)>, StoreError> {
        self.inner
            .data
            .scan_prefix(keys::inbox_prefix(partner))
            .map(|kv| {
                let (k, v) = kv.map_err(db_err("read inbox"))?;
                let seq = keys::u64_value("inbox", &k, &k[33..])?;
                Ok((seq, decode_at("inbox", &k, &v)?))
            })
            .collect()
    }

    /// How many changes are held in the inbox for `partner` (keys only).
    pub fn inbox_len(&self, partner: &OrgId) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self
            .inner
            .data
            .scan_prefix(keys::inbox_prefix(partner))
            .keys()
        {
            kv.map_err(db_err("count inbox"))?;
            n += 1;
        }
        Ok(n)
    }

    // -----------------------------------------------------------------
    // Cursors and the log
    // -----------------------------------------------------------------

    /// A partner's cursors (zero for a partner never synced).
    pub fn cursor(&self, partner: &OrgId) -> Result<Cursor, StoreError> {
        let read = |tag| -> Result<u64, StoreError> {
            let key = keys::cursor(partner, tag);
            match self.inner.data.get(key).map_err(db_err("read cursor"))? {
                Some(v) => keys::u64_value("cursors", &key, &v),
                None => Ok(0),
            }
        };
        Ok(Cursor {
            applied_from_peer: read(keys::CURSOR_APPLIED)?,
            acked_by_peer: read(keys::CURSOR_ACKED)?,
        })
    }

    /// Records that `partner` acknowledged our log up to `seq`. Never moves
    /// the cursor back. Not flushed on its own: losing an ack in a crash
    /// only means resending changes the partner skips.
    pub fn set_acked(&self, partner: &OrgId, seq: u64) -> Result<(), StoreError> {
        let key = keys::cursor(partner, keys::CURSOR_ACKED);
        self.inner
            .data
            .fetch_and_update(key, |old| {
                let old = old
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                Some(old.max(seq).to_be_bytes().to_vec())
            })
            .map_err(db_err("write cursor"))?;
        Ok(())
    }

    /// The highest durable sequence of the local log (0 when empty).
    pub fn log_head(&self) -> u64 {
        self.inner.durable_head.load(Ordering::Acquire)
    }

    /// A watch of [`Store::log_head`]: changes as soon as a local write is
    /// durable, so senders can push without polling.
    pub fn subscribe_head(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    /// Every committed change, local or from a partner, as it becomes durable.
    pub fn subscribe_events(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.events.subscribe()
    }

    /// Up to `limit` objects written here since `after`, each in its
    /// current state at the seq of its latest durable local write, in seq
    /// order; `up_to` says how far the log was read. An entry whose object
    /// was written again since (its record names a later seq) or erased
    /// ([`Store::purge`]) is passed over: the later entry sends it, or
    /// there is nothing left to send.
    pub fn load_page(&self, after: u64, limit: usize) -> Result<LogPage, StoreError> {
        let page = self.load_page_encoded(after, limit)?;
        let entries = page
            .entries
            .iter()
            .map(|e| Ok((e.seq, e.decode()?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(LogPage {
            entries,
            up_to: page.up_to,
        })
    }

    /// [`Store::load_page`] without decoding the objects: each entry holds
    /// the object's record as stored (one read, no copy, no decode).
    pub fn load_page_encoded(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<EncodedLogPage, StoreError> {
        let head = self.log_head();
        let mut page = EncodedLogPage {
            entries: Vec::new(),
            up_to: after,
        };
        if after >= head || limit == 0 {
            return Ok(page);
        }
        let data = &self.inner.data;
        for kv in data.range(keys::log(after + 1)..=keys::log(head)) {
            let (k, v) = kv.map_err(db_err("read log"))?;
            let seq = keys::u64_value("log", &k, &k[1..])?;
            let id = records::decode_log_ref(&k, &v)?;
            page.up_to = seq;
            let key = keys::object(&id);
            let Some(record) = data.get(key).map_err(db_err("read object"))? else {
                continue;
            };
            let (latest, _) = records::split_object(&key, &record)?;
            if latest != seq {
                continue;
            }
            page.entries.push(EncodedEntry { seq, id, record });
            if page.entries.len() >= limit {
                return Ok(page);
            }
        }
        page.up_to = head;
        Ok(page)
    }

    /// [`Store::load_page`]'s entries as changes: each object's whole
    /// state (a valid change for the state-based merge, deletion included).
    pub fn load_log(&self, after: u64, limit: usize) -> Result<Vec<SequencedChange>, StoreError> {
        Ok(self
            .load_page(after, limit)?
            .entries
            .iter()
            .map(|(seq, obj)| SequencedChange {
                seq: *seq,
                change: Change::from_object(obj),
            })
            .collect())
    }

    // -----------------------------------------------------------------
    // Objects
    // -----------------------------------------------------------------

    /// The stored object, including a deleted one (see [`Object::is_deleted`]).
    pub fn get(&self, id: ObjectId) -> Result<Option<Object>, StoreError> {
        match self
            .inner
            .data
            .get(keys::object(&id))
            .map_err(db_err("read object"))?
        {
            Some(v) => Ok(Some(records::decode_object(&id.0, &v)?.1)),
            None => Ok(None),
        }
    }

    /// Whether an object (deleted or not) is stored under `id`: [`Store::get`]
    /// without decoding it.
    pub fn contains(&self, id: ObjectId) -> Result<bool, StoreError> {
        self.inner
            .data
            .contains_key(keys::object(&id))
            .map_err(db_err("read object"))
    }

    /// Live (not deleted) objects, optionally of one kind, in id order
    /// (creation order), starting after `after`, at most `limit`.
    /// Scans and decodes objects of other kinds too.
    pub fn list(
        &self,
        kind: Option<Kind>,
        after: Option<ObjectId>,
        limit: usize,
    ) -> Result<Vec<Object>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(id) => Bound::Excluded(keys::object(&id)),
            None => Bound::Included(keys::object(&ObjectId([0; 16]))),
        };
        let end = Bound::Excluded([keys::OBJECTS + 1]);
        let mut out = Vec::new();
        for kv in self.inner.data.range::<&[u8], _>((
            start.as_ref().map(|k| k.as_slice()),
            end.as_ref().map(|k| k.as_slice()),
        )) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv.map_err(db_err("read objects"))?;
            let (_, obj) = records::decode_object(&k, &v)?;
            if kind.is_none_or(|k| k == obj.kind) && !obj.is_deleted() {
                out.push(obj);
            }
        }
        Ok(out)
    }

    // -----------------------------------------------------------------
    // Blob index
    // -----------------------------------------------------------------

    /// The index entry of a blob.
    pub fn blob(&self, hash: &BlobHash) -> Result<Option<BlobEntry>, StoreError> {
        match self
            .inner
            .data
            .get(keys::blob(hash))
            .map_err(db_err("read blob"))?
        {
            Some(v) => Ok(Some(decode_at("blobs", hash, &v)?)),
            None => Ok(None),
        }
    }

    /// Blobs referenced by received objects whose content is not here yet.
    pub fn missing_blobs(&self) -> Result<Vec<(BlobHash, BlobEntry)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.data.scan_prefix([keys::BLOBS]) {
            let (k, v) = kv.map_err(db_err("read blobs"))?;
            let entry: BlobEntry = decode_at("blobs", &k, &v)?;
            if entry.state == BlobState::Missing {
                let hash: BlobHash = k[1..].try_into().map_err(|_| StoreError::Corrupt {
                    tree: "blobs",
                    key: data_encoding::HEXLOWER.encode(&k),
                    source: CodecError::Malformed {
                        type_name: "blob hash",
                        reason: format!("{} bytes instead of 32", k.len()),
                    },
                })?;
                out.push((hash, entry));
            }
        }
        Ok(out)
    }

    /// Records a blob's index entry (durable when this returns).
    pub async fn set_blob(&self, hash: &BlobHash, entry: BlobEntry) -> Result<(), StoreError> {
        let ticket = {
            // Under the writer lock so the ticket covers this insert.
            let _w = self
                .inner
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.inner
                .data
                .insert(keys::blob(hash), encode_as("blob entry", &entry)?)
                .map_err(db_err("write blob"))?;
            self.inner.commit.ticket()
        };
        self.inner
            .commit
            .wait(ticket)
            .await
            .map_err(StoreError::Flush)
    }

    /// Waits until everything written so far is durable (used at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.inner.commit.ticket();
        self.inner
            .commit
            .wait(ticket)
            .await
            .map_err(StoreError::Flush)
    }

    /// The sled database, for subsystems that keep trees of their own in
    /// the same database (sharing governance). They must not touch the
    /// store's trees; durability comes with [`Store::flush`].
    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// Removes the held change of `partner` with the partner's sequence
    /// `seq` from the inbox (an admin decided on it); durable on return.
    pub async fn remove_from_inbox(&self, partner: &OrgId, seq: u64) -> Result<(), StoreError> {
        self.inner
            .data
            .remove(keys::inbox(partner, seq))
            .map_err(db_err("remove from inbox"))?;
        self.flush().await
    }

    /// Removes the held changes `seqs` of `partner` from the inbox in one
    /// atomic batch, durable on return (one flush for all of them).
    pub async fn remove_many_from_inbox(
        &self,
        partner: &OrgId,
        seqs: &[u64],
    ) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for seq in seqs {
            batch.remove(keys::inbox(partner, *seq).to_vec());
        }
        self.inner
            .data
            .apply_batch(batch)
            .map_err(db_err("remove from inbox"))?;
        self.flush().await
    }

    /// Erases objects outright: no tombstone, no log entry (an erase asked
    /// by the partner a copy came from is a governance act, passed on by
    /// governance frames, not a change). A later copy of the same object
    /// arrives as new. Durable on return; subscribers see each as deleted.
    pub async fn purge(&self, ids: &[ObjectId]) -> Result<usize, StoreError> {
        let mut gone = Vec::new();
        {
            let _w = self
                .inner
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut batch = sled::Batch::default();
            for id in ids {
                let key = keys::object(id);
                if let Some(v) = self.inner.data.get(key).map_err(db_err("read object"))? {
                    let (_, obj) = records::decode_object(&key, &v)?;
                    batch.remove(&key[..]);
                    gone.push((obj.id, obj.kind));
                }
            }
            self.inner
                .data
                .apply_batch(batch)
                .map_err(db_err("purge"))?;
        }
        self.flush().await?;
        for (id, kind) in &gone {
            let _ = self.inner.events.send(StoreEvent {
                origin: Origin::Local,
                seq: None,
                id: *id,
                kind: *kind,
                deleted: true,
            });
        }
        Ok(gone.len())
    }

    /// Bytes the database uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.db.size_on_disk().map_err(db_err("size"))
    }
}

/// Objects merged into one batch: a later change to the same object in the
/// batch must merge into the result of the earlier one, which is not in the
/// tree yet.
#[derive(Default)]
struct Merged {
    /// The objects after each merge, in order.
    objects: Vec<Object>,
    /// Index in `objects` of the latest state of each object merged, and
    /// the seq its record names.
    latest: HashMap<ObjectId, (usize, u64)>,
}

impl Merged {
    /// Merges `change` into the object as of this batch (or as stored) and
    /// returns the result with whether it changed anything.
    ///
    /// A local write (`local_seq`) always stores the object with its new
    /// seq, appends the log reference and removes the object's previous
    /// entry: the log keeps one entry per object. A partner's change stores
    /// the object only when it changed, keeping its seq.
    fn merge(
        &mut self,
        data: &sled::Tree,
        batch: &mut sled::Batch,
        change: &Change,
        local_seq: Option<u64>,
    ) -> Result<(&Object, bool), StoreError> {
        let key = keys::object(&change.id);
        let (existing, seq) = match self.latest.get(&change.id) {
            Some(&(i, seq)) => (Some(self.objects[i].clone()), seq),
            None => match data.get(key).map_err(db_err("read object"))? {
                Some(v) => {
                    let (seq, obj) = records::decode_object(&key, &v)?;
                    (Some(obj), seq)
                }
                None => (None, 0),
            },
        };
        let obj =
            merge::apply_change(existing.clone(), change).map_err(|source| StoreError::Merge {
                id: change.id,
                source,
            })?;
        // Merge output is in normal form: equal objects are equal values.
        let changed = existing.as_ref() != Some(&obj);
        let seq = match local_seq {
            Some(new) => {
                if seq != 0 && seq != new {
                    batch.remove(&keys::log(seq)[..]);
                }
                batch.insert(&keys::log(new)[..], &change.id.0[..]);
                batch.insert(&key[..], records::encode_object(new, &obj)?);
                new
            }
            None => {
                if changed {
                    batch.insert(&key[..], records::encode_object(seq, &obj)?);
                }
                seq
            }
        };
        self.latest.insert(change.id, (self.objects.len(), seq));
        self.objects.push(obj);
        // Just pushed.
        Ok((&self.objects[self.objects.len() - 1], changed))
    }
}

/// Moves the content of a store written with one tree per section (before
/// the single-tree layout) into the single tree, once, then drops the old
/// trees (format 1 to 2, see [`format`]). One batch per old tree; the old tree is dropped only after the
/// batch is flushed, so a crash midway redoes the copy (idempotent).
fn migrate_legacy_trees(db: &sled::Db, data: &sled::Tree) -> Result<(), StoreError> {
    let names = db.tree_names();
    for (name, tag) in keys::LEGACY_TREES {
        if !names.iter().any(|n| n.as_ref() == name.as_bytes()) {
            continue;
        }
        let old = db.open_tree(name).map_err(db_err("open legacy tree"))?;
        let mut batch = sled::Batch::default();
        for kv in old.iter() {
            let (k, v) = kv.map_err(db_err("read legacy tree"))?;
            let mut key = Vec::with_capacity(k.len() + 1);
            key.push(tag);
            key.extend_from_slice(&k);
            batch.insert(key, v);
        }
        data.apply_batch(batch).map_err(db_err("migrate"))?;
        db.flush().map_err(db_err("flush"))?;
        db.drop_tree(name).map_err(db_err("drop legacy tree"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// Opens the sled database at `path`. sled's I/O threads may still hold
/// the file lock for a moment after the previous `Db` in this process was
/// dropped (a restart in place, as tests and the bench do), so a lock
/// conflict is retried for up to [`LOCK_WAIT`] before it is reported: a
/// database really held by another process still fails, just not at once.
fn open_sled(path: &Path, cache_capacity: u64) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let result = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            // Durability comes from the group-commit flusher, not a timer.
            .flush_every_ms(None)
            .open();
        match result {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// How long [`open_sled`] retries a held file lock.
const LOCK_WAIT: Duration = Duration::from_secs(3);
