//! File-system helpers: atomic writes, secret files and permission checks.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::KeytoolError;

/// Mode of secret files and of `partners.toml`.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Mode of the instance directory and of `secrets/`.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of public files (identity.toml, tls.crt, orgsync.toml).
pub const PUBLIC_FILE_MODE: u32 = 0o644;

/// Largest state file we read (a partners.toml with thousands of partners
/// fits easily); protects against reading a huge file by mistake.
pub const MAX_STATE_FILE: u64 = 16 * 1024 * 1024;

/// Writes `data` to `path` atomically: a temporary file in the same
/// directory created with `mode`, written, fsynced, renamed over `path`, and
/// the directory fsynced. Readers see the old or the new content, never a
/// mix.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), KeytoolError> {
    // A bare file name has the empty path as parent: that is the current
    // directory (opening "" for the directory fsync would fail).
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let mut nonce = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let tmp = dir.join(format!(
        ".{name}.tmp-{}",
        data_encoding::HEXLOWER.encode(&nonce)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| KeytoolError::io(&tmp, e))?;
        // The umask may have cleared bits we want (0644 under umask 077 is
        // fine to keep stricter, but never looser than asked).
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| KeytoolError::io(&tmp, e))?;
        f.write_all(data).map_err(|e| KeytoolError::io(&tmp, e))?;
        f.sync_all().map_err(|e| KeytoolError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| KeytoolError::io(path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), KeytoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KeytoolError::io(dir, e))
}

/// Creates `path` as a private (0700) directory, or tightens an existing
/// empty-or-ours directory to 0700.
pub fn create_private_dir(path: &Path) -> Result<(), KeytoolError> {
    match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(e) => return Err(KeytoolError::io(path, e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
        .map_err(|e| KeytoolError::io(path, e))
}

fn mode_of(path: &Path) -> Result<(fs::Metadata, u32), KeytoolError> {
    let meta = fs::symlink_metadata(path).map_err(|e| KeytoolError::io(path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    Ok((meta, mode))
}

/// Refuses a secret file that is not a regular file or that group/others
/// can access in any way (as ssh does for private keys).
pub fn check_secret_file(path: &Path) -> Result<(), KeytoolError> {
    let (meta, mode) = mode_of(path)?;
    if !meta.file_type().is_file() {
        return Err(KeytoolError::parse(
            path,
            "is not a regular file (symbolic links are not followed for secrets)",
        ));
    }
    if mode & 0o077 != 0 {
        return Err(KeytoolError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
            fix: SECRET_FILE_MODE,
        });
    }
    Ok(())
}

/// Refuses a private directory (secrets/) that group/others can access.
pub fn check_private_dir(path: &Path) -> Result<(), KeytoolError> {
    let (meta, mode) = mode_of(path)?;
    if !meta.file_type().is_dir() {
        return Err(KeytoolError::parse(path, "is not a directory"));
    }
    if mode & 0o077 != 0 {
        return Err(KeytoolError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
            fix: PRIVATE_DIR_MODE,
        });
    }
    Ok(())
}

/// Refuses a directory or file that group/others can change (the instance
/// directory, partners.toml): whoever can write there can swap keys or add
/// partners.
pub fn check_not_writable_by_others(path: &Path, fix: u32) -> Result<(), KeytoolError> {
    let (_, mode) = mode_of(path)?;
    if mode & 0o022 != 0 {
        return Err(KeytoolError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
            fix,
        });
    }
    Ok(())
}

/// Reads a whole (small) file as text.
pub fn read_text(path: &Path) -> Result<String, KeytoolError> {
    let f = File::open(path).map_err(|e| KeytoolError::io(path, e))?;
    let mut s = String::new();
    f.take(MAX_STATE_FILE + 1)
        .read_to_string(&mut s)
        .map_err(|e| KeytoolError::io(path, e))?;
    if s.len() as u64 > MAX_STATE_FILE {
        return Err(KeytoolError::parse(
            path,
            format!("is larger than {MAX_STATE_FILE} bytes"),
        ));
    }
    Ok(s)
}

/// Reads a secret file (after checking its permissions) into zeroizing
/// memory.
pub fn read_secret(path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>, KeytoolError> {
    check_secret_file(path)?;
    let f = File::open(path).map_err(|e| KeytoolError::io(path, e))?;
    let mut buf = Zeroizing::new(Vec::with_capacity(max as usize + 1));
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| KeytoolError::io(path, e))?;
    if buf.len() as u64 > max {
        return Err(KeytoolError::parse(path, "is too large for a key file"));
    }
    Ok(buf)
}
