//! `GET /v1/runs/{id}/events`: progress of any run as server-sent events —
//! runs executed here from the engine's counters, runs started elsewhere
//! (the CLI against the same store) from their workers' heartbeats. One
//! `progress` event per tick while the run runs, then `end`.
//!
//! Every client of one run reads one feed: a task computes the run's view
//! once a tick and publishes its framed event; each client's own small task
//! forwards the latest to its bounded outbox. So a thousand dashboards on a
//! run cost one view a tick and a few kilobytes each, not a thread each; a
//! client that falls behind skips to the latest event, and one that reads
//! nothing is dropped (see `sse`). The feed ends when its run does or when
//! its last client has gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;

use crate::api::run_view;
use crate::api::stream::progress_of;
use crate::error::{ApiError, ApiResult};
use crate::sse::{self, Outbox};
use crate::state::AppState;

/// Events waiting for one client (a second each: a client this far behind
/// skips to the latest, and past `sse::SLOW` is dropped).
const CLIENT_BUFFER: usize = 8;

/// What a feed publishes.
#[derive(Clone)]
enum Frame {
    /// Nothing computed yet.
    Starting,
    /// The run could not be read (a 404 for a missing run).
    Failed(ApiError),
    /// An event; the last one (`end`) closes the streams.
    Event { bytes: Bytes, last: bool },
}

/// The feeds of this server, by the run's id or name as clients ask for it.
#[derive(Default)]
pub(crate) struct Feeds {
    by_run: Mutex<HashMap<String, Arc<watch::Sender<Frame>>>>,
}

impl Feeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<watch::Sender<Frame>>>> {
        self.by_run.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver of run `id`'s feed, started if none runs.
    fn join_or_start(&self, state: &AppState, id: &str) -> watch::Receiver<Frame> {
        let mut feeds = self.lock();
        if let Some(tx) = feeds.get(id) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(Frame::Starting);
        let tx = Arc::new(tx);
        feeds.insert(id.to_owned(), tx.clone());
        tokio::spawn(feed(state.clone(), id.to_owned(), tx));
        rx
    }

    /// Takes `tx` out (new clients start a new feed), if it is still the
    /// feed of `id` and, with `when_idle`, nobody reads it.
    fn retire(&self, id: &str, tx: &Arc<watch::Sender<Frame>>, when_idle: bool) -> bool {
        let mut feeds = self.lock();
        let ours = feeds.get(id).is_some_and(|t| Arc::ptr_eq(t, tx));
        // Under the lock, so no client joins between the count and the removal.
        if ours && (!when_idle || tx.receiver_count() == 0) {
            feeds.remove(id);
            return true;
        }
        !ours
    }
}

/// Whether a view shows a run that still moves (executed here, or with a
/// live worker elsewhere).
fn is_active(view: &Value) -> bool {
    let state = view["state"].as_str().unwrap_or("");
    let working = view["workers"]
        .as_array()
        .is_some_and(|w| w.iter().any(|w| w["state"] == "running"));
    view["executed_here"] == true || (state == "running" && working) || state == "paused"
}

/// The feed of run `key` (an id, or a name: its latest run when the feed
/// starts): its view once a tick, until the run ends or no client is left.
async fn feed(state: AppState, key: String, tx: Arc<watch::Sender<Frame>>) {
    let id = key.clone();
    let mut run = key.clone();
    let mut ticks = tokio::time::interval(Duration::from_millis(state.config().tick_ms));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let frame = match run_view(&state, run.clone(), true).await {
            Ok(view) => {
                // A name follows the run it named at first.
                if let Some(found) = view["id"].as_str() {
                    run = found.to_owned();
                }
                let active = is_active(&view);
                let name = if active { "progress" } else { "end" };
                Frame::Event {
                    bytes: sse::frame(name, &progress_of(&view)),
                    last: !active,
                }
            }
            Err(e) => Frame::Failed(e),
        };
        let last = !matches!(frame, Frame::Event { last: false, .. });
        if last {
            state.inner.feeds.retire(&id, &tx, false);
            tx.send_replace(frame);
            return;
        }
        tx.send_replace(frame);
        if state.inner.feeds.retire(&id, &tx, true) {
            return;
        }
    }
}

/// The events handler.
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Response> {
    // No store read per client: the feed's first view answers a missing
    // run with a 404 (not an empty stream), and the rest with events.
    let mut rx = state.inner.feeds.join_or_start(&state, &key);
    let first = rx
        .wait_for(|f| !matches!(f, Frame::Starting))
        .await
        .map(|f| f.clone())
        .map_err(|_| ApiError::internal("the event feed", "it ended before its first event"))?;
    let (bytes, last) = match first {
        Frame::Event { bytes, last } => (bytes, last),
        Frame::Failed(e) => return Err(e),
        Frame::Starting => unreachable!("waited past it"),
    };
    let (outbox, response) = sse::channel(CLIENT_BUFFER);
    if outbox.push(bytes).await && !last {
        tokio::spawn(forward(rx, outbox));
    }
    Ok(response)
}

/// Forwards a feed's events to one client until the last, or until the
/// client is gone or dropped.
async fn forward(mut rx: watch::Receiver<Frame>, outbox: Outbox) {
    while rx.changed().await.is_ok() {
        let frame = rx.borrow_and_update().clone();
        let Frame::Event { bytes, last } = frame else {
            return;
        };
        if !outbox.push(bytes).await || last {
            return;
        }
    }
}
