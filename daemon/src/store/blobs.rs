//! Blob files (résumé contents), kept outside sled in `DIR/blobs/`.
//!
//! Layout: `blobs/<blake3 hex>` holds a complete, verified blob;
//! `blobs/tmp/` holds files being written locally; `blobs/partial/<hex>`
//! holds a download in progress, appended from its current length so an
//! interrupted transfer resumes where it stopped. A blob appears under its
//! final name only after its content has been fsynced and its hash checked,
//! and the rename is followed by an fsync of the directory, so a crash
//! leaves either no blob or the whole blob.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// BLAKE3 hash of a blob's content.
pub type BlobHash = [u8; 32];

/// Lower-case hex of a hash: the blob's file name.
pub fn hash_hex(hash: &BlobHash) -> String {
    data_encoding::HEXLOWER.encode(hash)
}

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The blob is not stored here (complete).
    #[error("blob {0} is not stored")]
    NotFound(String),
    /// A chunk did not start where the partial file ends.
    #[error("blob {hash}: chunk at offset {offset} but {have} bytes are stored")]
    OutOfOrder {
        /// The blob.
        hash: String,
        /// Offset of the chunk received.
        offset: u64,
        /// Bytes stored so far.
        have: u64,
    },
    /// A chunk would grow the blob past its announced size.
    #[error("blob {hash}: {len} bytes would exceed the announced size {total}")]
    TooLong {
        /// The blob.
        hash: String,
        /// Size the blob would reach.
        len: u64,
        /// Announced size.
        total: u64,
    },
    /// The transfer is finished but not all bytes arrived.
    #[error("blob {hash}: {have} of {total} bytes received")]
    Incomplete {
        /// The blob.
        hash: String,
        /// Bytes stored.
        have: u64,
        /// Announced size.
        total: u64,
    },
    /// The blob is larger than `[limits] max_blob_bytes`; nothing of it is
    /// kept.
    #[error("{what}: {size} bytes is over the limit of {max} bytes (limits.max_blob_bytes)")]
    TooLarge {
        /// The blob (hash) or source file.
        what: String,
        /// Its size (or the size reached when the copy stopped).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The content does not hash to the announced hash; the partial file is
    /// discarded so the next attempt starts over.
    #[error("blob {expected}: content hashes to {actual}; discarded")]
    HashMismatch {
        /// Announced hash.
        expected: String,
        /// Hash of what was received.
        actual: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BlobError + 'a {
    move |source| BlobError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The blob directory of one instance. Cheap to clone; every method is
/// blocking file I/O (call it from `spawn_blocking` in async code).
#[derive(Clone, Debug)]
pub struct BlobFiles {
    root: PathBuf,
    /// Largest blob accepted (`[limits] max_blob_bytes`), shared by clones.
    max_bytes: Arc<AtomicU64>,
}

impl BlobFiles {
    /// Opens (creating if needed) `root`, `root/tmp` and `root/partial`.
    pub fn open(root: impl Into<PathBuf>) -> Result<BlobFiles, BlobError> {
        let root = root.into();
        for dir in [root.clone(), root.join("tmp"), root.join("partial")] {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        Ok(BlobFiles {
            root,
            max_bytes: Arc::new(AtomicU64::new(crate::config::DEFAULT_MAX_BLOB_BYTES)),
        })
    }

    /// Sets the largest blob stored from now on (every clone sees it):
    /// larger files are refused by [`BlobFiles::put_file`] and
    /// [`BlobFiles::partial`] before anything is kept.
    pub fn set_max_bytes(&self, max: u64) {
        self.max_bytes.store(max, Ordering::Relaxed);
    }

    /// The largest blob stored (see [`BlobFiles::set_max_bytes`]).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// Where a complete blob lives.
    pub fn path_of(&self, hash: &BlobHash) -> PathBuf {
        self.root.join(hash_hex(hash))
    }

    /// Size of a complete blob, or `None` when it is not stored.
    pub fn size(&self, hash: &BlobHash) -> Result<Option<u64>, BlobError> {
        let path = self.path_of(hash);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &path)(e)),
        }
    }

    /// Copies the file at `src` into the store, returning its hash and size.
    /// Storing content that is already there is a no-op.
    pub fn put_file(&self, src: &Path) -> Result<(BlobHash, u64), BlobError> {
        let mut input = File::open(src).map_err(io_err("open", src))?;
        self.put_reader(&mut input, src)
    }

    /// Stores the content of an already opened file (read from its current
    /// position to the end); `src` names it in errors.
    pub fn put_open_file(&self, file: &mut File, src: &Path) -> Result<(BlobHash, u64), BlobError> {
        self.put_reader(file, src)
    }

    /// Stores `bytes`, returning their hash and size.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<(BlobHash, u64), BlobError> {
        let mut input = bytes;
        self.put_reader(&mut input, Path::new("<memory>"))
    }

    fn put_reader(&self, input: &mut dyn Read, src: &Path) -> Result<(BlobHash, u64), BlobError> {
        let tmp = tempfile_in(&self.root.join("tmp"))?;
        let (mut file, tmp_path) = tmp;
        let max = self.max_bytes();
        let result = (|| {
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut size = 0u64;
            loop {
                let n = input.read(&mut buf).map_err(io_err("read", src))?;
                if n == 0 {
                    break;
                }
                size += n as u64;
                // Checked as it is read: the file may grow after a size
                // check by the caller.
                if size > max {
                    return Err(BlobError::TooLarge {
                        what: src.display().to_string(),
                        size,
                        max,
                    });
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n])
                    .map_err(io_err("write", &tmp_path))?;
            }
            file.sync_all().map_err(io_err("fsync", &tmp_path))?;
            let hash: BlobHash = hasher.finalize().into();
            self.publish(&tmp_path, &hash)?;
            Ok((hash, size))
        })();
        if result.is_err() {
            // Best effort: a leftover temp file is harmless and cleaned at open.
            let _ = fs::remove_file(&tmp_path);
        }
        result
    }

    /// Renames a complete, fsynced file to its final name and makes the
    /// rename durable.
    fn publish(&self, from: &Path, hash: &BlobHash) -> Result<(), BlobError> {
        let to = self.path_of(hash);
        fs::rename(from, &to).map_err(io_err("rename", from))?;
        sync_dir(&self.root)
    }

    /// Opens a complete blob for reading at `offset`; returns the file and
    /// the blob's total size.
    pub fn open_read(&self, hash: &BlobHash, offset: u64) -> Result<(File, u64), BlobError> {
        let path = self.path_of(hash);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(hash_hex(hash)))
            }
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let len = file.metadata().map_err(io_err("stat", &path))?.len();
        file.seek(SeekFrom::Start(offset.min(len)))
            .map_err(io_err("seek", &path))?;
        Ok((file, len))
    }

    /// Opens (or creates) the partial download of `hash`, `total_len`
    /// bytes long. Its [`PartialBlob::offset`] is where the transfer resumes.
    pub fn partial(&self, hash: &BlobHash, total_len: u64) -> Result<PartialBlob, BlobError> {
        let max = self.max_bytes();
        if total_len > max {
            // Before the file is created: nothing of it reaches the disk.
            return Err(BlobError::TooLarge {
                what: format!("blob {}", hash_hex(hash)),
                size: total_len,
                max,
            });
        }
        let path = self.root.join("partial").join(hash_hex(hash));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let mut offset = file.metadata().map_err(io_err("stat", &path))?.len();
        if offset > total_len {
            // Left over from a transfer announced with another size: start over.
            file.set_len(0).map_err(io_err("truncate", &path))?;
            offset = 0;
        }
        Ok(PartialBlob {
            files: self.clone(),
            hash: *hash,
            total_len,
            file,
            path,
            // Only a download from the first byte can be hashed as it
            // arrives; a resumed one is hashed from the file at the end.
            hasher: (offset == 0).then(blake3::Hasher::new),
            offset,
            unsynced: 0,
            syncing: None,
        })
    }
}

/// A download in progress; bytes are appended in order and the blob becomes
/// visible only through [`PartialBlob::finish`].
#[derive(Debug)]
pub struct PartialBlob {
    files: BlobFiles,
    hash: BlobHash,
    total_len: u64,
    file: File,
    path: PathBuf,
    /// Hash of every byte from the first, updated as bytes are appended, so
    /// that finishing does not read the whole file back; `None` for a
    /// download resumed from an earlier connection.
    hasher: Option<blake3::Hasher>,
    offset: u64,
    /// Bytes appended since the last fsync.
    unsynced: u64,
    /// The fsync of earlier appends, running on its own thread so that the
    /// appends after it (and the connection that makes them) are not held
    /// up by the disk; at most one runs at a time.
    syncing: Option<std::thread::JoinHandle<io::Result<()>>>,
}

/// A partial download is fsynced every this many bytes, so that after a
/// crash the transfer resumes near where it stopped instead of from bytes
/// the disk never got (which would fail verification and start over).
const SYNC_EVERY: u64 = 8 << 20;

impl PartialBlob {
    /// Bytes stored so far: the offset to request from the sender.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Announced size of the whole blob.
    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    /// Appends `data`, which must start at [`PartialBlob::offset`].
    pub fn append(&mut self, offset: u64, data: &[u8]) -> Result<(), BlobError> {
        if offset != self.offset {
            return Err(BlobError::OutOfOrder {
                hash: hash_hex(&self.hash),
                offset,
                have: self.offset,
            });
        }
        let end = self.offset + data.len() as u64;
        if end > self.total_len {
            return Err(BlobError::TooLong {
                hash: hash_hex(&self.hash),
                len: end,
                total: self.total_len,
            });
        }
        if let Err(e) = self.file.write_all(data) {
            // Part of `data` may be in the file: the running hash no longer
            // matches it, so finishing hashes the file instead.
            self.hasher = None;
            return Err(io_err("write", &self.path)(e));
        }
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
        self.offset = end;
        self.unsynced += data.len() as u64;
        if self.unsynced >= SYNC_EVERY {
            self.sync_in_background()?;
        }
        Ok(())
    }

    /// Starts an fsync of what was appended so far on its own thread, after
    /// waiting for the previous one (whose failure is returned here).
    fn sync_in_background(&mut self) -> Result<(), BlobError> {
        self.wait_for_sync()?;
        let file = self.file.try_clone().map_err(io_err("fsync", &self.path))?;
        let spawned = std::thread::Builder::new()
            .name("blob-fsync".into())
            .spawn(move || file.sync_data());
        match spawned {
            Ok(handle) => {
                self.syncing = Some(handle);
                self.unsynced = 0;
                Ok(())
            }
            // No thread to be had: the appends wait for the disk instead.
            Err(_) => self.sync(),
        }
    }

    /// Waits for the background fsync, if one runs, and returns its result.
    fn wait_for_sync(&mut self) -> Result<(), BlobError> {
        let Some(handle) = self.syncing.take() else {
            return Ok(());
        };
        let result = handle
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the fsync thread panicked")));
        result.map_err(io_err("fsync", &self.path))
    }

    /// Abandons the download and removes its partial file (a refused
    /// transfer leaves nothing on disk).
    pub fn discard(self) -> Result<(), BlobError> {
        let PartialBlob { file, path, .. } = self;
        drop(file);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// Makes the bytes appended so far durable, so a restart resumes after them.
    pub fn sync(&mut self) -> Result<(), BlobError> {
        self.wait_for_sync()?;
        self.file.sync_data().map_err(io_err("fsync", &self.path))?;
        self.unsynced = 0;
        Ok(())
    }

    /// Verifies the complete content against the hash and publishes it under
    /// its final name. On a hash mismatch the partial file is deleted.
    pub fn finish(mut self) -> Result<PathBuf, BlobError> {
        if self.offset != self.total_len {
            return Err(BlobError::Incomplete {
                hash: hash_hex(&self.hash),
                have: self.offset,
                total: self.total_len,
            });
        }
        self.wait_for_sync()?;
        self.file.sync_all().map_err(io_err("fsync", &self.path))?;
        let hasher = match self.hasher.take() {
            Some(h) => h,
            None => {
                let mut hasher = blake3::Hasher::new();
                let mut reader = File::open(&self.path).map_err(io_err("open", &self.path))?;
                hasher
                    .update_reader(&mut reader)
                    .map_err(io_err("read", &self.path))?;
                hasher
            }
        };
        let actual: BlobHash = hasher.finalize().into();
        if actual != self.hash {
            let _ = fs::remove_file(&self.path);
            return Err(BlobError::HashMismatch {
                expected: hash_hex(&self.hash),
                actual: hash_hex(&actual),
            });
        }
        self.files.publish(&self.path, &self.hash)?;
        Ok(self.files.path_of(&self.hash))
    }
}

/// A new uniquely named file in `dir`.
fn tempfile_in(dir: &Path) -> Result<(File, PathBuf), BlobError> {
    use rand::Rng;
    for _ in 0..16 {
        let name = format!("{:016x}", rand::thread_rng().gen::<u64>());
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create", &path)(e)),
        }
    }
    Err(BlobError::Io {
        op: "create temp file",
        path: dir.to_path_buf(),
        source: io::Error::new(io::ErrorKind::AlreadyExists, "no free temp name"),
    })
}

fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_over_the_cap_leave_nothing_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobFiles::open(dir.path().join("blobs")).unwrap();
        blobs.set_max_bytes(1000);
        // A clone (the engine's) sees the same cap.
        assert_eq!(blobs.clone().max_bytes(), 1000);
        let err = blobs.put_bytes(&[1u8; 1001]).unwrap_err();
        assert!(
            matches!(
                err,
                BlobError::TooLarge {
                    size: 1001,
                    max: 1000,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("limits.max_blob_bytes"), "{err}");
        let err = blobs.partial(&[3; 32], 1001).unwrap_err();
        assert!(matches!(err, BlobError::TooLarge { .. }), "{err}");
        for sub in ["tmp", "partial"] {
            assert!(
                fs::read_dir(dir.path().join("blobs").join(sub))
                    .unwrap()
                    .next()
                    .is_none(),
                "something of a refused blob is left in {sub}"
            );
        }
        // At the cap: stored; a discarded partial goes.
        blobs.put_bytes(&[1u8; 1000]).unwrap();
        let mut p = blobs.partial(&[4; 32], 1000).unwrap();
        p.append(0, &[5u8; 10]).unwrap();
        p.discard().unwrap();
        assert!(!dir
            .path()
            .join("blobs/partial")
            .join(hash_hex(&[4; 32]))
            .exists());
    }

    #[test]
    fn put_file_stores_by_hash_and_reads_from_offset() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobFiles::open(dir.path().join("blobs")).unwrap();
        let src = dir.path().join("cv.pdf");
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &content).unwrap();
        let (hash, size) = blobs.put_file(&src).unwrap();
        assert_eq!(hash, *blake3::hash(&content).as_bytes());
        assert_eq!(size, content.len() as u64);
        assert_eq!(blobs.size(&hash).unwrap(), Some(size));
        assert_eq!(fs::read(blobs.path_of(&hash)).unwrap(), content);
        let (mut f, total) = blobs.open_read(&hash, 1000).unwrap();
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).unwrap();
        assert_eq!(total, size);
        assert_eq!(rest, content[1000..]);
        assert!(fs::read_dir(dir.path().join("blobs/tmp"))
            .unwrap()
            .next()
            .is_none());
        assert!(matches!(
            blobs.open_read(&[9; 32], 0),
            Err(BlobError::NotFound(_))
        ));
    }

    #[test]
    fn partial_resumes_after_reopen_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobFiles::open(dir.path()).unwrap();
        let content = vec![7u8; 100_000];
        let hash = *blake3::hash(&content).as_bytes();
        let mut p = blobs.partial(&hash, content.len() as u64).unwrap();
        p.append(0, &content[..40_000]).unwrap();
        p.sync().unwrap();
        drop(p);
        assert_eq!(
            blobs.size(&hash).unwrap(),
            None,
            "not visible before finish"
        );
        let mut p = blobs.partial(&hash, content.len() as u64).unwrap();
        assert_eq!(p.offset(), 40_000);
        assert!(matches!(
            p.append(0, &content[..10]),
            Err(BlobError::OutOfOrder { have: 40_000, .. })
        ));
        p.append(40_000, &content[40_000..]).unwrap();
        assert!(matches!(
            p.append(100_000, &[1]),
            Err(BlobError::TooLong { .. })
        ));
        let path = p.finish().unwrap();
        assert_eq!(fs::read(path).unwrap(), content);
    }

    #[test]
    fn resumed_download_is_verified_from_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobFiles::open(dir.path()).unwrap();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let hash = *blake3::hash(&content).as_bytes();
        // An earlier connection left a prefix whose bytes differ from the
        // content: only hashing the file (not the bytes appended since
        // reopening) can notice.
        let mut bad_prefix = content[..50_000].to_vec();
        bad_prefix[10] ^= 1;
        fs::write(
            dir.path().join("partial").join(hash_hex(&hash)),
            &bad_prefix,
        )
        .unwrap();
        let mut p = blobs.partial(&hash, content.len() as u64).unwrap();
        assert_eq!(p.offset(), 50_000);
        p.append(50_000, &content[50_000..]).unwrap();
        assert!(matches!(p.finish(), Err(BlobError::HashMismatch { .. })));
        assert_eq!(blobs.size(&hash).unwrap(), None);
        // From the first byte, in many appends: verified by the running hash.
        let mut p = blobs.partial(&hash, content.len() as u64).unwrap();
        assert_eq!(p.offset(), 0, "the refused file was discarded");
        for (i, piece) in content.chunks(7_001).enumerate() {
            p.append((i * 7_001) as u64, piece).unwrap();
        }
        assert_eq!(fs::read(p.finish().unwrap()).unwrap(), content);
    }

    #[test]
    fn large_downloads_fsync_in_the_background_and_finish_whole() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobFiles::open(dir.path()).unwrap();
        let content: Vec<u8> = (0..(SYNC_EVERY as u32 * 2 + 12_345))
            .map(|i| (i % 241) as u8)
            .collect();
        let hash = *blake3::hash(&content).as_bytes();
        let mut p = blobs.partial(&hash, content.len() as u64).unwrap();
        let piece = 1 << 20;
        for (i, part) in content.chunks(piece).enumerate() {
            p.append((i * piece) as u64, part).unwrap();
            if (i + 1) * piece == SYNC_EVERY as usize {
                assert!(
                    p.syncing.is_some(),
                    "no fsync started at {SYNC_EVERY} bytes"
                );
                assert_eq!(p.unsynced, 0);
            }
        }
        // The explicit sync waits for the background one.
        p.sync().unwrap();
        assert!(p.syncing.is_none());
        drop(p);
        let p = blobs.partial(&hash, content.len() as u64).unwrap();
        assert_eq!(p.offset(), content.len() as u64);
        assert_eq!(fs::read(p.finish().unwrap()).unwrap(), content);
    }

    #[test]
    fn corrupted_partial_is_refused_and_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobFiles::open(dir.path()).unwrap();
        let content = b"hello resume".to_vec();
        let hash = *blake3::hash(&content).as_bytes();
        let mut p = blobs.partial(&hash, content.len() as u64).unwrap();
        p.append(0, b"hello RESUME").unwrap();
        assert!(matches!(p.finish(), Err(BlobError::HashMismatch { .. })));
        assert_eq!(blobs.size(&hash).unwrap(), None);
        let p = blobs.partial(&hash, content.len() as u64).unwrap();
        assert_eq!(p.offset(), 0, "next attempt starts over");
        let short = blobs.partial(&[1; 32], 10).unwrap();
        assert!(matches!(short.finish(), Err(BlobError::Incomplete { .. })));
    }
}
