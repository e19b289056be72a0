//! Job-file runs: units (item × matrix) streamed through the steps, each step
//! limited by its provider, every step outcome recorded, resumable per step.

mod affinity;
mod batch;
mod check;
mod choose;
mod claimed;
mod estimate;
mod execute;
pub(crate) mod export;
mod kinds;
mod lanes;
mod local;
mod offload;
mod output;
mod place;
mod plan;
mod probe;
mod runner;
mod sharing;
mod show;
mod tasks;
mod timing;
mod units;
mod window;

use std::sync::Arc;

use sluice_spec::{InputSource, Job, Webhook};
use sluice_store::{ItemRecord, ItemStatus, StoreLocation};

use crate::clock::now_ms;
use crate::control::RunHooks;
use crate::dispatch::{self, Local, Resume};
use crate::error::{Error, Result};
use crate::inputs::{self, BadItem};
use crate::lease::ExecutorLease;
use crate::lifecycle::{limited_name, open_run, RunStart};
use crate::progress::Progress;
use crate::report::RunReport;
use crate::settings::{JobSettings, RunSettings};
use crate::writer::Message;
use local::InputUnits;
use runner::{run_unit, UnitContext};
use tasks::{Started, Tasks};
use units::{Combos, UnitIds};

pub use check::{CheckReport, TemplateProblem};
pub use choose::Offload;
pub(crate) use claimed::dispatch as claimed_dispatch;
use claimed::hold_stopped;
pub use claimed::DEFAULT_LEASE;
pub use estimate::{Bound, Estimate, Measured, StepLatency};
pub(crate) use execute::{check_reachable, close, execute, new_runtime, setup, Env, Setup, Work};
pub use export::unit_result;
pub(crate) use offload::for_worker as worker_offload;
pub use plan::{plan, Plan, PlanOptions, ProviderPlan, StepPlan};
pub use probe::probe;
pub use show::ShownRequest;
pub(crate) use window::unit_window;
pub use window::UnitWindow;

/// How a job run was asked for (besides the job itself).
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Where runs are recorded.
    pub store: StoreLocation,
    /// Start a new run instead of resuming.
    pub fresh: bool,
    /// Record bad input entries as failed and run the rest.
    pub skip_bad: bool,
    /// The `--set` overrides the job was loaded with (kept with the run so
    /// `sluice retry` loads it the same way).
    pub sets: Vec<String>,
    /// On a shared store: how long a claimed unit stays leased without a
    /// heartbeat renewing it (a killed worker's units return after this).
    pub lease: std::time::Duration,
    /// On a shared store: queue the units and return, leaving the work to
    /// `sluice worker` processes.
    pub queue_only: bool,
    /// Run only the first N units, as a run of its own (`NAME-firstN`), so
    /// that the full run still sends them.
    pub limit: Option<u64>,
    /// Stop sending when a step's first answers all fail the same way no
    /// retry can fix (a wrong key, URL or model); `--no-early-stop` turns
    /// it off.
    pub early_stop: bool,
}

/// Runs (or resumes) `job` on a single-threaded runtime (see quick mode for why).
pub fn run_job(job: &Job, cfg: &JobConfig, progress: Arc<Progress>) -> Result<RunReport> {
    run_job_with(job, cfg, progress, RunHooks::default())
}

/// [`run_job`] steered and watched from outside: `hooks` may pause, resume
/// and cancel it, learn its id once it is open, and see each batch of
/// outcomes once committed. Blocks the calling thread until the run ends.
pub fn run_job_with(
    job: &Job,
    cfg: &JobConfig,
    progress: Arc<Progress>,
    mut hooks: RunHooks,
) -> Result<RunReport> {
    let setup = setup(job, &progress)?;
    let Setup {
        env: Env {
            vars: env,
            value: env_value,
        },
        runtime,
        lanes,
        ..
    } = &setup;
    let spool = cfg.store.local_dir().join("inputs");
    let prepared = runtime
        .block_on(inputs::prepare(
            &job.input.source,
            &lanes.direct().client,
            &spool,
            env_value,
        ))
        .map_err(|e| Error::Input(e.to_string()))?;
    let input_name = input_name(&job.input.source);
    if prepared.bad_count > 0 && !cfg.skip_bad {
        let first = &prepared.bad[0];
        return Err(bad_item(&input_name, first, prepared.bad_count - 1));
    }
    // Ids are checked before anything is sent: a template error or a repeated
    // id is an input error like a malformed line.
    let ids = UnitIds::check(job, &prepared, &input_name)?;
    // Every step's templates against the items (one item per shape: the
    // full check is `plan`'s), before anything is sent.
    let (report, _) = check::whole_input(job, &prepared, env, true, cfg.limit)?;
    if !report.is_clean() {
        return Err(Error::Templates(Box::new(report)));
    }
    check_reachable(runtime, lanes)?;

    let combos = Combos::new(job);
    let mut offload = offload::decide_all(job, &prepared)?;
    let mut store = cfg.store.open()?;
    let mut source = format!("job:{}|{}", job.path.display(), prepared.source_key);
    let mut run_name = job.name.clone();
    if let Some(n) = cfg.limit {
        if cfg.store.is_shared() {
            return Err(Error::Config(
                "--limit runs the first units in this process, not on a shared store's queue; \
                 use a SQLite store (--store FILE) for the trial run"
                    .into(),
            ));
        }
        // A run of its own: the full run (another source) still sends these units.
        source = format!("{source}|first={n}");
        run_name = limited_name(&job.name, n);
    }
    let mut settings = RunSettings::Job(JobSettings {
        job: job.path.display().to_string(),
        sets: cfg.sets.clone(),
        input: prepared.source_key.clone(),
        skip_bad: cfg.skip_bad,
        limit: cfg.limit,
        steps: job.steps.iter().map(|s| s.name.clone()).collect(),
        matrix: job.matrix.iter().map(|a| a.name.clone()).collect(),
        streamed: job
            .steps
            .iter()
            .filter(|s| s.stream)
            .map(|s| s.name.clone())
            .collect(),
        embeds: job
            .steps
            .iter()
            .filter(|s| kinds::of(&s.kind).transport() == kinds::Transport::Model { chat: false })
            .map(|s| s.name.clone())
            .collect(),
    })
    .to_json();
    if cfg.store.is_shared() {
        // Several processes share the run: calls go live (the batch API's
        // submissions are kept per process).
        offload = offload::live_only(offload);
    }
    crate::settings::KeptWithRun::put_offload(&mut settings, &offload);
    let mut total = prepared.total * combos.len() as u64;
    if let Some(n) = cfg.limit {
        total = total.min(n);
    }
    // On a shared store several processes may work this run: its units go on
    // the store's queue and are claimed from there, by this process too.
    let shared_run = cfg.store.is_shared();
    // Otherwise one process executes it: taken before the run is found or
    // created, so of two started together one is refused.
    let lease = if shared_run {
        None
    } else {
        Some(ExecutorLease::acquire(
            &cfg.store,
            &mut *store,
            &source,
            cfg.lease,
        )?)
    };
    let (run, resumed) = if shared_run {
        let source = claimed::Source {
            key: source,
            settings: settings.clone(),
            prepared: &prepared,
            ids: &ids,
            combos: &combos,
        };
        claimed::create_or_join(&mut *store, job, cfg, source, &progress)?
    } else {
        open_run(&mut *store, cfg.fresh, source, run_name, settings.clone())?
    };
    if let Some(on_open) = hooks.on_open.take() {
        on_open(&run);
    }
    if resumed && offload::keep_earlier(&mut offload, &run.settings) {
        crate::settings::KeptWithRun::put_offload(&mut settings, &offload);
        store.update_settings(&run.id, &settings)?;
    }
    let mut keep_failed = false;
    let done = if shared_run {
        // Counted while the units were queued.
        progress.snapshot().skipped
    } else {
        // A trial run (--limit) lists its first units only.
        let first = cfg
            .limit
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let mut rows = units::input_rows(&prepared, &ids, &combos)?.take(first);
        // A retry of chosen failures keeps the run's other failures failed
        // (a new input list makes every failure pending again).
        let kept = match resumed && crate::retry_scope::take(&mut *store, &run.id)? {
            true => crate::retry_scope::failures(&mut *store, &run.id)?,
            false => Vec::new(),
        };
        keep_failed = !kept.is_empty();
        let done = store.replace_inputs(&run.id, &mut rows)?.done;
        if keep_failed {
            store.write_batch(&run.id, &kept)?;
        }
        done
    };
    store.set_total(&run.id, total)?;
    store.set_state(&run.id, "running", None)?;
    Progress::add(&progress.total, total);
    if let Some(on_start) = hooks.on_start.take() {
        let input = input_name.clone();
        on_start(&RunStart::new(
            &run,
            input,
            resumed,
            total,
            done,
            lease.as_ref().and_then(ExecutorLease::took_over),
        ));
    }
    let control = hooks.control.clone().unwrap_or_default();
    if let Some(lease) = &lease {
        lease.guard(control.clone());
    }
    // Started on purpose: an earlier cancel is over, a pause holds.
    let seen = crate::control::attach(&mut *store, &run.id, &control, true)?;
    if shared_run && cfg.queue_only {
        let progress = progress.snapshot();
        return Ok(RunReport {
            run_id: run.id,
            resumed,
            interrupted: false,
            progress,
            breakers: Vec::new(),
            notes: Vec::new(),
            errors: Vec::new(),
        });
    }
    let run_id = run.id.clone();
    let (location, limit) = (&cfg.store, window::unit_window(job).units);
    let work = Work {
        job,
        location,
        run: &run,
        resumed,
        progress: &progress,
        offload: &offload,
        control: control.clone(),
        seen,
        on_commit: hooks.on_commit.take(),
        files: hooks.files.take(),
        early_stop: cfg.early_stop,
    };
    let executed = if shared_run {
        let lease = cfg.lease;
        execute(work, setup, |shared| {
            claimed::dispatch(shared, store, run_id, limit, lease)
        })?
    } else {
        let lookup = resumed.then_some(store);
        let units = InputUnits::new(&prepared, &ids, &combos, cfg.limit)?;
        execute(work, setup, |shared| {
            let resume = Resume::new(lookup, run_id, keep_failed);
            let source = Local::new(units, resume, shared.progress.clone());
            dispatch_units(shared, source, limit)
        })?
    };
    let closed = close(
        location, run, resumed, &control, executed, &offload, &progress,
    );
    drop(lease);
    Ok(closed?.0)
}

/// The webhook's target: headers rendered (they may use `env`), the HMAC key
/// read from its variable (never stored or shown).
fn webhook_target(hook: &Webhook, env: &minijinja::Value) -> Result<crate::webhook::WebhookTarget> {
    let mut headers = Vec::new();
    for (name, t) in &hook.headers {
        headers.push((
            name.clone(),
            t.render(env).map_err(|e| Error::Config(e.to_string()))?,
        ));
    }
    let secret = match &hook.secret_env {
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(v.into_bytes()),
            _ => {
                return Err(Error::Config(format!(
                "[webhook] secret_env names {var}, which is not set; export {var}=<secret> first"
            )))
            }
        },
        None => None,
    };
    Ok(crate::webhook::WebhookTarget {
        url: hook.url.clone(),
        headers,
        secret,
        max_retries: hook.retries.max,
        backoff: sluice_limit::Backoff {
            base_ms: hook.retries.base.as_millis() as u64,
            cap_ms: hook.retries.cap.as_millis() as u64,
        },
        timeout: std::time::Duration::from_secs(30),
    })
}

/// Model names a job may send: literal `model` fields and every matrix value
/// (a templated model usually comes from the matrix).
pub(crate) fn model_names(job: &Job) -> Vec<String> {
    let mut names: Vec<String> = job
        .steps
        .iter()
        .filter_map(|s| kinds::of(&s.kind).model().map(|m| m.source().to_owned()))
        .filter(|m| !m.contains("{{"))
        .collect();
    for axis in &job.matrix {
        names.extend(
            axis.values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned)),
        );
    }
    names.sort();
    names.dedup();
    names
}

/// The variables the job lists in `env`, read now; a missing one stops the run.
pub(crate) fn job_env(job: &Job) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut env = serde_json::Map::new();
    for name in &job.env {
        match std::env::var(name) {
            Ok(v) => {
                env.insert(name.clone(), serde_json::Value::String(v));
            }
            Err(_) => {
                return Err(Error::Config(format!(
                "the job lists {name} in env = [...], but it is not set; export {name}=... first"
            )))
            }
        }
    }
    Ok(env)
}

fn input_name(source: &InputSource) -> String {
    match source {
        InputSource::File { path, .. } => path.display().to_string(),
        InputSource::Stdin { .. } => "-".into(),
        InputSource::Glob { pattern } => pattern.clone(),
        InputSource::Url { url, .. } => url.clone(),
    }
}

pub(crate) fn bad_item(input: &str, bad: &BadItem, others: u64) -> Error {
    Error::BadLine {
        path: input.to_string(),
        line: bad.line.unwrap_or(bad.position + 1),
        message: match bad.line {
            Some(_) => bad.message.clone(),
            None => format!("item {}: {}", bad.position + 1, bad.message),
        },
        others,
    }
}

/// Runs the units `source` yields, `limit` at once (more when a provider's
/// rate needs it); returns whether the run was interrupted.
pub(crate) async fn dispatch_units(
    shared: Arc<UnitContext>,
    source: impl dispatch::Source<Work = Started>,
    limit: usize,
) -> Result<bool> {
    let run = dispatch::Run {
        progress: shared.progress.clone(),
        stopping: shared.stopping.clone(),
        control: shared.control.clone(),
        tx: shared.tx.clone(),
    };
    let window = window::growing(&shared.job, limit);
    let tasks = Tasks::new(shared, limit);
    dispatch::run(&run, source, tasks, window).await
}

/// Runs one unit in its own task holding `permit`, then records it (under
/// its lease `token` for a unit claimed from a shared queue) and fires the
/// item webhook.
pub(crate) fn spawn_unit(
    shared: &Arc<UnitContext>,
    unit: runner::Unit,
    permit: tokio::sync::OwnedSemaphorePermit,
    token: Option<i64>,
) {
    let task_shared = shared.clone();
    let place = Arc::new(place::Place::new(permit, shared.batches.floating.clone()));
    let mut unit = unit;
    unit.place = Some(place.clone());
    tokio::spawn(async move {
        if let Some(record) = run_unit(&task_shared, unit).await {
            let hook = task_shared.item_hook.as_ref().map(|target| {
                let output = record
                    .response
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok())
                    .unwrap_or(serde_json::Value::Null);
                let event = crate::webhook::item_event(
                    &task_shared.run_id,
                    &record.item_id,
                    record.status.as_str(),
                    record.error.as_deref(),
                    &output,
                );
                (target, event, record.item_id.clone())
            });
            let message = match token {
                Some(token) => Message::Fenced(record, token),
                None => Message::Record(record),
            };
            let _ = task_shared.tx.send(message).await;
            if let Some((target, event, unit_id)) = hook {
                notify(&task_shared, target, &event, &unit_id).await;
            }
        }
        drop(place);
    });
}

/// Delivers one item webhook and records how it went as a `(webhook)` step
/// of the unit; a failure never fails the item.
async fn notify(
    shared: &UnitContext,
    target: &crate::webhook::WebhookTarget,
    event: &serde_json::Value,
    unit_id: &str,
) {
    let started = now_ms();
    let delivery = crate::webhook::deliver(&shared.lanes.direct().client, target, event).await;
    let (status, attempts, code, error) = match delivery {
        crate::webhook::Delivery::Delivered { attempts, status } => {
            (ItemStatus::Done, attempts, Some(status), None)
        }
        crate::webhook::Delivery::Failed { attempts, error } => {
            Progress::add(&shared.progress.webhook_failures, 1);
            (ItemStatus::Failed, attempts, None, Some(error))
        }
    };
    let record = sluice_store::StepRecord {
        unit_id: unit_id.to_string(),
        step: "(webhook)".into(),
        part: -1,
        hash: 0,
        status,
        attempts,
        throttled: 0,
        status_code: code,
        prompt_tokens: None,
        completion_tokens: None,
        latency_ms: (now_ms() - started).max(0) as u64,
        started_at: started,
        finished_at: now_ms(),
        error,
        output: None,
    };
    let _ = shared.tx.send(Message::Step(record)).await;
}

/// The failed record of a bad input entry's unit.
pub(crate) fn bad_item_record(unit_id: String, idx: u64, bad: &BadItem) -> ItemRecord {
    let where_ = match bad.line {
        Some(line) => format!("line {line}"),
        None => format!("item {}", bad.position + 1),
    };
    failed_record(
        unit_id,
        idx,
        0,
        format!("invalid_input: {where_}: {}", bad.message),
    )
}

/// The record of a unit that failed before any call.
pub(crate) fn failed_record(unit_id: String, idx: u64, hash: u64, error: String) -> ItemRecord {
    ItemRecord::failed_before_sending(unit_id, idx, hash, error, now_ms())
}
