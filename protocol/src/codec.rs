//! The one place where bytes are encoded and decoded: bincode 2 (serde mode)
//! with bounds, and length-prefixed, versioned frames.
//!
//! STUB: signatures agreed; bodies to be written.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::Message;

/// Largest frame accepted, including its header.
pub const MAX_FRAME_LEN: usize = 8 << 20;
/// Largest blob chunk payload.
pub const MAX_BLOB_CHUNK: usize = 1 << 20;
/// Version byte of the frame format.
pub const FRAME_VERSION: u8 = 1;

/// Why bytes could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Placeholder until implemented.
    #[error("not implemented")]
    Todo,
}

/// Encodes any value with the project's binary encoding.
pub fn encode<T: Serialize>(_value: &T) -> Result<Vec<u8>, CodecError> {
    todo!()
}

/// Decodes a value encoded by [`encode`], refusing trailing bytes and
/// allocating at most `bytes.len()`-bounded memory.
pub fn decode<T: DeserializeOwned>(_bytes: &[u8]) -> Result<T, CodecError> {
    todo!()
}

/// Encodes a message as one frame.
pub fn encode_frame(_msg: &Message) -> Result<Vec<u8>, CodecError> {
    todo!()
}

/// Decodes one frame from the front of `buf`: `Ok(None)` when more bytes
/// are needed, `Ok(Some((message, consumed)))` otherwise.
pub fn decode_frame(_buf: &[u8]) -> Result<Option<(Message, usize)>, CodecError> {
    todo!()
}
