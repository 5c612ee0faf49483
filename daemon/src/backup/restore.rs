//! Restoring an archive into a new instance directory.
//!
//! Everything is verified before anything is written: the archive's
//! chunks (see [`super::seal`]), the payload's layout, the manifest's
//! versions, and the copied store against the manifest's digest. Only then
//! is the directory created (0700, like `orgsync-keytool init`), the files
//! written with their recorded modes (directories 0700) and the database
//! rebuilt.
//!
//! The restored instance gets a **new instance id** (in `identity.toml`
//! and in the store, which also records the instance it was restored
//! from): versions it creates from now on can never equal versions the
//! lost instance created after the backup, and partners see a different
//! instance, not the old one resurrected. See `protocol::session` for how
//! its log numbering is reconciled with partners that are ahead of it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

use orgsync_protocol::model::InstanceId;

use super::archive::Payload;
use super::{digest, seal, BackupError, Manifest, ARCHIVE_VERSION};
use crate::store::{format, snapshot, Store, StoreOptions};

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The archive's manifest.
    pub manifest: Manifest,
    /// The instance id the restored directory got.
    pub instance: InstanceId,
    /// Files written.
    pub files: usize,
    /// Whether secrets were in the archive.
    pub with_secrets: bool,
    /// Time spent verifying and writing.
    pub elapsed: std::time::Duration,
}

/// Checks that `target` is absent or an empty directory.
pub fn check_target(target: &Path) -> Result<(), BackupError> {
    let refuse = |reason: String| BackupError::Target {
        path: target.to_path_buf(),
        reason,
    };
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(refuse("the directory is not empty".into()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(refuse(e.to_string())),
    }
}

/// Verifies `archive` completely, then recreates the instance in `target`
/// (absent or empty). On a verification error nothing is written.
pub fn restore(
    archive: &[u8],
    passphrase: Option<&[u8]>,
    target: &Path,
) -> Result<Restored, BackupError> {
    let started = Instant::now();
    check_target(target)?;
    let payload = verify(archive, passphrase)?;
    let instance = InstanceId::random();
    let mut files = payload.files;
    let identity = files
        .iter_mut()
        .find(|f| f.path == "identity.toml")
        .ok_or_else(|| BackupError::Payload("identity.toml is missing".into()))?;
    identity.data = with_instance(&identity.data, instance)?;

    let dir_err = BackupError::io("cannot create directory", target);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(target)
        .map_err(dir_err)?;
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o700))
        .map_err(BackupError::io("cannot set the mode of", target))?;
    for f in &files {
        let path = target.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(BackupError::io("cannot create directory", parent))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .open(&path)
            .map_err(BackupError::io("cannot create", &path))?;
        out.write_all(&f.data)
            .and_then(|()| out.sync_all())
            .map_err(BackupError::io("cannot write", &path))?;
        // The umask may have narrowed the mode; the recorded one is wanted.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .map_err(BackupError::io("cannot set the mode of", &path))?;
    }
    snapshot::restore_trees(target, &payload.trees, instance)?;
    // Opening runs the same checks the daemon will (format, instance).
    drop(Store::open_with(
        target,
        StoreOptions {
            instance: Some(instance),
            ..StoreOptions::default()
        },
    )?);
    Ok(Restored {
        with_secrets: payload.manifest.with_secrets,
        manifest: payload.manifest,
        instance,
        files: files.len(),
        elapsed: started.elapsed(),
    })
}

/// Opens and decodes an archive and checks the copied store against the
/// manifest, without writing anything.
pub fn verify(archive: &[u8], passphrase: Option<&[u8]>) -> Result<Payload, BackupError> {
    let plain = seal::open(archive, passphrase)?;
    let payload = Payload::decode(&plain)?;
    let m = &payload.manifest;
    if m.archive_version > ARCHIVE_VERSION {
        return Err(BackupError::UnsupportedVersion {
            found: m.archive_version,
            supported: ARCHIVE_VERSION,
        });
    }
    if m.store_format > format::CURRENT {
        return Err(BackupError::Mismatch(format!(
            "store format {} is newer than this build reads ({})",
            m.store_format,
            format::CURRENT
        )));
    }
    let objects = snapshot::objects_of(&payload.trees)?;
    let (count, d) = digest(&objects);
    if count != m.objects || d != m.digest {
        return Err(BackupError::Mismatch(format!(
            "{count} objects with digest {d}, the manifest says {} with {}",
            m.objects, m.digest
        )));
    }
    Ok(payload)
}

/// `identity.toml` with its `instance_id` replaced.
fn with_instance(text: &[u8], instance: InstanceId) -> Result<Vec<u8>, BackupError> {
    let bad = |e: String| BackupError::Payload(format!("identity.toml: {e}"));
    let text = std::str::from_utf8(text).map_err(|e| bad(e.to_string()))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    if !table.contains_key("instance_id") {
        return Err(bad("no instance_id".into()));
    }
    table.insert(
        "instance_id".into(),
        toml::Value::String(instance.to_string()),
    );
    toml::to_string(&table)
        .map(String::into_bytes)
        .map_err(|e| bad(e.to_string()))
}
