//! Format 2 to 3: the log stops copying changes (see `records.rs`).
//!
//! Format 2 stored each log entry as a copy of the change and each object
//! as its encoding alone. Format 3 puts in front of each object the seq of
//! its latest local log entry, keeps that entry as a reference to the
//! object, and removes the object's earlier entries (the sender sends the
//! current state once). The head entry is always an object's latest, so
//! the log head, and with it every partner's ack cursor, means the same
//! afterwards.
//!
//! The work is done in chunks so a large store does not become one huge
//! batch. Each chunk's batch also records how far the migration got
//! (`META_MIGRATE_3`: a phase byte and the last key done) and is flushed,
//! so a crash midway resumes after the last chunk instead of prefixing an
//! object twice; the last batch removes that mark and records format 3.

use std::collections::HashMap;

use orgsync_protocol::model::{Change, ObjectId};

use super::{db_err, decode_at, keys, records, StoreError};

/// Objects or log entries rewritten per batch.
const CHUNK: usize = 10_000;
/// Phase mark: objects are being prefixed (the log is still format 2).
const PHASE_OBJECTS: u8 = b'o';
/// Phase mark: log entries are being rewritten (objects are done).
const PHASE_LOG: u8 = b'l';

/// Runs (or resumes) the migration of `data` from format 2 to 3.
pub(super) fn run(db: &sled::Db, data: &sled::Tree) -> Result<(), StoreError> {
    run_with(db, data, &mut Batches::new(CHUNK))
}

/// How the migration cuts its work; tests use small chunks and stop after
/// a number of batches to play a crash midway.
pub(super) struct Batches {
    chunk: usize,
    /// Batches left before a simulated crash (`None`: never).
    crash_after: Option<usize>,
}

impl Batches {
    pub(super) fn new(chunk: usize) -> Batches {
        Batches {
            chunk: chunk.max(1),
            crash_after: None,
        }
    }

    /// Stops with an error once `n` batches are committed.
    #[cfg(test)]
    pub(super) fn crash_after(mut self, n: usize) -> Batches {
        self.crash_after = Some(n);
        self
    }

    fn commit(
        &mut self,
        db: &sled::Db,
        data: &sled::Tree,
        batch: sled::Batch,
    ) -> Result<(), StoreError> {
        if self.crash_after == Some(0) {
            return Err(StoreError::Db {
                op: "migrate (simulated crash)",
                source: sled::Error::Io(std::io::Error::other("simulated crash")),
            });
        }
        data.apply_batch(batch).map_err(db_err("migrate"))?;
        db.flush().map_err(db_err("flush"))?;
        if let Some(n) = &mut self.crash_after {
            *n -= 1;
        }
        Ok(())
    }
}

/// [`run`] with the given batching.
pub(super) fn run_with(
    db: &sled::Db,
    data: &sled::Tree,
    batches: &mut Batches,
) -> Result<(), StoreError> {
    let mark = data
        .get(keys::META_MIGRATE_3)
        .map_err(db_err("read migration mark"))?;
    let (phase, done) = match mark.as_deref() {
        None => (PHASE_OBJECTS, None),
        Some([phase, rest @ ..]) if *phase == PHASE_OBJECTS || *phase == PHASE_LOG => {
            (*phase, (!rest.is_empty()).then(|| rest.to_vec()))
        }
        Some(other) => {
            return Err(StoreError::MigrationMark {
                value: data_encoding::HEXLOWER.encode(other),
            })
        }
    };
    if phase == PHASE_OBJECTS {
        prefix_objects(db, data, done.as_deref(), batches)?;
        rewrite_log(db, data, None, batches)
    } else {
        rewrite_log(db, data, done.as_deref(), batches)
    }
}

/// The (seq, object id) of every format-2 log entry after `after` (a log
/// key), in seq order.
fn old_entries(
    data: &sled::Tree,
    after: Option<&[u8]>,
) -> Result<Vec<(u64, ObjectId)>, StoreError> {
    let mut out = Vec::new();
    for kv in data.range(start(keys::LOG, after)..[keys::LOG + 1].to_vec()) {
        let (k, v) = kv.map_err(db_err("read log"))?;
        let seq = keys::u64_value("log", &k, &k[1..])?;
        let change: Change = decode_at("log", &k, &v)?;
        out.push((seq, change.id));
    }
    Ok(out)
}

/// The first key of `section` after `after` (or its first key).
fn start(section: u8, after: Option<&[u8]>) -> Vec<u8> {
    match after {
        // The smallest key greater than `after`.
        Some(k) => {
            let mut k = k.to_vec();
            k.push(0);
            k
        }
        None => vec![section],
    }
}

fn latest_seqs(entries: &[(u64, ObjectId)]) -> HashMap<ObjectId, u64> {
    // Entries come in seq order: the last one seen per object is its latest.
    entries.iter().map(|&(seq, id)| (id, seq)).collect()
}

fn mark(phase: u8, key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + key.len());
    v.push(phase);
    v.extend_from_slice(key);
    v
}

/// Puts each object's latest local seq in front of its encoding.
fn prefix_objects(
    db: &sled::Db,
    data: &sled::Tree,
    after: Option<&[u8]>,
    batches: &mut Batches,
) -> Result<(), StoreError> {
    let latest = latest_seqs(&old_entries(data, None)?);
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for kv in data.range(start(keys::OBJECTS, after)..[keys::OBJECTS + 1].to_vec()) {
        let (k, v) = kv.map_err(db_err("read objects"))?;
        let id: [u8; 16] = k[1..].try_into().map_err(|_| {
            records::corrupt(
                "objects",
                &k,
                "object key",
                format!("{} bytes instead of 17", k.len()),
            )
        })?;
        let seq = latest.get(&ObjectId(id)).copied().unwrap_or(0);
        let mut value = Vec::with_capacity(8 + v.len());
        value.extend_from_slice(&seq.to_be_bytes());
        value.extend_from_slice(&v);
        batch.insert(k.clone(), value);
        n += 1;
        if n % batches.chunk == 0 {
            batch.insert(keys::META_MIGRATE_3, mark(PHASE_OBJECTS, &k));
            batches.commit(db, data, std::mem::take(&mut batch))?;
        }
    }
    batch.insert(keys::META_MIGRATE_3, vec![PHASE_LOG]);
    batches.commit(db, data, batch)
}

/// Rewrites each object's latest log entry as a reference and removes its
/// earlier ones; the last batch records format 3.
fn rewrite_log(
    db: &sled::Db,
    data: &sled::Tree,
    after: Option<&[u8]>,
    batches: &mut Batches,
) -> Result<(), StoreError> {
    let entries = old_entries(data, after)?;
    let latest = latest_seqs(&entries);
    let mut batch = sled::Batch::default();
    for (i, &(seq, id)) in entries.iter().enumerate() {
        let key = keys::log(seq);
        if latest.get(&id) == Some(&seq) {
            batch.insert(&key[..], &id.0[..]);
        } else {
            batch.remove(&key[..]);
        }
        if (i + 1) % batches.chunk == 0 {
            batch.insert(keys::META_MIGRATE_3, mark(PHASE_LOG, &key));
            batches.commit(db, data, std::mem::take(&mut batch))?;
        }
    }
    batch.remove(keys::META_MIGRATE_3);
    batch.insert(keys::META_FORMAT, &3u32.to_be_bytes());
    batches.commit(db, data, batch)
}
