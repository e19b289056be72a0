//! Submissions that wait: `?wait=stream` answers with server-sent events —
//! `run` first, one `item` per unit as soon as its outcome is committed,
//! `progress` every tick, `summary` last — and `?wait=all` answers once with
//! every result in input order. Either way the run belongs to the server:
//! a client that goes away only drops its stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::run_view;
use crate::error::{ApiError, ApiResult};
use crate::runner::{self, Ending, Launch, StreamMsg};
use crate::state::AppState;

/// Events buffered towards a slow client before the producer waits (the
/// outcomes themselves queue unbounded behind it: they are small, and
/// already durable).
const EVENT_BUFFER: usize = 256;

/// An SSE response fed by `rx`.
pub(crate) fn sse_from(
    rx: mpsc::Receiver<Event>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// An event named `name` with JSON `data`.
pub(crate) fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// `POST /v1/runs?wait=stream`.
pub(crate) async fn submit_streaming(state: AppState, mut launch: Launch) -> ApiResult<Response> {
    let (items_tx, mut items_rx) = mpsc::unbounded_channel();
    launch.stream = Some(items_tx);
    let (_, meta) = runner::start(&state, launch).await?;
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let tick = Duration::from_millis(state.config().tick_ms);
    let run_id = meta.id.clone();
    tokio::spawn(async move {
        let first = json!({"id": meta.id, "name": meta.name, "state": "running"});
        if tx.send(event("run", &first)).await.is_err() {
            return;
        }
        let mut ticks = tokio::time::interval(tick);
        ticks.tick().await;
        loop {
            tokio::select! {
                msg = items_rx.recv() => match msg {
                    Some(StreamMsg::Items(items)) => {
                        for item in &items {
                            let line = sluice_engine::unit_result(item);
                            if tx.send(event("item", &line)).await.is_err() {
                                return; // The client left; the run goes on.
                            }
                        }
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
                        let _ = tx.send(event("summary", &summary)).await;
                        return;
                    }
                    None => return,
                },
                _ = ticks.tick() => {
                    if let Ok(view) = run_view(&state, run_id.clone(), false).await {
                        if tx.send(event("progress", &progress_of(&view))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok(sse_from(rx).into_response())
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
