//! Gathering what a backup holds from a running daemon.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::archive::{FileEntry, Payload};
use super::{digest, BackupError, Manifest, ARCHIVE_VERSION};
use crate::governance::Governance;
use crate::store::{format, hash_hex, Store};

/// The secrets directory, included only when asked.
const SECRETS_DIR: &str = "secrets";

/// Takes a consistent snapshot of the database (store writer lock and, when
/// governance runs, its operation lock held while copying), then gathers
/// the complete blobs the snapshot references and the instance's top-level
/// files (and `secrets/*` when `with_secrets`).
pub async fn collect(
    store: &Store,
    governance: Option<&Governance>,
    org: &str,
    with_secrets: bool,
) -> Result<Payload, BackupError> {
    let snap = {
        // Governance writes several trees per operation under this lock;
        // holding it keeps them whole in the copy.
        let _op = match governance {
            Some(g) => Some(g.inner.op.lock().await),
            None => None,
        };
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.snapshot())
            .await
            .map_err(|e| BackupError::Payload(format!("snapshot task failed: {e}")))??
    };
    let (objects, d) = digest(&snap.objects()?);
    let dir = store.instance_dir().to_path_buf();
    let blobs = snap.complete_blobs()?;
    let blob_files = store.blob_files().clone();
    let files = tokio::task::spawn_blocking(move || {
        let mut files = top_level_files(&dir, "")?;
        if with_secrets {
            files.extend(top_level_files(&dir.join(SECRETS_DIR), SECRETS_DIR)?);
        }
        for hash in &blobs {
            let path = blob_files.path_of(hash);
            let data = std::fs::read(&path).map_err(BackupError::io("cannot read blob", &path))?;
            files.push(FileEntry {
                path: format!("blobs/{}", hash_hex(hash)),
                mode: 0o600,
                data,
            });
        }
        Ok::<_, BackupError>(files)
    })
    .await
    .map_err(|e| BackupError::Payload(format!("file task failed: {e}")))??;
    let manifest = Manifest {
        archive_version: ARCHIVE_VERSION,
        store_format: format::CURRENT,
        instance: snap.instance.to_string(),
        org: org.to_string(),
        log_head: snap.log_head,
        created_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        objects,
        digest: d,
        with_secrets,
        write_pause_us: snap.pause.as_micros() as u64,
    };
    Ok(Payload {
        manifest,
        files,
        trees: snap.trees,
    })
}

/// Regular files directly in `dir` (not dot-files: temporaries), under
/// the archive prefix `prefix`.
fn top_level_files(dir: &Path, prefix: &str) -> Result<Vec<FileEntry>, BackupError> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(BackupError::io("cannot list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(BackupError::io("cannot list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = entry
            .metadata()
            .map_err(BackupError::io("cannot stat", entry.path()))?;
        if !meta.is_file() || name.starts_with('.') {
            continue;
        }
        let data =
            std::fs::read(entry.path()).map_err(BackupError::io("cannot read", entry.path()))?;
        out.push(FileEntry {
            path: if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            },
            mode: meta.permissions().mode() & 0o777,
            data,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
