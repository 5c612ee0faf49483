//! `GET /v1/events?after=SEQ`: an NDJSON stream of committed changes.
//!
//! Each line is `{"seq", "id", "kind", "origin", "deleted"}`: `origin` is
//! `"local"` or the partner's account number; `seq` is the position in the
//! local change log for local writes and `null` for changes applied from a
//! partner (those are not in the local log). With `after`, local log
//! entries after that sequence are replayed first, then the stream follows
//! live changes; without it, only new changes are streamed.
//!
//! If the reader falls so far behind that live events were dropped, a line
//! `{"lagged": N}` says how many were missed; local entries are then
//! replayed again from the log, so only partner changes can be missed.

use std::collections::{HashMap, VecDeque};
use std::io;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use serde_json::{json, Value as Json};
use tokio::sync::{broadcast, watch};

use super::{ApiResult, ApiState};
use crate::json::InputError;
use crate::store::{Origin, Store, StoreEvent};

/// Log entries read per page while replaying.
const PAGE: usize = 512;

/// The JSON line of one change event.
pub fn event_json(e: &StoreEvent) -> Json {
    let origin = match e.origin {
        Origin::Local => "local".to_string(),
        Origin::Partner(org) => org.account_number(),
    };
    json!({
        "seq": e.seq,
        "id": e.id.to_string(),
        "kind": e.kind.as_str(),
        "origin": origin,
        "deleted": e.deleted,
    })
}

struct Cursor {
    store: Store,
    /// The newest local sequence already sent.
    last: u64,
    /// Replay the log before taking live events.
    replay: bool,
    live: broadcast::Receiver<StoreEvent>,
    stop: watch::Receiver<bool>,
    out: VecDeque<Json>,
}

impl Cursor {
    /// Loads the next page of the local log into `out`; false when caught up.
    fn replay_page(&mut self) -> Result<bool, io::Error> {
        // Each object written since, once, at its latest local write.
        let page = self
            .store
            .load_page(self.last, PAGE)
            .map_err(|e| io::Error::other(e.to_string()))?;
        if page.entries.is_empty() {
            return Ok(false);
        }
        for (seq, obj) in page.entries {
            self.last = seq;
            self.out.push_back(event_json(&StoreEvent {
                origin: Origin::Local,
                seq: Some(seq),
                id: obj.id,
                kind: obj.kind,
                deleted: obj.is_deleted(),
            }));
        }
        Ok(true)
    }

    async fn next_line(&mut self) -> Option<Result<Bytes, io::Error>> {
        loop {
            if let Some(line) = self.out.pop_front() {
                let mut text = line.to_string();
                text.push('\n');
                return Some(Ok(Bytes::from(text)));
            }
            if *self.stop.borrow() {
                return None;
            }
            if self.replay {
                match self.replay_page() {
                    Ok(true) => continue,
                    Ok(false) => self.replay = false,
                    Err(e) => return Some(Err(e)),
                }
            }
            tokio::select! {
                ev = self.live.recv() => match ev {
                    Ok(ev) => {
                        if let Some(seq) = ev.seq {
                            // Already sent by the replay.
                            if seq <= self.last {
                                continue;
                            }
                            self.last = seq;
                        }
                        self.out.push_back(event_json(&ev));
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.out.push_back(json!({"lagged": n}));
                        self.replay = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.stop.changed() => return None,
            }
        }
    }
}

pub(crate) async fn events(
    State(st): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    // Subscribe before reading the head so nothing committed in between is lost.
    let live = st.store.subscribe_events();
    let (last, replay) = match q.get("after") {
        None => (st.store.log_head(), false),
        Some(a) => (
            a.parse::<u64>().map_err(|_| {
                InputError::field(
                    "after",
                    format!("after must be a log sequence number, got {a:?}"),
                )
            })?,
            true,
        ),
    };
    let cursor = Cursor {
        store: st.store.clone(),
        last,
        replay,
        live,
        stop: st.stop.clone(),
        out: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        c.next_line().await.map(|item| (item, c))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}
