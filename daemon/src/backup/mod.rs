//! Backups of a running instance and their restore.
//!
//! A backup archive holds a consistent snapshot of the sled database (the
//! store and the governance trees, copied under the store's writer lock
//! and the governance operation lock, see [`crate::store::snapshot`]), the
//! blob files its index says are present, the instance's top-level files
//! (`orgsync.toml`, `partners.toml`, `identity.toml`, `tls.crt`,
//! `web-admins.json`, …) and, only when asked, `secrets/*`.
//!
//! Layers, each in its own module:
//! - [`archive`]: the plaintext payload (a manifest, files, trees) and its
//!   strict decoder;
//! - [`seal`]: the file format around it: a checksummed header, then the
//!   payload in chunks, each authenticated (chacha20poly1305 with a key
//!   derived from a passphrase by argon2id, the header bound as associated
//!   data) or, for an archive without secrets, checksummed with BLAKE3.
//!   Truncation, a flipped byte and a wrong passphrase are told apart;
//! - [`atomic`]: writing the archive file so that it never exists
//!   half-written (`O_TMPFILE`, linked into place once complete);
//! - [`restore`]: verifying everything, then recreating an instance
//!   directory with a new instance id (see `protocol::session` for how a
//!   restored instance rejoins its partners).

pub mod archive;
pub mod atomic;
pub mod cli;
pub mod collect;
pub mod restore;
pub mod seal;

use std::path::PathBuf;

use orgsync_protocol::model::Object;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The archive format this build writes and reads.
pub const ARCHIVE_VERSION: u32 = 1;

/// Why a backup could not be made, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file does not start like an orgsync backup.
    #[error("not an orgsync backup archive (bad magic)")]
    NotAnArchive,
    /// The archive was written by a newer format.
    #[error("archive format {found} is newer than this build reads ({supported})")]
    UnsupportedVersion {
        /// The archive's format.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The header's checksum does not match: the header is damaged.
    #[error("archive header is corrupt: {0}")]
    HeaderCorrupt(String),
    /// The archive ends before its last chunk.
    #[error("archive is truncated: it ends at byte {at} inside chunk {chunk} (incomplete copy?)")]
    Truncated {
        /// Offset where the data ran out.
        at: u64,
        /// The chunk being read.
        chunk: u64,
    },
    /// A chunk fails its authentication or checksum.
    #[error("archive is corrupt: chunk {chunk} (at byte {at}) fails its {check} check")]
    Corrupt {
        /// The chunk.
        chunk: u64,
        /// Its offset.
        at: u64,
        /// "authentication" or "checksum".
        check: &'static str,
    },
    /// Bytes follow the last chunk.
    #[error("archive is corrupt: {0} unexpected byte(s) after the last chunk")]
    TrailingBytes(u64),
    /// The passphrase does not open the archive.
    #[error("wrong passphrase: it does not open this archive")]
    WrongPassphrase,
    /// The archive is encrypted and no passphrase was given.
    #[error("the archive is encrypted: give its passphrase (--passphrase-file, ORGSYNC_BACKUP_PASSPHRASE or the prompt)")]
    PassphraseNeeded,
    /// An empty passphrase was given.
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    /// The decrypted payload is malformed.
    #[error("archive content is malformed: {0}")]
    Payload(String),
    /// The store in the archive does not match its manifest.
    #[error("archive store does not match its manifest: {0}")]
    Mismatch(String),
    /// The restore target is not usable.
    #[error("cannot restore into {path}: {reason}")]
    Target {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The daemon could not be asked for, or refused, the snapshot.
    #[error("no snapshot from the daemon: {0}")]
    Daemon(String),
    /// The key derivation failed.
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl BackupError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> BackupError {
        let path = path.into();
        move |source| BackupError::Io { what, path, source }
    }
}

/// What an archive says about itself (`manifest.json`, the first entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`ARCHIVE_VERSION`] of the writer.
    pub archive_version: u32,
    /// The store format of the copied database (`store::format::CURRENT`).
    pub store_format: u32,
    /// The instance backed up.
    pub instance: String,
    /// The organisation.
    pub org: String,
    /// The local log head at the snapshot point.
    pub log_head: u64,
    /// When the snapshot was taken (Unix ms).
    pub created_ms: u64,
    /// Live objects at the snapshot point.
    pub objects: usize,
    /// [`digest`] of those objects (the digest the tests and rigs compute
    /// from `orgsync list --json`).
    pub digest: String,
    /// Whether `secrets/` is included.
    pub with_secrets: bool,
    /// How long writes were held back while the database was copied (µs).
    pub write_pause_us: u64,
}

/// Count and BLAKE3 digest of objects, independent of order: each object's
/// API JSON with keys sorted, one per line, lines sorted. Equal to the
/// digest the end-to-end tests compute from `orgsync list --json`
/// ([`digest_json`]).
pub fn digest(objects: &[Object]) -> (usize, String) {
    let json: Vec<Json> = objects.iter().map(crate::json::object_to_json).collect();
    digest_json(&json)
}

/// [`digest`] of objects already in their API JSON form.
pub fn digest_json(objects: &[Json]) -> (usize, String) {
    let mut lines: Vec<String> = objects.iter().map(canonical).collect();
    lines.sort();
    let mut h = blake3::Hasher::new();
    for l in &lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    (lines.len(), h.finalize().to_hex().to_string())
}

/// A JSON value with object keys sorted, as compact text.
pub fn canonical(v: &Json) -> String {
    fn sorted(v: &Json) -> Json {
        match v {
            Json::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Json::Object(out)
            }
            Json::Array(a) => Json::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // A Map with preserve_order keeps insertion (sorted) order; without it,
    // it is a BTreeMap: sorted either way.
    sorted(v).to_string()
}

#[cfg(test)]
mod tests;
