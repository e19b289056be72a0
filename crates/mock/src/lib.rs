//! A built-in OpenAI-compatible fake API: rate limits, latency and faults, seeded.
//!
//! `sluice mock`, `sluice demo`, the integration tests and the benchmarks all point
//! the real client at this server. It answers `POST /v1/chat/completions`,
//! `/v1/completions` and `/v1/embeddings` in OpenAI's shapes, enforces
//! requests/minute and tokens/minute the way providers do, injects faults from a
//! seeded RNG, and records what the client did ([`MockStats`]) so a test can assert
//! that no limit was exceeded and no request was sent twice.
//!
//! # One API request, in order
//!
//! 1. **Auth.** With [`MockConfig::api_key`] set, a missing or wrong
//!    `Authorization: Bearer <key>` gets 401 at once.
//! 2. **Parse.** A body that is not JSON, lacks a required field (`model`, and
//!    `messages`, `prompt` or `input`), is empty where a list is required, or asks
//!    for `stream: true` gets 400 at once; with [`MockConfig::models`] set, a
//!    model not among them gets 404 at once. 401, 400 and 404 skip the
//!    latency: they model a gateway rejecting the request before it reaches
//!    the model.
//! 3. **Concurrency.** Past [`MockConfig::max_concurrency`] requests in flight,
//!    429 at once with `retry-after-ms` = max(latency, 1).
//! 4. **Fault draws**, in this order, first match wins: reset (the connection is
//!    closed with no response), hang (no response for an hour), 500. Faulted
//!    requests are not charged against the limits.
//! 5. **Admission.** Cost is one request and `prompt + completion` tokens, both
//!    known before the reply is written; the prompt is counted by the mock
//!    itself (`count`: an OpenAI model's texts by its BPE tokenizer, any
//!    other model's at characters ÷ 4), not by the client's estimator. Each limit is judged by the mock's
//!    own referee (`referee`: a log of admissions checked over every window,
//!    sharing no code with the client's limiter) with a burst of one unit, so a client that bursts a minute's budget gets 429s,
//!    checked with a little slack (by default min(25 ms, half the request's
//!    own time slot); see [`MockConfig::slack_ms`]) so a client that paces
//!    exactly is not punished for network jitter. A request
//!    failing either limit is charged to neither; one larger than the whole
//!    tokens/minute limit can never conform and gets a 429 without `retry-after`.
//! 6. **Latency** (`latency_ms` plus uniform `0..=jitter_ms`), then the response.
//!    Resets and 429s from step 5 wait it too; the truncation draw applies to 200s.
//!
//! Every API response carries OpenAI's `x-ratelimit-{limit,remaining,reset}-
//! {requests,tokens}` headers for the limits that are set. `remaining-requests`
//! is the bucket level (0 or 1 with a burst of one); `remaining-tokens` is
//! the largest request that would be admitted now (the whole limit when the
//! bucket is full, since a full bucket admits one request of any size). Both are
//! measured strictly, without the slack. `reset` is the time until the bucket is
//! full, in Go's duration format (`"20ms"`, `"1.5s"`, `"6m0s"`). A rate-limit 429
//! also carries `retry-after` (whole seconds, rounded up) and `retry-after-ms`
//! (the strict wait until it would conform).
//!
//! # Counting
//!
//! Each API request lands in exactly one outcome counter, so `ok + rate_limited +
//! server_errors + resets + hangs + truncated + unauthorized + bad_requests +
//! rejected + not_found == requests`; a truncated 200 counts as `truncated`, not
//! `ok`. Outcomes are counted when decided, before the latency; the first/last
//! OK times when the 200 is sent.
//! The per-minute maxima are measured over accepted requests (200s, truncated or
//! not) at admission time, to the millisecond; since the limiter allows a little
//! slack, a client pacing at exactly the limit may show one request (or one
//! request's tokens) over it.
//!
//! Faults and jitter use one RNG seeded with [`MockConfig::seed`], drawn in arrival
//! order, so a client that sends the same requests one at a time sees the same
//! outcomes. Completions and embeddings are a function of the seed and the request
//! body; chat replies are seeded by the conversation (model, roles and texts, see
//! `convo`), not by the body's bytes: the same conversation gets the same
//! reply as an OpenAI chat completion or an Anthropic message, live, streamed
//! (`stream: true`: server-sent events, [`MockConfig::stream_interval_ms`]
//! apart) or through a batch API (see `batches`).
//!
//! `POST /v1/messages` is Anthropic's Messages API under the same limits,
//! faults and counters (see `anthropic`). `/v1/files`, `/v1/batches` and
//! `/v1/messages/batches` are the batch APIs; `GET /_mock/batches` reports
//! what they saw ([`BatchStats`]).
//!
//! # Beside the API
//!
//! So that pipelines can be tried without their real services, the same
//! server also plays the other parts (see each module): processing hosts at
//! `POST /stages/NAME` (multipart uploads or JSON, media files back for names
//! like `tts.wav`; with the API's limits, faults and latency, plus
//! [`MockConfig::max_upload_bytes`] and [`MockConfig::reject_rate`]), a
//! Directus-style CMS at `/items/NAME` ([`MockConfig::cms_dir`]), a webhook
//! receiver at `POST /hooks/NAME` that checks sluice's signature
//! ([`MockConfig::hook_secret`]), and a journal of recent requests at
//! `GET /_mock/requests` ([`MockConfig::journal`]).
//!
//! `GET /_mock/stats?window_ms=N` adds [`WindowRates`]: the most requests
//! and tokens accepted in any window of N ms, and the rates achieved from
//! the first admission to the last, from the mock's own log.
//!
//! `GET /healthz`, `GET /_mock/stats`, `GET /_mock/batches`, `GET
//! /_mock/requests` and `POST /_mock/reset` need no key and are not counted.
//! Reset zeroes the stats and returns the limiters, RNG and id counter to
//! their start state; requests in flight finish normally.

mod anthropic;
mod batches;
mod cms;
mod config;
mod convo;
mod count;
mod faults;
mod handler;
mod journal;
mod json_reply;
mod limits;
mod media;
mod referee;
mod reply;
mod request;
mod response;
mod routes;
mod server;
mod sse;
mod stage;
mod state;
mod stats;
mod timer;

pub use batches::BatchStats;
pub use config::MockConfig;
pub use count::warm_tokenizers;
pub use journal::JournalEntry;
pub use server::{serve, MockServer};
pub use stats::{HookStats, MockStats, RouteStats, WindowRates};
