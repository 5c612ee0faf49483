//! Opening local files named by someone else (a drop-folder entry, the
//! path of `attach-resume`) without being tricked into reading something
//! else, and creating files only the daemon's user can read.
//!
//! [`open_regular_owned`] refuses a symbolic link (`O_NOFOLLOW` on the last
//! path component), anything that is not a regular file (directory, FIFO,
//! socket, device) and a file owned by another user. The checks are made on
//! the **opened handle** (`fstat`), never on the path, so swapping the path
//! between a check and the open cannot slip another file in. The open uses
//! `O_NONBLOCK` so that a FIFO is refused instead of blocking until a
//! writer shows up, and an `lstat` first spares opening devices and FIFOs
//! at all (that pre-check is only a shortcut; the handle check decides).
//!
//! Not covered: symbolic links in the *directories* of the path (they are
//! followed; the drop folder is the daemon's own directory, and the
//! `attach-resume` path is chosen by the local admin).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a local file was refused.
#[derive(Debug, thiserror::Error)]
pub enum LocalFileError {
    /// The path names a symbolic link; links are never followed.
    #[error("{path} is a symbolic link: refused (links are not followed; copy the file itself)")]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// Not a regular file.
    #[error("{path} is {what}, not a regular file: refused")]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// "a directory", "a FIFO", ...
        what: &'static str,
    },
    /// Owned by another user than the one running orgsync (the daemon's).
    #[error(
        "{path} is owned by uid {owner}, not by the user running orgsync (uid {daemon}): refused"
    )]
    NotOwned {
        /// The path.
        path: PathBuf,
        /// The file's owner.
        owner: u32,
        /// The daemon's effective uid.
        daemon: u32,
    },
    /// Opening or inspecting it failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn kind_of(t: std::fs::FileType) -> Option<&'static str> {
    if t.is_file() {
        None
    } else if t.is_symlink() {
        Some("a symbolic link")
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_block_device() || t.is_char_device() {
        Some("a device")
    } else {
        Some("not a file")
    }
}

/// The daemon's effective user id.
pub fn daemon_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Opens `path` for reading if, and only if, it is a regular file owned by
/// the daemon's effective user and not a symbolic link. Guarantees: the
/// returned handle is that file (the checks were made on the handle);
/// nothing behind a link is opened; a FIFO is never waited on.
pub fn open_regular_owned(path: &Path) -> Result<File, LocalFileError> {
    let io_err = |source| LocalFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Shortcut only (the handle is checked below): do not even open a
    // link, FIFO or device.
    let pre = std::fs::symlink_metadata(path).map_err(io_err)?;
    if pre.file_type().is_symlink() {
        return Err(LocalFileError::Symlink {
            path: path.to_path_buf(),
        });
    }
    if let Some(what) = kind_of(pre.file_type()) {
        return Err(LocalFileError::NotRegular {
            path: path.to_path_buf(),
            what,
        });
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    check_handle(&file, path)?;
    Ok(file)
}

/// An error of `open(2)` with `O_NOFOLLOW`: ELOOP means the last component
/// is a symbolic link (possibly one made after an earlier lstat).
fn open_error(path: &Path, source: std::io::Error) -> LocalFileError {
    if source.raw_os_error() == Some(libc::ELOOP) {
        LocalFileError::Symlink {
            path: path.to_path_buf(),
        }
    } else {
        LocalFileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Checks the opened handle (not the path, which may have changed since):
/// a regular file owned by the daemon's user.
fn check_handle(file: &File, path: &Path) -> Result<(), LocalFileError> {
    let meta = file.metadata().map_err(|source| LocalFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(what) = kind_of(meta.file_type()) {
        return Err(LocalFileError::NotRegular {
            path: path.to_path_buf(),
            what,
        });
    }
    let daemon = daemon_uid();
    if meta.uid() != daemon {
        return Err(LocalFileError::NotOwned {
            path: path.to_path_buf(),
            owner: meta.uid(),
            daemon,
        });
    }
    Ok(())
}

/// Creates (or truncates) `path` for writing with mode `mode` from the
/// start (not chmod'ed afterwards, so the content is never readable by
/// others, whatever the umask), refusing to write through a symbolic link.
/// An existing file keeps its mode; it is truncated only if it is a
/// regular file owned by the daemon's user.
pub fn create_private(path: &Path, mode: u32) -> Result<File, LocalFileError> {
    let io_err = |source| LocalFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    check_handle(&file, path)?;
    // Truncated only now that it is known to be our own regular file.
    file.set_len(0).map_err(io_err)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn refuses_links_fifos_and_directories_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"top secret").unwrap();
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert!(matches!(
            open_regular_owned(&link),
            Err(LocalFileError::Symlink { .. })
        ));
        let fifo = dir.path().join("pipe.csv");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            open_regular_owned(&fifo),
            Err(LocalFileError::NotRegular { what: "a FIFO", .. })
        ));
        let sub = dir.path().join("sub.csv");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(
            open_regular_owned(&sub),
            Err(LocalFileError::NotRegular {
                what: "a directory",
                ..
            })
        ));
        let mut s = String::new();
        open_regular_owned(&secret)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "top secret");
        // Writing through a link is refused and the target is untouched.
        assert!(matches!(
            create_private(&link, 0o600),
            Err(LocalFileError::Symlink { .. })
        ));
        assert_eq!(std::fs::read(&secret).unwrap(), b"top secret");
        let out = dir.path().join("out");
        create_private(&out, 0o600).unwrap();
        assert_eq!(
            std::fs::metadata(&out).unwrap().mode() & 0o777,
            0o600,
            "created 0600"
        );
    }
}
