//! Working a run once it is open: the writer thread and heartbeats, the
//! shared state of its unit tasks, the dispatcher that hands units out (from
//! the input, or claimed from a shared store's queue, with limits held
//! together with the other processes), and what is recorded after the last
//! unit; plus the checks and runtime every run starts with.

use std::sync::{Arc, Mutex};

use sluice_spec::{Job, WebhookOn};
use sluice_store::{RunMeta, StoreLocation};
use tokio::sync::Semaphore;

use super::batch::Batches;
use super::choose::Offload;
use super::lanes::Lanes;
use super::runner::UnitContext;
use super::webhook_target;
use crate::early_stop::FirstCalls;
use crate::error::{Error, Result};
use crate::preflight::preflight;
use crate::progress::Progress;
use crate::settings::KeptWithRun;
use crate::stopping::Stopping;
use crate::writer::Writer;

/// A provider none of whose base URLs answers stops the run before anything
/// is sent; one dead URL of a pool is only a warning (its breaker will keep
/// calls away from it).
pub(crate) fn check_reachable(runtime: &tokio::runtime::Runtime, lanes: &Lanes) -> Result<()> {
    for lane in lanes.all() {
        let mut first_error = None;
        let mut reachable = 0;
        for base in lane.base_urls() {
            let endpoint = sluice_provider::Endpoint::parse(base, http::Method::POST)
                .map_err(|e| Error::Config(e.to_string()))?;
            match runtime.block_on(preflight(&endpoint)) {
                Ok(()) => reachable += 1,
                Err(e) => {
                    tracing::warn!("provider {}: {e}", lane.name);
                    first_error.get_or_insert(e);
                }
            }
        }
        if let (0, Some(e)) = (reachable, first_error) {
            return Err(e);
        }
    }
    Ok(())
}

/// The single-threaded runtime a run works on (see quick mode for why).
pub(crate) fn new_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start the async runtime: {e}")))
}

/// The environment variables a job lists, as read and as template values.
pub(crate) struct Env {
    pub(crate) vars: serde_json::Map<String, serde_json::Value>,
    pub(crate) value: minijinja::Value,
}

/// What every executor of a job (`sluice run`, `sluice worker`) sets up
/// first: the job's variables, its runtime, a lane per provider, each
/// registered with the run's statistics, and the tokenizer tables its models
/// need, building meanwhile (waited for before dispatch starts).
pub(crate) struct Setup {
    pub(crate) env: Env,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) lanes: Lanes,
    pub(crate) tokenizers: crate::tokens::Warmup,
}

/// Sets up `job` for a run counted by `progress`; fails when a variable or
/// a provider's key is missing, or the runtime does not start.
pub(crate) fn setup(job: &sluice_spec::Job, progress: &Progress) -> Result<Setup> {
    let vars = super::job_env(job)?;
    // Built while the rest is set up and the input prepared.
    let tokenizers = crate::tokens::warm_up(super::model_names(job));
    let value = minijinja::Value::from(minijinja::value::Serde(serde_json::json!({ "env": vars })));
    let runtime = new_runtime()?;
    let lanes = Lanes::new(progress.engine(), job, &value, crate::fair::new_tenant())?;
    for lane in lanes.all() {
        progress.stats.add_provider(&lane.name, &lane.share);
    }
    Ok(Setup {
        env: Env { vars, value },
        runtime,
        lanes,
        tokenizers,
    })
}

/// What [`execute`] works on.
pub(crate) struct Work<'a> {
    pub(crate) job: &'a Job,
    pub(crate) location: &'a StoreLocation,
    pub(crate) run: &'a RunMeta,
    /// An earlier invocation worked the run: look for recorded steps.
    pub(crate) resumed: bool,
    pub(crate) progress: &'a Arc<Progress>,
    /// Live or batch, per provider.
    pub(crate) offload: &'a [(String, Offload)],
    /// Pause and cancel from outside (a server, or the store's control).
    pub(crate) control: Arc<crate::control::RunControl>,
    /// The stored control as seen when the run was opened: the writer
    /// applies changes after it.
    pub(crate) seen: Option<crate::control::StoredControl>,
    /// Sees each batch of outcomes once committed (the server's streams).
    pub(crate) on_commit: Option<crate::control::CommitHook>,
    /// Where files named at run time may be read from (`None`: anywhere).
    pub(crate) files: Option<Arc<crate::FileAccess>>,
    /// Stop when a step's first answers all fail alike ([`crate::early_stop`]).
    pub(crate) early_stop: bool,
}

/// How [`execute`] ended.
pub(crate) struct Executed {
    /// Stopped before its end: a signal, a cancel, or a halt.
    pub(crate) interrupted: bool,
    /// Endpoints whose breakers opened.
    pub(crate) breakers: Vec<crate::BreakerReport>,
    /// Why the first answers stopped the run, if they did.
    pub(crate) stopped_early: Option<String>,
}

/// Works a run: starts the writer and heartbeats, runs the units `dispatch`
/// hands out (on a shared store with limits held together with the other
/// processes), then records what is left to record; returns whether the run
/// was interrupted (by a signal, a cancel or a halt), the endpoints whose
/// breakers opened, and why it halted on its own, if it did.
pub(crate) fn execute<F, Fut>(work: Work<'_>, setup: Setup, dispatch: F) -> Result<Executed>
where
    F: FnOnce(Arc<UnitContext>) -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let Work {
        job,
        location,
        run,
        resumed,
        progress,
        offload,
        control,
        seen,
        on_commit,
        files,
        early_stop,
    } = work;
    if let Some(files) = &files {
        // data_url() and base64() read under the same confinement as uploads.
        job.files.confine(files.roots());
    }
    let Setup {
        env: Env {
            vars: env,
            value: env_value,
        },
        runtime,
        mut lanes,
        tokenizers,
    } = setup;
    // Every estimate on the dispatcher counts with tables already built.
    tokenizers.wait();
    let shared_limits = if location.is_shared() {
        let store: crate::shared_limits::SharedStore = Arc::new(Mutex::new(location.open()?));
        let limits = lanes.share(&store, &progress.engine().identity().worker_id);
        for l in &limits {
            // The first share of each provider's concurrency before any call.
            runtime.block_on(l.sync());
            runtime.spawn(l.clone().sync_loop());
        }
        limits
    } else {
        Vec::new()
    };
    let stopping = Arc::new(Stopping::default());
    let recording = Arc::new(crate::recording::Recording::default());
    let writer = Writer::start(
        location.open()?,
        run.id.clone(),
        progress.clone(),
        on_commit,
        Some(crate::control::Watch::new(control.clone(), seen)),
        stopping.clone(),
        recording.clone(),
    );
    let batched: Vec<String> = offload
        .iter()
        .filter(|(_, o)| o.batched())
        .map(|(name, _)| name.clone())
        .collect();
    let batches = if batched.is_empty() {
        Batches::none()
    } else {
        let _inside = runtime.enter();
        Batches::start(
            job,
            &lanes,
            &batched,
            &run.id,
            &job.output.dir.join(&run.id).join("batch-results"),
            location.open()?,
            stopping.clone(),
        )?
    };
    runtime.spawn(crate::heartbeat::beat_loop(
        writer.tx.clone(),
        run.id.clone(),
        progress.clone(),
        control.clone(),
    ));
    runtime.spawn(crate::lifecycle::mirror_pause(
        control.clone(),
        progress.clone(),
    ));
    let shared = Arc::new(UnitContext {
        job: Arc::new(job.clone()),
        step_slots: job
            .steps
            .iter()
            .map(|s| match (s.for_each.is_none(), s.concurrency) {
                (true, Some(n)) => Some(Arc::new(Semaphore::new(n.max(1)))),
                _ => None,
            })
            .collect(),
        lanes,
        progress: progress.clone(),
        stopping,
        tx: writer.tx.clone(),
        command_slots: Arc::new(Semaphore::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )),
        output_dir: job.output.dir.join(&run.id),
        files,
        env: serde_json::Value::Object(env),
        reader: if resumed
            || location.is_shared()
            || job.steps.iter().any(|s| s.cache_ttl.is_some())
        {
            Some(Arc::new(Mutex::new(location.open()?)))
        } else {
            None
        },
        resumed,
        run_id: run.id.clone(),
        budget_micro_usd: job.budget_usd.map(|usd| (usd * 1e6).round() as u64),
        item_hook: match &job.webhook {
            Some(hook) if hook.on == WebhookOn::Item => Some(webhook_target(hook, &env_value)?),
            _ => None,
        },
        batches,
        control,
        first_calls: job
            .steps
            .iter()
            .map(|s| FirstCalls::new(early_stop, Some(s.name.clone())))
            .collect(),
        recording,
        embed_batches: Default::default(),
    });
    let run_hook = match &job.webhook {
        Some(hook) if hook.on == WebhookOn::Run => Some(webhook_target(hook, &env_value)?),
        _ => None,
    };
    let interrupted = runtime.block_on(dispatch(shared.clone()))?;
    let breakers: Vec<crate::BreakerReport> = shared
        .lanes
        .all()
        .iter()
        .flat_map(|l| l.breaker_openings())
        .collect();
    Progress::add(
        &progress.breaker_openings,
        breakers.iter().map(|b| b.openings).sum(),
    );
    progress.stats.freeze_providers();
    let delivered = shared.batches.delivered();
    let shared_halt = shared.stopping.halted().cloned();
    drop(runtime);
    drop(shared);
    writer.finish()?;
    // Every result handed out is committed now: those batches need no fetching again.
    for (batcher, records) in delivered {
        batcher.store_records(&records);
    }
    for l in &shared_limits {
        l.leave();
    }
    if let Some(target) = &run_hook {
        // After the writer finished: the totals are everything committed.
        let done = progress.done.load(std::sync::atomic::Ordering::Relaxed);
        let failed = progress.failed.load(std::sync::atomic::Ordering::Relaxed);
        let snapshot = progress.snapshot();
        let event =
            crate::webhook::run_event(&run.id, done, failed, snapshot.remaining(), interrupted);
        let client =
            sluice_provider::Client::new(1, None).map_err(|e| Error::Config(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime(format!("cannot start the async runtime: {e}")))?;
        if let crate::webhook::Delivery::Failed { error, .. } =
            runtime.block_on(crate::webhook::deliver(&client, target, &event))
        {
            Progress::add(&progress.webhook_failures, 1);
            tracing::warn!("run webhook failed: {error}");
        }
    }
    let spent = progress.snapshot().spent_usd;
    if spent > 0.0 {
        // Kept with the run (across resumes) for `sluice status`.
        let mut store = location.open()?;
        let mut settings = store
            .find_run(&run.id)?
            .map(|r| r.settings)
            .unwrap_or_default();
        let before = KeptWithRun::of(&settings).spent_usd.unwrap_or(0.0);
        KeptWithRun::put_spent_usd(&mut settings, before + spent);
        store.update_settings(&run.id, &settings)?;
    }
    let stopped_early = match shared_halt {
        Some(crate::stopping::Halt::Systematic(why)) => Some(why),
        _ => None,
    };
    Ok(Executed {
        interrupted,
        breakers,
        stopped_early,
    })
}

/// Closes a run worked here — on a shared store for this process only, a
/// run stopped early held first for every process, as a cancel is — with
/// the endpoints whose breakers opened and the offload notes; a run stopped
/// early is an error. Returns the report and whether the run was cancelled.
pub(crate) fn close(
    location: &StoreLocation,
    run: RunMeta,
    resumed: bool,
    control: &crate::control::RunControl,
    executed: Executed,
    offload: &[(String, Offload)],
    progress: &Progress,
) -> Result<(crate::report::RunReport, bool)> {
    let Executed {
        interrupted,
        breakers,
        stopped_early,
    } = executed;
    let cancelled = control.is_cancelled() || stopped_early.is_some();
    let mut report = if location.is_shared() {
        if let Some(why) = &stopped_early {
            super::hold_stopped(location, &run.id, why)?;
        }
        crate::lifecycle::close_shared_run(
            location,
            run,
            resumed,
            (interrupted, cancelled),
            progress,
        )?
    } else {
        crate::lifecycle::close_run(location, run, resumed, interrupted, progress)?
    };
    report.breakers = breakers;
    report.notes = super::offload::notes(offload);
    match stopped_early {
        Some(why) => Err(crate::early_stop::stopped(
            &why,
            &report.run_id,
            &report.progress,
        )),
        None => Ok((report, cancelled)),
    }
}
