//! orgsync-daemon: store, transport, sync engine, local API and drop folder.

pub mod api;
pub mod client;
pub mod config;
pub mod engine;
pub mod import;
pub mod json;
pub mod metrics;
pub mod policy;
pub mod store;
pub mod transport;
