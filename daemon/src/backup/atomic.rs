//! Writing a file that never exists half-written: it is created nameless
//! with `O_TMPFILE` in the target's directory, written and fsynced, and
//! only then given its name with `linkat`. A crash or `kill -9` at any
//! point before the link leaves nothing behind (the kernel frees an
//! unlinked inode when its last descriptor closes), so there is no
//! temporary name to clean up or to mistake for an archive.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::BackupError;

/// A nameless file in the directory of `dest`, linked to `dest` by
/// [`NamelessFile::commit`]. Dropping it without committing discards it.
pub struct NamelessFile {
    file: File,
    dest: PathBuf,
}

impl NamelessFile {
    /// Creates the nameless file (mode `mode`) next to `dest`. Fails when
    /// `dest` exists already (it is never replaced) or the file system does
    /// not support `O_TMPFILE`.
    pub fn create(dest: &Path, mode: u32) -> Result<NamelessFile, BackupError> {
        if dest.symlink_metadata().is_ok() {
            return Err(BackupError::Target {
                path: dest.to_path_buf(),
                reason: "the file exists; choose another name or remove it".into(),
            });
        }
        let dir = dir_of(dest);
        let c_dir = c_path(&dir)?;
        // SAFETY: a valid NUL-terminated path; the returned descriptor is
        // owned by the File below and closed with it.
        let fd = unsafe {
            libc::open(
                c_dir.as_ptr(),
                libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(BackupError::Io {
                what: "cannot create a nameless (O_TMPFILE) file in",
                path: dir,
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: fd is a fresh descriptor we own.
        let file = unsafe { File::from_raw_fd(fd) };
        Ok(NamelessFile {
            file,
            dest: dest.to_path_buf(),
        })
    }

    /// The open file, for writing.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Flushes the content to disk, links it at its name, and flushes the
    /// directory so the name survives a crash.
    pub fn commit(mut self) -> Result<(), BackupError> {
        let dest = self.dest.clone();
        self.file
            .flush()
            .and_then(|()| self.file.sync_all())
            .map_err(BackupError::io("cannot sync", &dest))?;
        let proc_path = format!("/proc/self/fd/{}\0", self.file.as_raw_fd());
        let c_dest = c_path(&dest)?;
        // SAFETY: both paths are NUL-terminated and live for the call.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                proc_path.as_ptr().cast(),
                libc::AT_FDCWD,
                c_dest.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc != 0 {
            return Err(BackupError::Io {
                what: "cannot link the finished archive at",
                path: dest,
                source: std::io::Error::last_os_error(),
            });
        }
        let dir = dir_of(&dest);
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(BackupError::io("cannot sync directory", &dir))
    }
}

/// The directory `dest` goes in (`.` for a bare file name).
fn dir_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn c_path(path: &Path) -> Result<std::ffi::CString, BackupError> {
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| BackupError::Target {
        path: path.to_path_buf(),
        reason: "path contains a NUL byte".into(),
    })
}
