//! The batch APIs: OpenAI's Files (`/v1/files`) and Batches (`/v1/batches`),
//! and Anthropic's Message Batches (`/v1/messages/batches`), in memory.
//!
//! A batch is processed [`crate::MockConfig::batch_delay_ms`] after it was
//! created: until then it is `in_progress`, then every request has its
//! answer — made exactly as the live route would make it (same reply text,
//! same usage) — or, drawn from the seeded RNG when the batch is created, a
//! server error ([`crate::MockConfig::batch_error_rate`]) or an expiry
//! ([`crate::MockConfig::batch_expire_rate`]; an OpenAI batch with expired
//! requests ends `expired`). The documented limits are enforced (see
//! `openai` and `anthropic`), and the failures a client must survive can be
//! injected: OpenAI's enqueued-token limit
//! ([`crate::MockConfig::batch_enqueued_limit`]), lines refused at
//! validation ([`crate::MockConfig::batch_invalid_rate`]) and a create whose
//! answer never comes although the batch was made
//! ([`crate::MockConfig::batch_create_hangs`]).
//! `GET /_mock/batches` reports what was submitted ([`BatchStats`]).

mod anthropic;
mod files;
mod openai;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use crate::response::{self, Body};
use crate::state::{unix_ms, Shared};

/// Largest request body read (a whole batch file).
const MAX_BODY_BYTES: usize = 300 << 20;

/// What one request of a batch will come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Answer,
    Error,
    Expire,
}

/// One request in a batch.
#[derive(Debug, Clone)]
struct Line {
    custom_id: String,
    /// OpenAI: the request body; Anthropic: `params`.
    body: serde_json::Value,
    fate: Fate,
}

/// A batch of either API.
#[derive(Debug)]
struct Batch {
    id: String,
    anthropic: bool,
    created_ms: u64,
    done_ms: u64,
    lines: Vec<Line>,
    /// OpenAI: input file, endpoint, window, metadata; validation errors.
    openai: Option<openai::Meta>,
    /// Set once processed: OpenAI output and error file ids, Anthropic results.
    output: Option<Output>,
    cancelled: bool,
}

#[derive(Debug, Default)]
struct Output {
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    /// Anthropic's results JSONL.
    results: Vec<u8>,
    succeeded: u64,
    errored: u64,
    expired: u64,
}

/// What the batch APIs saw (`GET /_mock/batches`).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct BatchStats {
    /// Files uploaded (`POST /v1/files`).
    pub files_uploaded: u64,
    /// Batches created, both APIs.
    pub batches_created: u64,
    /// Requests in those batches.
    pub requests: u64,
    /// Requests in the largest of them: what a client's batch size held.
    pub largest_batch: u64,
    /// Requests whose custom id was in an earlier batch (a retry, or a double submission).
    pub repeated: u64,
    /// Requests whose custom id had already been answered in an earlier batch: paid twice.
    pub answered_twice: u64,
    /// Results so far, over processed batches.
    pub succeeded: u64,
    /// Requests answered with an error.
    pub errored: u64,
    /// Requests that expired.
    pub expired: u64,
    /// OpenAI batches failed for the enqueued-token limit.
    #[serde(default)]
    pub token_limit_failures: u64,
    /// Lines refused at validation (each named in a failed batch's errors).
    #[serde(default)]
    pub refused_lines: u64,
    /// Creations whose answer was never sent (the batch exists).
    #[serde(default)]
    pub create_hangs: u64,
    /// List calls (`GET /v1/batches`, `GET /v1/messages/batches`): look-ups.
    #[serde(default)]
    pub list_calls: u64,
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<String, files::File>,
    batches: Vec<Batch>,
    next: u64,
    stats: BatchStats,
    /// custom id → answered in a processed batch.
    seen: HashMap<String, bool>,
    rng: Option<fastrand::Rng>,
}

/// The batch APIs' state of one server.
#[derive(Debug, Default)]
pub(crate) struct Offload {
    state: Mutex<State>,
}

impl Offload {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the batch APIs saw so far.
    pub(crate) fn stats(&self) -> BatchStats {
        self.lock().stats.clone()
    }

    /// Forgets every file and batch (`POST /_mock/reset`).
    pub(crate) fn reset(&self) {
        *self.lock() = State::default();
    }
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    /// Draws each line's fate.
    fn fates(&mut self, seed: u64, error_rate: f64, expire_rate: f64, n: usize) -> Vec<Fate> {
        let rng = self
            .rng
            .get_or_insert_with(|| fastrand::Rng::with_seed(seed ^ 0xba7c));
        (0..n)
            .map(|_| {
                let x = rng.f64();
                if x < expire_rate {
                    Fate::Expire
                } else if x < expire_rate + error_rate {
                    Fate::Error
                } else {
                    Fate::Answer
                }
            })
            .collect()
    }

    /// Records a new batch's requests in the stats.
    fn count(&mut self, lines: &[Line]) {
        self.stats.batches_created += 1;
        self.stats.requests += lines.len() as u64;
        self.stats.largest_batch = self.stats.largest_batch.max(lines.len() as u64);
        for line in lines {
            match self.seen.get(&line.custom_id) {
                Some(true) => {
                    self.stats.repeated += 1;
                    self.stats.answered_twice += 1;
                }
                Some(false) => self.stats.repeated += 1,
                None => {
                    self.seen.insert(line.custom_id.clone(), false);
                }
            }
        }
    }
}

/// Whether `path` belongs to these APIs (or to the live Messages route).
pub(crate) fn owns(path: &str) -> bool {
    path == "/v1/messages"
        || path.starts_with("/v1/messages/batches")
        || path.starts_with("/v1/files")
        || path.starts_with("/v1/batches")
        || path == "/_mock/batches"
}

/// Answers a request to a path [`owns`] claims.
pub(crate) async fn route(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Body>, crate::handler::ConnectionReset> {
    let path = req.uri().path().to_string();
    if path == "/v1/messages" && req.method() == Method::POST {
        return crate::anthropic::messages(shared, req).await;
    }
    if path == "/_mock/batches" {
        let stats = shared.offload.lock().stats.clone();
        return Ok(response::json(StatusCode::OK, response::to_json(&stats)));
    }
    let anthropic = path.starts_with("/v1/messages");
    let authorized = if anthropic {
        crate::anthropic::authorized(shared.cfg.api_key.as_deref(), req.headers())
    } else {
        bearer(shared.cfg.api_key.as_deref(), req.headers())
    };
    if !authorized {
        return Ok(if anthropic {
            crate::anthropic::error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid x-api-key",
            )
        } else {
            response::error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided.",
                "invalid_request_error",
                Some("invalid_api_key"),
            )
        });
    }
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let msg = format!("Could not read the request body (at most 300 MB): {e}.");
            return Ok(response::bad_request(&msg));
        }
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let now = unix_ms();
    let creating = method == Method::POST
        && matches!(
            segments.as_slice(),
            ["v1", "batches"] | ["v1", "messages", "batches"]
        );
    let (res, hang) = {
        let mut state = shared.offload.lock();
        let res = match (&method, segments.as_slice()) {
            (&Method::POST, ["v1", "files"]) => {
                files::upload(&mut state, &content_type, &body, now)
            }
            (&Method::GET, ["v1", "files", id]) => files::object(&state, id),
            (&Method::GET, ["v1", "files", id, "content"]) => files::content(&state, id),
            (&Method::POST, ["v1", "batches"]) => openai::create(&mut state, shared, &body, now),
            (&Method::GET, ["v1", "batches"]) => openai::list(&mut state, shared, &query, now),
            (&Method::GET, ["v1", "batches", id]) => openai::get(&mut state, shared, id, now),
            (&Method::POST, ["v1", "batches", id, "cancel"]) => {
                openai::cancel(&mut state, shared, id, now)
            }
            (&Method::POST, ["v1", "messages", "batches"]) => {
                anthropic::create(&mut state, shared, &body, now)
            }
            (&Method::GET, ["v1", "messages", "batches"]) => {
                anthropic::list(&mut state, shared, &query, &host, now)
            }
            (&Method::GET, ["v1", "messages", "batches", id]) => {
                anthropic::get(&mut state, shared, id, &host, now)
            }
            (&Method::GET, ["v1", "messages", "batches", id, "results"]) => {
                anthropic::results(&mut state, shared, id, now)
            }
            _ => {
                let msg = format!("Unknown request URL: {method} {path}.");
                response::error(
                    StatusCode::NOT_FOUND,
                    &msg,
                    "invalid_request_error",
                    Some("unknown_url"),
                )
            }
        };
        let hang = creating
            && res.status().is_success()
            && state.stats.create_hangs < shared.cfg.batch_create_hangs;
        if hang {
            state.stats.create_hangs += 1;
        }
        (res, hang)
    };
    if hang {
        // The batch exists; its creator never hears of it (and times out).
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
    Ok(res)
}

/// Whether `headers` carry the bearer key, when one is required.
fn bearer(key: Option<&str>, headers: &http::HeaderMap) -> bool {
    key.is_none_or(|k| {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|given| given == k.as_bytes())
    })
}

/// Processes `batch` if its time has come: every line's answer (or error,
/// or expiry), counted once.
fn process(state: &mut State, shared: &Shared, index: usize, now: u64) {
    let batch = &state.batches[index];
    if batch.output.is_some() || (now < batch.done_ms && !batch.cancelled) {
        return;
    }
    if batch.openai.as_ref().is_some_and(|m| !m.errors.is_empty()) {
        state.batches[index].output = Some(Output::default());
        return;
    }
    let output = if batch.anthropic {
        anthropic::answers(batch, shared)
    } else {
        let (output, files) = openai::answers(batch, shared, &mut state.next, now);
        for (id, file) in files {
            state.files.insert(id, file);
        }
        output
    };
    let batch = &state.batches[index];
    let answered: Vec<String> = batch
        .lines
        .iter()
        .filter(|l| l.fate == Fate::Answer && !batch.cancelled)
        .map(|l| l.custom_id.clone())
        .collect();
    for id in answered {
        state.seen.insert(id, true);
    }
    state.stats.succeeded += output.succeeded;
    state.stats.errored += output.errored;
    state.stats.expired += output.expired;
    state.batches[index].output = Some(output);
}

/// The index of batch `id`, processed if due.
fn find(state: &mut State, shared: &Shared, id: &str, now: u64) -> Option<usize> {
    let index = state.batches.iter().position(|b| b.id == id)?;
    process(state, shared, index, now);
    Some(index)
}

/// A reply seed for a line: the conversation (chat) or the body.
fn seed_of(parsed_conversation: Option<u64>, body: &[u8], seed: u64) -> u64 {
    match parsed_conversation {
        Some(c) => crate::convo::reply_seed(seed, c),
        None => xxhash_rust::xxh3::xxh3_64_with_seed(body, seed),
    }
}
