//! The settings of one fake API server.

use std::path::PathBuf;

/// Settings of the fake API. Default: zero latency, no limits, no faults, seed 0.
#[derive(Debug, Clone, Default)]
pub struct MockConfig {
    /// Milliseconds added before every response (including 429 and 500), as a
    /// real model takes time; requests stay in flight meanwhile.
    pub latency_ms: u64,
    /// Uniform extra latency `0..=jitter_ms`, drawn from the seeded RNG, so
    /// responses come back out of order as they do from real providers.
    pub jitter_ms: u64,
    /// Requests per minute, enforced by the mock's referee (an exact
    /// sliding-window log) with a burst of one request.
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute, enforced likewise. The mock
    /// counts a prompt's texts with the model's BPE tokenizer for OpenAI
    /// models (o200k_base: gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3, o4;
    /// cl100k_base: gpt-3.5-turbo, gpt-4, text-embedding-*), at characters
    /// ÷ 4 otherwise (see `count.rs`).
    pub tpm: Option<u64>,
    /// How early (ms) a request may arrive against its slot in `rpm`/`tpm`
    /// and still be admitted: arrival jitter forgiven. `None`: 25 ms, at most
    /// half the request's own slot, so two requests at once are refused.
    /// A set value is used as it is: a loaded machine stalls processes for
    /// tens of milliseconds, bunching one request with the next, and a slack
    /// of S forgives stalls up to S (letting about S ÷ slot requests through
    /// together; the rate itself is still held).
    pub slack_ms: Option<u64>,
    /// `rpm` and `tpm` are buckets holding a whole minute's allowance, as
    /// OpenAI and Anthropic hold them: a client may spend what remains at
    /// once, then the rate; the headers announce `limit`, `remaining` and
    /// `reset` (the time until the bucket is full again). Off: each limit is
    /// paced evenly (a burst of one request).
    pub allowance: bool,
    /// Requests in flight beyond this get an immediate 429.
    pub max_concurrency: Option<usize>,
    /// Probability (0.0..=1.0) of an injected 500.
    pub fail_rate: f64,
    /// Probability the connection is closed with no response.
    pub reset_rate: f64,
    /// Probability the request gets no response for an hour (until the client
    /// gives up).
    pub hang_rate: f64,
    /// Probability of a 200 whose JSON body is cut in half (Content-Length
    /// matches the cut body), to exercise the client's parse-failure path.
    pub truncate_rate: f64,
    /// Seed of the fault and jitter RNG and of the reply text.
    pub seed: u64,
    /// When set, API routes require `Authorization: Bearer <key>`, else 401.
    pub api_key: Option<String>,
    /// Reply length in tokens when the request sets no `max_tokens`; 0 means 16.
    pub completion_tokens: u64,
    /// The models served; when not empty, an OpenAI-route request naming
    /// another model gets 404 at once (`model_not_found`), as a provider
    /// answers a wrong model name.
    pub models: Vec<String>,
    /// Share (0.0..=1.0) of distinct requests answered 422 on every attempt:
    /// inputs the service cannot process. Decided by the seed and the
    /// request's content, so the same request is refused on every host with
    /// the same seed and in every run, which retries cannot fix.
    pub reject_rate: f64,
    /// `/stages/*` refuse an upload (the file of a multipart body, else the
    /// whole body) larger than this with 413, as GPU hosts cap their input.
    pub max_upload_bytes: Option<u64>,
    /// A directory of CMS collections: every `NAME.json` in it (a JSON array,
    /// or `{"data": [...]}`) is served at `/items/NAME`.
    pub cms_dir: Option<PathBuf>,
    /// Requests kept for `GET /_mock/requests` (the most recent ones); 0 keeps
    /// none and costs nothing.
    pub journal: usize,
    /// Key that deliveries to `/hooks/*` must be signed with (sluice's
    /// `X-Sluice-Signature`); a wrong signature gets 401. `None` accepts all.
    pub hook_secret: Option<Vec<u8>>,
    /// Milliseconds between the events of a streamed answer (0: all at once).
    pub stream_interval_ms: u64,
    /// How long a batch (either API) takes to process, from its creation.
    pub batch_delay_ms: u64,
    /// Probability (0.0..=1.0) that a request in a batch fails with a server error.
    pub batch_error_rate: f64,
    /// Probability that a request in a batch expires unanswered.
    pub batch_expire_rate: f64,
    /// OpenAI batches: prompt tokens per model that may wait in unfinished
    /// batches; a batch that would pass it fails with `token_limit_exceeded`
    /// (as OpenAI's enqueued-token limit does).
    pub batch_enqueued_limit: Option<u64>,
    /// OpenAI batches: share of lines refused when a batch is validated
    /// (decided by the line's content and the seed, so the same line is
    /// refused every time); the batch fails with an error naming each line.
    pub batch_invalid_rate: f64,
    /// The first N batch creations (either API) make the batch, then never
    /// answer: the client times out not knowing that its batch exists.
    pub batch_create_hangs: u64,
    /// Bytes added to each line of an OpenAI output file (a `_mock_padding`
    /// field), to make result files as large as real embedding batches'.
    pub batch_result_pad_bytes: u64,
    /// Share (0.0..=1.0) of answers to a JSON `response_format` sent as plain
    /// text instead (drawn per answer: a retry may get valid JSON).
    pub json_invalid_rate: f64,
}

impl MockConfig {
    /// The reply length a request without `max_tokens` gets.
    pub(crate) fn default_completion_tokens(&self) -> u64 {
        if self.completion_tokens == 0 {
            16
        } else {
            self.completion_tokens
        }
    }
}

impl MockConfig {
    /// Checks what a server would refuse to start with (an unreadable CMS
    /// directory or collection), without binding anything.
    pub fn validate(&self) -> std::io::Result<()> {
        crate::cms::Cms::load(self.cms_dir.as_deref()).map(|_| ())
    }
}
