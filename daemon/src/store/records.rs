//! Values of the object and log sections (format 3).
//!
//! An object record is the seq of the object's latest local log entry
//! (u64 big-endian, 0 when it was never written here) followed by the
//! encoded [`Object`]. A log entry is only the id of the object written:
//! the sender reads the object's current state when it sends, and sends
//! it at the seq its record names, so an object written several times
//! before a partner catches up is sent once, in its latest state.

use orgsync_protocol::codec::CodecError;
use orgsync_protocol::model::{Object, ObjectId};

use super::{decode_at, encode_as, StoreError};

/// Bytes of the seq in front of an encoded object.
const SEQ_LEN: usize = 8;

/// Encodes an object record.
pub(super) fn encode_object(seq: u64, obj: &Object) -> Result<Vec<u8>, StoreError> {
    let encoded = encode_as("object", obj)?;
    let mut out = Vec::with_capacity(SEQ_LEN + encoded.len());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&encoded);
    Ok(out)
}

/// Decodes an object record into its latest local seq and the object.
pub(super) fn decode_object(key: &[u8], value: &[u8]) -> Result<(u64, Object), StoreError> {
    let (seq, rest) = split_object(key, value)?;
    Ok((seq, decode_at("objects", key, rest)?))
}

/// Splits an object record into its latest local seq and the encoded
/// object, without decoding the object.
pub(super) fn split_object<'a>(key: &[u8], value: &'a [u8]) -> Result<(u64, &'a [u8]), StoreError> {
    if value.len() < SEQ_LEN {
        return Err(corrupt(
            "objects",
            key,
            "object record",
            format!("{} bytes, shorter than its seq", value.len()),
        ));
    }
    let (seq, rest) = value.split_at(SEQ_LEN);
    let seq = super::keys::u64_value("objects", key, seq)?;
    Ok((seq, rest))
}

/// Where the encoded object starts in an object record.
pub(super) const OBJECT_OFFSET: usize = SEQ_LEN;

/// Decodes a log entry: the id of the object written at that seq.
pub(super) fn decode_log_ref(key: &[u8], value: &[u8]) -> Result<ObjectId, StoreError> {
    let id: [u8; 16] = value.try_into().map_err(|_| {
        corrupt(
            "log",
            key,
            "log reference",
            format!("{} bytes instead of a 16-byte object id", value.len()),
        )
    })?;
    Ok(ObjectId(id))
}

/// A damaged-entry error for `key` of `tree`.
pub(super) fn corrupt(
    tree: &'static str,
    key: &[u8],
    type_name: &'static str,
    reason: String,
) -> StoreError {
    StoreError::Corrupt {
        tree,
        key: data_encoding::HEXLOWER.encode(key),
        source: CodecError::Malformed { type_name, reason },
    }
}
