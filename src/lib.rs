//! # orgsync
//!
//! Facade crate of orgsync, a peer-to-peer sync daemon for organisation
//! records. It re-exports the crates of the workspace so that end-to-end
//! tests and examples can use one name.

pub use orgsync_daemon as daemon;
pub use orgsync_keytool as keytool;
pub use orgsync_protocol as protocol;
