//! orgsync-daemon: store, transport, sync engine, local API and drop folder.
//!
//! Not built yet; see the daemon issue.
