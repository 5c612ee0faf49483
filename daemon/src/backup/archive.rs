//! The plaintext payload of an archive: the manifest, the files and the
//! copied database trees, in a simple length-prefixed layout whose decoder
//! checks every length against what is left and every path for escapes.
//!
//! ```text
//! "OSBKPAY1"
//! u32 manifest length, manifest JSON
//! u32 file count, then per file: u16 path length, path, u32 mode, u64 length, bytes
//! u32 tree count, then per tree: u16 name length, name, u64 entry count,
//!     then per entry: u32 key length, key, u32 value length, value
//! ```
//! Integers are big-endian.

use super::{BackupError, Manifest};

const MAGIC: &[u8; 8] = b"OSBKPAY1";

/// One file of the instance directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the instance directory (`/`-separated, no `..`).
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// Content.
    pub data: Vec<u8>,
}

pub use crate::store::snapshot::Tree;

/// Everything an archive holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// What the archive says about itself.
    pub manifest: Manifest,
    /// Files, relative to the instance directory.
    pub files: Vec<FileEntry>,
    /// The database trees.
    pub trees: Vec<Tree>,
}

impl Payload {
    /// The payload as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let manifest = serde_json::to_vec(&self.manifest).unwrap_or_default();
        let mut out = Vec::with_capacity(self.size_hint());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(manifest.len() as u32).to_be_bytes());
        out.extend_from_slice(&manifest);
        out.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for f in &self.files {
            out.extend_from_slice(&(f.path.len() as u16).to_be_bytes());
            out.extend_from_slice(f.path.as_bytes());
            out.extend_from_slice(&f.mode.to_be_bytes());
            out.extend_from_slice(&(f.data.len() as u64).to_be_bytes());
            out.extend_from_slice(&f.data);
        }
        out.extend_from_slice(&(self.trees.len() as u32).to_be_bytes());
        for (name, entries) in &self.trees {
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
            for (k, v) in entries {
                out.extend_from_slice(&(k.len() as u32).to_be_bytes());
                out.extend_from_slice(k);
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
        out
    }

    fn size_hint(&self) -> usize {
        let files: usize = self.files.iter().map(|f| f.data.len() + 64).sum();
        let trees: usize = self
            .trees
            .iter()
            .flat_map(|(_, e)| e.iter().map(|(k, v)| k.len() + v.len() + 8))
            .sum();
        files + trees + 4096
    }

    /// Decodes a payload, refusing anything malformed with what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Payload, BackupError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(MAGIC.len(), "magic")? != MAGIC {
            return Err(bad("the payload does not start with its magic"));
        }
        let len = r.u32("manifest length")? as usize;
        let manifest: Manifest = serde_json::from_slice(r.take(len, "manifest")?)
            .map_err(|e| bad(format!("manifest: {e}")))?;
        let n = r.u32("file count")?;
        let mut files = Vec::new();
        for i in 0..n {
            let len = r.u16("path length")? as usize;
            let path = std::str::from_utf8(r.take(len, "path")?)
                .map_err(|_| bad(format!("file {i}: path is not UTF-8")))?
                .to_string();
            check_path(&path)?;
            let mode = r.u32("mode")?;
            if mode & !0o777 != 0 {
                return Err(bad(format!("{path}: mode {mode:o} is not a permission")));
            }
            let len = r.u64("file length")?;
            let data = r.take_u64(len, "file content")?.to_vec();
            files.push(FileEntry { path, mode, data });
        }
        let n = r.u32("tree count")?;
        let mut trees = Vec::new();
        for _ in 0..n {
            let len = r.u16("tree name length")? as usize;
            let name = r.take(len, "tree name")?.to_vec();
            let count = r.u64("entry count")?;
            // Each entry takes at least 8 bytes: a count beyond that is a lie.
            if count > (r.left() / 8) as u64 {
                return Err(bad(format!("tree entry count {count} exceeds the data")));
            }
            let mut entries = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let kl = r.u32("key length")? as usize;
                let k = r.take(kl, "key")?.to_vec();
                let vl = r.u32("value length")? as usize;
                let v = r.take(vl, "value")?.to_vec();
                entries.push((k, v));
            }
            trees.push((name, entries));
        }
        if r.left() != 0 {
            return Err(bad(format!("{} byte(s) after the last tree", r.left())));
        }
        Ok(Payload {
            manifest,
            files,
            trees,
        })
    }
}

/// A relative path inside the instance directory: `/`-separated, no root,
/// no `..`, no empty or `.` components.
fn check_path(path: &str) -> Result<(), BackupError> {
    let ok = !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "file path {path:?} leaves the instance directory"
        )))
    }
}

fn bad(reason: impl Into<String>) -> BackupError {
    BackupError::Payload(reason.into())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], BackupError> {
        if n > self.left() {
            return Err(bad(format!(
                "{what}: needs {n} byte(s) at offset {}, {} left",
                self.at,
                self.left()
            )));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn take_u64(&mut self, n: u64, what: &str) -> Result<&'a [u8], BackupError> {
        let n = usize::try_from(n).map_err(|_| bad(format!("{what}: length {n} too large")))?;
        self.take(n, what)
    }

    fn u16(&mut self, what: &str) -> Result<u16, BackupError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, BackupError> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_be_bytes(a))
    }

    fn u64(&mut self, what: &str) -> Result<u64, BackupError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(a))
    }
}
