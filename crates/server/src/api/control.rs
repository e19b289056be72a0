//! Steering runs: pause, resume, cancel and retry. A run executing here is
//! steered in-process at once; every change is also kept in the store (run
//! state `control`), which is how a run executing in another process — a
//! `sluice run`, `sluice worker`s, another server — is steered: each of
//! them reads it with its heartbeat, within about a second.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_engine::{executing, read_control, requester, write_control, ControlState};
use sluice_spec::Job;
use sluice_store::{RunMeta, Store, STATE_FINISHED};

use super::failures::Select;
use super::{find, run_view};
use crate::error::{ApiError, ApiResult};
use crate::runner::{self, Launch};
use crate::state::AppState;

/// How long a cancel waits for the run to stop before answering.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

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

/// Who the stored control says asked.
fn by() -> String {
    requester("sluice serve (API)")
}

/// Records `what` as the run's control (a run executing here has it applied
/// already; the record tells `sluice status` and the other processes).
async fn record(state: &AppState, run_id: String, what: ControlState) -> ApiResult<()> {
    state
        .with_store(move |store| {
            write_control(store, &run_id, what, &by())?;
            Ok(())
        })
        .await
}

/// Steers a run this server does not execute through the store: it must be
/// executing in some other process (a fresh `running` heartbeat).
async fn elsewhere(state: &AppState, run: RunMeta, what: ControlState) -> ApiResult<()> {
    let verb = match what {
        ControlState::Run => "resumed",
        ControlState::Pause => "paused",
        ControlState::Cancel => "cancelled",
    };
    state
        .with_store(move |store| {
            if run.state == STATE_FINISHED {
                return Err(ApiError::conflict(format!(
                    "run {} has finished, so it cannot be {verb}; POST /v1/runs/{}/retry re-runs its failed items",
                    run.id, run.id
                )));
            }
            if executing(store, &run.id)?.is_empty() {
                return Err(ApiError::conflict(format!(
                    "run {} is not executing (state {}; no process is working on it), so it cannot be {verb}; POST /v1/runs/{}/resume continues it",
                    run.id, run.state, run.id
                )));
            }
            let cancelling = read_control(store, &run.id)?
                .is_some_and(|c| c.state == ControlState::Cancel);
            if cancelling && what != ControlState::Cancel {
                return Err(ApiError::conflict(format!(
                    "run {} is being cancelled, so it cannot be {verb}; resume it once it has stopped",
                    run.id
                )));
            }
            write_control(store, &run.id, what, &by())?;
            Ok(())
        })
        .await
}

/// `POST /v1/runs/{id}/pause`.
pub(crate) async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    match locate(&state, id.clone()).await? {
        Here::Running(live) => {
            live.control.pause();
            record(&state, live.id.clone(), ControlState::Pause).await?;
        }
        Here::Idle(run) => elsewhere(&state, run, ControlState::Pause).await?,
    }
    Ok(Json(run_view(&state, id, false).await?))
}

/// `POST /v1/runs/{id}/cancel`: the run ends `interrupted`; resume finishes it.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    match locate(&state, id.clone()).await? {
        Here::Running(live) => {
            live.cancel();
            record(&state, live.id.clone(), ControlState::Cancel).await?;
            let _ = tokio::time::timeout(CANCEL_WAIT, live.finished()).await;
        }
        Here::Idle(run) => {
            let run_id = run.id.clone();
            elsewhere(&state, run, ControlState::Cancel).await?;
            // The processes on it see the cancel with their next beat and
            // give the calls on the wire the grace period.
            let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let run_id = run_id.clone();
                let stopped = state
                    .with_store(move |store| Ok(executing(store, &run_id)?.is_empty()))
                    .await?;
                if stopped {
                    break;
                }
            }
        }
    }
    Ok((StatusCode::OK, Json(run_view(&state, id, false).await?)).into_response())
}

/// `POST /v1/runs/{id}/resume`: un-pauses a paused run (here or in another
/// process), or continues an interrupted one here (its pending items are sent).
pub(crate) async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    match locate(&state, id.clone()).await? {
        Here::Running(live) => {
            live.control.resume();
            record(&state, live.id.clone(), ControlState::Run).await?;
            Ok(Json(run_view(&state, id, false).await?).into_response())
        }
        Here::Idle(run) => {
            if run.state == STATE_FINISHED {
                return Err(ApiError::conflict(format!(
                    "run {} has finished; POST /v1/runs/{}/retry re-runs its failed items",
                    run.id, run.id
                )));
            }
            let run_id = run.id.clone();
            let elsewhere_now = state
                .with_store(move |store| Ok(!executing(store, &run_id)?.is_empty()))
                .await?;
            if elsewhere_now {
                elsewhere(&state, run, ControlState::Run).await?;
                return Ok(Json(run_view(&state, id, false).await?).into_response());
            }
            restart(&state, run, None).await
        }
    }
}

/// `?step=`, `?group=` or `?retryable=true` of a retry.
#[derive(Debug, Deserialize)]
pub(crate) struct RetryQuery {
    step: Option<String>,
    /// A cause's id (as `GET /v1/runs/{id}/failures` lists them).
    group: Option<String>,
    /// Only failures another attempt may cure (429s, 5xx, time-outs, …).
    #[serde(default)]
    retryable: bool,
}

/// What a restart re-queues first.
enum Requeue {
    /// Failed items (of one step, or all).
    Step(Option<String>),
    /// The failed items a selection names.
    Select(Select),
}

/// `POST /v1/runs/{id}/retry[?step=S|?group=G|?retryable=true]`: re-queues
/// failed items (all, one step's, one cause's, or the retryable ones) and
/// runs them.
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
        Here::Idle(run) => {
            let requeue = match (query.step, query.group, query.retryable) {
                (None, Some(group), false) => Requeue::Select(Select::Group(group)),
                (None, None, true) => Requeue::Select(Select::Retryable),
                (step, None, false) => Requeue::Step(step),
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_query",
                        "give one of step=, group= and retryable=true, or none (every failure)",
                    ))
                }
            };
            restart(&state, run, Some(requeue)).await
        }
    }
}

/// Starts `run` again (resume), first re-queuing failures when `retry` is set.
async fn restart(state: &AppState, run: RunMeta, retry: Option<Requeue>) -> ApiResult<Response> {
    let config = state.config().clone();
    let run_id = run.id.clone();
    let (loaded, reopened) = state
        .with_store(move |store| {
            if !executing(store, &run.id)?.is_empty() {
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
            let loaded = saved_job(store, &run, &config)?;
            let reopened = match retry {
                Some(Requeue::Step(step)) => Some(store.reset_failed_steps(&run.id, step.as_deref())?),
                Some(Requeue::Select(select)) => {
                    let units = super::failures::selected(store, &run.id, &select)?;
                    if units.is_empty() {
                        return Err(ApiError::conflict(format!(
                            "run {} has no failed items of that kind to retry; GET /v1/runs/{}/failures lists them",
                            run.id, run.id
                        )));
                    }
                    let reopened = store.reset_failed_units(&run.id, &units)?;
                    sluice_engine::keep_failed(store, &run.id)?;
                    Some(reopened)
                }
                None => None,
            };
            // Asked to run: a pause or cancel left from before is over.
            let held = read_control(store, &run.id)?.is_some_and(|c| c.state != ControlState::Run);
            if held {
                write_control(store, &run.id, ControlState::Run, &by())?;
            }
            Ok((loaded, reopened))
        })
        .await?;
    let (job, confined) = loaded;
    let (files, notices) = match confined {
        Some((files, notices)) => (Some(files), notices),
        None => (None, Vec::new()),
    };
    let started = runner::start(
        state,
        Launch {
            job,
            saved: None,
            fresh: false,
            stream: None,
            scratch: None,
            files,
            notices,
            written: Default::default(),
        },
    )
    .await;
    let (_, meta) = match started {
        Ok(started) => started,
        Err(e) => {
            // Not started: a later resume must not find the flag of this retry.
            let id = run_id.clone();
            let _ = state
                .with_store(move |store| {
                    store.put_run_state(&id, sluice_engine::KEEP_FAILED, &json!(false))?;
                    Ok(())
                })
                .await;
            return Err(e);
        }
    };
    if meta.id != run_id {
        tracing::warn!("resumed {} as {}", run_id, meta.id);
    }
    let mut view = run_view(state, meta.id, false).await?;
    if let Some(n) = reopened {
        view["requeued"] = json!(n);
    }
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// A job to run again, with its confinement and notices when it was
/// submitted over HTTP (`None`: a job file of the user's own).
type Loaded = (Job, Option<(sluice_engine::FileAccess, Vec<String>)>);

/// The job a run ran: kept by a server at submission (held to this
/// server's policy again), else the job file named in its settings (runs
/// started with `sluice run JOB.toml`: the user's own, as they wrote it).
fn saved_job(
    store: &mut dyn Store,
    run: &RunMeta,
    config: &crate::state::ServerConfig,
) -> ApiResult<Loaded> {
    let workdir = &config.workdir;
    if sluice_engine::RunMode::of(&run.settings) != sluice_engine::RunMode::Job {
        return Err(ApiError::conflict(format!(
            "run {} is a quick-mode run (a JSONL file and --url); resume or retry it with `sluice run` / `sluice retry`",
            run.id
        )));
    }
    if let Some(saved) = runner::saved(store, &run.id)? {
        let (job, notices, files) = saved.load_confined(config)?;
        return Ok((job, Some((files, notices))));
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
    let job = sluice_spec::load(std::path::Path::new(path), &sets)
        .map_err(|e| ApiError::invalid_job(e, workdir))?;
    Ok((job, None))
}
