//! Batched reads of the stored records a partner's batch merges into.
//!
//! Applying a batch needs the current record of every object it touches.
//! One `get` per change walks the tree from the root each time; the
//! objects of one batch are usually close together in key order (ids are
//! UUIDv7, so a partner's log sends them roughly in creation order), so
//! one ordered scan over the batch's key range reads them all with a
//! single descent. The scan is bounded: when other objects lie between
//! the batch's keys (updates scattered over a large store), it stops
//! after a few more records than the batch holds and the rest are read
//! one by one, so a batch never costs more than about twice the reads.

use std::collections::HashMap;

use orgsync_protocol::model::ObjectId;

use super::{db_err, keys, StoreError};

/// Records read ahead for a batch: `Some(record)` when stored, `None` when
/// the scan proved the object absent. An id not in the map was not
/// resolved by the scan and must be read on its own.
pub(super) type Prefetched = HashMap<ObjectId, Option<sled::IVec>>;

/// Records scanned past the batch's own before the scan gives up.
const SCAN_SLACK: usize = 64;

/// Reads the records of `ids` (any order, duplicates allowed) with one
/// bounded scan over their key range; see the module documentation.
pub(super) fn records(
    data: &sled::Tree,
    ids: impl Iterator<Item = ObjectId>,
) -> Result<Prefetched, StoreError> {
    let mut wanted: Vec<ObjectId> = ids.collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut out = Prefetched::with_capacity(wanted.len());
    let (Some(first), Some(last)) = (wanted.first(), wanted.last()) else {
        return Ok(out);
    };
    let mut budget = wanted.len() * 2 + SCAN_SLACK;
    let mut next = 0;
    let mut scan = data.range(keys::object(first)..=keys::object(last));
    while next < wanted.len() {
        if budget == 0 {
            // Too many other objects in between: the rest are read alone.
            return Ok(out);
        }
        budget -= 1;
        let Some(kv) = scan.next() else { break };
        let (k, v) = kv.map_err(db_err("read objects"))?;
        // Every wanted id below the record just read is not stored.
        while next < wanted.len() && keys::object(&wanted[next])[..] < k[..] {
            out.insert(wanted[next], None);
            next += 1;
        }
        if next < wanted.len() && keys::object(&wanted[next])[..] == k[..] {
            out.insert(wanted[next], Some(v));
            next += 1;
        }
    }
    // The scan ended: nothing stored at or above the remaining ids (within
    // the range, which covers them all).
    for id in &wanted[next..] {
        out.insert(*id, None);
    }
    Ok(out)
}
