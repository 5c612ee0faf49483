//! A consistent copy of the whole sled database (the store's tree and the
//! governance trees kept in the same database), for backups, and the two
//! marks a restored store carries.
//!
//! Consistency: every batch that changes the store's tree is built and
//! applied under the writer lock, so copying every tree while holding it
//! sees the store between two batches, never inside one. The copy is taken
//! from sled's in-memory view, so it includes batches applied but not yet
//! flushed: they are the state the next flush makes durable, and the log
//! head recorded is the highest log key in the copy, not the durable head.
//!
//! A restored store records `m` ++ `restored` (the instance it was
//! restored from, u64 BE) and, once a partner proved it had applied more
//! of our log than the backup holds, `m` ++ `logfloor` (u64 BE): the log
//! head jumps past it so new local changes never reuse a sequence number a
//! partner already holds (see [`Store::jump_log_head`]).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use orgsync_protocol::model::{InstanceId, Object, OrgId};

use super::{
    db_err, decode_at, keys, open_sled, BlobEntry, BlobHash, BlobState, Store, StoreError,
};

/// The instance a restored store was restored from (u64 BE).
const META_RESTORED: &[u8] = b"mrestored";
/// The lowest log head of a restored store (u64 BE), see the module doc.
const META_LOG_FLOOR: &[u8] = b"mlogfloor";

/// One copied sled tree: its name and its `(key, value)` entries in order.
pub type Tree = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// Every tree of the database as it was at one instant.
#[derive(Debug)]
pub struct DbSnapshot {
    /// `(tree name, [(key, value)])`, every tree including sled's default.
    pub trees: Vec<Tree>,
    /// The highest local log sequence in the copy (0 when empty).
    pub log_head: u64,
    /// The instance the store belongs to.
    pub instance: InstanceId,
    /// How long local writes and partner applies were held back.
    pub pause: Duration,
}

impl DbSnapshot {
    /// The live (not deleted) objects of the copy, decoded.
    pub fn objects(&self) -> Result<Vec<Object>, StoreError> {
        objects_of(&self.trees)
    }

    /// Hashes of the blobs the copied index says are complete here.
    pub fn complete_blobs(&self) -> Result<Vec<BlobHash>, StoreError> {
        let mut out = Vec::new();
        for (name, entries) in &self.trees {
            if name.as_slice() != keys::TREE.as_bytes() {
                continue;
            }
            for (k, v) in entries {
                if k.first() != Some(&keys::BLOBS) {
                    continue;
                }
                let entry: BlobEntry = decode_at("blobs", k, v)?;
                if let (BlobState::Complete, Ok(hash)) = (entry.state, k[1..].try_into()) {
                    out.push(hash);
                }
            }
        }
        Ok(out)
    }
}

/// The live objects in a set of copied trees (the store's tree only).
pub fn objects_of(trees: &[Tree]) -> Result<Vec<Object>, StoreError> {
    let mut out = Vec::new();
    for (name, entries) in trees {
        if name.as_slice() != keys::TREE.as_bytes() {
            continue;
        }
        for (k, v) in entries {
            if k.first() == Some(&keys::OBJECTS) {
                let (_, obj) = super::records::decode_object(k, v)?;
                if !obj.is_deleted() {
                    out.push(obj);
                }
            }
        }
    }
    Ok(out)
}

impl Store {
    /// Copies every tree of the database while holding the writer lock, so
    /// no store batch lands mid-copy (see the module doc). Callers that
    /// must also exclude other writers of the same database (governance)
    /// hold their own lock around this call.
    pub fn snapshot(&self) -> Result<DbSnapshot, StoreError> {
        let db = &self.inner.db;
        let _w = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let mut trees = Vec::new();
        for name in db.tree_names() {
            let tree = db.open_tree(&name).map_err(db_err("open tree"))?;
            let mut entries = Vec::with_capacity(tree.len());
            for kv in tree.iter() {
                let (k, v) = kv.map_err(db_err("snapshot"))?;
                entries.push((k.to_vec(), v.to_vec()));
            }
            trees.push((name.to_vec(), entries));
        }
        let pause = started.elapsed();
        let log_head = log_head_of(&self.inner.data)?;
        Ok(DbSnapshot {
            trees,
            log_head,
            instance: self.inner.instance,
            pause,
        })
    }

    /// The instance directory this store lives in.
    pub fn instance_dir(&self) -> &Path {
        self.inner.path.parent().unwrap_or(Path::new("."))
    }

    /// The instance this store was restored from, if it was restored from
    /// a backup.
    pub fn restored_from(&self) -> Result<Option<InstanceId>, StoreError> {
        self.inner
            .data
            .get(META_RESTORED)
            .map_err(db_err("read restored mark"))?
            .map(|v| keys::u64_value("meta", META_RESTORED, &v).map(InstanceId))
            .transpose()
    }

    /// Whether `partner` still has to reconcile with this instance after a
    /// restore: the store was restored from a backup and `partner` has not
    /// had a session with it since. Only such a partner may move our log
    /// head forward (see [`Store::jump_log_head`]); once every partner has
    /// reconnected, the instance behaves as one never restored, and a
    /// partner claiming more of our log than we hold is refused again.
    pub fn awaits_restore_reconcile(&self, partner: &OrgId) -> Result<bool, StoreError> {
        let Some(from) = self.restored_from()? else {
            return Ok(false);
        };
        let key = keys::cursor(partner, keys::CURSOR_RECONCILED);
        let seen = self
            .inner
            .data
            .get(key)
            .map_err(db_err("read restore reconcile mark"))?
            .map(|v| keys::u64_value("cursors", &key, &v))
            .transpose()?;
        // A mark left by an earlier restore (a backup of a restored
        // instance) names another instance: it does not count.
        Ok(seen != Some(from.0))
    }

    /// Records that `partner` has had a session with this restored
    /// instance (after any log jump it caused was made durable). Not
    /// flushed on its own: lost in a crash, the partner is only asked to
    /// reconcile once more.
    pub fn mark_restore_reconciled(&self, partner: &OrgId) -> Result<(), StoreError> {
        let Some(from) = self.restored_from()? else {
            return Ok(());
        };
        let key = keys::cursor(partner, keys::CURSOR_RECONCILED);
        self.inner
            .data
            .insert(key, &from.0.to_be_bytes())
            .map_err(db_err("record restore reconcile mark"))?;
        Ok(())
    }

    /// Moves the local log head to at least `to` (a restored store met a
    /// partner that applied more of our log than the backup held): the next
    /// local change gets `to + 1`, never a number the partner already has.
    /// Recorded durably before returning; the sequences skipped are lost
    /// (the partner keeps its copy of what they held). Returns the head
    /// before the jump; does nothing when the head is already at `to`.
    pub async fn jump_log_head(&self, to: u64) -> Result<u64, StoreError> {
        let from = {
            let mut w = self
                .inner
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let from = w.next_seq - 1;
            if from >= to {
                return Ok(from);
            }
            self.inner
                .data
                .insert(META_LOG_FLOOR, &to.to_be_bytes())
                .map_err(db_err("record log floor"))?;
            w.next_seq = to + 1;
            from
        };
        self.flush().await?;
        self.inner.durable_head.fetch_max(to, Ordering::AcqRel);
        self.inner.head.send_if_modified(|h| {
            let grew = to > *h;
            *h = (*h).max(to);
            grew
        });
        Ok(from)
    }
}

/// The local log head as stored: the last log entry's sequence, or the
/// recorded log floor when a restored store jumped past it.
pub(super) fn log_head_of(data: &sled::Tree) -> Result<u64, StoreError> {
    let last = match data
        .scan_prefix([keys::LOG])
        .next_back()
        .transpose()
        .map_err(db_err("read log head"))?
    {
        Some((k, _)) => keys::u64_value("log", &k, &k[1..])?,
        None => 0,
    };
    Ok(last.max(log_floor(data)?))
}

/// The recorded log floor (0 when none).
fn log_floor(data: &sled::Tree) -> Result<u64, StoreError> {
    Ok(data
        .get(META_LOG_FLOOR)
        .map_err(db_err("read log floor"))?
        .map(|v| keys::u64_value("meta", META_LOG_FLOOR, &v))
        .transpose()?
        .unwrap_or(0))
}

/// Writes copied trees into a new database at `dir/store` (which must not
/// hold one), gives it the new instance `instance` and marks it restored
/// from the instance recorded in the copy. Flushed before returning.
pub fn restore_trees(
    dir: &Path,
    trees: &[Tree],
    instance: InstanceId,
) -> Result<Option<InstanceId>, StoreError> {
    let path = dir.join("store");
    let db = open_sled(&path, 64 << 20).map_err(|source| StoreError::Open {
        path: path.clone(),
        source,
    })?;
    for (name, entries) in trees {
        let tree = db.open_tree(name).map_err(db_err("open tree"))?;
        let mut batch = sled::Batch::default();
        for (k, v) in entries {
            batch.insert(k.as_slice(), v.as_slice());
        }
        tree.apply_batch(batch).map_err(db_err("restore tree"))?;
    }
    let data = db.open_tree(keys::TREE).map_err(db_err("open tree"))?;
    let old = data
        .get(keys::META_INSTANCE)
        .map_err(db_err("read instance"))?
        .map(|v| keys::u64_value("meta", keys::META_INSTANCE, &v).map(InstanceId))
        .transpose()?;
    data.insert(keys::META_INSTANCE, &instance.0.to_be_bytes())
        .map_err(db_err("record instance"))?;
    if let Some(old) = old {
        data.insert(META_RESTORED, &old.0.to_be_bytes())
            .map_err(db_err("record restored mark"))?;
    }
    db.flush().map_err(db_err("flush"))?;
    Ok(old)
}
