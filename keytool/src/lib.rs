//! # orgsync-keytool
//!
//! Organisation identities, public bundles and code-based pairing. The
//! binary `orgsync-keytool` is the sysadmin's tool; this library is what the
//! daemon (`orgsyncd`) uses to read an instance directory.
//!
//! ## Instance directory layout (`--dir DIR`, default `$ORGSYNC_DIR`)
//!
//! ```text
//! DIR/                        0700  (must not be writable by group/others)
//!   orgsync.toml              0644  daemon config; written once by `init`
//!   identity.toml             0644  public identity (see below)
//!   tls.crt                   0644  self-signed instance certificate (PEM, SAN "orgsync")
//!   partners.toml             0600  [[partner]] entries (see below), written atomically
//!   secrets/                  0700
//!     org-<epoch>.key         0600  x25519 secret: 64 lowercase hex digits + "\n", one per kept epoch
//!     tls.key                 0600  instance TLS key, PKCS#8 PEM (ECDSA P-256)
//! ```
//!
//! `orgsync.toml` as written by `init` ([`instance::config_template`]):
//!
//! ```toml
//! # orgsync instance configuration. See `orgsyncd --help`.
//! listen = "127.0.0.1:7700"
//!
//! [store]
//! # sled page cache, in MiB.
//! cache_capacity_mb = 64
//! ```
//!
//! keytool only reads `listen` from it ([`InstanceDir::listen_address`]).
//!
//! `identity.toml`:
//!
//! ```toml
//! org_name = "Acme Recruiting"
//! org_id = "ABCDEFG-..."            # account number (OrgId Display)
//! instance_id = "0123456789abcdef"  # InstanceId Display (16 hex digits)
//! epoch = 0                         # current key epoch
//! genesis_public_key = "<64 hex>"   # epoch-0 key; org_id = genesis_public_key.org_id()
//! cert_fingerprint = "3F2A-9C01-..." # Fingerprint Display of tls.crt
//! created_at = "2026-01-01T12:00:00Z"
//! rotated_at = "..."                # only after a rotation
//!
//! [public_keys]                     # epoch -> public key (hex) for every kept epoch
//! 0 = "<64 hex>"
//!
//! [[rotation]]                      # one per rotation, written by `rotate` (public)
//! epoch = 1                         # the new epoch
//! public_key = "<64 hex>"           # its key
//! cert_fingerprint = "3F2A-..."     # the certificate at that epoch
//! signature = "<128 hex>"           # XEdDSA by the key of epoch - 1 (see orgsync_protocol::rotation)
//! ```
//!
//! `export` puts the last 16 links into the bundle as its rotation proof; a
//! partner's `import` accepts the new key only if the links lead from the
//! key it has on file (or, for a new partner, from the genesis key the
//! account number is the hash of). Code pairing and the daemon's "accept
//! pending peer" never replace a known partner's key or certificate.
//!
//! `partners.toml` (see [`Partner`]):
//!
//! ```toml
//! [[partner]]
//! name = "Globex"
//! org_id = "QRSTUVW-..."            # account number
//! public_key = "<64 hex>"           # its current key
//! epoch = 0                         # epoch of public_key
//! cert_fingerprint = "9C01-..."     # pinned instance certificate
//! addresses = ["globex.example:7700"]
//! state = "paired"                  # or "revoked"
//! added_at = "2026-01-01T12:00:00Z"
//! updated_at = "2026-01-01T12:00:00Z"
//! revoked_at = "..."                # only when revoked
//! ```
//!
//! ## What the daemon calls
//!
//! ```no_run
//! use orgsync_keytool::{InstanceDir, PartnerState};
//! # fn main() -> Result<(), orgsync_keytool::KeytoolError> {
//! let dir = InstanceDir::new("/var/lib/orgsync");
//! // Checks permissions (refuses secrets readable by others, naming the file
//! // and `chmod 600 <file>`), keys against identity.toml, the certificate
//! // against its fingerprint.
//! let me = dir.load_identity()?;
//! let cert = me.tls_certificate();   // rustls CertificateDer
//! let key = me.tls_private_key_ref(); // rustls PrivateKeyDer (PKCS#8), borrowed from a wiped-on-drop buffer
//! for p in dir.load_partners()? {    // reload when partners.toml changes
//!     if p.state != PartnerState::Paired { continue; } // refuse revoked certs/keys
//!     let epoch = me.pair_epoch(&p); // max(our epoch, partner's)
//!     let keys = me.pair_keys(&p, epoch)?; // orgsync_protocol::identity::PairKeys
//!     # let _ = (keys, &cert, &key);
//! }
//! # Ok(()) }
//! ```
//!
//! Pair epochs: the pair key of pair epoch `e` uses our newest kept key with
//! epoch ≤ `e` and the partner's key on file. While both sides hold each
//! other's current key they agree on `e = max(epochs)`.
//!
//! ## Pairing protocol
//!
//! See [`pairing`]: QUIC with ALPN `orgsync-pair/1`, SPAKE2 bound to both TLS
//! certificates, key confirmation both ways, bundles exchanged sealed under
//! the PAKE key.

#![warn(missing_docs)]

pub mod cli;
pub mod error;
pub mod fsutil;
pub mod instance;
pub mod pairing;
pub mod partners;
pub mod timefmt;
pub mod words;

/// The one-line public bundle format (from `orgsync-protocol`).
pub use orgsync_protocol::bundle;

pub use error::KeytoolError;
pub use instance::{Identity, InstanceDir};
pub use partners::{Partner, PartnerState};
