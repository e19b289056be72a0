//! The REST API under `/v1`: submit, list and read runs, pause, resume,
//! cancel and retry them, and read their results and items.

pub(crate) mod form;
pub(crate) mod results;
pub(crate) mod stream;
pub(crate) mod submit;

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_spec::Job;
use sluice_store::{RunMeta, Store};

use crate::error::{ApiError, ApiResult};
use crate::runner::{self, Launch};
use crate::state::AppState;
use crate::view;

/// 413: the body is past the server's limit.
pub(crate) fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        "the request body is larger than this server accepts (see --max-body); send fewer items or files per run",
    )
}

/// The body of a request, or a JSON error for one too large or unreadable.
pub(crate) fn body(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
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
            Ok(runs
                .iter()
                .map(|s| view::summary(&s.run, &s.counts, st.live(&s.run.id).as_deref()))
                .collect::<Vec<_>>())
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
    let workdir = state.config().workdir.clone();
    let spool = state.config().store.local_dir().join("inputs");
    let base = scratch.as_ref().map(|s| s.path().to_path_buf());
    let (job, saved) = tokio::task::spawn_blocking(move || {
        submit::parse(&bytes, json, &workdir, &spool, base.as_deref())
    })
    .await??;
    let launch = Launch {
        job,
        saved: Some(saved),
        fresh: true,
        stream: None,
        scratch,
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

/// What a control call needs to know about the run.
enum Here {
    /// Executing in this server.
    Running(std::sync::Arc<runner::LiveRun>),
    /// Not executing here.
    Idle(RunMeta),
}

async fn locate(state: &AppState, key: String) -> ApiResult<Here> {
    let run = state.with_store(move |store| find(store, &key)).await?;
    Ok(match state.live(&run.id).filter(|r| !r.is_finished()) {
        Some(live) => Here::Running(live),
        None => Here::Idle(run),
    })
}

fn not_here(run: &RunMeta, what: &str) -> ApiError {
    ApiError::conflict(format!(
        "run {} is not executing in this server (state {}), so it cannot be {what}; runs started with `sluice run` are paused or stopped where they run",
        run.id, run.state
    ))
}

/// `POST /v1/runs/{id}/pause`.
pub(crate) async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    match locate(&state, id.clone()).await? {
        Here::Running(live) => live.control.pause(),
        Here::Idle(run) => return Err(not_here(&run, "paused")),
    }
    Ok(Json(run_view(&state, id, false).await?))
}

/// `POST /v1/runs/{id}/cancel`: the run ends `interrupted`; resume finishes it.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let live = match locate(&state, id.clone()).await? {
        Here::Running(live) => live,
        Here::Idle(run) => return Err(not_here(&run, "cancelled")),
    };
    live.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), live.finished()).await;
    Ok((StatusCode::OK, Json(run_view(&state, id, false).await?)).into_response())
}

/// `POST /v1/runs/{id}/resume`: un-pauses a paused run, or continues an
/// interrupted one (its pending items are sent).
pub(crate) async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    match locate(&state, id.clone()).await? {
        Here::Running(live) => {
            live.control.resume();
            Ok(Json(run_view(&state, id, false).await?).into_response())
        }
        Here::Idle(run) => {
            if run.state == sluice_store::STATE_FINISHED {
                return Err(ApiError::conflict(format!(
                    "run {} has finished; POST /v1/runs/{}/retry re-runs its failed items",
                    run.id, run.id
                )));
            }
            restart(&state, run, None).await
        }
    }
}

/// `?step=` of a retry.
#[derive(Debug, Deserialize)]
pub(crate) struct RetryQuery {
    step: Option<String>,
}

/// `POST /v1/runs/{id}/retry[?step=S]`: re-queues failed items (or one
/// step's failures) and runs them.
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<RetryQuery>,
) -> ApiResult<Response> {
    match locate(&state, id).await? {
        Here::Running(live) => Err(ApiError::conflict(format!(
            "run {} is still running; retry it once it has ended",
            live.id
        ))),
        Here::Idle(run) => restart(&state, run, Some(query.step)).await,
    }
}

/// Starts `run` again (resume), first re-queuing failures when `retry` is set.
async fn restart(
    state: &AppState,
    run: RunMeta,
    retry: Option<Option<String>>,
) -> ApiResult<Response> {
    let workdir = state.config().workdir.clone();
    let run_id = run.id.clone();
    let (job, reopened) = state
        .with_store(move |store| {
            let now = sluice_engine::now_ms();
            let busy = store
                .workers(&run.id)?
                .iter()
                .any(|w| sluice_engine::worker_state(w, now) == "running");
            if busy {
                return Err(ApiError::conflict(format!(
                    "run {} is being worked on by another process; wait for it to stop",
                    run.id
                )));
            }
            if store.latest_run_for_source(&run.source)?.map(|r| r.id) != Some(run.id.clone()) {
                return Err(ApiError::conflict(format!(
                    "run {} is not the latest run of its job, so it cannot be resumed (a newer run took its place)",
                    run.id
                )));
            }
            let job = saved_job(store, &run, &workdir)?;
            let reopened = match retry {
                Some(step) => Some(store.reset_failed_steps(&run.id, step.as_deref())?),
                None => None,
            };
            Ok((job, reopened))
        })
        .await?;
    let (_, meta) = runner::start(
        state,
        Launch {
            job,
            saved: None,
            fresh: false,
            stream: None,
            scratch: None,
        },
    )
    .await?;
    if meta.id != run_id {
        tracing::warn!("resumed {} as {}", run_id, meta.id);
    }
    let mut view = run_view(state, meta.id, false).await?;
    if let Some(n) = reopened {
        view["requeued"] = json!(n);
    }
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// The job a run ran: kept by this server at submission, else the job file
/// named in its settings (runs started with `sluice run JOB.toml`).
fn saved_job(store: &mut dyn Store, run: &RunMeta, workdir: &std::path::Path) -> ApiResult<Job> {
    let mode = run.settings.get("mode").and_then(Value::as_str);
    if mode != Some("job") {
        return Err(ApiError::conflict(format!(
            "run {} is a quick-mode run (a JSONL file and --url); resume or retry it with `sluice run` / `sluice retry`",
            run.id
        )));
    }
    if let Some(job) = runner::submitted_job(store, &run.id, workdir) {
        return job;
    }
    let path = run
        .settings
        .get("job")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::conflict(format!("run {} does not say which job file it ran", run.id))
        })?;
    let sets: Vec<String> = run
        .settings
        .get("sets")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    sluice_spec::load(std::path::Path::new(path), &sets)
        .map_err(|e| submit::invalid_job(e, workdir))
}
