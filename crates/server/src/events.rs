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

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::Value;
use tokio::sync::watch;

use crate::api::run_view;
use crate::api::stream::progress_of;
use crate::error::{ApiError, ApiResult};
use crate::feeds::Frame;
use crate::sse::{self, Outbox};
use crate::state::AppState;

/// Events waiting for one client (a second each: a client this far behind
/// skips to the latest, and past `sse::SLOW` is dropped).
const CLIENT_BUFFER: usize = 8;

/// Whether a view shows a run that still moves (executed here, or with a
/// live worker elsewhere).
fn is_active(view: &Value) -> bool {
    let state = view["state"].as_str().unwrap_or("");
    let working = view["workers"]
        .as_array()
        .is_some_and(|w| w.iter().any(|w| w["state"] == "running"));
    view["executed_here"] == true
        || (state == "running" && working)
        || matches!(state, "paused" | "pausing")
}

/// The feed of run `key` (an id, or a name: its latest run when the feed
/// starts): its view once a tick, until the run ends or no client is left.
async fn feed(state: AppState, key: String, tx: Arc<watch::Sender<Frame>>) {
    let id = key.clone();
    let mut run = key.clone();
    let mut tracker = crate::history::Tracker::default();
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
                let mut data = progress_of(&view);
                if active {
                    if tracker.base_spent.is_none() {
                        let run_id = run.clone();
                        let base = state
                            .with_store(move |store| crate::history::ended_spend(store, &run_id))
                            .await;
                        tracker.base_spent = Some(base.unwrap_or(0.0));
                    }
                    let now = sluice_engine::now_ms();
                    // Other processes (workers of a shared run): all of them.
                    let sample = if view["live"]["source"] == "worker" {
                        let run_id = run.clone();
                        state
                            .with_store(move |store| Ok(store.workers(&run_id)?))
                            .await
                            .ok()
                            .and_then(|beats| crate::history::sample_of_beats(now, &beats))
                    } else {
                        crate::history::sample_of_live(now, &view["live"])
                    };
                    let point = tracker.point(sample);
                    data["point"] = serde_json::json!(point);
                }
                Frame::Event {
                    bytes: sse::frame(name, &data),
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
    let mut rx = state.inner.feeds.join_or_start(&key, |tx| {
        tokio::spawn(feed(state.clone(), key.clone(), tx));
    });
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
