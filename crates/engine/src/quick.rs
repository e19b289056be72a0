//! Quick mode: one JSONL file of requests, one URL, every line sent once
//! under the limits and recorded; a rerun resumes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use sluice_limit::Backoff;
use sluice_provider::{CallOptions, Client, Endpoint};
use sluice_store::{ItemRecord, ItemStatus, Known, Store, StoreLocation};
use tokio::sync::{mpsc, Notify};

use crate::calls::{self, CallEnd, CallEnv, CallRequest, Tally};
use crate::clock::now_ms;
use crate::control::{RunControl, RunHooks};
use crate::early_stop::FirstCalls;
use crate::error::{Error, Result};
use crate::input::{survey, BadLine, LineReader, QuickInput, Request};
use crate::input_list::{bad_line_id, input_list};
use crate::inputs::{spool_stdin_jsonl, InputError};
use crate::lease::ExecutorLease;
use crate::lifecycle::{close_run, drain_halted, open_run, RunStart, StopSignals};
use crate::limiter::Limiter;
use crate::preflight::{preflight, read_api_key};
use crate::progress::Progress;
use crate::recording::Recording;
use crate::report::RunReport;
use crate::settings::{QuickSettings, RunSettings};
use crate::stopping::{Halt, Stopping};
use crate::writer::{Message, Writer};

/// Lines read (and looked up in the store on resume) per chunk.
const CHUNK: usize = 1_024;

/// Everything `sluice run FILE.jsonl --url URL` was told.
#[derive(Debug, Clone)]
pub struct QuickConfig {
    /// The requests.
    pub input: QuickInput,
    /// Full endpoint URL; a Batch API line's `url` path replaces its path.
    pub url: String,
    /// Calls in progress at most (including those waiting to retry).
    pub concurrency: usize,
    /// With `rpm`: add workers beyond `concurrency` when the observed latency
    /// needs more to reach the rate (the user gave no `--concurrency`).
    pub grow_to_rate: bool,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Retries after the first attempt, for retryable failures.
    pub retries: u32,
    /// Whole-exchange time-out per attempt.
    pub timeout: Duration,
    /// Name of the environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Where runs are recorded.
    pub store: StoreLocation,
    /// Start a new run instead of resuming.
    pub fresh: bool,
    /// Record malformed lines as failed and run the rest.
    pub skip_bad: bool,
    /// Run name (default: the input file's stem).
    pub name: Option<String>,
    /// Delays between retries.
    pub backoff: Backoff,
    /// How long this process's hold on the run lasts without its heartbeat
    /// (a killed process blocks a rerun at most this long).
    pub lease: Duration,
    /// Send only the first N lines, as a run of their own (`NAME-firstN`),
    /// so that the full run still sends them.
    pub limit: Option<u64>,
    /// Stop sending when the first answers all fail the same way no retry
    /// can fix (a wrong key, URL or model); `--no-early-stop` turns it off.
    pub early_stop: bool,
}

/// State every call task of a quick-mode run shares (named apart from the
/// job runner's `Shared`).
struct CallState {
    client: Client,
    limiter: Limiter,
    backoff: Backoff,
    retries: u32,
    timeout: Duration,
    progress: Arc<Progress>,
    /// Set on a signal or a cancel, and by a halt (the store, early stop).
    stopping: Arc<Stopping>,
    /// Pause and cancel from other processes, through the store.
    control: Arc<RunControl>,
    /// The first answers, watched for a systematic failure.
    first_calls: FirstCalls,
    /// The writer's store calls: a hanging store holds new calls.
    recording: Arc<Recording>,
}

/// Runs (or resumes) a quick-mode batch on its own single-threaded runtime.
///
/// One thread does reading, dispatch and HTTP (thread hand-offs were the main
/// cost measured in shared/PERFORMANCE.md); a second thread commits outcomes.
pub fn run_quick(cfg: &QuickConfig, progress: Arc<Progress>) -> Result<RunReport> {
    run_quick_with(cfg, progress, RunHooks::default())
}

/// [`run_quick`] watched from outside: `hooks.on_start` learns which run it
/// is and what is left to send once the run is open, before anything is
/// sent; `hooks.on_open` learns the run too and `hooks.on_commit` sees each
/// batch of outcomes once committed (`hooks.control` is not used: quick mode
/// is steered through the store, like every run).
pub fn run_quick_with(
    cfg: &QuickConfig,
    progress: Arc<Progress>,
    mut hooks: RunHooks,
) -> Result<RunReport> {
    let input_path = match &cfg.input {
        QuickInput::Path(p) => p.clone(),
        QuickInput::Stdin => {
            spool_stdin_jsonl(&cfg.store.local_dir().join("inputs")).map_err(|e| match e {
                InputError::Read { path, source } => Error::Read { path, source },
                InputError::Write { path, source } => Error::Write { path, source },
                other => Error::Config(other.to_string()),
            })?
        }
    };
    let api_key = read_api_key(cfg.api_key_env.as_deref())?;
    let base = Endpoint::parse(&cfg.url, Method::POST).map_err(|e| Error::Config(e.to_string()))?;
    if cfg.concurrency == 0 {
        return Err(Error::Config("--concurrency must be at least 1".into()));
    }
    // Exact counts (under --tpm) need tokenizer tables: built while the
    // input is surveyed and the run opened, ready before dispatch.
    let tokenizers = cfg
        .tpm
        .map(|_| crate::tokens::warm_up(crate::input::models_named(&input_path, 64)));
    let surveyed = std::time::Instant::now();
    let base_url = crate::shape::is_base_url(&cfg.url);
    let found = survey(&input_path, base_url)?;
    tracing::debug!(items = found.total, elapsed = ?surveyed.elapsed(), "validated input");
    if found.bad_count > 0 && !cfg.skip_bad {
        let first = &found.bad[0];
        return Err(Error::BadLine {
            path: input_path.display().to_string(),
            line: first.line,
            message: first.message.clone(),
            others: found.bad_count - 1,
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(preflight(&base))?;

    let mut store = cfg.store.open()?;
    let mut source = source_key(&input_path);
    let settings = settings_json(cfg, &input_path);
    let name = match &cfg.name {
        Some(name) => {
            if let Some(problem) = sluice_spec::name_problem(name) {
                return Err(Error::Config(format!("--name {name:?} {problem}")));
            }
            name.clone()
        }
        None => default_name(&input_path),
    };
    let mut name = name;
    let mut total = found.total;
    if let Some(n) = cfg.limit {
        // A run of its own: the full run (another source) still sends these lines.
        source = format!("{source}|first={n}");
        if cfg.name.is_none() {
            name = crate::lifecycle::limited_name(&name, n);
        }
        total = total.min(n);
    }
    // Before the run is found or created: of two processes started on this
    // input together, one executes it and the other is refused.
    let lease = ExecutorLease::acquire(&cfg.store, &mut *store, &source, cfg.lease)?;
    let (run, resumed) = open_run(&mut *store, cfg.fresh, source, name, settings)?;
    let listing = std::time::Instant::now();
    let listed = input_list(&mut *store, &run.id, &input_path, &found, cfg.limit)?;
    tracing::debug!(items = listed.total, elapsed = ?listing.elapsed(), "recorded the input list");
    store.set_total(&run.id, total)?;
    store.set_state(&run.id, "running", None)?;
    Progress::add(&progress.total, total);
    if let Some(on_open) = hooks.on_open.take() {
        on_open(&run);
    }
    let input = match &cfg.input {
        QuickInput::Path(p) => p.display().to_string(),
        QuickInput::Stdin => "-".into(),
    };
    if let Some(on_start) = hooks.on_start.take() {
        on_start(&RunStart::new(
            &run,
            input,
            resumed,
            total,
            listed.done,
            lease.took_over(),
        ));
    }
    let control = RunControl::new();
    lease.guard(control.clone());
    // Started on purpose: an earlier cancel is over, a pause holds.
    let seen = crate::control::attach(&mut *store, &run.id, &control, true)?;

    let client = Client::new(
        cfg.concurrency,
        api_key
            .as_ref()
            .map(|(var, key)| (var.as_str(), key.as_str())),
    )
    .map_err(|e| Error::Config(e.to_string()))?;
    let shared = Arc::new(CallState {
        client,
        limiter: Limiter::per_minute(cfg.rpm, cfg.tpm),
        backoff: cfg.backoff,
        retries: cfg.retries,
        timeout: cfg.timeout,
        progress: progress.clone(),
        stopping: Arc::new(Stopping::default()),
        control: control.clone(),
        first_calls: FirstCalls::new(cfg.early_stop, None),
        recording: Arc::new(Recording::default()),
    });
    let writer = Writer::start(
        cfg.store.open()?,
        run.id.clone(),
        progress.clone(),
        hooks.on_commit.take(),
        Some(crate::control::Watch::new(control.clone(), seen)),
        shared.stopping.clone(),
        shared.recording.clone(),
    );
    runtime.spawn(crate::lifecycle::mirror_pause(
        control.clone(),
        progress.clone(),
    ));
    runtime.spawn(crate::live::beat_loop(
        writer.tx.clone(),
        run.id.clone(),
        progress.clone(),
        control,
    ));
    let dispatch = Dispatch {
        shared: shared.clone(),
        base,
        endpoints: HashMap::new(),
        tx: writer.tx.clone(),
        lookup: if resumed { Some(store) } else { None },
        run_id: run.id.clone(),
        duplicate_lines: found.duplicate_lines,
        exact_tokens: cfg.tpm.is_some(),
        base_url,
        grow_to_rpm: if cfg.grow_to_rate { cfg.rpm } else { None },
        first: cfg.limit,
    };
    if let Some(tokenizers) = tokenizers {
        tokenizers.wait();
    }
    let dispatched = std::time::Instant::now();
    let interrupted = runtime.block_on(dispatch.run(&input_path, cfg.concurrency))?;
    tracing::debug!(elapsed = ?dispatched.elapsed(), "all calls finished");
    // Dropping the runtime drops any call still in flight after the grace
    // period; those items stay pending and the next run sends them.
    drop(runtime);
    writer.finish()?;
    tracing::debug!(elapsed = ?dispatched.elapsed(), "all outcomes committed");

    let report = close_run(&cfg.store, run, resumed, interrupted, &progress)?;
    match shared.stopping.halted() {
        Some(Halt::Systematic(why)) => Err(crate::early_stop::stopped(
            why,
            &report.run_id,
            &report.progress,
        )),
        _ => Ok(report),
    }
}

struct Dispatch {
    shared: Arc<CallState>,
    base: Endpoint,
    endpoints: HashMap<String, Arc<Endpoint>>,
    tx: tokio::sync::mpsc::Sender<Message>,
    /// A connection for resume look-ups; `None` for a new run (nothing to skip).
    lookup: Option<Box<dyn Store>>,
    run_id: String,
    duplicate_lines: Vec<u64>,
    /// A tokens/minute limit is set: estimate with the model's tokenizer.
    exact_tokens: bool,
    /// The URL is a base URL: a bare body goes to the endpoint its shape implies.
    base_url: bool,
    /// `--rpm` without `--concurrency`: grow the workers to reach it.
    grow_to_rpm: Option<u64>,
    /// `--limit N`: read only the first N lines.
    first: Option<u64>,
}

/// Most workers a rate may grow to.
const MAX_WORKERS: usize = 2_048;

/// Requests read ahead of the workers at most, per worker up to this many
/// workers (bodies wait in memory there).
const MAX_QUEUE: usize = 2_048;

/// Workers to reach `rpm` at the observed latency, with 25% headroom.
fn needed_workers(rpm: u64, progress: &Progress) -> usize {
    let latency = progress.latency_ewma_us.load(Relaxed) as f64 / 1e6;
    let needed = (rpm as f64 / 60.0 * latency * 1.25).ceil() as usize;
    needed.min(MAX_WORKERS)
}

/// Live worker tasks, so the end of the run can wait for all of them.
#[derive(Default)]
struct Workers {
    live: std::sync::atomic::AtomicUsize,
    gone: Notify,
}

impl Workers {
    async fn all_done(&self) {
        loop {
            let gone = self.gone.notified();
            if self.live.load(Relaxed) == 0 {
                return;
            }
            gone.await;
        }
    }
}

/// Counts one worker while it lives.
struct WorkerGuard(Arc<Workers>);

impl WorkerGuard {
    fn enter(workers: Arc<Workers>) -> WorkerGuard {
        workers.live.fetch_add(1, Relaxed);
        WorkerGuard(workers)
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Relaxed);
        self.0.gone.notify_waiters();
    }
}

impl Dispatch {
    /// Sends every pending line; returns whether it was interrupted (by a
    /// signal, a cancel or a halt).
    async fn run(mut self, path: &Path, concurrency: usize) -> Result<bool> {
        let signals = StopSignals::watch(self.shared.control.clone());
        let stop = &signals.stop;
        // A fixed set of workers pulls from a short queue: a worker that gets a
        // response sends its next request in the same poll, so requests and
        // responses interleave instead of alternating in waves (which left the
        // server idle half the time at zero latency).
        // Workers start as requests are queued, up to `concurrency`: memory
        // follows the calls actually made, never the flag (100,000 workers
        // started for 2 items took 387 MB).
        let queue = concurrency.clamp(32, MAX_QUEUE) * 2;
        let (work_tx, work_rx) = mpsc::channel::<(Arc<Endpoint>, Request)>(queue);
        let work_rx = Arc::new(tokio::sync::Mutex::new(work_rx));
        let workers = Arc::new(Workers::default());
        let (worker_shared, worker_tx) = (self.shared.clone(), self.tx.clone());
        let spawn = |n: usize| {
            for _ in 0..n {
                let (shared, tx, rx) = (worker_shared.clone(), worker_tx.clone(), work_rx.clone());
                let guard = WorkerGuard::enter(workers.clone());
                tokio::spawn(async move {
                    let _guard = guard;
                    loop {
                        let next = rx.lock().await.recv().await;
                        let Some((endpoint, request)) = next else {
                            break;
                        };
                        if shared.stopping.is_set() {
                            break;
                        }
                        if let Some(record) = call(&shared, &endpoint, request).await {
                            // A send error means the writer died; its error is reported at the end.
                            let _ = tx.send(Message::Record(record)).await;
                        }
                    }
                });
            }
        };
        let mut spawned = 0;
        // With a rate but no --concurrency, workers are added until there are
        // enough to reach the rate at the latency observed (Little's law).
        let mut grown = concurrency;
        let mut next_check = tokio::time::Instant::now();
        let mut reader = LineReader::open(path)?;
        let mut chunk: Vec<std::result::Result<Request, BadLine>> = Vec::with_capacity(CHUNK);
        let mut interrupted = false;
        let mut read = 0u64;
        'read: loop {
            chunk.clear();
            while chunk.len() < CHUNK {
                if self.first.is_some_and(|n| read >= n) {
                    break;
                }
                read += 1;
                match reader.next_entry(&self.duplicate_lines, self.base_url)? {
                    Some(entry) => chunk.push(entry),
                    None => break,
                }
            }
            if chunk.is_empty() {
                break;
            }
            let known = self.known(&chunk)?;
            let mut moves = Vec::new();
            for entry in chunk.drain(..) {
                let request = match entry {
                    Ok(r) => r,
                    Err(bad) => {
                        self.record_bad(bad, None).await;
                        continue;
                    }
                };
                if let Some(k) = known.get(request.item_id.as_str()) {
                    if k.status == ItemStatus::Done && k.hash == request.hash {
                        Progress::add(&self.shared.progress.skipped, 1);
                        if k.idx != request.line {
                            moves.push((request.item_id.clone(), request.line));
                        }
                        continue;
                    }
                }
                let mut request = request;
                if self.exact_tokens {
                    request.estimate = crate::input::exact_estimate(&request.body);
                }
                let endpoint = match self.endpoint(request.path.as_deref(), request.shape) {
                    Ok(e) => e,
                    Err(message) => {
                        // Under its own id and hash: the input list has
                        // this line as the request it parsed to.
                        let id = Some((request.item_id, request.hash));
                        let bad = BadLine {
                            line: request.line,
                            custom_id: request.custom_id,
                            message,
                        };
                        self.record_bad(bad, id).await;
                        continue;
                    }
                };
                if let Some(rpm) = self.grow_to_rpm {
                    if tokio::time::Instant::now() >= next_check {
                        next_check += Duration::from_millis(200);
                        let needed = needed_workers(rpm, &self.shared.progress);
                        if needed > grown {
                            tracing::debug!(needed, "adding workers to reach the rate");
                            grown = needed;
                        }
                    }
                }
                if spawned < grown {
                    spawn(1);
                    spawned += 1;
                }
                tokio::select! {
                    sent = work_tx.send((endpoint, request)) => if sent.is_err() { break 'read },
                    _ = stop.notified() => { interrupted = true; break 'read; }
                    // Halted (the store failed, or the first answers all
                    // failed alike): nothing more is handed out.
                    () = self.shared.stopping.wait() => break 'read,
                }
            }
            if !moves.is_empty() {
                let _ = self.tx.send(Message::Moves(moves)).await;
            }
        }
        // Everything queued: the workers drain the queue and stop (or, after a
        // signal, get a short grace period for the calls on the wire).
        drop(work_tx);
        let all_done = workers.all_done();
        Ok(drain_halted(all_done, stop, &self.shared.stopping, interrupted).await)
    }

    /// What the store holds for this chunk's ids (empty for a new run).
    fn known(
        &mut self,
        chunk: &[std::result::Result<Request, BadLine>],
    ) -> Result<HashMap<String, Known>> {
        let Some(store) = self.lookup.as_mut() else {
            return Ok(HashMap::new());
        };
        let ids: Vec<&str> = chunk
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|r| r.item_id.as_str()))
            .collect();
        Ok(store
            .lookup(&self.run_id, &ids)?
            .into_iter()
            .map(|k| (k.item_id.clone(), k))
            .collect())
    }

    /// Where a request goes: its batch line's `url` path on the URL's
    /// origin; else, under a base URL, the endpoint its shape implies; else
    /// the URL itself.
    fn endpoint(
        &mut self,
        path: Option<&str>,
        shape: Option<&'static str>,
    ) -> std::result::Result<Arc<Endpoint>, String> {
        let inferred = match (path, shape) {
            (None, Some(shape)) if self.base_url => {
                Some(crate::shape::join(self.base.uri.path(), shape))
            }
            _ => None,
        };
        let path = path.or(inferred.as_deref());
        let key = path.unwrap_or("");
        if let Some(e) = self.endpoints.get(key) {
            return Ok(e.clone());
        }
        let endpoint = match path {
            None => self.base.clone(),
            Some(p) => self.base.with_path(p).map_err(|e| e.to_string())?,
        };
        let endpoint = Arc::new(endpoint);
        self.endpoints.insert(key.to_string(), endpoint.clone());
        Ok(endpoint)
    }

    /// Records a line that cannot be sent as failed: under `line-N` (as in
    /// [`input_rows`]) unless it parsed to a request with an id and hash.
    async fn record_bad(&self, bad: BadLine, id: Option<(String, u64)>) {
        let now = now_ms();
        let (item_id, hash) = id.unwrap_or_else(|| bad_line_id(bad.line));
        let record = ItemRecord {
            item_id,
            idx: bad.line,
            hash,
            status: ItemStatus::Failed,
            attempts: 0,
            throttled: 0,
            status_code: None,
            response: None,
            error: Some(format!("invalid_input: line {}: {}", bad.line, bad.message)),
            prompt_tokens: None,
            completion_tokens: None,
            latency_ms: 0,
            started_at: now,
            finished_at: now,
            metadata: None,
            custom_id: bad.custom_id,
        };
        let _ = self.tx.send(Message::Record(record)).await;
    }
}

/// The final result of an item's attempts.
struct Outcome {
    status: ItemStatus,
    code: Option<u16>,
    response: Option<String>,
    error: Option<String>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    latency: Duration,
}

impl Outcome {
    fn failed(
        code: Option<u16>,
        response: Option<String>,
        error: String,
        latency: Duration,
    ) -> Outcome {
        Outcome {
            status: ItemStatus::Failed,
            code,
            response,
            error: Some(error),
            prompt_tokens: None,
            completion_tokens: None,
            latency,
        }
    }
}

/// Sends one request until it succeeds, fails for good, or the run stops.
/// Returns the outcome to record, or `None` to leave the item pending.
async fn call(shared: &CallState, endpoint: &Endpoint, request: Request) -> Option<ItemRecord> {
    let started_at = now_ms();
    let (mut attempts, mut throttled) = (0u32, 0u32);
    let outcome = attempt(shared, endpoint, &request, &mut attempts, &mut throttled).await?;
    Some(ItemRecord {
        item_id: request.item_id,
        idx: request.line,
        hash: request.hash,
        status: outcome.status,
        attempts,
        throttled,
        status_code: outcome.code,
        response: outcome.response,
        error: outcome.error,
        prompt_tokens: outcome.prompt_tokens,
        completion_tokens: outcome.completion_tokens,
        latency_ms: outcome.latency.as_millis() as u64,
        started_at,
        finished_at: now_ms(),
        metadata: request.metadata,
        custom_id: request.custom_id,
    })
}

/// The attempts themselves, mapped to what quick mode records.
async fn attempt(
    shared: &CallState,
    endpoint: &Endpoint,
    request: &Request,
    attempts: &mut u32,
    throttled: &mut u32,
) -> Option<Outcome> {
    let env = CallEnv {
        client: &shared.client,
        limiter: &shared.limiter,
        progress: &shared.progress,
        stopping: &shared.stopping,
        backoff: shared.backoff,
        retries: shared.retries,
        timeout: shared.timeout,
        tenant: 0,
        control: Some(&shared.control),
        meters: [None, None],
        first_calls: Some(&shared.first_calls),
        recording: Some(&shared.recording),
    };
    let route = calls::Fixed(endpoint);
    let call_request = CallRequest {
        route: &route,
        body: request.body.clone(),
        options: CallOptions::default(),
        estimate: request.estimate,
        stream: None,
    };
    let mut tally = Tally::default();
    let end = calls::call(&env, &call_request, &mut tally).await;
    *attempts = tally.attempts;
    *throttled = tally.throttled;
    match end {
        CallEnd::Done(success) => Some(Outcome {
            status: ItemStatus::Done,
            code: Some(success.status),
            response: Some(String::from_utf8_lossy(&success.body).into_owned()),
            error: None,
            prompt_tokens: success.prompt_tokens,
            completion_tokens: success.completion_tokens,
            latency: success.latency,
        }),
        CallEnd::Failed {
            error,
            status,
            body,
            latency,
        } => Some(Outcome::failed(
            status,
            body.map(|b| String::from_utf8_lossy(&b).into_owned()),
            error.to_string(),
            latency,
        )),
        CallEnd::Stopped => None,
    }
}

/// The key that finds this input's run again on a rerun.
fn source_key(path: &Path) -> String {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    format!("quick:{}", canonical.display())
}

fn default_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    sluice_spec::name_from_stem(stem)
}

/// What the run was told, for `sluice status` and for retrying it later.
fn settings_json(cfg: &QuickConfig, input: &Path) -> serde_json::Value {
    RunSettings::Quick(QuickSettings {
        input: input.display().to_string(),
        // Shown by `status` and `runs`: never with its credentials (which
        // `retry` then cannot reuse: it says to rerun with the URL).
        url: sluice_store::redact_url(&cfg.url),
        url_redacted: sluice_store::redact_url(&cfg.url) != cfg.url,
        concurrency: cfg.concurrency,
        rpm: cfg.rpm,
        tpm: cfg.tpm,
        retries: cfg.retries,
        timeout_ms: cfg.timeout.as_millis() as u64,
        api_key_env: cfg.api_key_env.clone(),
        skip_bad: cfg.skip_bad,
        limit: cfg.limit,
    })
    .to_json()
}
