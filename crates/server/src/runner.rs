//! Runs executed by the server: each on its own thread (the engine runs a
//! job on a single-threaded runtime of its own), steered through a
//! [`RunControl`], watched through its [`Progress`] and the writer's commit
//! hook. A run outlives the request that started it: closing a stream only
//! drops the stream.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sluice_engine::{
    run_job_with, JobConfig, Progress, Rates, RunControl, RunHooks, RunReport, Snapshot,
};
use sluice_spec::Job;
use sluice_store::{ItemRecord, RunMeta};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::uploads::ScratchDir;

/// The run-state key under which a submitted job is kept (so the server can
/// resume or retry it later, even after a restart).
pub(crate) const SAVED_JOB: &str = "server.job";

/// A submitted job as kept with its run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedJob {
    /// The job file's text (TOML; a JSON submission is kept as the TOML it became).
    pub(crate) text: String,
    /// The name problems are reported under (`job.toml`), resolved in `workdir`.
    pub(crate) shown_as: String,
    /// The job's identity: the path its runs are found by.
    pub(crate) path: PathBuf,
    /// The scratch directory of the files sent with it, where its relative
    /// paths resolve (instead of `workdir`); removed when its run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) uploads: Option<PathBuf>,
}

impl SavedJob {
    /// Parses the kept text again, as when it was submitted.
    pub(crate) fn load(&self, workdir: &std::path::Path) -> ApiResult<Job> {
        let base = match &self.uploads {
            Some(dir) if !dir.is_dir() => {
                return Err(ApiError::conflict(
                    "the files sent with this run were removed when it ended; submit the batch again as a new run",
                ))
            }
            Some(dir) => dir.as_path(),
            None => workdir,
        };
        let mut job = sluice_spec::parse_str(&self.text, &base.join(&self.shown_as), &[])
            .map_err(|e| crate::api::submit::invalid_job(e, base))?;
        job.path = self.path.clone();
        Ok(job)
    }
}

/// Runs kept in memory after they ended (their final live detail).
const KEEP_ENDED: usize = 200;

/// The job of a run submitted to a server, from its kept run state (`None`
/// for runs not submitted to a server): what `sluice retry` needs, since such a
/// job file exists only in the store. Relative paths resolve in `workdir`.
pub fn submitted_job(
    store: &mut dyn sluice_store::Store,
    run_id: &str,
    workdir: &std::path::Path,
) -> Option<Result<Job, ApiError>> {
    let (_, value) = match store.run_state(run_id, SAVED_JOB) {
        Ok(entries) => entries.into_iter().next()?,
        Err(e) => return Some(Err(e.into())),
    };
    Some(
        serde_json::from_value::<SavedJob>(value)
            .map_err(|e| ApiError::internal("reading the kept job", e))
            .and_then(|saved| saved.load(workdir)),
    )
}

/// What a stream attached to a run at its start receives.
pub(crate) enum StreamMsg {
    /// Outcomes just committed, in commit order.
    Items(Vec<ItemRecord>),
    /// The run ended (its report), or stopped with an error.
    Done(Result<RunReport, String>),
}

/// How a run's thread ended.
#[derive(Debug, Clone)]
pub(crate) enum Ending {
    Report(RunReport),
    Error(String),
}

/// Rates between the two latest looks at a run's counters.
struct Sampler {
    at: Instant,
    snapshot: Snapshot,
    rates: Rates,
}

/// A run this server executes (or executed).
pub struct LiveRun {
    /// The run's id in the store.
    pub id: String,
    pub(crate) progress: Arc<Progress>,
    pub(crate) control: Arc<RunControl>,
    ending: watch::Receiver<Option<Ending>>,
    sampler: Mutex<Sampler>,
}

impl LiveRun {
    /// Whether the run's thread has ended.
    pub fn is_finished(&self) -> bool {
        self.ending.borrow().is_some()
    }

    /// Waits for the end of the run.
    pub(crate) async fn finished(&self) -> Ending {
        let mut rx = self.ending.clone();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                return Ending::Error("the run's thread stopped without a report".into());
            }
        }
    }

    /// Cancels the run (used on shutdown too).
    pub fn cancel(&self) {
        self.control.cancel();
    }

    /// The counters now and the rates over the last second or so.
    pub(crate) fn sample(&self) -> (Snapshot, Rates) {
        let now = self.progress.snapshot();
        let mut s = self.sampler.lock().unwrap_or_else(|e| e.into_inner());
        let secs = s.at.elapsed().as_secs_f64();
        if secs >= 0.9 {
            s.rates = Rates::between(&s.snapshot, &now, secs);
            s.snapshot = now;
            s.at = Instant::now();
        }
        (now, s.rates)
    }
}

/// A run to start.
pub(crate) struct Launch {
    pub(crate) job: Job,
    pub(crate) saved: Option<SavedJob>,
    /// New run (submissions), or resume the job's latest run.
    pub(crate) fresh: bool,
    /// A stream to feed with committed outcomes and the end.
    pub(crate) stream: Option<mpsc::UnboundedSender<StreamMsg>>,
    /// The files sent with the submission: removed when the run ends.
    pub(crate) scratch: Option<ScratchDir>,
}

/// Starts `launch` on its own thread; answers once the run is open in the
/// store (or failed before anything was sent).
pub(crate) async fn start(state: &AppState, launch: Launch) -> ApiResult<(Arc<LiveRun>, RunMeta)> {
    let progress = Arc::new(Progress::default());
    let control = RunControl::new();
    let (open_tx, open_rx) = oneshot::channel::<Result<RunMeta, sluice_engine::Error>>();
    let open_tx = Arc::new(Mutex::new(Some(open_tx)));
    let (end_tx, end_rx) = watch::channel(None);
    let config = JobConfig {
        store: state.config().store.clone(),
        fresh: launch.fresh,
        skip_bad: false,
        sets: Vec::new(),
        lease: sluice_engine::DEFAULT_LEASE,
        queue_only: false,
    };
    let hooks = RunHooks {
        control: Some(control.clone()),
        on_open: Some({
            let open_tx = open_tx.clone();
            Box::new(move |run: &RunMeta| {
                if let Some(tx) = open_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = tx.send(Ok(run.clone()));
                }
            })
        }),
        on_start: None,
        on_commit: launch.stream.clone().map(|tx| {
            Arc::new(move |items: &[ItemRecord]| {
                // A closed stream (client gone) is not the run's concern.
                let _ = tx.send(StreamMsg::Items(items.to_vec()));
            }) as sluice_engine::CommitHook
        }),
    };
    let job = launch.job;
    let stream = launch.stream;
    let scratch = launch.scratch;
    // Paths in messages are shown relative to where the job's paths resolve.
    let mut shown_from = vec![format!("{}/", state.config().workdir.display())];
    if let Some(dir) = &scratch {
        shown_from.insert(0, format!("{}/", dir.path().display()));
    }
    let thread_progress = progress.clone();
    std::thread::Builder::new()
        .name("sluice-run".into())
        .spawn(move || {
            let result = run_job_with(&job, &config, thread_progress, hooks);
            // Before the end is announced: whoever sees the run ended finds
            // its temporary files gone.
            drop(scratch);
            let ending = match &result {
                Ok(report) => Ending::Report(report.clone()),
                Err(e) => Ending::Error(e.to_string()),
            };
            // Ended before the stream hears of it: the summary it builds
            // then shows the run's final state, not `running`.
            let _ = end_tx.send(Some(ending.clone()));
            if let Some(tx) = &stream {
                let _ = tx.send(StreamMsg::Done(match &ending {
                    Ending::Report(r) => Ok(r.clone()),
                    Ending::Error(e) => Err(e.clone()),
                }));
            }
            match result {
                Err(e) => {
                    let pending = open_tx.lock().unwrap_or_else(|e| e.into_inner()).take();
                    match pending {
                        Some(tx) => {
                            let _ = tx.send(Err(e));
                        }
                        None => tracing::warn!("run stopped: {e}"),
                    }
                }
                Ok(report) => tracing::info!(run = %report.run_id, "run ended"),
            }
        })
        .map_err(|e| ApiError::internal("starting the run's thread", e))?;
    let meta = match open_rx.await {
        Ok(Ok(meta)) => meta,
        Ok(Err(e)) => {
            let mut error = ApiError::from(e);
            for prefix in &shown_from {
                error.message = error.message.replace(prefix, "");
            }
            return Err(error);
        }
        Err(_) => return Err(ApiError::internal("the run", "its thread ended early")),
    };
    let live = Arc::new(LiveRun {
        id: meta.id.clone(),
        progress,
        control,
        ending: end_rx,
        sampler: Mutex::new(Sampler {
            at: Instant::now(),
            snapshot: Snapshot::default(),
            rates: Rates::default(),
        }),
    });
    {
        let mut runs = state.runs();
        runs.insert(meta.id.clone(), live.clone());
        // Ended runs keep their live detail for a while; the store keeps the rest.
        if runs.len() > KEEP_ENDED {
            let ended: Vec<String> = runs
                .iter()
                .filter(|(_, r)| r.is_finished())
                .map(|(id, _)| id.clone())
                .collect();
            for id in ended.iter().take(runs.len() - KEEP_ENDED) {
                runs.remove(id);
            }
        }
    }
    if let Some(saved) = launch.saved {
        let run_id = meta.id.clone();
        state
            .with_store(move |store| {
                let value = serde_json::to_value(&saved)
                    .map_err(|e| ApiError::internal("keeping the job", e))?;
                Ok(store.put_run_state(&run_id, SAVED_JOB, &value)?)
            })
            .await?;
    }
    Ok((live, meta))
}
