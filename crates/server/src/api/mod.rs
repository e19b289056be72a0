//! The REST API under `/v1`: submit, list and read runs, pause, resume,
//! cancel and retry them, and read their results and items.

mod control;
pub(crate) mod results;
pub(crate) mod stream;
pub(crate) mod submit;

pub(crate) use control::{cancel, pause, resume, retry};

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_store::{RunMeta, Store};

use crate::error::{ApiError, ApiResult};
use crate::runner::{self, Launch};
use crate::state::AppState;
use crate::view;

/// The body of a request, or a JSON error for one too large or unreadable.
pub(crate) fn body(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is larger than this server accepts (see --max-body); send fewer items per run",
            )
        } else {
            ApiError::bad_request("invalid_body", format!("the request body could not be read: {e}"))
        }
    })
}

/// The run `key` (id or name) in the store, or 404.
pub(crate) fn find(store: &mut dyn Store, key: &str) -> ApiResult<RunMeta> {
    store
        .find_run(key)?
        .ok_or_else(|| ApiError::not_found(format!("no run {key:?}; list runs with GET /v1/runs")))
}

/// `GET /v1/runs`: every run, newest first.
pub(crate) async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let st = state.clone();
    let runs = state
        .with_store(move |store| {
            let runs = store.list_runs()?;
            runs.iter()
                .map(|s| {
                    // Read for running runs only: few, and the list stays one query else.
                    let control = view::control_of(store, &s.run)?;
                    let here = st.live(&s.run.id);
                    Ok(view::summary(
                        &s.run,
                        &s.counts,
                        here.as_deref(),
                        control.as_ref(),
                    ))
                })
                .collect::<ApiResult<Vec<_>>>()
        })
        .await?;
    Ok(Json(json!({ "runs": runs })))
}

/// `GET /v1/runs/{id}`: one run with counts, rates, ETA, per-step and
/// per-provider stats and advice.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(run_view(&state, id, true).await?))
}

/// The view of run `key` (store reads on a blocking thread).
pub(crate) async fn run_view(state: &AppState, key: String, top_errors: bool) -> ApiResult<Value> {
    let st = state.clone();
    state
        .with_store(move |store| {
            let run = find(store, &key)?;
            let here = st.live(&run.id);
            view::view(store, &run, here.as_deref(), top_errors)
        })
        .await
}

/// `?wait=` of a submission.
#[derive(Debug, Deserialize)]
pub(crate) struct SubmitQuery {
    /// `none` (default: 202 at once), `stream` (server-sent events), `all` (one answer at the end).
    #[serde(default)]
    wait: Option<String>,
}

/// `POST /v1/runs`: starts a run from a job file or JSON with inline items.
pub(crate) async fn submit(
    State(state): State<AppState>,
    Query(query): Query<SubmitQuery>,
    headers: HeaderMap,
    payload: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let bytes = body(payload)?;
    let wait = query.wait.as_deref().unwrap_or("none");
    if !matches!(wait, "none" | "stream" | "all") {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("wait={wait:?} is not known; use wait=stream, wait=all, or leave it out"),
        ));
    }
    let json = submit::is_json(headers.get("content-type").and_then(|v| v.to_str().ok()));
    let workdir = state.config().workdir.clone();
    let spool = state.config().store.local_dir().join("inputs");
    let (job, saved) =
        tokio::task::spawn_blocking(move || submit::parse(&bytes, json, &workdir, &spool))
            .await??;
    match wait {
        "stream" => stream::submit_streaming(state, job, saved).await,
        "all" => stream::submit_waiting(state, job, saved).await,
        _ => {
            let (_, meta) = runner::start(
                &state,
                Launch {
                    job,
                    saved: Some(saved),
                    fresh: true,
                    stream: None,
                },
            )
            .await?;
            let view = run_view(&state, meta.id.clone(), false).await?;
            let location = format!("/v1/runs/{}", meta.id);
            Ok((StatusCode::ACCEPTED, [("location", location)], Json(view)).into_response())
        }
    }
}
