//! Serving blob contents to a partner.

use std::io::Read;
use std::sync::Arc;

use orgsync_protocol::model::{FieldKey, ObjectId, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::connection::Event;
use super::Shared;
use crate::store::{BlobFiles, BlobHash};
use crate::transport::TrustedPeer;

/// Bytes per blob chunk: the protocol's largest (receivers of every
/// version accept up to `MAX_BLOB_CHUNK`), so the per-chunk work (a read,
/// a frame, an AEAD call, an event, a file write) is paid 16 times less
/// often than with the 64 KiB chunks of earlier versions.
pub(super) const CHUNK: usize = orgsync_protocol::codec::MAX_BLOB_CHUNK;
/// Chunks of one transfer read ahead of the network (4 MiB: the disk read
/// of the next chunks overlaps sealing and sending this one).
const READ_AHEAD: usize = 4;

/// A blob is sent only when the résumé object that references it is one
/// the policy shares with this partner, and the content is here.
pub(super) fn may_send(
    shared: &Shared,
    peer: &TrustedPeer,
    hash: &BlobHash,
    object: ObjectId,
) -> bool {
    let Ok(Some(obj)) = shared.store.get(object) else {
        return false;
    };
    let references =
        matches!(obj.get(&FieldKey::Std("hash".into())), Some(Value::Hash(h)) if h == hash);
    references
        && !obj.is_deleted()
        && shared.policy.shares(&peer.org, &obj)
        && matches!(shared.store.blob_files().size(hash), Ok(Some(_)))
}

/// Reads the blob from `offset` in chunks, never more than `READ_AHEAD`
/// chunks ahead of the stream writer (each chunk holds a permit until it
/// is written).
pub(super) fn serve(
    files: BlobFiles,
    hash: BlobHash,
    offset: u64,
    events: mpsc::Sender<Event>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(READ_AHEAD));
        let opened = tokio::task::spawn_blocking(move || files.open_read(&hash, offset)).await;
        let (mut file, total_len) = match opened {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return report_failure(&events, hash, e).await,
            Err(e) => return report_failure(&events, hash, e).await,
        };
        let mut pos = offset.min(total_len);
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let want = usize::try_from((total_len - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
            let read = tokio::task::spawn_blocking(move || {
                // `read_to_end` fills spare capacity without zeroing it
                // first, as `vec![0; want]` would (a memset per chunk).
                let mut buf = Vec::with_capacity(want);
                let got = (&mut file).take(want as u64).read_to_end(&mut buf)?;
                if got < want {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("blob file ended {} bytes early", want - got),
                    ));
                }
                Ok((file, buf))
            })
            .await;
            let (f, data) = match read {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => return report_failure(&events, hash, e).await,
                Err(e) => return report_failure(&events, hash, e).await,
            };
            file = f;
            let len = data.len() as u64;
            let ev = Event::BlobChunk {
                hash,
                offset: pos,
                total_len,
                data,
                permit,
            };
            if events.send(ev).await.is_err() {
                return;
            }
            pos += len;
            if pos >= total_len {
                return;
            }
        }
    })
}

/// Tells the connection that serving `hash` stopped because of `error` (a
/// read failure or a lost blocking task); the transfer ends there.
async fn report_failure(events: &mpsc::Sender<Event>, hash: BlobHash, error: impl ToString) {
    // The connection may already be gone; then nobody needs to know.
    let _ = events
        .send(Event::BlobReadFailed {
            hash,
            error: error.to_string(),
        })
        .await;
}
