//! The validated job: what the engine runs. Built only by `load`, so every
//! value here has been checked (providers exist, steps reference earlier steps,
//! templates compile and name only known variables).

use std::path::PathBuf;
use std::time::Duration;

use crate::offload::{BatchSpec, Dialect, Mode};
use crate::template::{RenderError, TValue, Template};

/// Most calls (or units) in progress any `concurrency` in a job file, a
/// `--set` or the `--concurrency` flag allows: far beyond what a machine's
/// sockets sustain, and a bound on what a typo can ask for.
pub const MAX_CONCURRENCY: usize = 100_000;

/// A whole job file, validated.
#[derive(Debug, Clone)]
pub struct Job {
    /// `name`, else the file's stem.
    pub name: String,
    /// The job file (absolute).
    pub path: PathBuf,
    /// Environment variables templates may read as `env.NAME`.
    pub env: Vec<String>,
    /// Units (item × matrix combination) in progress at once; 1 = strictly sequential.
    pub concurrency: usize,
    /// Whether `concurrency` was given (file or `--set`); otherwise the engine
    /// may grow it to what a provider's rate needs at the observed latency.
    pub concurrency_set: bool,
    /// Where items come from.
    pub input: Input,
    /// Axes in file order; units are items × the cartesian product.
    pub matrix: Vec<MatrixAxis>,
    /// In file order.
    pub providers: Vec<Provider>,
    /// In file order; a step may only reference earlier ones.
    pub steps: Vec<Step>,
    /// Results file and saved files.
    pub output: Output,
    /// Deadline of one whole unit: every step, retries and backoff included;
    /// past it the unit fails with whatever it has not finished.
    pub unit_timeout: Option<Duration>,
    /// `[webhook]`: a signed POST per finished item or per run.
    pub webhook: Option<Webhook>,
    /// `budget = { usd }`: spend (by the providers' `prices`) after which no
    /// new call starts. Only set when some provider has prices.
    pub budget_usd: Option<f64>,
    /// Likely mistakes that do not stop the job (a near-miss of a request
    /// parameter in `params`), by position; shown by `plan` and `run`.
    pub warnings: Vec<crate::diag::Diagnostic>,
    /// Where `data_url()` and `base64()` read files from (the job file's
    /// directory; [`crate::FileScope::confine`] limits a submitted job).
    pub files: crate::FileScope,
    /// `max_in_flight`: one unit's calls in flight at most, across its steps
    /// (those running at once, see [`Step::needs`]) and fan-outs.
    pub max_in_flight: Option<usize>,
}

impl Job {
    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// Number of matrix combinations (1 without a matrix).
    pub fn combinations(&self) -> u64 {
        self.matrix.iter().map(|a| a.values.len() as u64).product()
    }
}

/// One `[matrix]` key and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixAxis {
    /// The key, used as `matrix.<name>`.
    pub name: String,
    /// Values in file (or `--set`) order.
    pub values: Vec<serde_json::Value>,
}

/// `[input]`.
#[derive(Debug, Clone)]
pub struct Input {
    /// Where the items are read from.
    pub source: InputSource,
    /// `id` template; without it: the item's `custom_id` or `id` field, else
    /// `line-N` (files) or the path (glob).
    pub id: Option<Template>,
}

/// The kinds of input.
#[derive(Debug, Clone)]
pub enum InputSource {
    /// A file, resolved against the job file's directory.
    File {
        /// Absolute path.
        path: PathBuf,
        /// From `format` or the extension.
        format: InputFormat,
    },
    /// `path = "-"`.
    Stdin {
        /// From `format`; JSONL by default.
        format: InputFormat,
    },
    /// One item per matching file: `{path, name, stem, size}`.
    Glob {
        /// Absolute pattern.
        pattern: String,
    },
    /// An HTTP JSON API (a CMS), fetched page by page with limit/offset.
    Url {
        /// The first page's URL (without the paging parameters).
        url: String,
        /// JSON pointer to the list in each page (`/data`); none = the page is the list.
        pointer: Option<String>,
        /// Items per page; none = one request, no paging.
        page_size: Option<u64>,
        /// Query parameter names for paging.
        limit_param: String,
        /// Query parameter names for paging.
        offset_param: String,
        /// Request headers; values may use `env.NAME`.
        headers: Vec<(String, Template)>,
    },
}

/// File formats of `[input]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One JSON object per line.
    Jsonl,
    /// Header row, then one item per row (all fields strings).
    Csv,
    /// One JSON array of objects.
    Json,
}

/// `[providers.NAME]`.
#[derive(Debug, Clone)]
pub struct Provider {
    /// The table's key.
    pub name: String,
    /// `base_url`, or the `urls` pool (at least one; no trailing slash).
    pub base_urls: Vec<String>,
    /// Environment variable with the bearer token.
    pub api_key_env: Option<String>,
    /// Calls in flight at most, across every step using this provider
    /// (`None` also when `concurrency = "auto"`; see `adaptive`).
    pub concurrency: Option<usize>,
    /// `concurrency = "auto"`: the cap adapts to latency and errors, never
    /// above this (`max_concurrency`, default 256).
    pub adaptive: Option<usize>,
    /// Requests per second.
    pub rps: Option<u64>,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Requests per hour.
    pub rph: Option<u64>,
    /// Requests per day.
    pub rpd: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Tokens per day.
    pub tpd: Option<u64>,
    /// Calls in flight at most per base URL of the pool (one slow host must
    /// not take every slot of `concurrency`).
    pub url_concurrency: Option<usize>,
    /// When to stop calling after failures (default on: 5 failures, 30 s
    /// cooldown); `None` = `circuit_breaker = false`.
    pub breaker: Option<BreakerSpec>,
    /// Time to open a connection (default 10 s); shorter than `timeout` so a
    /// dead host is left quickly.
    pub connect_timeout: Duration,
    /// One attempt's time-out (default 60 s).
    pub timeout: Duration,
    /// Retry policy (default 5 retries, 500 ms base, 60 s cap).
    pub retries: Retries,
    /// Extra headers on every call; values may use `env.NAME`.
    pub headers: Vec<(String, Template)>,
    /// USD per million tokens by model, in file order, for cost and `budget`.
    pub prices: Vec<Price>,
    /// The API's shape: OpenAI-compatible (default) or Anthropic Messages.
    pub api: Dialect,
    /// Whether chat, embed and conversation calls go out live, through the
    /// provider's batch API, or whichever the `deadline` allows.
    pub mode: Mode,
    /// How calls are gathered into batches (with `mode = "batch"` or `"auto"`).
    pub batch: BatchSpec,
    /// `assume_latency`: what one call takes, for `plan`'s time estimates
    /// (none: measured with `--probe`, else a default `plan` states).
    pub assume_latency: Option<Duration>,
}

impl Default for Provider {
    /// What a `[providers.NAME]` table gets for every key it leaves out (no
    /// name, no URLs): no caps, the default breaker, 10 s to connect, 60 s per
    /// attempt, the default retries.
    fn default() -> Self {
        Provider {
            name: String::new(),
            base_urls: Vec::new(),
            api_key_env: None,
            concurrency: None,
            adaptive: None,
            rps: None,
            rpm: None,
            rph: None,
            rpd: None,
            tpm: None,
            tpd: None,
            url_concurrency: None,
            breaker: Some(BreakerSpec::default()),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            retries: Retries::default(),
            headers: Vec::new(),
            prices: Vec::new(),
            api: Dialect::default(),
            mode: Mode::default(),
            batch: BatchSpec::default(),
            assume_latency: None,
        }
    }
}

impl Provider {
    /// The price of `model`: its own entry, else the `*` entry.
    pub fn price(&self, model: &str) -> Option<&Price> {
        let exact = self.prices.iter().find(|p| p.model == model);
        exact.or_else(|| self.prices.iter().find(|p| p.model == "*"))
    }
}

/// `circuit_breaker = { failures, cooldown, window, rate }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSpec {
    /// Consecutive failures that open the breaker (at least 1).
    pub failures: u32,
    /// How long it stays open before one trial call is let through.
    pub cooldown: Duration,
    /// Also open when, of the last `window` calls, the share `rate` failed;
    /// 0 = only consecutive failures count. Otherwise at least `failures`.
    pub window: u32,
    /// Failure share (0 < rate ≤ 1) that opens the breaker over `window`.
    pub rate: f64,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            failures: 5,
            cooldown: Duration::from_secs(30),
            window: 0,
            rate: 0.5,
        }
    }
}

/// One entry of `prices = { MODEL = { input, output } }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    /// The model name as sent, or `*` for any model without its own entry.
    pub model: String,
    /// USD per million prompt tokens.
    pub input_per_mtok: f64,
    /// USD per million completion tokens.
    pub output_per_mtok: f64,
    /// USD per million prompt tokens through the batch API (`batch_input`;
    /// default half of `input`).
    pub batch_input_per_mtok: f64,
    /// USD per million completion tokens through the batch API
    /// (`batch_output`; default half of `output`).
    pub batch_output_per_mtok: f64,
}

/// `retries = { max, base, cap }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retries {
    /// Retries after the first attempt.
    pub max: u32,
    /// First backoff ceiling.
    pub base: Duration,
    /// Largest backoff.
    pub cap: Duration,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            max: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
        }
    }
}

/// One `[[steps]]` entry.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique; referenced as `steps.<name>`.
    pub name: String,
    /// Position in the job (0-based).
    pub index: usize,
    /// Provider name (required for chat, embed, conversation; optional for http).
    pub provider: Option<String>,
    /// For a `for_each` step: elements of one unit in flight at once (default
    /// 4; 1 = in order, one by one). Otherwise: this step's calls in flight
    /// across all units (default: no cap beyond the provider's).
    pub concurrency: Option<usize>,
    /// Fans the step out over the list this renders to; the element is `each`,
    /// its position `each_index`, and the step's output is the list of outputs.
    pub for_each: Option<Template>,
    /// Overrides the provider's time-out (command steps: their own; default 10 min).
    pub timeout: Option<Duration>,
    /// Overrides the provider's retry policy.
    pub retries: Option<Retries>,
    /// What the step's output is when it fails after its retries, instead
    /// of failing the unit.
    pub fallback: Option<Fallback>,
    /// `cache = { ttl }`: reuse an identical request's result younger than this.
    pub cache_ttl: Option<Duration>,
    /// `stream = true` (chat and conversation): read the answer as server-sent
    /// events and record the time to first token and tokens per second.
    pub stream: bool,
    /// `assume_latency`: what one call of this step takes, for `plan`'s time
    /// estimates (overrides the provider's).
    pub assume_latency: Option<Duration>,
    /// The steps (by index, all earlier in the file) whose outputs this one
    /// waits for: `needs = [...]`, else the step before it. Steps whose
    /// needs are met run at once within a unit.
    pub needs: Vec<usize>,
    /// `provider = "{{ matrix.KEY }}"`: the provider chosen per unit from its
    /// matrix values (every value was checked to name one); `provider` is
    /// then `None` until the runner resolves it for a unit.
    pub provider_template: Option<Template>,
    /// `affinity = "{{ … }}"`: calls with the same rendered key go to the
    /// same endpoint of the provider's pool (rendezvous hashing over `urls`).
    pub affinity: Option<Template>,
    /// `affinity_failover = true`: while that endpoint's breaker is open, go
    /// to the next one in the key's order instead of waiting for it.
    pub affinity_failover: bool,
    /// `batch = N` on an `embed` step: the inputs of up to N units go in one
    /// request, and each unit gets its own vectors back.
    pub batch: Option<usize>,
    /// What the step does.
    pub kind: StepKind,
}

/// `fallback = { value = ... }` or `fallback = { provider = "NAME" }`.
#[derive(Debug, Clone, PartialEq)]
pub enum Fallback {
    /// The step's output when it fails, as written (not a template).
    Value(serde_json::Value),
    /// The same request sent to this other provider (chat, embed,
    /// conversation, and http steps with `path`).
    Provider(String),
}

/// A chat message template.
#[derive(Debug, Clone)]
pub struct Message {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Rendered per unit: text, or OpenAI content parts.
    pub content: Content,
    /// A `tool` message: the id of the call it answers.
    pub tool_call_id: Option<Template>,
    /// An `assistant` message: its tool calls, `[{id, type = "function",
    /// function = {name, arguments}}]` (OpenAI's shape; translated for
    /// Anthropic).
    pub tool_calls: Option<TValue>,
}

/// A message's `content`: a text template, or a list of OpenAI content
/// parts (`text`, `image_url`, `input_audio`, `file`) whose strings are
/// templates.
#[derive(Debug, Clone)]
pub enum Content {
    /// `content = "..."`.
    Text(Template),
    /// `content = [{ type = "text", text = "..." }, { type = "image_url", ... }]`.
    Parts(TValue),
}

impl Content {
    /// The content as the request carries it: a string, or the parts.
    pub fn render(&self, ctx: &minijinja::Value) -> Result<serde_json::Value, RenderError> {
        Ok(match self {
            Content::Text(t) => serde_json::Value::String(t.render(ctx)?),
            Content::Parts(parts) => parts.render(ctx)?,
        })
    }

    /// Every template inside.
    pub fn templates(&self) -> Vec<&Template> {
        match self {
            Content::Text(t) => vec![t],
            Content::Parts(parts) => parts.templates(),
        }
    }

    /// Every template inside, to rebind.
    pub(crate) fn templates_mut(&mut self) -> Vec<&mut Template> {
        match self {
            Content::Text(t) => vec![t],
            Content::Parts(parts) => parts.templates_mut(),
        }
    }

    /// The text template of a plain-text content.
    pub fn as_text(&self) -> Option<&Template> {
        match self {
            Content::Text(t) => Some(t),
            Content::Parts(_) => None,
        }
    }
}

/// A multipart file upload.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Form field name of the file (default `file`).
    pub field: String,
    /// Path of the file to send.
    pub file: Template,
    /// Other form fields.
    pub fields: Vec<(String, Template)>,
}

/// The step kinds.
// Built once per job and never moved on a hot path: size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum StepKind {
    /// OpenAI-compatible chat completion.
    Chat {
        /// Model name.
        model: Template,
        /// The messages.
        messages: Vec<Message>,
        /// Other body fields (`temperature`, `max_tokens`, …), strings templated.
        params: TValue,
        /// Passed through; when set, the answer is parsed as JSON into `.json`.
        response_format: Option<serde_json::Value>,
        /// Path under the provider's base URL (default `/chat/completions`).
        path: String,
    },
    /// OpenAI-compatible embeddings.
    Embed {
        /// Model name.
        model: Template,
        /// A string or a list of strings.
        input: TValue,
        /// Other body fields.
        params: TValue,
        /// Path under the provider's base URL (default `/embeddings`).
        path: String,
    },
    /// Any HTTP call.
    Http {
        /// GET, POST, PUT, PATCH or DELETE (default POST).
        method: String,
        /// Absolute URL; or `path` on the provider's base URL.
        url: Option<Template>,
        /// Path on the provider's base URL.
        path: Option<Template>,
        /// Extra headers.
        headers: Vec<(String, Template)>,
        /// JSON body.
        json: Option<TValue>,
        /// Raw text body.
        body: Option<Template>,
        /// Multipart upload.
        upload: Option<Upload>,
        /// Write the response body to a file under the output directory (`.file`).
        save: bool,
    },
    /// A local program per unit.
    Command {
        /// Program and arguments (no shell).
        argv: Vec<Template>,
        /// Written to the program's standard input.
        stdin: Option<Template>,
    },
    /// Turns asked in order in one growing message history.
    Conversation {
        /// Model name.
        model: Template,
        /// Optional system message.
        system: Option<Template>,
        /// The user turns: text, or content parts.
        turns: Vec<Content>,
        /// Other body fields.
        params: TValue,
        /// Path under the provider's base URL (default `/chat/completions`).
        path: String,
    },
}

impl StepKind {
    /// The `kind = "..."` name.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Chat { .. } => "chat",
            StepKind::Embed { .. } => "embed",
            StepKind::Http { .. } => "http",
            StepKind::Command { .. } => "command",
            StepKind::Conversation { .. } => "conversation",
        }
    }
}

/// `[webhook]`.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Absolute `http://` or `https://` URL the POST goes to.
    pub url: String,
    /// When it fires.
    pub on: WebhookOn,
    /// Environment variable holding the HMAC key; none = unsigned.
    pub secret_env: Option<String>,
    /// Extra headers; values may use `env.NAME`.
    pub headers: Vec<(String, Template)>,
    /// Delivery retries (default 5 retries, 500 ms base, 30 s cap).
    pub retries: Retries,
}

/// `[webhook] on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOn {
    /// Once per finished item (all its units, done or failed).
    Item,
    /// Once when the run ends.
    Run,
}

/// `[output]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Results file written at the end of a run (`.csv` → CSV), if any.
    pub path: Option<PathBuf>,
    /// Where `save = "file"` responses go (default `<job dir>/output`).
    pub dir: PathBuf,
}
