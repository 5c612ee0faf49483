//! The errors of the keytool library. Every variant names the file or the
//! value concerned and, where there is one, the fix.

use std::path::PathBuf;

/// Why a keytool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeytoolError {
    /// A secret file or directory can be read (or changed) by other users.
    #[error(
        "{path} has mode {mode:04o}, which lets other users read or change it; \
         refusing to use it. Fix it with `chmod {fix:o} {path}`",
        path = .path.display()
    )]
    InsecurePermissions {
        /// The offending file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode to set (600 for files, 700 for directories).
        fix: u32,
    },
    /// `init` was asked to create an identity where one already exists.
    #[error(
        "{path} already holds an orgsync identity; refusing to overwrite it \
         (use another --dir, or move the directory away if you really mean to start over)",
        path = .path.display()
    )]
    AlreadyInitialised {
        /// The instance directory.
        path: PathBuf,
    },
    /// The instance directory has no identity yet.
    #[error(
        "{path} is not an initialised orgsync instance directory (no identity.toml); \
         run `orgsync-keytool --dir {path} init --org NAME` first",
        path = .path.display()
    )]
    NotInitialised {
        /// The instance directory.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A state file exists but its content is not what it should be.
    #[error("{}: {detail}", .path.display())]
    Parse {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong, with the key or line when known.
        detail: String,
    },
    /// A key epoch was asked for that this instance no longer (or never) kept.
    #[error("key epoch {epoch} is not kept by this instance (kept: {kept})")]
    UnknownEpoch {
        /// The epoch asked for.
        epoch: u32,
        /// The epochs kept, for the message.
        kept: String,
    },
    /// Pair-key derivation failed (self-pairing, weak partner key).
    #[error("pair key with {partner}: {source}")]
    PairKey {
        /// The partner's name.
        partner: String,
        /// Why.
        #[source]
        source: orgsync_protocol::identity::IdentityError,
    },
    /// Creating the TLS identity failed.
    #[error("creating the instance TLS certificate: {0}")]
    Certificate(String),
    /// A partner lookup (revoke) matched nothing.
    #[error("no partner matches {query:?}; see `orgsync-keytool list`")]
    NoSuchPartner {
        /// What was asked for.
        query: String,
    },
    /// A partner lookup by name matched several partners.
    #[error("{query:?} matches several partners; use the account number instead:\n{matches}")]
    AmbiguousPartner {
        /// What was asked for.
        query: String,
        /// The matches, one per line (name and account number).
        matches: String,
    },
    /// A bundle names an account number we already know, with another key.
    #[error(
        "REFUSED: partner account {org_id} ({name}) is already known with another key \
         (known key {known_key}, epoch {known_epoch}; bundle key {new_key}, epoch {new_epoch}). \
         Someone may be impersonating this partner. Confirm with them out of band; if they \
         really made a new identity under the same account number, something is wrong — \
         do not import it"
    )]
    KeyConflict {
        /// The account number.
        org_id: String,
        /// The partner's name as we know it.
        name: String,
        /// The known key (hex).
        known_key: String,
        /// The known epoch.
        known_epoch: u32,
        /// The bundle's key (hex).
        new_key: String,
        /// The bundle's epoch.
        new_epoch: u32,
    },
    /// A bundle names a known account number with a different certificate at
    /// the same key epoch.
    #[error(
        "REFUSED: partner account {org_id} ({name}) is known with certificate fingerprint \
         {known}, the bundle says {new}. Confirm with them out of band, then `orgsync-keytool \
         revoke` the old entry and import again"
    )]
    CertificateConflict {
        /// The account number.
        org_id: String,
        /// The partner's name as we know it.
        name: String,
        /// The fingerprint on file.
        known: String,
        /// The fingerprint in the bundle.
        new: String,
    },
    /// A bundle is our own.
    #[error("this bundle is our own organisation's (account {org_id}); import the partner's bundle instead")]
    OwnBundle {
        /// Our account number.
        org_id: String,
    },
    /// A revoked partner tried to come back through import or pairing.
    #[error(
        "partner account {org_id} ({name}) was revoked on {revoked_at}; \
         a revoked partner is not re-added. Remove its entry from partners.toml by hand \
         if you really mean to pair again"
    )]
    Revoked {
        /// The account number.
        org_id: String,
        /// Its name.
        name: String,
        /// When it was revoked.
        revoked_at: String,
    },
    /// A known partner's bundle has another key at a newer epoch but no
    /// rotation proof signed by the key on file.
    #[error(
        "REFUSED: partner account {org_id} ({name}) changed its key (epoch {known_epoch} on file, \
         bundle epoch {new_epoch}) without proof from the old key: the bundle carries no rotation \
         signed by the key on file. Someone may be impersonating this partner. Verify with the \
         partner by phone; if they really made a new key without a proof, run `orgsync-keytool \
         revoke {org_id}` and pair again (remove the revoked entry from partners.toml first)"
    )]
    RotationUnproven {
        /// The account number.
        org_id: String,
        /// The partner's name as we know it.
        name: String,
        /// The epoch on file.
        known_epoch: u32,
        /// The bundle's epoch.
        new_epoch: u32,
    },
    /// A known partner's bundle has a rotation proof that does not hold.
    // The reason is shown in the message and not exposed as the error's
    // source: with both, a printed cause chain said it twice.
    #[error(
        "REFUSED: the bundle for partner account {org_id} ({name}) has an invalid key rotation \
         proof: {reason}. Someone may be impersonating this partner. Verify with the partner by \
         phone; if they really rotated, run `orgsync-keytool revoke {org_id}` and pair again \
         (remove the revoked entry from partners.toml first)"
    )]
    RotationInvalid {
        /// The account number.
        org_id: String,
        /// The partner's name as we know it.
        name: String,
        /// Why the proof fails (boxed: keeps the error small).
        reason: Box<orgsync_protocol::rotation::RotationError>,
    },
    /// A bundle for an account number we do not know, at epoch > 0, whose
    /// rotation proof does not lead back to the account's genesis key.
    #[error(
        "REFUSED: the bundle claims account {org_id} ({name}) at a later key epoch, but its \
         rotation proof does not hold: {reason}. The account number is not proven to belong to \
         the bundle's key; do not import it, and check the account number with the partner by \
         phone"
    )]
    AccountUnproven {
        /// The claimed account number.
        org_id: String,
        /// The bundle's organisation name.
        name: String,
        /// Why the proof fails (boxed: keeps the error small).
        reason: Box<orgsync_protocol::rotation::RotationError>,
    },
    /// An unknown account number at epoch > 0 without a proof back to its
    /// genesis key.
    #[error(
        "REFUSED: the bundle claims account {org_id} at key epoch {epoch} but carries no rotation \
         proof back to the genesis key the account number is the hash of, so the account number \
         cannot be checked (forged, or made by an orgsync without rotation proofs). Ask the \
         partner for a bundle exported by a current orgsync-keytool"
    )]
    OrgIdUnproven {
        /// The claimed account number.
        org_id: String,
        /// The bundle's epoch.
        epoch: u32,
    },
    /// Pairing (join/invite, accepting a pending peer) met a known partner
    /// with another key or certificate: pairing never replaces those.
    #[error(
        "REFUSED: partner account {org_id} ({name}) is already paired with another key or \
         certificate; pairing never replaces a known partner's key or certificate. If the partner \
         rotated its key, import its new bundle with `orgsync-keytool import` (it must carry the \
         proof signed by the old key); otherwise verify with the partner by phone"
    )]
    KeyChangeByPairing {
        /// The account number.
        org_id: String,
        /// The partner's name as we know it.
        name: String,
    },
    /// A bundle's org id does not match its genesis key (epoch 0).
    #[error(
        "the bundle's account number {claimed} does not belong to its key (the key gives {derived}); \
         the bundle was forged or corrupted"
    )]
    OrgIdMismatch {
        /// What the bundle claims.
        claimed: String,
        /// What the key derives.
        derived: String,
    },
    /// An address is not HOST:PORT.
    #[error("{address:?} is not an address of the form HOST:PORT (e.g. sync.example.org:7700)")]
    BadAddress {
        /// What was given.
        address: String,
    },
    /// An organisation name is unusable.
    #[error("organisation name {name:?} is not usable: {why}")]
    BadOrgName {
        /// What was given.
        name: String,
        /// Why.
        why: &'static str,
    },
}

impl KeytoolError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KeytoolError::Io {
            path: path.into(),
            source,
        }
    }

    /// A parse error about `path`.
    pub fn parse(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        KeytoolError::Parse {
            path: path.into(),
            detail: detail.into(),
        }
    }
}
