//! `sluice worker`: joins the runnable runs of a shared store one after
//! another — the job rebuilt from the definition kept with the run, secrets
//! from this process's environment — and works each until its queue is
//! empty, then looks for the next; stops on SIGINT/SIGTERM (its units go
//! back to the queue at once) or, with `exit_when_idle`, when none is left.
//! A run whose stored control says pause or cancel is not joined; a run
//! cancelled while worked on is left like on a signal, and the worker goes
//! on to the next.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_store::{RunMeta, StoreLocation};
use tokio::sync::Notify;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::job::{self, Work};
use crate::lifecycle::watch_signals;
use crate::progress::Progress;
use crate::report::RunReport;

/// How `sluice worker` was asked to work.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The shared store (PostgreSQL).
    pub store: StoreLocation,
    /// Only this run (id or name); otherwise any runnable run.
    pub run: Option<String>,
    /// Exit once no run has anything to claim, instead of waiting for more.
    pub exit_when_idle: bool,
    /// How long a claimed unit stays leased without a heartbeat renewing it.
    pub lease: Duration,
    /// How often an idle worker looks for runnable runs.
    pub poll: Duration,
    /// Stop working a run whose step's first answers all fail the same way
    /// no retry can fix (the run is then held for every process).
    pub early_stop: bool,
    /// The process's engine: the runs it works share its providers and
    /// count into its totals.
    pub engine: Engine,
}

/// What the worker did, for the caller to show.
#[derive(Debug)]
pub enum WorkerEvent {
    /// Joined a run.
    Joined(RunMeta),
    /// Left a run (its queue empty, or the worker stopping).
    Left(RunReport),
    /// A run could not be worked on here (its job does not load, a key is
    /// missing, its provider is unreachable); the worker leaves it to others.
    Skipped {
        /// The run.
        run_id: String,
        /// Why.
        error: Error,
    },
}

/// Works runnable runs until stopped (or idle, with `exit_when_idle`);
/// returns whether a signal stopped it (a cancelled run only ends the work
/// on that run).
pub fn run_worker(cfg: &WorkerConfig, on_event: &mut dyn FnMut(WorkerEvent)) -> Result<bool> {
    if !cfg.store.is_shared() {
        return Err(Error::Config(format!(
            "`sluice worker` needs a store several processes can share: give --store postgres://… \
             (not the SQLite file {})",
            cfg.store
        )));
    }
    let mut store = cfg.store.open()?;
    let idle = job::new_runtime()?;
    let stop = Arc::new(Notify::new());
    idle.spawn(watch_signals(stop.clone()));
    let mut skipped: HashSet<String> = HashSet::new();
    loop {
        let runs = match store.shared() {
            Some(shared) => shared.runnable_runs()?,
            None => Vec::new(),
        };
        let mut next = None;
        for r in runs {
            let wanted = !skipped.contains(&r.id)
                && cfg
                    .run
                    .as_ref()
                    .is_none_or(|want| &r.id == want || &r.name == want);
            // Held or cancelled until someone resumes it (`sluice resume`).
            if wanted && !held(&mut *store, &r.id)? {
                next = Some(r);
                break;
            }
        }
        let Some(run) = next else {
            if cfg.exit_when_idle {
                return Ok(false);
            }
            let stopped = idle.block_on(async {
                tokio::select! {
                    _ = tokio::time::sleep(cfg.poll) => false,
                    _ = stop.notified() => true,
                }
            });
            if stopped {
                return Ok(true);
            }
            continue;
        };
        on_event(WorkerEvent::Joined(run.clone()));
        let run_id = run.id.clone();
        match work(cfg, run) {
            Ok((report, cancelled)) => {
                let interrupted = report.interrupted;
                on_event(WorkerEvent::Left(report));
                if interrupted && !cancelled {
                    return Ok(true);
                }
            }
            Err(error) => {
                skipped.insert(run_id.clone());
                on_event(WorkerEvent::Skipped { run_id, error });
            }
        }
    }
}

/// Whether the run's stored control keeps workers out (paused or cancelled).
fn held(store: &mut dyn sluice_store::Store, run_id: &str) -> Result<bool> {
    Ok(crate::control::read_control(store, run_id)?
        .is_some_and(|c| c.state != crate::control::ControlState::Run))
}

/// Works one run until its queue is empty, a signal stops it or it is
/// cancelled; returns the report and whether it was cancelled.
fn work(cfg: &WorkerConfig, run: RunMeta) -> Result<(RunReport, bool)> {
    let mut store = cfg.store.open()?;
    let def = store
        .shared()
        .map(|s| s.job_def(&run.id))
        .transpose()?
        .flatten()
        .ok_or_else(|| Error::Config(format!("run {} keeps no job definition", run.id)))?;
    let job = sluice_spec::parse_str(&def.text, Path::new(&def.path), &def.sets)
        .map_err(|e| Error::Config(format!("the job of run {} does not load here: {e}", run.id)))?;
    let progress = Arc::new(Progress::new(&cfg.engine));
    // The same setup as `sluice run`'s.
    let setup = job::setup(&job, &progress)?;
    job::check_reachable(&setup.runtime, &setup.lanes)?;
    Progress::add(&progress.total, run.total.unwrap_or(0));
    let (run_id, lease) = (run.id.clone(), cfg.lease);
    let concurrency = job::unit_window(&job).units;
    let offload = job::worker_offload(&job);
    let control = crate::control::RunControl::new();
    // Joined, not started on purpose: a cancel made meanwhile is honoured.
    let seen = crate::control::attach(&mut *store, &run.id, &control, false)?;
    // A job submitted to a server is confined here as there.
    let files = crate::FileAccess::kept(&mut *store, &run.id)?.map(Arc::new);
    let work = Work {
        job: &job,
        location: &cfg.store,
        run: &run,
        resumed: false,
        progress: &progress,
        offload: &offload,
        control: control.clone(),
        seen,
        on_commit: None,
        files,
        early_stop: cfg.early_stop,
    };
    let executed = job::execute(work, setup, |shared| {
        job::claimed_dispatch(shared, store, run_id, concurrency, lease)
    })?;
    job::close(
        &cfg.store, run, true, &control, executed, &offload, &progress,
    )
}
