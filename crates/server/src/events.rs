//! `GET /v1/runs/{id}/events`: progress of any run as server-sent events —
//! runs executed here from the engine's counters, runs started elsewhere
//! (the CLI against the same store) from their workers' heartbeats. One
//! `progress` event per tick while the run runs, then `end`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::api::run_view;
use crate::api::stream::{event, progress_of, sse_from};
use crate::error::ApiResult;
use crate::state::AppState;

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

/// The events handler.
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    // A missing run is a 404 now, not an empty stream.
    let first = run_view(&state, id.clone(), true).await?;
    let run_id = first["id"].as_str().unwrap_or(&id).to_owned();
    let (tx, rx) = mpsc::channel(16);
    let tick = Duration::from_millis(state.config().tick_ms);
    tokio::spawn(async move {
        let mut view = first;
        let mut ticks = tokio::time::interval(tick);
        loop {
            let active = is_active(&view);
            let name = if active { "progress" } else { "end" };
            if tx.send(event(name, &progress_of(&view))).await.is_err() || !active {
                return;
            }
            ticks.tick().await;
            match run_view(&state, run_id.clone(), true).await {
                Ok(v) => view = v,
                Err(_) => return,
            }
        }
    });
    Ok(sse_from(rx).into_response())
}
