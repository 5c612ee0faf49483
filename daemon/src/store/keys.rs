//! Key layouts of the store's trees.
//!
//! - `objects`: ObjectId (16 bytes) → encoded `Object`
//! - `log`: seq (u64 big-endian, so keys sort by seq) → encoded `Change`
//! - `cursors`: OrgId (32) ++ tag (1) → u64 big-endian
//! - `inbox`: OrgId (32) ++ partner seq (u64 BE) → encoded `Change`
//! - `blobs`: BLAKE3 hash (32) → encoded `BlobEntry`
//! - `meta`: name → value (see the `META_*` constants)

use orgsync_protocol::codec::CodecError;
use orgsync_protocol::model::OrgId;

use super::StoreError;

/// Last hybrid-logical-clock timestamp issued or observed (u64 BE).
pub(super) const META_HLC: &[u8] = b"hlc";
/// The instance id this store belongs to (u64 BE).
pub(super) const META_INSTANCE: &[u8] = b"instance";

/// Cursor tag: applied from the partner's log.
pub(super) const CURSOR_APPLIED: u8 = b'a';
/// Cursor tag: acknowledged by the partner in our log.
pub(super) const CURSOR_ACKED: u8 = b'k';

pub(super) fn cursor(partner: &OrgId, tag: u8) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[..32].copy_from_slice(&partner.0);
    k[32] = tag;
    k
}

pub(super) fn inbox(partner: &OrgId, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&partner.0);
    k[32..].copy_from_slice(&seq.to_be_bytes());
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
