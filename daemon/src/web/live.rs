//! Live updates: `GET /events`, a server-sent-events stream for the
//! signed-in session, and `/static/live.js`, the small script that applies
//! it (the inbox count in the navigation, partner status on Partners, sync
//! progress). Pages work the same without the script.
//!
//! The stream sends:
//! - `event: status` with `{"inbox", "not_acked", "partners": [{"account",
//!   "connected", "last_sync", "not_acked", "lag"}]}` at once, then whenever
//!   it changes (checked every second);
//! - `event: change` with the same JSON line as `orgsync events` for each
//!   committed change (local or from a partner);
//! - a comment every 15 s so proxies keep the connection open.
//!
//! It ends when the console stops or the session is signed out.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value as Json};
use tokio::sync::{broadcast, watch};

use super::pages::{current, utc};
use super::WebState;
use crate::store::StoreEvent;

const SCRIPT: &str = include_str!("live.js");
/// How often the status is recomputed without a change event (inbox
/// arrivals and connection changes are not store events).
const TICK: Duration = Duration::from_secs(1);
/// Keep-alive comment interval.
const KEEPALIVE: Duration = Duration::from_secs(15);

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/events", get(events))
        .route("/static/live.js", get(script))
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// A lag in plain words ("12 s", "3 min").
pub(super) fn lag_text(ms: u64) -> String {
    match ms {
        0 => "none".into(),
        ms if ms < 1000 => format!("{ms} ms"),
        ms if ms < 120_000 => format!("{} s", ms / 1000),
        ms if ms < 7_200_000 => format!("{} min", ms / 60_000),
        ms => format!("{} h", ms / 3_600_000),
    }
}

/// The status snapshot the stream sends (see the module docs).
pub(super) fn status(st: &WebState) -> Json {
    let inbox = st
        .gov
        .as_ref()
        .and_then(|g| crate::governance::inbox::list(g, None).ok())
        .map_or(0, |l| l.len());
    let partners: Vec<Json> = st
        .partners
        .partners()
        .iter()
        .map(|p| {
            json!({
                "account": p.org.account_number(),
                "connected": if p.connected { "yes" } else { "no" },
                "last_sync": p.last_sync_ms.map(utc).unwrap_or_else(|| "never".into()),
                "not_acked": p.not_acked,
                "lag": lag_text(p.lag_ms),
            })
        })
        .collect();
    let not_acked: u64 = st
        .partners
        .partners()
        .iter()
        .filter(|p| p.state != "revoked")
        .map(|p| p.not_acked)
        .sum();
    json!({ "inbox": inbox, "not_acked": not_acked, "partners": partners })
}

/// Sync progress in plain words, as the Partners page and the script show it.
pub(super) fn progress_text(not_acked: u64) -> String {
    if not_acked == 0 {
        "Every change is acknowledged by every partner.".into()
    } else {
        format!("{not_acked} change(s) not yet acknowledged by partners.")
    }
}

struct Stream {
    st: WebState,
    sid: String,
    live: Option<broadcast::Receiver<StoreEvent>>,
    stop: Option<watch::Receiver<bool>>,
    last: Option<Json>,
    out: VecDeque<String>,
    tick: tokio::time::Interval,
    keepalive: tokio::time::Interval,
}

impl Stream {
    fn check_status(&mut self) {
        let s = status(&self.st);
        if self.last.as_ref() != Some(&s) {
            self.out.push_back(format!("event: status\ndata: {s}\n\n"));
            self.last = Some(s);
        }
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(x) = self.out.pop_front() {
                return Some(Bytes::from(x));
            }
            // A signed-out or expired session stops receiving at once.
            self.st.sessions.get(&self.sid)?;
            let stopped = async {
                match self.stop.as_mut() {
                    Some(s) => {
                        let _ = s.wait_for(|v| *v).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let event = async {
                match self.live.as_mut() {
                    Some(l) => l.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stopped => return None,
                ev = event => match ev {
                    Ok(ev) => {
                        let line = crate::api::event_json(&ev);
                        self.out.push_back(format!("event: change\ndata: {line}\n\n"));
                    }
                    // The status is recomputed at the next tick, not per
                    // change: a burst of writes costs one inbox scan a second.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => self.live = None,
                },
                _ = self.tick.tick() => self.check_status(),
                _ = self.keepalive.tick() => self.out.push_back(": keep-alive\n\n".into()),
            }
        }
    }
}

async fn events(State(st): State<WebState>, headers: HeaderMap) -> Response {
    let a = match current(&st, &headers) {
        Ok(a) => a,
        Err(_) => return (StatusCode::UNAUTHORIZED, "sign in first").into_response(),
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut s = Stream {
        live: st.store.as_ref().map(|s| s.subscribe_events()),
        stop: st.stop.clone(),
        sid: a.sid,
        st,
        last: None,
        out: VecDeque::new(),
        tick,
        keepalive,
    };
    // Reconnect after 2 s when the connection drops.
    s.out.push_back("retry: 2000\n\n".into());
    let stream = futures_util::stream::unfold(s, |mut s| async move {
        s.next().await.map(|b| (Ok::<_, Infallible>(b), s))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
