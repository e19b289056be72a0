//! Submissions that wait: `?wait=stream` answers with server-sent events —
//! `run` first, one `item` per unit as soon as its outcome is committed,
//! `progress` every tick, `summary` last — and `?wait=all` answers once with
//! every result in input order. Either way the run belongs to the server:
//! a client that goes away only drops its stream, and so does one too slow
//! to keep up (its outcomes are not queued without limit; an `error` event
//! with code `too_slow` says where its results are).

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::run_view;
use crate::error::{ApiError, ApiResult};
use crate::runner::{self, Ending, ItemSink, Launch, StreamMsg};
use crate::sse::{self, frame};
use crate::state::AppState;

/// Events buffered towards a client (past them, and `sse::SLOW` later, a
/// client that reads nothing is dropped).
const EVENT_BUFFER: usize = 256;

/// `POST /v1/runs?wait=stream`.
pub(crate) async fn submit_streaming(state: AppState, mut launch: Launch) -> ApiResult<Response> {
    let (sink, mut items_rx) = ItemSink::new();
    launch.stream = Some(sink.clone());
    let (_, meta) = runner::start(&state, launch).await?;
    let (outbox, response) = sse::channel(EVENT_BUFFER);
    let tick = Duration::from_millis(state.config().tick_ms);
    let run_id = meta.id.clone();
    tokio::spawn(async move {
        let first = json!({"id": meta.id, "name": meta.name, "state": "running"});
        if !outbox.push(frame("run", &first)).await {
            return;
        }
        let mut ticks = tokio::time::interval(tick);
        ticks.tick().await;
        loop {
            tokio::select! {
                msg = items_rx.recv() => match msg {
                    Some(StreamMsg::Items(items)) => {
                        sink.taken(items.len());
                        for item in &items {
                            let line = sluice_engine::unit_result(item);
                            if !outbox.push(frame("item", &line)).await {
                                return; // The client left (or was too slow); the run goes on.
                            }
                        }
                    }
                    Some(StreamMsg::Lagged) => {
                        let message = format!(
                            "this client read the events more slowly than the run produced them, so its stream ends here; the run goes on: its results are at /v1/runs/{run_id}/results"
                        );
                        let error = json!({"error": {"code": "too_slow", "message": message}});
                        let _ = outbox.push(frame("error", &error)).await;
                        return;
                    }
                    Some(StreamMsg::Done(result)) => {
                        let summary = match result {
                            Ok(report) => match run_view(&state, run_id.clone(), true).await {
                                Ok(mut view) => {
                                    view["interrupted"] = json!(report.interrupted);
                                    view
                                }
                                Err(e) => json!({"error": {"code": e.code, "message": e.message}}),
                            },
                            Err(message) => json!({"error": {"code": "run_failed", "message": message}}),
                        };
                        let _ = outbox.push(frame("summary", &summary)).await;
                        return;
                    }
                    None => return,
                },
                _ = ticks.tick() => {
                    if let Ok(view) = run_view(&state, run_id.clone(), false).await {
                        if !outbox.push(frame("progress", &progress_of(&view))).await {
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok(response)
}

/// The part of a run's view a progress event carries.
pub(crate) fn progress_of(view: &Value) -> Value {
    json!({
        "id": view["id"],
        "state": view["state"],
        "control": view["control"],
        "counts": view["counts"],
        "live": view["live"],
        "recommendations": view["recommendations"],
        "top_errors": view["top_errors"],
        "error_groups": view["error_groups"],
        "workers": view["workers"],
        "summary": view["summary"],
    })
}

/// `POST /v1/runs?wait=all`: one answer once the run has ended.
pub(crate) async fn submit_waiting(state: AppState, launch: Launch) -> ApiResult<Response> {
    let (live, meta) = runner::start(&state, launch).await?;
    if let Ending::Error(message) = live.finished().await {
        return Err(ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "run_failed",
            message,
        ));
    }
    let run_id = meta.id.clone();
    let results = state
        .with_store(move |store| {
            let mut lines = Vec::new();
            store.for_each_item(&run_id, &mut |item| {
                lines.push(sluice_engine::unit_result(&item));
                Ok(())
            })?;
            Ok(lines)
        })
        .await?;
    let view = run_view(&state, meta.id, true).await?;
    Ok(Json(json!({ "run": view, "results": results })).into_response())
}
