//! orgsync-daemon: the store, QUIC transport and sync engine of an orgsync
//! instance (the local API, CLI and drop folder build on top of them).
//!
//! # How to use
//!
//! Run a whole instance from its directory (what `orgsyncd` does):
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use orgsync_daemon::daemon::Daemon;
//! use orgsync_daemon::store::Edit;
//! use orgsync_protocol::model::{Kind, ObjectId, Value};
//!
//! let daemon = Daemon::start(std::path::Path::new("/var/lib/orgsync")).await?;
//! let store = daemon.store().clone(); // cheap handle (Arc inside)
//!
//! // Write: versioned by the store's clock, merged, logged, durable on return,
//! // pushed to partners at once.
//! let edit = Edit::new(ObjectId::new_v7(1_700_000_000_000), Kind::Contact)
//!     .set_std("first_name", Value::Text("Ada".into()));
//! let receipt = store.write(vec![edit]).await?;
//! let id = receipt.objects[0].id;
//!
//! // Read.
//! let contact = store.get(id)?;
//! let contacts = store.list(Some(Kind::Contact), None, 100)?;
//!
//! // Follow every committed change, local or from partners (event stream).
//! let mut events = store.subscribe_events();
//! # let _ = (contact, contacts, &mut events);
//!
//! // Partners: connection state, lag, last sync; refused peers for admins.
//! for (org, status) in daemon.engine().status() {
//!     println!("{org}: connected={} {:?}", status.connected, status.session);
//! }
//! let pending = daemon.transport().trust().pending();
//! # let _ = pending;
//!
//! daemon.stop().await; // closes connections, flushes the store (bounded time)
//! # Ok(()) }
//! ```
//!
//! Modules:
//! - [`config`]: the configuration file `DIR/orgsync.toml`.
//! - [`store`]: sled store (objects, log, cursors, inbox, blob index) with
//!   group commit; blob files in `DIR/blobs/`.
//! - [`transport`]: quinn endpoint, pinned-certificate mutual TLS, framing.
//! - [`engine`]: per-partner tasks driving the protocol session.
//! - [`policy`]: what each partner gets and what happens to what it sends.
//! - [`governance`]: the sharing rules (shares, inbox, requests, access
//!   types, revocation, terms, codes, audit) behind the policy.
//! - [`daemon`]: everything above started from an instance directory.
//! - [`stop`]: stopping in bounded time (deadline, named aborts).

pub mod allocator;
pub mod api;
pub mod backup;
pub mod client;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod export;
pub mod governance;
pub mod idle;
pub mod import;
pub mod json;
pub mod localfile;
pub mod metrics;
pub mod policy;
pub mod stop;
pub mod store;
pub mod transport;
pub mod web;
