//! The REST API under `/v1`: submit, list and read runs, pause, resume,
//! cancel and retry them, and read their results and items.

mod control;
pub(crate) mod failures;
pub(crate) mod form;
pub(crate) mod history;
pub(crate) mod results;
pub(crate) mod stream;
pub(crate) mod submit;

pub(crate) use control::{cancel, pause, resume, retry};

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::StatusCode;
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
            ApiError::too_large()
        } else {
            ApiError::bad_request(
                "invalid_body",
                format!("the request body could not be read: {e}"),
            )
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
                    let beats = view::beats_of(store, &s.run)?;
                    let here = st.live(&s.run.id);
                    Ok(view::summary(
                        &s.run,
                        &s.counts,
                        here.as_deref(),
                        control.as_ref(),
                        &beats,
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

/// `POST /v1/runs`: starts a run from a job file or JSON with inline items,
/// or from a form carrying one of those and the files it works on.
pub(crate) async fn submit(
    State(state): State<AppState>,
    Query(query): Query<SubmitQuery>,
    request: Request,
) -> ApiResult<Response> {
    let wait = query.wait.as_deref().unwrap_or("none").to_owned();
    if !matches!(wait.as_str(), "none" | "stream" | "all") {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("wait={wait:?} is not known; use wait=stream, wait=all, or leave it out"),
        ));
    }
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    submit::check_type(content_type.as_deref())?;
    let (bytes, json, scratch) = if form::is_multipart(content_type.as_deref()) {
        let multipart = Multipart::from_request(request, &()).await.map_err(|e| {
            ApiError::bad_request(
                "invalid_multipart",
                format!("the form cannot be read: {}", e.body_text()),
            )
        })?;
        let form = form::read(multipart, &state.inner.uploads).await?;
        (form.job, form.json, Some(form.scratch))
    } else {
        let bytes = body(Bytes::from_request(request, &()).await)?;
        (bytes, submit::is_json(content_type.as_deref()), None)
    };
    let config = state.config().clone();
    let spool = runner::store_dir(&config).join("inputs");
    let base = scratch.as_ref().map(|s| s.path().to_path_buf());
    let parsed = tokio::task::spawn_blocking(move || {
        let parsed = submit::parse(
            &bytes,
            json,
            &config.workdir,
            &spool,
            base.as_deref(),
            &config.jobs,
        )?;
        let files = runner::readable(&config, base.as_deref());
        // Its templates' file functions read only where its uploads may.
        parsed.job.files.confine(files.roots());
        Ok::<_, ApiError>((parsed, files))
    })
    .await?;
    let (parsed, files) = parsed?;
    let launch = Launch {
        job: parsed.job,
        saved: Some(parsed.saved),
        fresh: true,
        stream: None,
        scratch,
        files: Some(files),
        notices: parsed.notices,
        written: parsed.written,
    };
    match wait.as_str() {
        "stream" => stream::submit_streaming(state, launch).await,
        "all" => stream::submit_waiting(state, launch).await,
        _ => {
            let (_, meta) = runner::start(&state, launch).await?;
            let view = run_view(&state, meta.id.clone(), false).await?;
            let location = format!("/v1/runs/{}", meta.id);
            Ok((StatusCode::ACCEPTED, [("location", location)], Json(view)).into_response())
        }
    }
}
