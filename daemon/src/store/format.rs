//! The store's on-disk format version, and the migrations between formats.
//!
//! The version lives in the store itself (`m` ++ `format`, u32 big-endian)
//! so that a copied or restored store carries it. It covers the whole sled
//! database, the governance trees (`gov_*`, kept in the same database)
//! included: a change to their layout bumps it too. [`upgrade`] runs on every
//! open: it finds the format the store was written in, refuses a store
//! from a newer release (reading it would misread it), and otherwise runs
//! each migration from that format up to [`CURRENT`] in order. Each step
//! records its new format only after its own writes are flushed, so a
//! crash midway redoes that step, which is why each step must be
//! idempotent.
//!
//! Formats:
//! 1. one sled tree per section (`objects`, `log`, …): releases before the
//!    single-tree layout; no version recorded.
//! 2. one tree, keys tagged by section (see `keys.rs`); releases up to the
//!    one that introduced this module recorded no version either.
//! 3. the log holds references to objects instead of copies of changes,
//!    and each object record starts with the seq of its latest local
//!    write (see `records.rs`, migration in `migrate_refs.rs`).
//!
//! Adding format N+1: bump [`CURRENT`], append a [`Migration`] from N, and
//! keep a store written by the release before the bump as a fixture in
//! `daemon/tests/fixtures/store-format-N/` (opened by the store tests).

use super::{db_err, keys, StoreError};

/// The format this build writes. Stores of an older format are migrated
/// on open; a newer one is refused.
pub const CURRENT: u32 = 3;

/// What [`upgrade`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The format the store was in before this open (`None`: a new store).
    pub found: Option<u32>,
    /// The format it is in now (always [`CURRENT`]).
    pub now: u32,
}

impl Upgrade {
    /// Whether any migration ran.
    pub fn migrated(&self) -> bool {
        self.found.is_some_and(|f| f != self.now)
    }
}

/// One step, from format `from` to `from + 1`.
struct Migration {
    from: u32,
    what: &'static str,
    run: fn(&sled::Db, &sled::Tree) -> Result<(), StoreError>,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        from: 1,
        what: "one tree per section to a single tree",
        run: super::migrate_legacy_trees,
    },
    Migration {
        from: 2,
        what: "log entries become references to objects",
        run: super::migrate_refs::run,
    },
];

/// Finds the store's format and migrates it to [`CURRENT`] (see the module
/// documentation). A new, empty store is stamped with [`CURRENT`].
pub(super) fn upgrade(db: &sled::Db, data: &sled::Tree) -> Result<Upgrade, StoreError> {
    let found = detect(db, data)?;
    let Some(mut format) = found else {
        record(db, data, CURRENT)?;
        return Ok(Upgrade {
            found,
            now: CURRENT,
        });
    };
    if format > CURRENT {
        return Err(StoreError::FormatTooNew {
            found: format,
            supported: CURRENT,
        });
    }
    while format < CURRENT {
        let step = MIGRATIONS
            .iter()
            .find(|m| m.from == format)
            .ok_or(StoreError::NoMigration { from: format })?;
        tracing::info!(
            from = format,
            to = format + 1,
            what = step.what,
            "migrating the store"
        );
        (step.run)(db, data)?;
        format += 1;
        record(db, data, format)?;
    }
    // A store of the current layout written before versions were recorded.
    if data
        .get(keys::META_FORMAT)
        .map_err(db_err("read format"))?
        .is_none()
    {
        record(db, data, CURRENT)?;
    }
    Ok(Upgrade {
        found,
        now: CURRENT,
    })
}

/// The format of an existing store, `None` for a new one. Stores written
/// before the version was recorded are recognised by their layout.
fn detect(db: &sled::Db, data: &sled::Tree) -> Result<Option<u32>, StoreError> {
    if let Some(v) = data.get(keys::META_FORMAT).map_err(db_err("read format"))? {
        let bytes: [u8; 4] = v
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::FormatUnreadable { len: v.len() })?;
        return Ok(Some(u32::from_be_bytes(bytes)));
    }
    let names = db.tree_names();
    if keys::LEGACY_TREES
        .iter()
        .any(|(name, _)| names.iter().any(|n| n.as_ref() == name.as_bytes()))
    {
        return Ok(Some(1));
    }
    if data.first().map_err(db_err("read store"))?.is_some() {
        return Ok(Some(2));
    }
    Ok(None)
}

/// Records `format` durably.
fn record(db: &sled::Db, data: &sled::Tree, format: u32) -> Result<(), StoreError> {
    data.insert(keys::META_FORMAT, &format.to_be_bytes())
        .map_err(db_err("record format"))?;
    db.flush().map_err(db_err("flush"))?;
    Ok(())
}
