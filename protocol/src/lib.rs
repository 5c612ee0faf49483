//! # orgsync-protocol
//!
//! The sans-IO core of orgsync: everything two instances must agree on, with
//! no sockets, no async runtime, no clock reads and no disk.
//!
//! - [`model`]: identifiers (OrgId and its account-number form, InstanceId,
//!   ObjectId), kinds, typed field values, custom-field schemas, objects and
//!   changes.
//! - [`clock`]: the hybrid logical clock that versions every field.
//! - [`merge`]: per-field last-writer-wins merge with tombstones.
//! - [`codec`] and [`wire`]: bounded, versioned, length-prefixed frames and the
//!   messages of the sync protocol.
//! - [`identity`] and [`bundle`]: organisation keys, pair-key derivation,
//!   fingerprints and the one-line public bundle.
//! - [`envelope`]: XChaCha20-Poly1305 sealing of change batches and blob
//!   chunks with the header bound as associated data.
//! - [`share`]: sharing governance rules (share request statuses, access
//!   types, selections) and the control messages daemons exchange about shares.
//! - [`authority`]: who may change, withdraw, erase and re-share what (owner,
//!   provenance, mirrors), as pure functions.
//! - [`session`]: the state machine of one partner connection, fed messages,
//!   local events and time, returning messages to send and effects to perform.

pub mod authority;
pub mod bundle;
pub mod clock;
pub mod codec;
pub mod envelope;
pub mod identity;
pub mod merge;
pub mod model;
pub mod rotation;
pub mod session;
pub mod share;
pub mod wire;
