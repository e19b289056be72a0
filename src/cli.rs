//! Command-line arguments: every flag's `///` line is its `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice_store::StoreLocation;

use crate::help;

/// Run any batch of API calls as fast as every limit allows, record every
/// result durably, and resume exactly where it stopped.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run or resume a batch: `sluice run requests.jsonl --url URL` or `sluice run job.toml`.
    #[command(after_help = help::RUN)]
    Run(RunArgs),
    /// Validate a job file and estimate calls, tokens and time; sends nothing.
    #[command(after_help = help::PLAN)]
    Plan(PlanArgs),
    /// Re-queue a run's failed items (or one step's failures) and run them.
    #[command(after_help = help::RETRY)]
    Retry(RetryArgs),
    /// Progress, counts, rates and errors of a run (default: the latest).
    #[command(after_help = help::STATUS)]
    Status(StatusArgs),
    /// List the runs in the store.
    #[command(after_help = help::RUNS)]
    Runs(RunsArgs),
    /// Write a run's results in input order.
    #[command(after_help = help::EXPORT)]
    Export(ExportArgs),
    /// Pause a run wherever it executes (this machine or others on a shared
    /// store): no new call starts; calls on the wire finish and are recorded.
    #[command(after_help = help::PAUSE)]
    Pause(ControlArgs),
    /// Un-pause a run; for a run nobody executes, say how to start it again.
    #[command(after_help = help::RESUME)]
    Resume(ControlArgs),
    /// Stop a run wherever it executes, as Ctrl-C would: it ends
    /// interrupted, its unfinished items stay pending for a resume.
    #[command(after_help = help::CANCEL)]
    Cancel(ControlArgs),
    /// Serve a built-in fake API (OpenAI-compatible, Anthropic Messages, both batch
    /// APIs) for demos, tests and benchmarks.
    #[command(after_help = help::MOCK)]
    Mock(MockArgs),
    /// Run examples/audio-pipeline against built-in mocks and show where the results are.
    #[command(after_help = help::DEMO)]
    Demo(DemoArgs),
    /// Join the runs of a shared store (PostgreSQL) and work their units
    /// together with every other process on them, until stopped.
    #[command(after_help = help::WORKER)]
    Worker(WorkerArgs),
    /// Measure sluice against the physical bounds, on a local mock (BENCHMARKS.md).
    #[command(after_help = help::BENCH)]
    Bench(BenchArgs),
    /// Serve the REST API, live events, /metrics and the dashboard over the store.
    #[command(after_help = help::SERVE)]
    Serve(ServeArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    #[command(after_help = help::COMPLETIONS)]
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory.
    #[command(after_help = help::MAN)]
    Man(ManArgs),
}

/// Where runs are recorded.
#[derive(Debug, Args, Clone)]
pub(crate) struct StoreArg {
    /// Where runs and results are kept: a SQLite file, or a `postgres://` URL
    /// shared by several workers. Default: the nearest `.sluice/sluice.db` at
    /// or above the job or input file's directory (`run`) or the current
    /// directory (other commands); a first run creates one next to its file.
    #[arg(long, env = "SLUICE_STORE", value_parser = parse_store)]
    pub(crate) store: Option<StoreLocation>,
}

impl StoreArg {
    /// The store for running `input` (a path, or `-` for stdin).
    pub(crate) fn for_input(&self, input: &str) -> StoreLocation {
        match (&self.store, input) {
            (Some(given), _) => given.clone(),
            (None, "-") => self.here(),
            (None, file) => crate::locate::for_file(std::path::Path::new(file)),
        }
    }

    /// The store for a command that works with whatever runs are there (a
    /// server, a worker): found from the current directory, else a new one.
    pub(crate) fn here(&self) -> StoreLocation {
        self.store
            .clone()
            .or_else(crate::locate::nearest_here)
            .unwrap_or_else(crate::locate::new_here)
    }

    /// The store for a command about an existing run: the one given, else
    /// the nearest above the current directory, if any.
    pub(crate) fn existing(&self) -> Option<StoreLocation> {
        self.store.clone().or_else(crate::locate::nearest_here)
    }
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// A job file (`.toml`), or a JSONL file of requests (Batch API lines or
    /// bare bodies); `-` reads JSONL from stdin.
    pub(crate) input: String,
    /// Job file override, repeatable: `matrix.model=a,b`, `concurrency=1`,
    /// `steps.NAME.concurrency=N`, `providers.NAME.rpm=N`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) sets: Vec<String>,
    /// Endpoint URL, e.g. http://127.0.0.1:8080/v1/chat/completions, or a
    /// base URL (path `/` or ending in `/v1`): then each bare body goes to
    /// /chat/completions, /embeddings or /completions by its shape. A Batch
    /// API line's `url` path replaces the path. Default: $OPENAI_BASE_URL,
    /// else https://api.openai.com/v1.
    #[arg(long, env = "SLUICE_URL")]
    pub(crate) url: Option<String>,
    /// Calls in progress at most, including those waiting to retry, 1 to
    /// 100,000 (default 64; with --rpm and no --concurrency, grows to what the
    /// rate needs at the latency observed).
    #[arg(long, value_parser = parse_concurrency)]
    pub(crate) concurrency: Option<usize>,
    /// Requests per minute, held continuously (GCRA, no bursts); at least 1.
    #[arg(long, value_parser = parse_rate)]
    pub(crate) rpm: Option<u64>,
    /// Tokens per minute (prompt estimate + max_tokens reserved, corrected by
    /// usage); at least 1.
    #[arg(long, value_parser = parse_rate)]
    pub(crate) tpm: Option<u64>,
    /// Retries of a retryable failure (429, 5xx, time-out, reset, bad body).
    #[arg(long, default_value_t = 5)]
    pub(crate) retries: u32,
    /// Time-out of one attempt, whole exchange (e.g. 60s, 500ms).
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub(crate) timeout: Duration,
    /// First retry delay ceiling; doubles per attempt, with full jitter (at
    /// most --backoff-cap).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub(crate) backoff_base: Duration,
    /// Longest retry delay.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) backoff_cap: Duration,
    /// Environment variable holding the API key, sent as a bearer token
    /// (default: OPENAI_API_KEY when it is set; the start line says so).
    #[arg(long, conflicts_with = "no_api_key")]
    pub(crate) api_key_env: Option<String>,
    /// Send no API key, even with OPENAI_API_KEY set.
    #[arg(long)]
    pub(crate) no_api_key: bool,
    /// Write results here once the run reaches its end (`.jsonl` for
    /// JSON lines, `.csv` for CSV, `.parquet`), replacing the file atomically;
    /// a run that does not finish leaves it as it was. Without it results go
    /// to stdout as JSONL (unless --json).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// With --out: carry each item's own fields into the results (see
    /// `sluice export --help`).
    #[arg(long)]
    pub(crate) include_item: bool,
    #[command(flatten)]
    pub(crate) store: StoreArg,
    /// Start a new run instead of resuming the last run of this input.
    #[arg(long)]
    pub(crate) fresh: bool,
    /// Record malformed lines as failed and run the rest (default: refuse to start).
    #[arg(long)]
    pub(crate) skip_bad: bool,
    /// Print a machine-readable summary on stdout.
    #[arg(long, conflicts_with = "events")]
    pub(crate) json: bool,
    /// For programs driving sluice (the Python API): JSON events on stdout,
    /// one per line — `start`, a `result` per item as soon as it is
    /// recorded, `progress` every --progress-interval, and `end` with the
    /// --json summary. Results still go to --out.
    #[arg(long)]
    pub(crate) events: bool,
    /// Name of a new run (default: a job file's `name`, else the input
    /// file's name); a resumed run keeps its name.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Seconds between progress lines when stderr is not a terminal (with
    /// --events: between progress events).
    #[arg(long, env = "SLUICE_PROGRESS_INTERVAL", default_value_t = 5.0)]
    pub(crate) progress_interval: f64,
    /// How long this process's hold on the run lasts without its heartbeat
    /// (renewed every second): a killed process blocks a rerun at most this
    /// long (on its own machine not at all). With a postgres:// store, also
    /// how long a claimed unit stays leased (it then returns to the queue).
    #[arg(long, default_value = "10s", value_parser = parse_lease)]
    pub(crate) lease: Duration,
    /// With a postgres:// store: queue the job's units and exit, leaving
    /// the work to `sluice worker` processes.
    #[arg(long)]
    pub(crate) queue_only: bool,
    /// Run only the first N units (lines in quick mode) as a trial, in a run
    /// of its own named NAME-firstN: the full run still sends them. Results
    /// go to stdout unless --out is given (never to the job's [output] path).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) limit: Option<u64>,
    /// Send every item even when the first answers all fail the same way
    /// no retry can fix (by default the first 20 alike — a wrong key, URL
    /// or model — stop the run, exit 1, the rest left pending).
    #[arg(long)]
    pub(crate) no_early_stop: bool,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    pub(crate) store: StoreArg,
    /// Work only this run (id or name); default: any runnable run, oldest first.
    #[arg(long)]
    pub(crate) run: Option<String>,
    /// Exit once no run has units left to claim, instead of waiting for new runs.
    #[arg(long)]
    pub(crate) exit_when_idle: bool,
    /// How long a claimed unit stays leased without this worker's heartbeat
    /// (a killed worker's units return to the queue after this).
    #[arg(long, default_value = "10s", value_parser = parse_lease)]
    pub(crate) lease: Duration,
    /// How often an idle worker looks for runnable runs.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) poll: Duration,
    /// Send every item even when the first answers all fail the same way
    /// no retry can fix (by default the first 20 alike — a wrong key, URL
    /// or model — stop the run, exit 1, the rest left pending).
    #[arg(long)]
    pub(crate) no_early_stop: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// A job file (`.toml`), or a JSONL file of requests with --url (quick mode).
    pub(crate) input: String,
    /// Job file override, repeatable (as for `run`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) sets: Vec<String>,
    /// Quick mode: the endpoint URL, as for `run`.
    #[arg(long, env = "SLUICE_URL")]
    pub(crate) url: Option<String>,
    /// Quick mode: calls in progress at most, as for `run` (default 64).
    #[arg(long)]
    pub(crate) concurrency: Option<usize>,
    /// Quick mode: requests per minute, as for `run`.
    #[arg(long)]
    pub(crate) rpm: Option<u64>,
    /// Quick mode: tokens per minute, as for `run`.
    #[arg(long)]
    pub(crate) tpm: Option<u64>,
    /// Quick mode: the API key's environment variable (shown masked with --show).
    #[arg(long)]
    pub(crate) api_key_env: Option<String>,
    /// Quick mode: USD per million prompt and completion tokens, for the cost: `2.5,10`.
    #[arg(long, value_name = "IN,OUT")]
    pub(crate) prices: Option<String>,
    /// Plan only the first N units (lines in quick mode): what `run --limit N` runs.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) limit: Option<u64>,
    /// Print the first N units' requests as they would be sent (secrets masked;
    /// earlier steps' answers as ⟨steps.NAME.text⟩).
    #[arg(long, value_name = "N")]
    pub(crate) show: Option<usize>,
    /// Measure latency for the time estimate with N real calls per step (the
    /// first units' requests; these are sent and paid for, not recorded).
    #[arg(long, value_name = "N")]
    pub(crate) probe: Option<usize>,
    /// Latency of one call for the time estimate when nothing is measured
    /// (job files: steps and providers without their own assume_latency).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) assume_latency: Option<Duration>,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RetryArgs {
    /// Run id or name.
    pub(crate) run: String,
    /// Only this step's failures (job runs).
    #[arg(long)]
    pub(crate) step: Option<String>,
    #[command(flatten)]
    pub(crate) store: StoreArg,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Send every item even when the first answers all fail the same way
    /// no retry can fix (by default the first 20 alike — a wrong key, URL
    /// or model — stop the run, exit 1, the rest left pending).
    #[arg(long)]
    pub(crate) no_early_stop: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Run id or name (default: the latest run).
    pub(crate) run: Option<String>,
    #[command(flatten)]
    pub(crate) store: StoreArg,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ControlArgs {
    /// Run id or name (a name means its latest run).
    pub(crate) run: String,
    #[command(flatten)]
    pub(crate) store: StoreArg,
}

#[derive(Debug, Args)]
pub(crate) struct RunsArgs {
    #[command(flatten)]
    pub(crate) store: StoreArg,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// OpenAI Batch API output lines (job runs: one result line per unit).
    Jsonl,
    /// One row per item.
    Csv,
    /// The CSV's columns, typed; embeddings as lists of float32.
    Parquet,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// Run id or name.
    pub(crate) run: String,
    /// Output format (default: from --out's extension — .jsonl, .csv,
    /// .parquet — else jsonl).
    #[arg(long, value_enum)]
    pub(crate) format: Option<Format>,
    /// Output file (default: stdout).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Carry each item's own fields into the results: a job item's fields
    /// (`item` in JSONL, `item.KEY` columns in CSV and Parquet); in quick
    /// mode the keys of each line's `metadata` as `item.KEY` columns.
    #[arg(long)]
    pub(crate) include_item: bool,
    /// JSONL as one flat object per item with the CSV and Parquet columns
    /// (typed; embeddings as lists of numbers), for data frames.
    #[arg(long)]
    pub(crate) flat: bool,
    #[command(flatten)]
    pub(crate) store: StoreArg,
}

#[derive(Debug, Args)]
pub(crate) struct MockArgs {
    /// Port on 127.0.0.1 (0 picks a free one); prints `listening on 127.0.0.1:PORT` first.
    #[arg(long, default_value_t = 8080)]
    pub(crate) port: u16,
    /// Latency added to every response, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub(crate) latency_ms: u64,
    /// Uniform random extra latency up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub(crate) jitter_ms: u64,
    /// Requests per minute enforced (429 beyond it).
    #[arg(long)]
    pub(crate) rpm: Option<u64>,
    /// Tokens per minute enforced (429 beyond it). A request costs its
    /// prompt plus its reply; an OpenAI model's texts are counted with its
    /// BPE tokenizer (o200k: gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4;
    /// cl100k: gpt-3.5-turbo, gpt-4, text-embedding-*), any other model's
    /// at characters ÷ 4.
    #[arg(long)]
    pub(crate) tpm: Option<u64>,
    /// How early a request may arrive against its --rpm/--tpm slot and still
    /// be admitted, in milliseconds. Default: 25, at most half the request's
    /// slot, so two at once are refused. Raise it on a loaded machine, where a
    /// stalled process bunches requests (a slack of S lets about S ÷ slot
    /// through together; the rate is still held).
    #[arg(long, value_name = "MS")]
    pub(crate) slack_ms: Option<u64>,
    /// Hold --rpm and --tpm as OpenAI and Anthropic do: a bucket of a whole
    /// minute's allowance that a client may spend at once, refilled at the
    /// rate (without it each limit is paced evenly, a burst of one request).
    #[arg(long)]
    pub(crate) allowance: bool,
    /// Requests in flight at most (429 beyond it).
    #[arg(long)]
    pub(crate) max_concurrency: Option<usize>,
    /// Share of requests answered with a 500 (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) fail_rate: f64,
    /// Share of requests whose connection is dropped without a response.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) reset_rate: f64,
    /// Share of requests that never get a response.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) hang_rate: f64,
    /// Share of 200s whose JSON body is cut short.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) truncate_rate: f64,
    /// Seed of the random draws (faults, jitter, replies).
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Require `Authorization: Bearer <value of this variable>`.
    #[arg(long)]
    pub(crate) api_key_env: Option<String>,
    /// Reply length in tokens when a request sets no max_tokens.
    #[arg(long, default_value_t = 16)]
    pub(crate) completion_tokens: u64,
    /// Worker threads serving requests.
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// The models served, comma-separated; a request naming another model
    /// gets 404 (`model_not_found`). Default: any model.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub(crate) models: Vec<String>,
    /// Share of distinct requests refused with 422 every time (decided by the
    /// seed and the content: inputs the service cannot process).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) reject_rate: f64,
    /// `/stages/*` refuse uploads larger than this many bytes with 413.
    #[arg(long)]
    pub(crate) max_upload_bytes: Option<u64>,
    /// Serve every NAME.json in this directory as a CMS collection at /items/NAME.
    #[arg(long, value_name = "DIR")]
    pub(crate) cms: Option<PathBuf>,
    /// Keep the last N requests for GET /_mock/requests.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) journal: usize,
    /// Environment variable holding the key webhook deliveries to /hooks/*
    /// must be signed with (401 otherwise).
    #[arg(long, value_name = "VAR")]
    pub(crate) hook_secret_env: Option<String>,
    /// Milliseconds between the events of a streamed answer (`stream: true`).
    #[arg(long, default_value_t = 0)]
    pub(crate) stream_interval_ms: u64,
    /// How long a batch (OpenAI Batch or Anthropic Message Batch) takes to process.
    #[arg(long, default_value_t = 2_000)]
    pub(crate) batch_delay_ms: u64,
    /// Share of batched requests answered with a server error (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) batch_error_rate: f64,
    /// Share of batched requests that expire unanswered (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) batch_expire_rate: f64,
    /// OpenAI batches: enqueued prompt tokens per model at most; a batch past
    /// it fails with `token_limit_exceeded`.
    #[arg(long, value_name = "TOKENS")]
    pub(crate) batch_enqueued_limit: Option<u64>,
    /// OpenAI batches: share of lines refused at validation (by content),
    /// failing their batch with an error per line (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) batch_invalid_rate: f64,
    /// The first N batch creations make the batch but never answer.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) batch_create_hangs: u64,
    /// Bytes of padding added to each line of an OpenAI batch output file.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub(crate) batch_result_pad_bytes: u64,
    /// Share of answers to a JSON response_format (json_object, json_schema)
    /// sent as plain text instead, drawn per answer (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) json_invalid_rate: f64,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, env = "SLUICE_BIND", default_value = "127.0.0.1:8080")]
    pub(crate) bind: String,
    #[command(flatten)]
    pub(crate) store: StoreArg,
    /// Environment variable holding the token every request must present
    /// (`Authorization: Bearer <token>`; all routes but /healthz). Default
    /// SLUICE_TOKEN; when that is not set, a token is generated and the
    /// dashboard URL carrying it is printed once.
    #[arg(long, value_name = "NAME")]
    pub(crate) token_env: Option<String>,
    /// No token (loopback binds only): every program and user of this
    /// machine may use the API. Host and Origin are still checked.
    #[arg(long, conflicts_with = "token_env")]
    pub(crate) no_token: bool,
    /// Also answer to this host name (the server answers to loopback names
    /// and its own address); repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub(crate) allow_hosts: Vec<String>,
    /// Let pages of this origin (scheme://host[:port]) call the API, with
    /// CORS; never `*`; repeatable.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub(crate) allow_origins: Vec<String>,
    /// Let submitted jobs run `command` steps (programs on this machine).
    #[arg(long)]
    pub(crate) allow_commands: bool,
    /// Let submitted jobs read and write files in this directory (beyond
    /// the files sent with them); repeatable.
    #[arg(long = "allow-dir", value_name = "DIR")]
    pub(crate) allow_dirs: Vec<PathBuf>,
    /// Let submitted jobs name this environment variable (`api_key_env`,
    /// `secret_env`, `env`); repeatable.
    #[arg(long = "allow-env", value_name = "NAME")]
    pub(crate) allow_env: Vec<String>,
    /// Units in progress at once for a submitted job that sets no `concurrency`.
    #[arg(long, value_name = "N")]
    pub(crate) default_concurrency: Option<usize>,
    /// Most units in progress a submitted job may ask for; more is clamped
    /// (and the run's view says so).
    #[arg(long, value_name = "N")]
    pub(crate) max_concurrency: Option<usize>,
    /// Runs executing at once; one more is answered 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = sluice_server::DEFAULT_MAX_RUNS)]
    pub(crate) max_runs: usize,
    /// Largest run submission accepted, in bytes (a job file or JSON with items).
    #[arg(long, default_value_t = 64 << 20)]
    pub(crate) max_body: usize,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Recordings in the demo batch (every sixth is too long for the hosts).
    #[arg(long, default_value_t = 120)]
    pub(crate) items: u64,
    /// Where the demo writes its job, data, store and results (replaced on
    /// every run; default: sluice-demo in the system's temporary directory).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// After the run, serve the dashboard over the demo's store on a free
    /// 127.0.0.1 port until Ctrl-C (without it the demo ends by itself).
    #[arg(long)]
    pub(crate) serve: bool,
}

/// Most calls in progress `--concurrency` allows: the bound a job file's
/// `concurrency` has too.
pub(crate) const MAX_CONCURRENCY: usize = sluice_spec::MAX_CONCURRENCY;

fn parse_concurrency(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number of calls from 1 to {MAX_CONCURRENCY}"
        )),
    }
}

fn parse_rate(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("a rate of 0 would never send anything; give at least 1, or leave the flag out for no limit".into()),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than 0 (e.g. 30s, 500ms)".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_lease(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d >= Duration::from_secs(2) => Ok(d),
        Ok(_) => Err(
            "must be at least 2s: the heartbeat renews it every second, and a shorter lease would lapse on a brief stall"
                .into(),
        ),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_store(text: &str) -> Result<StoreLocation, String> {
    if text.trim().is_empty() {
        return Err("give a SQLite file path or a postgres:// URL".into());
    }
    Ok(StoreLocation::parse(text))
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Small sizes: the whole suite in under a minute; only broken scenarios
    /// (lost or duplicated items, unexpected 429s, crashes) fail it, never speed.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Print the results as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub(crate) json: bool,
    /// Run only these scenarios: latency, rpm, tpm, overhead, memory, pipeline,
    /// crash-resume, scale-out, faults, unknown-rpm, allowance-full,
    /// allowance-binds, server; and `soak`, which runs only when named here.
    #[arg(long, num_args = 1.., value_name = "NAME")]
    pub(crate) only: Vec<String>,
    /// How long `--only soak` runs (minutes).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub(crate) minutes: u64,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell the script is for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write sluice.1 and a page per command (sluice-run.1, ...) here
    /// instead of printing sluice.1.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}
