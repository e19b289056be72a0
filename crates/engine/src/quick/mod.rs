//! Quick mode: one JSONL file of requests, one URL, every line sent once
//! under the limits and recorded; a rerun resumes. The lines are a source
//! of the one dispatch loop ([`crate::dispatch`]), run by a fixed set of
//! workers (`pool.rs`).

mod lines;
mod pool;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use sluice_limit::Backoff;
use sluice_provider::{CallOptions, Client, Endpoint};
use sluice_store::{ItemRecord, ItemStatus, StoreLocation};

use crate::calls::{self, CallEnd, CallEnv, CallRequest, Tally};
use crate::clock::now_ms;
use crate::control::{RunControl, RunHooks};
use crate::dispatch::{self, Local, Resume, Window};
use crate::early_stop::FirstCalls;
use crate::error::{Error, Result};
use crate::input::{survey, QuickInput, Request};
use crate::input_list::input_list;
use crate::inputs::{spool_stdin_jsonl, InputError};
use crate::lease::ExecutorLease;
use crate::lifecycle::{close_run, open_run, RunStart};
use crate::limiter::Limiter;
use crate::preflight::{preflight, read_api_key};
use crate::progress::Progress;
use crate::recording::Recording;
use crate::report::RunReport;
use crate::settings::{QuickSettings, RunSettings};
use crate::stopping::{Halt, Stopping};
use crate::writer::Writer;
use lines::Lines;
use pool::Pool;

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
/// job runner's `UnitContext`).
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
    runtime.spawn(crate::heartbeat::beat_loop(
        writer.tx.clone(),
        run.id.clone(),
        progress.clone(),
        control,
    ));
    let lines = Lines::open(
        &input_path,
        base,
        found.duplicate_lines,
        base_url,
        cfg.limit,
        cfg.tpm.is_some(),
    )?;
    let resume = Resume::new(resumed.then_some(store), run.id.clone(), false);
    let source = Local::new(lines, resume, progress.clone());
    let pool = Pool::new(shared.clone(), writer.tx.clone(), cfg.concurrency);
    // With a rate but no --concurrency, workers are added until there are
    // enough to reach the rate at the latency observed.
    let rate = cfg
        .rpm
        .filter(|_| cfg.grow_to_rate)
        .map(|r| r as f64 / 60.0);
    let window = Window::new(cfg.concurrency, rate, 1);
    let run_of = dispatch::Run {
        progress: progress.clone(),
        stopping: shared.stopping.clone(),
        control: shared.control.clone(),
        tx: writer.tx.clone(),
    };
    if let Some(tokenizers) = tokenizers {
        tokenizers.wait();
    }
    let dispatched = std::time::Instant::now();
    let interrupted = runtime.block_on(dispatch::run(&run_of, source, pool, window))?;
    // Its writer handle too: the writer ends once every handle is gone.
    drop(run_of);
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
