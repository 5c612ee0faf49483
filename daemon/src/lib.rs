//! orgsync-daemon: store, transport, sync engine, local API and drop folder.

pub mod config;
pub mod engine;
pub mod policy;
pub mod store;
pub mod transport;
