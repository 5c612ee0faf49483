//! Key layout of the store's single sled tree.
//!
//! Everything lives in one tree so that one `apply_batch` can cover an
//! object merge, its log entry and a cursor: sled applies a batch
//! atomically, and a batch is several times cheaper than a multi-tree
//! transaction (which copies every read and write into per-tree
//! write sets; profiling showed 50–60% of replication CPU there).
//!
//! Each key starts with a one-byte section tag:
//! - `o` ++ ObjectId (16 bytes) → seq (u64 BE) ++ encoded `Object`: the
//!   seq of the object's latest local log entry (0: never written here)
//! - `l` ++ seq (u64 big-endian, so keys sort by seq) → ObjectId (16
//!   bytes): a reference to the object written, whose current state is
//!   what gets sent (format 3; format 2 stored a copy of the `Change`)
//! - `c` ++ OrgId (32) ++ tag (1) → u64 big-endian
//! - `i` ++ OrgId (32) ++ partner seq (u64 BE) → encoded `Change`
//! - `b` ++ BLAKE3 hash (32) → encoded `BlobEntry`
//! - `m` ++ name → value (see the `META_*` constants)

use orgsync_protocol::codec::CodecError;
use orgsync_protocol::model::{ObjectId, OrgId};

use super::StoreError;

/// Name of the tree holding every section.
pub(super) const TREE: &str = "data";

/// Section tags, with the tree name each section had before the store
/// moved to one tree (used once to migrate an older store).
pub(super) const OBJECTS: u8 = b'o';
pub(super) const LOG: u8 = b'l';
pub(super) const CURSORS: u8 = b'c';
pub(super) const INBOX: u8 = b'i';
pub(super) const BLOBS: u8 = b'b';
pub(super) const META: u8 = b'm';

/// Trees of the older multi-tree layout and the section each moves to.
pub(super) const LEGACY_TREES: [(&str, u8); 6] = [
    ("objects", OBJECTS),
    ("log", LOG),
    ("cursors", CURSORS),
    ("inbox", INBOX),
    ("blobs", BLOBS),
    ("meta", META),
];

/// Last hybrid-logical-clock timestamp issued or observed (u64 BE).
pub(super) const META_HLC: &[u8] = b"mhlc";
/// The store's format version (u32 BE, see `format.rs`).
pub(super) const META_FORMAT: &[u8] = b"mformat";
/// The instance id this store belongs to (u64 BE).
pub(super) const META_INSTANCE: &[u8] = b"minstance";
/// Progress of the format 2 to 3 migration while it runs (see
/// `migrate_refs.rs`); absent otherwise.
pub(super) const META_MIGRATE_3: &[u8] = b"mmigrate3";

/// Cursor tag: applied from the partner's log.
pub(super) const CURSOR_APPLIED: u8 = b'a';
/// Cursor tag: acknowledged by the partner in our log.
pub(super) const CURSOR_ACKED: u8 = b'k';
/// Cursor tag: the partner has had a session with this instance since it
/// was restored from a backup (value: the instance it was restored from).
pub(super) const CURSOR_RECONCILED: u8 = b'r';

pub(super) fn object(id: &ObjectId) -> [u8; 17] {
    let mut k = [OBJECTS; 17];
    k[1..].copy_from_slice(&id.0);
    k
}

pub(super) fn log(seq: u64) -> [u8; 9] {
    let mut k = [LOG; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn cursor(partner: &OrgId, tag: u8) -> [u8; 34] {
    let mut k = [CURSORS; 34];
    k[1..33].copy_from_slice(&partner.0);
    k[33] = tag;
    k
}

pub(super) fn inbox_prefix(partner: &OrgId) -> [u8; 33] {
    let mut k = [INBOX; 33];
    k[1..].copy_from_slice(&partner.0);
    k
}

pub(super) fn inbox(partner: &OrgId, seq: u64) -> [u8; 41] {
    let mut k = [INBOX; 41];
    k[1..33].copy_from_slice(&partner.0);
    k[33..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn blob(hash: &[u8; 32]) -> [u8; 33] {
    let mut k = [BLOBS; 33];
    k[1..].copy_from_slice(hash);
    k
}

/// Reads a big-endian u64 value, reporting a damaged entry otherwise.
pub(super) fn u64_value(tree: &'static str, key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| StoreError::Corrupt {
        tree,
        key: data_encoding::HEXLOWER.encode(key),
        source: CodecError::Malformed {
            type_name: "u64",
            reason: format!("expected 8 bytes, found {}", value.len()),
        },
    })?;
    Ok(u64::from_be_bytes(bytes))
}
