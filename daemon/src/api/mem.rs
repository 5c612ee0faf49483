//! [`MemBackend`]: an in-memory [`Backend`] with a real blob directory.
//!
//! It keeps objects and the change log in memory (nothing survives a
//! restart) and stores blobs as files, so the API, the CLI and the drop
//! folder can be exercised without the persistent store. The daemon itself
//! uses the store-backed implementation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use orgsync_protocol::clock::Clock;
use orgsync_protocol::merge::apply_change;
use orgsync_protocol::model::{
    Change, FieldState, InstanceId, Kind, Object, ObjectId, OrgId, Schema, Version,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::backend::{
    Backend, BackendError, BlobInfo, BoxFuture, ChangeEvent, Identity, LocalEdit, Origin,
    PartnerStatus,
};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Inner {
    clock: Clock,
    objects: BTreeMap<ObjectId, Object>,
    log: Vec<ChangeEvent>,
    partners: Vec<PartnerStatus>,
    schema: Schema,
}

/// An in-memory backend (see the module docs). Cloning shares the state.
#[derive(Clone)]
pub struct MemBackend {
    identity: Identity,
    blob_dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
    head_tx: Arc<watch::Sender<u64>>,
}

impl MemBackend {
    /// A backend for a random organisation, keeping blobs in `blob_dir`.
    pub fn new(blob_dir: impl Into<PathBuf>) -> Self {
        let (head_tx, _) = watch::channel(0);
        MemBackend {
            identity: Identity {
                org_name: Some("Test Org".into()),
                org: OrgId(*blake3::hash(&InstanceId::random().0.to_le_bytes()).as_bytes()),
                instance: InstanceId::random(),
            },
            blob_dir: blob_dir.into(),
            inner: Arc::new(Mutex::new(Inner {
                clock: Clock::default(),
                objects: BTreeMap::new(),
                log: Vec::new(),
                partners: Vec::new(),
                schema: Schema::default(),
            })),
            head_tx: Arc::new(head_tx),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // (commit builds everything before mutating), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the custom-field schema.
    pub fn set_schema(&self, schema: Schema) {
        self.lock().schema = schema;
    }

    /// Replaces the partner list reported by the API.
    pub fn set_partners(&self, partners: Vec<PartnerStatus>) {
        self.lock().partners = partners;
    }

    /// Records a change as if applied from partner `from`.
    pub fn apply_remote(&self, change: &Change, from: OrgId) -> Result<(), BackendError> {
        let mut inner = self.lock();
        let obj = apply_change(inner.objects.get(&change.id).cloned(), change)
            .map_err(|e| BackendError::Store(e.to_string()))?;
        let deleted = obj.is_deleted();
        inner.objects.insert(change.id, obj);
        let seq = inner.log.len() as u64 + 1;
        inner.log.push(ChangeEvent {
            seq,
            id: change.id,
            kind: change.kind,
            origin: Origin::Partner(from),
            deleted,
        });
        drop(inner);
        self.head_tx.send_replace(seq);
        Ok(())
    }

    /// The path of the blob with this hash.
    fn blob_file(&self, hash: &[u8; 32]) -> PathBuf {
        self.blob_dir.join(data_encoding::HEXLOWER.encode(hash))
    }
}

impl Backend for MemBackend {
    fn identity(&self) -> Identity {
        self.identity.clone()
    }

    fn schema(&self) -> Schema {
        self.lock().schema.clone()
    }

    fn get(&self, id: ObjectId) -> Result<Option<Object>, BackendError> {
        Ok(self.lock().objects.get(&id).cloned())
    }

    fn list(
        &self,
        kind: Option<Kind>,
        after: Option<ObjectId>,
        limit: usize,
    ) -> Result<Vec<Object>, BackendError> {
        let inner = self.lock();
        let range = match after {
            Some(a) => inner
                .objects
                .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => inner.objects.range(..),
        };
        Ok(range
            .map(|(_, o)| o)
            .filter(|o| !o.is_deleted() && kind.is_none_or(|k| o.kind == k))
            .take(limit)
            .cloned()
            .collect())
    }

    fn commit(
        &self,
        edits: Vec<LocalEdit>,
    ) -> BoxFuture<'_, Result<Vec<ChangeEvent>, BackendError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            let instance = self.identity.instance;
            // Build every new object first so that a refused edit leaves
            // nothing written.
            let mut staged: BTreeMap<ObjectId, Object> = BTreeMap::new();
            let mut events = Vec::with_capacity(edits.len());
            let mut seq = inner.log.len() as u64;
            for edit in edits {
                let current = staged
                    .get(&edit.id)
                    .or_else(|| inner.objects.get(&edit.id))
                    .cloned();
                if let Some(obj) = &current {
                    if obj.kind != edit.kind {
                        return Err(BackendError::KindMismatch {
                            id: edit.id,
                            existing: obj.kind,
                            requested: edit.kind,
                        });
                    }
                }
                let mut change = Change {
                    id: edit.id,
                    kind: edit.kind,
                    fields: BTreeMap::new(),
                    deleted: None,
                };
                for (key, value) in edit.set {
                    let version = Version {
                        hlc: inner.clock.now(now_ms()),
                        instance,
                    };
                    change.fields.insert(key, FieldState { version, value });
                }
                if edit.delete {
                    change.deleted = Some(Version {
                        hlc: inner.clock.now(now_ms()),
                        instance,
                    });
                }
                let obj = apply_change(current, &change)
                    .map_err(|e| BackendError::Store(e.to_string()))?;
                seq += 1;
                events.push(ChangeEvent {
                    seq,
                    id: edit.id,
                    kind: edit.kind,
                    origin: Origin::Local,
                    deleted: obj.is_deleted(),
                });
                staged.insert(edit.id, obj);
            }
            inner.objects.extend(staged);
            inner.log.extend(events.iter().cloned());
            drop(inner);
            self.head_tx.send_replace(seq);
            Ok(events)
        })
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, BackendError> {
        let inner = self.lock();
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(inner.log.len());
        Ok(inner.log[start..].iter().take(limit).cloned().collect())
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    fn partners(&self) -> Vec<PartnerStatus> {
        self.lock().partners.clone()
    }

    fn put_blob<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<BlobInfo, BackendError>> {
        Box::pin(async move {
            let read_err = |source| BackendError::ReadFile {
                path: path.to_path_buf(),
                source,
            };
            let store_err = |e: std::io::Error| BackendError::Store(format!("blob store: {e}"));
            tokio::fs::create_dir_all(&self.blob_dir)
                .await
                .map_err(store_err)?;
            let tmp = self
                .blob_dir
                .join(format!(".tmp-{}", ObjectId::new_v7(now_ms())));
            let mut src = tokio::fs::File::open(path).await.map_err(read_err)?;
            let mut dst = tokio::fs::File::create(&tmp).await.map_err(store_err)?;
            let mut hasher = blake3::Hasher::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            let result: Result<(), BackendError> = async {
                loop {
                    let n = tokio::io::AsyncReadExt::read(&mut src, &mut buf)
                        .await
                        .map_err(read_err)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    size += n as u64;
                    dst.write_all(&buf[..n]).await.map_err(store_err)?;
                }
                dst.sync_all().await.map_err(store_err)?;
                Ok(())
            }
            .await;
            if let Err(e) = result {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
            let hash = *hasher.finalize().as_bytes();
            tokio::fs::rename(&tmp, self.blob_file(&hash))
                .await
                .map_err(store_err)?;
            Ok(BlobInfo { hash, size })
        })
    }

    fn blob_path(&self, hash: &[u8; 32]) -> Option<PathBuf> {
        let p = self.blob_file(hash);
        p.is_file().then_some(p)
    }
}
