//! Runs executed by the server: each on its own thread (the engine runs a
//! job on a single-threaded runtime of its own), steered through a
//! [`RunControl`], watched through its [`Progress`] and the writer's commit
//! hook. A run outlives the request that started it: closing a stream only
//! drops the stream.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sluice_engine::{
    run_job_with, FileAccess, JobConfig, Progress, RunControl, RunHooks, RunReport,
    FILE_ACCESS_STATE,
};
use sluice_spec::Job;
use sluice_store::{ItemRecord, RunMeta};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{ApiError, ApiResult};
use crate::leftovers::Leftovers;
pub(crate) use crate::live_run::{Ending, LiveRun};
use crate::state::AppState;
use crate::uploads::ScratchDir;

/// The run-state key under which a submitted job is kept (so the server can
/// resume or retry it later, even after a restart).
pub(crate) const SAVED_JOB: &str = "server.job";

/// Seconds a client turned away for `--max-runs` is told to wait.
const RUNS_RETRY_AFTER: u64 = 5;

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
    /// The items file the server spooled for it (inline `items`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) spooled: Option<PathBuf>,
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
            .map_err(|e| ApiError::invalid_job(e, base))?;
        job.path = self.path.clone();
        Ok(job)
    }

    /// [`SavedJob::load`], then held to the server's policy as at
    /// submission (the server may have been restarted with other flags):
    /// the job, what its view should tell, and where it may read files.
    pub(crate) fn load_confined(
        &self,
        config: &crate::state::ServerConfig,
    ) -> ApiResult<(Job, Vec<String>, FileAccess)> {
        let mut job = self.load(&config.workdir)?;
        let store_dir = store_dir(config);
        let shown_from = self.shown_from(&config.workdir);
        let notices = crate::policy::confine(
            &config.jobs,
            &mut job,
            &crate::policy::Submission {
                text: &self.text,
                json: false,
                scratch: self.uploads.as_deref(),
                spooled: self.spooled.as_deref(),
                store_dir: &store_dir,
                shown_from: &shown_from,
            },
        )?;
        let files = readable(config, self.uploads.as_deref());
        // Its templates' file functions too, from the first check on.
        job.files.confine(files.roots());
        Ok((job, notices, files))
    }

    /// The server's directories, cut from paths shown to clients.
    pub(crate) fn shown_from(&self, workdir: &std::path::Path) -> Vec<PathBuf> {
        self.uploads
            .iter()
            .cloned()
            .chain(std::iter::once(workdir.to_path_buf()))
            .collect()
    }
}

/// The store's directory, absolute.
pub(crate) fn store_dir(config: &crate::state::ServerConfig) -> PathBuf {
    let dir = config.store.local_dir();
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Where a submitted job may read files at run time: what was sent with it
/// and the operator's `--allow-dir` directories.
pub(crate) fn readable(
    config: &crate::state::ServerConfig,
    uploads: Option<&std::path::Path>,
) -> FileAccess {
    let mut dirs = config.jobs.allow_dirs.clone();
    dirs.extend(uploads.map(std::path::Path::to_path_buf));
    FileAccess::within(&dirs)
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
    saved(store, run_id)
        .transpose()
        .map(|saved| saved.and_then(|s| s.load(workdir)))
}

/// The job kept with run `run_id` at submission, if it was submitted.
pub(crate) fn saved(
    store: &mut dyn sluice_store::Store,
    run_id: &str,
) -> ApiResult<Option<SavedJob>> {
    let Some((_, value)) = store.run_state(run_id, SAVED_JOB)?.into_iter().next() else {
        return Ok(None);
    };
    serde_json::from_value::<SavedJob>(value)
        .map(Some)
        .map_err(|e| ApiError::internal("reading the kept job", e))
}

/// What a stream attached to a run at its start receives.
pub(crate) enum StreamMsg {
    /// Outcomes just committed, in commit order.
    Items(Vec<ItemRecord>),
    /// Its client fell too far behind: no more outcomes come.
    Lagged,
    /// The run ended (its report, boxed: far larger than the rest), or
    /// stopped with an error.
    Done(Result<Box<RunReport>, String>),
}

/// Outcomes waiting for a `wait=stream` client at most; past them the
/// client is too slow, and its stream is ended rather than queued further.
const MAX_QUEUED_ITEMS: usize = 4_096;

/// Outcomes on their way from the writer thread (which must never wait) to
/// a `wait=stream` client, counted so that a slow client cannot make them
/// pile up.
#[derive(Clone)]
pub(crate) struct ItemSink {
    tx: mpsc::UnboundedSender<StreamMsg>,
    queued: Arc<AtomicUsize>,
    lagged: Arc<AtomicBool>,
}

impl ItemSink {
    /// A sink and the receiver its stream reads.
    pub(crate) fn new() -> (ItemSink, mpsc::UnboundedReceiver<StreamMsg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = ItemSink {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            lagged: Arc::new(AtomicBool::new(false)),
        };
        (sink, rx)
    }

    /// Hands `items` on, or (past the bound) tells the stream once that its
    /// client lags.
    fn items(&self, items: &[ItemRecord]) {
        if self.lagged.load(Ordering::Acquire) {
            return;
        }
        let before = self.queued.fetch_add(items.len(), Ordering::AcqRel);
        if before + items.len() > MAX_QUEUED_ITEMS {
            self.lagged.store(true, Ordering::Release);
            let _ = self.tx.send(StreamMsg::Lagged);
            return;
        }
        // A closed stream (client gone) is not the run's concern.
        let _ = self.tx.send(StreamMsg::Items(items.to_vec()));
    }

    /// The stream took `n` outcomes off the queue.
    pub(crate) fn taken(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    fn done(&self, ending: &Ending) {
        let _ = self.tx.send(StreamMsg::Done(match ending {
            Ending::Report(r) => Ok(r.clone()),
            Ending::Error(e) => Err(e.clone()),
        }));
    }
}

/// A run to start.
pub(crate) struct Launch {
    pub(crate) job: Job,
    pub(crate) saved: Option<SavedJob>,
    /// New run (submissions), or resume the job's latest run.
    pub(crate) fresh: bool,
    /// A stream to feed with committed outcomes and the end.
    pub(crate) stream: Option<ItemSink>,
    /// The files sent with the submission: removed when the run ends.
    pub(crate) scratch: Option<ScratchDir>,
    /// A submitted job's confinement (`None`: a job file of the user's own,
    /// resumed here).
    pub(crate) files: Option<FileAccess>,
    /// What the run's view tells about how the server adjusted the job.
    pub(crate) notices: Vec<String>,
    /// The files its submission wrote: removed if the run does not open.
    pub(crate) written: Leftovers,
}

/// Starts `launch` on its own thread; answers once the run is open in the
/// store (or failed before anything was sent).
pub(crate) async fn start(
    state: &AppState,
    mut launch: Launch,
) -> ApiResult<(Arc<LiveRun>, RunMeta)> {
    // Removed on every refusal below (also when the thread's run fails
    // before it opens); kept once the run is open, whoever awaits it.
    let written = std::mem::take(&mut launch.written);
    // Held by the run's thread until the run ends.
    let slot = state
        .inner
        .run_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            let max = state.config().max_runs;
            ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_runs",
                format!(
                    "this server already executes {max} runs, as many as it runs at once (--max-runs); try again when one has ended"
                ),
            )
            .with_retry_after(RUNS_RETRY_AFTER)
        })?;
    let progress = Arc::new(Progress::new(&state.inner.engine));
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
        limit: None,
        early_stop: true,
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
        on_commit: launch.stream.clone().map(|sink| {
            Arc::new(move |items: &[ItemRecord]| sink.items(items)) as sluice_engine::CommitHook
        }),
        files: launch.files.clone().map(Arc::new),
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
            // its temporary files gone, and its place free.
            drop(scratch);
            drop(slot);
            let opened = open_tx.lock().unwrap_or_else(|e| e.into_inner()).is_none();
            if opened {
                written.keep();
            } else {
                drop(written);
            }
            let ending = match &result {
                Ok(report) => Ending::Report(Box::new(report.clone())),
                Err(e) => Ending::Error(e.to_string()),
            };
            // Ended before the stream hears of it: the summary it builds
            // then shows the run's final state, not `running`.
            let _ = end_tx.send(Some(ending.clone()));
            if let Some(sink) = &stream {
                sink.done(&ending);
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
    let live = Arc::new(LiveRun::new(meta.id.clone(), progress, control, end_rx));
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
    let (saved, files, notices) = (launch.saved, launch.files, launch.notices);
    let submitted = files.is_some();
    let run_id = meta.id.clone();
    state
        .with_store(move |store| {
            if let Some(saved) = saved {
                let value = serde_json::to_value(&saved)
                    .map_err(|e| ApiError::internal("keeping the job", e))?;
                store.put_run_state(&run_id, SAVED_JOB, &value)?;
            }
            if let Some(files) = files {
                store.put_run_state(&run_id, FILE_ACCESS_STATE, &files.to_json())?;
            }
            if submitted {
                store.put_run_state(
                    &run_id,
                    crate::policy::NOTICES,
                    &serde_json::json!(notices),
                )?;
            }
            Ok(())
        })
        .await?;
    Ok((live, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: u64) -> ItemRecord {
        ItemRecord {
            item_id: format!("i{i}"),
            idx: i,
            hash: 0,
            status: sluice_store::ItemStatus::Done,
            attempts: 1,
            throttled: 0,
            status_code: Some(200),
            response: None,
            error: None,
            prompt_tokens: None,
            completion_tokens: None,
            latency_ms: 1,
            started_at: 0,
            finished_at: 0,
            metadata: None,
            custom_id: None,
        }
    }

    #[test]
    fn outcomes_for_a_stream_that_falls_too_far_behind_stop_with_one_notice() {
        let (sink, mut rx) = ItemSink::new();
        let batch: Vec<ItemRecord> = (0..512).map(item).collect();
        // Taken as fast as they come: never lags, however many.
        for _ in 0..20 {
            sink.items(&batch);
            match rx.try_recv() {
                Ok(StreamMsg::Items(got)) => sink.taken(got.len()),
                _ => panic!("the batch was handed on"),
            }
        }
        // Not taken: up to the bound, then one Lagged and nothing more.
        let mut queued = 0;
        while queued + batch.len() <= MAX_QUEUED_ITEMS {
            sink.items(&batch);
            queued += batch.len();
        }
        sink.items(&batch);
        sink.items(&batch);
        let mut got = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            got.push(match msg {
                StreamMsg::Items(items) => items.len(),
                StreamMsg::Lagged => 0,
                StreamMsg::Done(_) => usize::MAX,
            });
        }
        let lagged = got.iter().filter(|n| **n == 0).count();
        assert_eq!(lagged, 1, "{got:?}");
        assert_eq!(got.last(), Some(&0), "nothing after the notice: {got:?}");
        assert_eq!(got.iter().filter(|n| **n > 0).sum::<usize>(), queued);
    }
}
