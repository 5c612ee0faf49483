//! orgsync-daemon: store, transport, sync engine, local API and drop folder.

pub mod api;
pub mod json;
pub mod metrics;
