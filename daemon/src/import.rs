//! The drop folder `DIR/import/`: record and résumé files written there are
//! ingested, then moved to `import/done/`, or to `import/failed/` next to a
//! `<name>.error` file that names the line (and column) and the problem.
//!
//! Files:
//! - `*.ndjson` / `*.jsonl`: one object per line in the form of
//!   `POST /v1/objects` (`{"kind", "fields", "custom", "flags", "id"?}`);
//!   a record with the id of an existing object updates it.
//! - `*.csv`: a header row, then one object per row. The kind comes from the
//!   file name (`contacts.csv`, `contact-2024.csv`, `organizations_x.csv`, ...)
//!   or from a `kind` column. Columns are standard field names,
//!   `custom.NAME` for custom fields, `id`, and `flags` (flag ids separated
//!   by `;`). Empty cells are left unset.
//! - `<contact-id>.<ext>` with a document extension (pdf, doc, docx, odt,
//!   rtf, txt, md, html): a résumé attached to that contact.
//!
//! Guarantees: every record of a file is validated before anything is
//! written, and the file's records are written in one atomic, durable store
//! batch, so a file is ingested whole or not at all. A file is read only
//! once it is complete: when it was renamed into the folder, or when its
//! size and modification time have not changed for the settle period.
//! Dotfiles and `*.tmp`, `*.part`, `*.swp`, `*~` are ignored, so writers can
//! write under such a name and rename. Lines are bounded in length and files
//! in size, so a huge line or file fails with a clear error instead of
//! exhausting memory. Files already present at start are processed.
//!
//! Only regular files owned by the daemon's user are read: a symbolic
//! link, a directory, a FIFO, a socket or device, or another user's file
//! is refused (moved, itself, to `failed/` with a `.error` saying why; a
//! link is moved as a link, its target is neither read nor moved). The
//! checks are made on the opened handle ([`crate::localfile`]), and the
//! moves are renames, which never follow links; the `.error` file is
//! created without following a link either.
//!
//! A crash after a file's batch is durable but before the file is moved
//! re-imports it at the next start without creating anything twice: a
//! record without an `id` gets an id derived from the file (content hash
//! and modification time) and its line, so the second ingestion finds the
//! objects of the first and skips them. The same file dropped again later
//! (new modification time) is imported again, as before.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use orgsync_protocol::model::{Kind, ObjectId, Schema};
use serde_json::{Map, Value as Json};
use tokio::sync::{mpsc, watch};

use crate::api::attach_resume_handle;
use crate::json::{self as j, CreateRequest, InputError, LocalEdit};
use crate::metrics::{self, Metrics};
use crate::store::{Edit, Store, StoreError};

/// The folder name inside the instance directory.
pub const IMPORT_DIR: &str = "import";

/// Extensions of résumé files.
const RESUME_EXTENSIONS: &[&str] = &[
    "pdf", "doc", "docx", "odt", "rtf", "txt", "md", "html", "htm",
];

/// Tunables of the drop folder.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// How long a file's size and mtime must stay unchanged before it is read
    /// (files renamed into the folder are read at once).
    pub settle: Duration,
    /// How often pending files are checked.
    pub poll: Duration,
    /// How often the folder is rescanned, in case a notification was lost.
    pub rescan: Duration,
    /// Longest line accepted, in bytes.
    pub max_line: usize,
    /// Largest record file accepted, in bytes (its records are held in
    /// memory to be written in one batch).
    pub max_file: u64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            settle: Duration::from_millis(1000),
            poll: Duration::from_millis(100),
            rescan: Duration::from_secs(5),
            max_line: 1024 * 1024,
            max_file: 256 * 1024 * 1024,
        }
    }
}

/// Why the drop folder could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The folder could not be created or read.
    #[error("drop folder {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file watcher could not be started.
    #[error("cannot watch the drop folder {path}: {source}")]
    Watch {
        /// The folder.
        path: PathBuf,
        /// The error.
        source: notify::Error,
    },
}

/// Why one file was refused, with where in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// 1-based line, when the problem is on a line.
    pub line: Option<u64>,
    /// 1-based column (CSV: the column number; NDJSON: the character position).
    pub column: Option<u64>,
    /// The field at fault, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl FileError {
    fn whole(message: impl Into<String>) -> Self {
        FileError {
            line: None,
            column: None,
            field: None,
            message: message.into(),
        }
    }

    fn at(line: u64, column: Option<u64>, message: impl Into<String>) -> Self {
        FileError {
            line: Some(line),
            column,
            field: None,
            message: message.into(),
        }
    }

    fn input(line: u64, column: Option<u64>, e: InputError) -> Self {
        FileError {
            line: Some(line),
            column,
            field: e.field,
            message: e.message,
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: ")?,
            (Some(l), None) => write!(f, "line {l}: ")?,
            _ => {}
        }
        f.write_str(&self.message)?;
        if let Some(field) = &self.field {
            if !self.message.contains(field.as_str()) {
                write!(f, " (field {field})")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for FileError {}

impl From<StoreError> for FileError {
    fn from(e: StoreError) -> Self {
        FileError::whole(format!("nothing imported: {e}"))
    }
}

/// What happened to one file.
#[derive(Debug)]
pub enum Outcome {
    /// Ingested (with this many records) and moved to `done/`.
    Done {
        /// Records written.
        records: usize,
        /// Where the file is now.
        moved_to: PathBuf,
    },
    /// Refused and moved to `failed/` beside a `.error` file.
    Failed {
        /// Why.
        error: FileError,
        /// Where the file is now.
        moved_to: PathBuf,
    },
}

/// The drop-folder watcher of one instance.
#[derive(Clone)]
pub struct Importer {
    store: Store,
    dir: PathBuf,
    schema: watch::Receiver<Schema>,
    metrics: Arc<Metrics>,
    options: ImportOptions,
    governance: Option<crate::governance::Governance>,
}

/// Watches `DIR/import/` of the instance directory `instance_dir` with
/// default options until `shutdown` resolves.
pub async fn watch(
    store: Store,
    instance_dir: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ImportError> {
    Importer::new(store, instance_dir.join(IMPORT_DIR))
        .run(shutdown)
        .await
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether a directory entry name is one the drop folder reads (or
/// refuses): not its own `done/` and `failed/` folders.
fn is_candidate_name(name: &str) -> bool {
    !(name.starts_with('.')
        || name == "done"
        || name == "failed"
        || name.ends_with(".tmp")
        || name.ends_with(".part")
        || name.ends_with(".swp")
        || name.ends_with('~')
        || name.ends_with(".error"))
}

struct Pending {
    len: u64,
    mtime: Option<SystemTime>,
    stable_since: Instant,
    renamed: bool,
}

impl Importer {
    /// A watcher of the folder `import_dir` writing into `store`, with no
    /// custom-field schema, its own metrics and default options.
    pub fn new(store: Store, import_dir: impl Into<PathBuf>) -> Self {
        let (_, schema) = watch::channel(Schema::default());
        Importer {
            store,
            dir: import_dir.into(),
            schema,
            metrics: Arc::new(Metrics::new()),
            options: ImportOptions::default(),
            governance: None,
        }
    }

    /// Refuses records that edit a partner's copy (see
    /// [`crate::governance::Governance::check_local_edit`]).
    pub fn with_governance(mut self, governance: Option<crate::governance::Governance>) -> Self {
        self.governance = governance;
        self
    }

    /// Types custom fields by `schema`.
    pub fn with_schema(mut self, schema: watch::Receiver<Schema>) -> Self {
        self.schema = schema;
        self
    }

    /// Counts into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Uses `options`.
    pub fn with_options(mut self, options: ImportOptions) -> Self {
        self.options = options;
        self
    }

    fn io_err(&self, path: &Path) -> impl FnOnce(io::Error) -> ImportError {
        let path = path.to_path_buf();
        move |source| ImportError::Io { path, source }
    }

    /// Watches the folder until `shutdown` resolves. A file being ingested
    /// when shutdown comes is finished first.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ImportError> {
        for d in [
            self.dir.clone(),
            self.dir.join("done"),
            self.dir.join("failed"),
        ] {
            tokio::fs::create_dir_all(&d)
                .await
                .map_err(self.io_err(&d))?;
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<notify::Event>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                // The receiver is gone only after shutdown.
                let _ = tx.send(ev);
            }
        })
        .map_err(|source| ImportError::Watch {
            path: self.dir.clone(),
            source,
        })?;
        watcher
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .map_err(|source| ImportError::Watch {
                path: self.dir.clone(),
                source,
            })?;
        tracing::info!(dir = %self.dir.display(), "drop folder watched");

        let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
        self.scan(&mut pending);
        let mut poll = tokio::time::interval(self.options.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rescan = tokio::time::interval(self.options.rescan);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(ev) = rx.recv() => {
                    let renamed_to = match ev.kind {
                        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => ev.paths.first().cloned(),
                        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => ev.paths.get(1).cloned(),
                        _ => None,
                    };
                    for p in ev.paths {
                        if p.parent() != Some(self.dir.as_path()) {
                            continue;
                        }
                        let Some(name) = p.file_name().and_then(|n| n.to_str()) else { continue };
                        if !is_candidate_name(name) {
                            continue;
                        }
                        let renamed = renamed_to.as_ref() == Some(&p);
                        let entry = pending.entry(p).or_insert_with(|| Pending {
                            len: u64::MAX,
                            mtime: None,
                            stable_since: Instant::now(),
                            renamed: false,
                        });
                        entry.renamed |= renamed;
                    }
                }
                _ = poll.tick(), if !pending.is_empty() => {
                    self.check_pending(&mut pending).await;
                }
                _ = rescan.tick() => self.scan(&mut pending),
            }
        }
        drop(watcher);
        Ok(())
    }

    /// Adds every candidate file in the folder to `pending`.
    fn scan(&self, pending: &mut HashMap<PathBuf, Pending>) {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot scan the drop folder");
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // Links, directories, FIFOs... too: they are refused (moved to
            // failed/ with the reason), not silently left lying there.
            if !is_candidate_name(name) {
                continue;
            }
            pending.entry(entry.path()).or_insert_with(|| Pending {
                len: u64::MAX,
                mtime: None,
                stable_since: Instant::now(),
                renamed: false,
            });
        }
    }

    /// Processes the pending files that are complete; forgets vanished ones.
    async fn check_pending(&self, pending: &mut HashMap<PathBuf, Pending>) {
        let now = Instant::now();
        let mut ready = Vec::new();
        pending.retain(|path, p| {
            // lstat: a link is judged as a link, never by its target.
            let meta = match std::fs::symlink_metadata(path) {
                Ok(m) => m,
                // Gone (moved away, or renamed by its writer).
                Err(_) => return false,
            };
            if !meta.is_file() {
                // Refused at once (process() says why); nothing to settle,
                // and a FIFO must not be waited on.
                ready.push(path.clone());
                return false;
            }
            let mtime = meta.modified().ok();
            if meta.len() != p.len || mtime != p.mtime {
                p.len = meta.len();
                p.mtime = mtime;
                p.stable_since = now;
                if !p.renamed {
                    return true;
                }
            }
            if p.renamed || now.duration_since(p.stable_since) >= self.options.settle {
                ready.push(path.clone());
                return false;
            }
            true
        });
        ready.sort();
        for path in ready {
            let outcome = self.process(&path).await;
            match outcome {
                Ok(Outcome::Done { records, moved_to }) => tracing::info!(
                    file = %path.display(), records, moved_to = %moved_to.display(), "imported"
                ),
                Ok(Outcome::Failed { error, moved_to }) => tracing::warn!(
                    file = %path.display(), error = %error, moved_to = %moved_to.display(), "import refused"
                ),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot move imported file")
                }
            }
        }
    }

    /// Ingests one file and moves it to `done/` or `failed/`.
    pub async fn process(&self, path: &Path) -> Result<Outcome, ImportError> {
        match self.ingest(path).await {
            Ok(records) => {
                let moved_to = self.move_to(path, "done").await?;
                metrics::add(&self.metrics.imports_done, 1);
                metrics::add(&self.metrics.records_imported, records as u64);
                Ok(Outcome::Done { records, moved_to })
            }
            Err(error) => {
                let failed = self.dir.join("failed");
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // The reason goes first, so the file never sits in failed/ unexplained.
                let target = unique_target(&failed, &name);
                let target_name = target
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or(name);
                let reason = failed.join(format!("{target_name}.error"));
                write_reason(&reason, &format!("{error}\n")).map_err(self.io_err(&reason))?;
                tokio::fs::rename(path, &target)
                    .await
                    .map_err(self.io_err(path))?;
                metrics::add(&self.metrics.imports_failed, 1);
                Ok(Outcome::Failed {
                    error,
                    moved_to: target,
                })
            }
        }
    }

    async fn move_to(&self, path: &Path, sub: &str) -> Result<PathBuf, ImportError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = unique_target(&self.dir.join(sub), &name);
        tokio::fs::rename(path, &target)
            .await
            .map_err(self.io_err(path))?;
        Ok(target)
    }

    /// Validates every record of the file and writes them in one atomic
    /// batch; returns how many were written. Nothing is written on error.
    pub async fn ingest(&self, path: &Path) -> Result<usize, FileError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| FileError::whole("the file name is not UTF-8"))?
            .to_string();
        let (stem, ext) = match name.rsplit_once('.') {
            Some((s, e)) => (s.to_string(), e.to_ascii_lowercase()),
            None => (name.clone(), String::new()),
        };
        // Before anything else: only our own regular files, never through
        // a link (checked on the handle, which is what is read below).
        let file = crate::localfile::open_regular_owned(path).map_err(|e| {
            tracing::warn!(file = %path.display(), error = %e, "drop file refused");
            FileError::whole(e.to_string())
        })?;
        let edits = match ext.as_str() {
            "ndjson" | "jsonl" => self.parse_blocking(file, path, Format::Ndjson).await?,
            "csv" => self.parse_blocking(file, path, Format::Csv(stem)).await?,
            e if RESUME_EXTENSIONS.contains(&e) => {
                let contact: ObjectId = stem.parse().map_err(|_| {
                    FileError::whole(format!(
                        "a résumé file must be named <contact-id>.{e}; {stem:?} is not an object id"
                    ))
                })?;
                let edit = attach_resume_handle(&self.store, contact, file, path, None)
                    .await
                    .map_err(|e| FileError::whole(e.to_string()))?;
                vec![edit]
            }
            _ => {
                return Err(FileError::whole(format!(
                    "unsupported file {name:?}: expected *.ndjson, *.csv or a résumé named <contact-id>.<{}>",
                    RESUME_EXTENSIONS.join("|")
                )))
            }
        };
        if let Some(g) = &self.governance {
            for (i, e) in edits.iter().enumerate() {
                g.check_local_edit(&e.id).map_err(|err| {
                    FileError::whole(format!("record {} (object {}): {err}", i + 1, e.id))
                })?;
            }
        }
        let n = edits.len();
        if n > 0 {
            let receipt = self.store.write(edits).await?;
            metrics::add(&self.metrics.changes_written, receipt.changes.len() as u64);
        }
        Ok(n)
    }

    async fn parse_blocking(
        &self,
        file: File,
        path: &Path,
        format: Format,
    ) -> Result<Vec<Edit>, FileError> {
        let store = self.store.clone();
        let schema = self.schema.borrow().clone();
        let path = path.to_path_buf();
        let opts = self.options.clone();
        tokio::task::spawn_blocking(move || {
            let parser = Parser {
                store: &store,
                schema: &schema,
                opts: &opts,
                flags: HashSet::new(),
                file_key: FileKey::default(),
            };
            parser.parse(file, &path, format)
        })
        .await
        .map_err(|e| FileError::whole(format!("import task failed: {e}")))?
    }
}

/// Writes the `.error` file of a refused drop file: created 0600 without
/// following a link (a link planted under that name is not written
/// through).
fn write_reason(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    let mut f = crate::localfile::create_private(path, 0o600).map_err(io::Error::other)?;
    f.write_all(text.as_bytes())
}

/// `dir/name`, or `dir/<stem>-<ms>.<ext>` when that exists already.
fn unique_target(dir: &Path, name: &str) -> PathBuf {
    let plain = dir.join(name);
    // symlink_metadata: a dangling link there still counts as taken.
    if std::fs::symlink_metadata(&plain).is_err() {
        return plain;
    }
    let stamp = now_ms();
    match name.rsplit_once('.') {
        Some((stem, ext)) => dir.join(format!("{stem}-{stamp}.{ext}")),
        None => dir.join(format!("{name}-{stamp}")),
    }
}

enum Format {
    Ndjson,
    /// CSV, with the file stem (which may name the kind).
    Csv(String),
}

struct Parser<'a> {
    store: &'a Store,
    schema: &'a Schema,
    opts: &'a ImportOptions,
    /// Flags created earlier in the same file.
    flags: HashSet<ObjectId>,
    /// What record ids without an `id` derive from (see [`record_id`]).
    file_key: FileKey,
}

/// The identity of one version of a drop file: its content hash and
/// modification time.
#[derive(Clone, Copy, Debug, Default)]
struct FileKey {
    content: [u8; 32],
    mtime_ms: u64,
}

impl FileKey {
    fn of(file: &mut File) -> io::Result<FileKey> {
        use std::io::Seek;
        let mtime_ms = file
            .metadata()?
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        let mut hasher = blake3::Hasher::new();
        io::copy(file, &mut hasher)?;
        file.rewind()?;
        Ok(FileKey {
            content: *hasher.finalize().as_bytes(),
            mtime_ms,
        })
    }
}

/// The id of the record on line `line` of the file `key` when the record
/// names none: a UUIDv7 with the file's modification time and 74 bits
/// derived from the file and the line, so that ingesting the same file
/// twice (a crash between the durable batch and the move to done/) yields
/// the same ids.
fn record_id(key: &FileKey, line: u64) -> ObjectId {
    let mut h = blake3::Hasher::new_derive_key("orgsync 2026 drop-folder record id");
    h.update(&key.content);
    h.update(&key.mtime_ms.to_le_bytes());
    h.update(&line.to_le_bytes());
    let r = h.finalize();
    let r = r.as_bytes();
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&key.mtime_ms.to_be_bytes()[2..]);
    b[6] = 0x70 | (r[0] & 0x0f);
    b[7] = r[1];
    b[8] = 0x80 | (r[2] & 0x3f);
    b[9..].copy_from_slice(&r[3..10]);
    ObjectId(b)
}

/// Decodes one NDJSON line of a drop file (line number `line`, for error
/// positions): `Ok(None)` for a blank line, the record otherwise. Pure: no
/// store, no schema; what the record means is checked when it is built.
pub fn decode_ndjson_line(line: u64, bytes: &[u8]) -> Result<Option<CreateRequest>, FileError> {
    let mut buf = bytes;
    while let Some((b'\n' | b'\r', rest)) = buf.split_last() {
        buf = rest;
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = std::str::from_utf8(buf).map_err(|e| {
        FileError::at(
            line,
            Some(e.valid_up_to() as u64 + 1),
            "invalid UTF-8 (files must be UTF-8)",
        )
    })?;
    serde_json::from_str(text).map(Some).map_err(|e| {
        FileError::at(
            line,
            Some(e.column() as u64),
            format!("invalid record: {e}"),
        )
    })
}

impl Parser<'_> {
    fn parse(
        mut self,
        mut file: File,
        path: &Path,
        format: Format,
    ) -> Result<Vec<Edit>, FileError> {
        let len = file
            .metadata()
            .map_err(|e| FileError::whole(format!("cannot read {}: {e}", path.display())))?
            .len();
        if len > self.opts.max_file {
            return Err(FileError::whole(format!(
                "the file has {len} bytes, more than the limit of {}: split it",
                self.opts.max_file
            )));
        }
        self.file_key = FileKey::of(&mut file)
            .map_err(|e| FileError::whole(format!("cannot read {}: {e}", path.display())))?;
        match format {
            Format::Ndjson => self.ndjson(file),
            Format::Csv(stem) => self.csv(file, &stem),
        }
    }

    /// Builds the edit of the record on `line`, checking its flags and
    /// existing object; `None` when an earlier ingestion of this very file
    /// already wrote it.
    fn record(&mut self, req: &CreateRequest, line: u64) -> Result<Option<Edit>, InputError> {
        let get = |id| {
            self.store
                .get(id)
                .map_err(|e| InputError::general(e.to_string()))
        };
        let derived = record_id(&self.file_key, line);
        let existing = match &req.id {
            Some(s) => get(j::parse_id("id", s)?)?,
            None if get(derived)?.is_some() => return Ok(None),
            None => None,
        };
        let edit = j::build_create(self.schema, req, existing.as_ref(), || derived)?;
        self.check_flags(&edit)?;
        if edit.kind == Kind::Flag {
            self.flags.insert(edit.id);
        }
        Ok(Some(edit.into_edit()))
    }

    fn check_flags(&self, edit: &LocalEdit) -> Result<(), InputError> {
        use orgsync_protocol::model::FieldKey;
        for (key, value) in &edit.set {
            if let (FieldKey::Flag(flag), Some(_)) = (key, value) {
                if self.flags.contains(flag) {
                    continue;
                }
                match self.store.get(*flag) {
                    Ok(Some(o)) if o.kind == Kind::Flag && !o.is_deleted() => {}
                    Ok(_) => return Err(InputError::field("flags", format!("no flag {flag}"))),
                    Err(e) => return Err(InputError::general(e.to_string())),
                }
            }
        }
        Ok(())
    }

    fn ndjson(&mut self, file: File) -> Result<Vec<Edit>, FileError> {
        let mut reader = BufReader::new(file);
        let mut edits = Vec::new();
        let mut buf = Vec::new();
        let mut line = 0u64;
        loop {
            line += 1;
            buf.clear();
            if !read_line_bounded(&mut reader, &mut buf, self.opts.max_line)
                .map_err(|e| FileError::at(line, None, e.to_string()))?
            {
                break;
            }
            let Some(req) = decode_ndjson_line(line, &buf)? else {
                continue;
            };
            let edit = self
                .record(&req, line)
                .map_err(|e| FileError::input(line, None, e))?;
            edits.extend(edit);
        }
        Ok(edits)
    }

    fn csv(&mut self, file: File, stem: &str) -> Result<Vec<Edit>, FileError> {
        let file_kind = kind_from_stem(stem);
        let bounded = BoundedLines {
            inner: BufReader::new(file),
            max: self.opts.max_line,
            current: 0,
            line: 1,
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(false)
            .from_reader(bounded);
        let csv_err = |e: csv::Error| {
            let line = e.position().map(|p| p.line());
            let msg = match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => format!("this row has {len} cells but the header has {expected_len}"),
                csv::ErrorKind::Io(io) => io.to_string(),
                _ => e.to_string(),
            };
            match line {
                Some(l) => FileError::at(l, None, msg),
                None => FileError::whole(msg),
            }
        };
        let mut records = reader.byte_records();
        let header = match records.next() {
            None => return Ok(Vec::new()),
            Some(r) => r.map_err(csv_err)?,
        };
        let mut columns = Vec::with_capacity(header.len());
        for (i, cell) in header.iter().enumerate() {
            let name = std::str::from_utf8(cell).map_err(|_| {
                FileError::at(
                    1,
                    Some(i as u64 + 1),
                    "invalid UTF-8 in the header (files must be UTF-8)",
                )
            })?;
            columns.push(name.trim().trim_start_matches('\u{feff}').to_string());
        }
        let kind_col = columns.iter().position(|c| c == "kind");
        if file_kind.is_none() && kind_col.is_none() {
            return Err(FileError::at(
                1,
                None,
                format!(
                    "cannot tell the kind of the records: name the file after it (contacts.csv, organization-2024.csv, ...) or add a \"kind\" column (file stem {stem:?})"
                ),
            ));
        }
        // Check standard columns against the file's kind at once, so a typo
        // in the header is reported there rather than on every row.
        if let (Some(kind), None) = (file_kind, kind_col) {
            for (i, c) in columns.iter().enumerate() {
                if c.is_empty() {
                    return Err(FileError::at(1, Some(i as u64 + 1), "empty column name"));
                }
                if !matches!(c.as_str(), "id" | "flags")
                    && !c.starts_with("custom.")
                    && kind.standard_field_type(c).is_none()
                {
                    return Err(FileError::at(
                        1,
                        Some(i as u64 + 1),
                        format!("{kind} has no standard field {c:?} (custom fields are written custom.NAME)"),
                    ));
                }
            }
        }
        let mut edits = Vec::new();
        for record in records {
            let record = record.map_err(csv_err)?;
            let line = record.position().map_or(0, |p| p.line());
            let mut req = CreateRequest {
                kind: file_kind
                    .map(|k| k.as_str().to_string())
                    .unwrap_or_default(),
                ..CreateRequest::default()
            };
            let mut fields = Map::new();
            let mut custom = Map::new();
            for (i, cell) in record.iter().enumerate() {
                let col = i as u64 + 1;
                let text = std::str::from_utf8(cell).map_err(|e| {
                    FileError::at(
                        line,
                        Some(col),
                        format!(
                            "invalid UTF-8 at byte {} of the cell (files must be UTF-8)",
                            e.valid_up_to() + 1
                        ),
                    )
                })?;
                if text.is_empty() {
                    continue;
                }
                let name = columns.get(i).map(String::as_str).unwrap_or("");
                match name {
                    "kind" => req.kind = text.trim().to_string(),
                    "id" => req.id = Some(text.trim().to_string()),
                    "flags" => {
                        req.flags = text
                            .split(|c: char| c == ';' || c.is_whitespace())
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    }
                    n => match n.strip_prefix("custom.") {
                        Some(c) => {
                            custom.insert(c.to_string(), Json::String(text.to_string()));
                        }
                        None => {
                            fields.insert(n.to_string(), Json::String(text.to_string()));
                        }
                    },
                }
            }
            req.fields = fields;
            req.custom = custom;
            let edit = self.record(&req, line).map_err(|e| {
                let column = e
                    .field
                    .as_ref()
                    .and_then(|f| columns.iter().position(|c| c == f).map(|p| p as u64 + 1));
                FileError::input(line, column, e)
            })?;
            edits.extend(edit);
        }
        Ok(edits)
    }
}

/// The kind named by a CSV file stem: `contacts`, `contact-2024`,
/// `Organizations_export`, ...
fn kind_from_stem(stem: &str) -> Option<Kind> {
    let first = stem
        .split(['-', '_', '.', ' '])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let singular = first.strip_suffix('s').unwrap_or(&first);
    singular.parse().ok().or_else(|| first.parse().ok())
}

/// Reads one line (up to and including `\n`) into `buf`; false at end of
/// file. Fails without reading further once the line exceeds `max` bytes.
fn read_line_bounded(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(!buf.is_empty());
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if buf.len() + take > max + 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line longer than the limit of {max} bytes"),
            ));
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            return Ok(true);
        }
    }
}

/// A reader that fails once a physical line exceeds `max` bytes, so the CSV
/// parser never buffers an unbounded line.
struct BoundedLines<R> {
    inner: R,
    max: usize,
    current: usize,
    line: u64,
}

impl<R: Read> Read for BoundedLines<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        for b in &out[..n] {
            if *b == b'\n' {
                self.current = 0;
                self.line += 1;
            } else {
                self.current += 1;
                if self.current > self.max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "line {} is longer than the limit of {} bytes",
                            self.line, self.max
                        ),
                    ));
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_file_names() {
        assert_eq!(kind_from_stem("contacts"), Some(Kind::Contact));
        assert_eq!(kind_from_stem("contact-2024"), Some(Kind::Contact));
        assert_eq!(
            kind_from_stem("Organizations_export"),
            Some(Kind::Organization)
        );
        assert_eq!(kind_from_stem("organisations"), Some(Kind::Organization));
        assert_eq!(kind_from_stem("transactions.2024"), Some(Kind::Transaction));
        assert_eq!(kind_from_stem("flags"), Some(Kind::Flag));
        assert_eq!(kind_from_stem("export"), None);
    }

    #[test]
    fn bounded_lines() {
        let mut r = BufReader::with_capacity(4, &b"ab\ncdefgh\n"[..]);
        let mut buf = Vec::new();
        assert!(read_line_bounded(&mut r, &mut buf, 4).unwrap());
        assert_eq!(buf, b"ab\n");
        buf.clear();
        assert!(read_line_bounded(&mut r, &mut buf, 4).is_err());
        let mut r = BufReader::new(&b"abcd"[..]);
        buf.clear();
        assert!(read_line_bounded(&mut r, &mut buf, 4).unwrap());
        buf.clear();
        assert!(!read_line_bounded(&mut r, &mut buf, 4).unwrap());
    }

    /// A crash after the durable batch but before the move to done/ makes
    /// the restarted daemon ingest the same file again: nothing is created
    /// twice. The same content dropped later (another modification time)
    /// is a new import.
    #[tokio::test]
    async fn a_file_ingested_again_after_a_crash_creates_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4 << 20).unwrap();
        let import = dir.path().join(IMPORT_DIR);
        std::fs::create_dir_all(&import).unwrap();
        let file = import.join("people.ndjson");
        let body = "{\"kind\":\"contact\",\"fields\":{\"first_name\":\"Ada\"}}\n\n\
                    {\"kind\":\"flag\",\"fields\":{\"name\":\"vip\"}}\n";
        std::fs::write(&file, body).unwrap();
        let importer = Importer::new(store.clone(), &import);
        let count = || store.list(None, None, 100).unwrap().len();
        assert_eq!(importer.ingest(&file).await.unwrap(), 2);
        assert_eq!(count(), 2);
        // The "restart": the file is still in import/.
        assert_eq!(importer.ingest(&file).await.unwrap(), 0);
        assert_eq!(count(), 2, "records created twice");
        let later = std::time::SystemTime::now() + Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(importer.ingest(&file).await.unwrap(), 2);
        assert_eq!(
            count(),
            4,
            "a later drop of the same content is a new import"
        );
    }

    #[test]
    fn ndjson_lines_decode_or_fail_with_a_position() {
        assert!(matches!(decode_ndjson_line(1, b"  \r\n"), Ok(None)));
        let req = decode_ndjson_line(2, b"{\"kind\":\"contact\"}\n").unwrap();
        assert_eq!(req.map(|r| r.kind), Some("contact".to_string()));
        let e = decode_ndjson_line(3, b"{\"kind\":\xff}").unwrap_err();
        assert_eq!((e.line, e.column), (Some(3), Some(9)));
        let e = decode_ndjson_line(4, b"{\"kind\": 5}").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("invalid record"), "{}", e.message);
    }

    #[test]
    fn candidate_names() {
        assert!(is_candidate_name("contacts.csv"));
        for n in [
            ".hidden.csv",
            "x.csv.tmp",
            "x.part",
            "x.csv~",
            ".x.swp",
            "x.csv.error",
            // The folder's own subfolders are never refused into failed/.
            "done",
            "failed",
        ] {
            assert!(!is_candidate_name(n), "{n}");
        }
    }
}
