//! OpenAI's Batch API: create from an uploaded file, list (paged with
//! `after`), get, cancel; the output and error files written when a batch is
//! processed.
//!
//! As the references describe it (Batch API guide, API reference for
//! Batches): at most 50,000 requests and 200 MB per file, 50,000 embedding
//! inputs per `/v1/embeddings` batch, one model per file, a unique
//! `custom_id` per line, `completion_window` only `"24h"`. A file that breaks
//! them makes a `failed` batch whose `errors.data` name the line (from 1)
//! where there is one. With [`crate::MockConfig::batch_enqueued_limit`] a
//! batch whose prompt tokens would put its model's unfinished batches over
//! the limit fails with `token_limit_exceeded`, worded as OpenAI words it.

use http::{Response, StatusCode};
use serde_json::{json, Value as Json};

use super::files::File;
use super::{find, process, seed_of, Batch, Fate, Line, Output, State};
use crate::count::Counter;
use crate::request::{self, Api};
use crate::response::{self, Body};
use crate::state::Shared;

const MAX_REQUESTS: usize = 50_000;
/// "up to 200 MB": read as 10^6 bytes (the references do not say which).
const MAX_BYTES: usize = 200 * 1_000_000;
const MAX_EMBEDDING_INPUTS: usize = 50_000;
const ENDPOINTS: [&str; 3] = ["/v1/chat/completions", "/v1/embeddings", "/v1/completions"];

/// What an OpenAI batch was created with.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    metadata: Json,
    /// The model of its lines (the first line's).
    model: String,
    /// Prompt tokens of its lines (what it enqueues).
    tokens: u64,
    /// Validation errors (`{code, message, param, line}`): the batch is `failed`.
    pub(super) errors: Vec<Json>,
}

/// One entry of a failed batch's `errors.data`.
fn batch_error(code: &str, message: String, line: Option<usize>, param: Option<&str>) -> Json {
    json!({"code": code, "message": message, "param": param, "line": line})
}

/// `POST /v1/batches`.
pub(super) fn create(state: &mut State, shared: &Shared, body: &[u8], now: u64) -> Response<Body> {
    let Ok(req) = serde_json::from_slice::<Json>(body) else {
        return response::bad_request("Invalid request body: expected JSON.");
    };
    let text = |k: &str| req[k].as_str().map(str::to_string);
    let (Some(file_id), Some(endpoint)) = (text("input_file_id"), text("endpoint")) else {
        return response::bad_request("`input_file_id` and `endpoint` are required.");
    };
    if !ENDPOINTS.contains(&endpoint.as_str()) {
        return response::bad_request(&format!(
            "Invalid endpoint {endpoint:?}; use one of {}.",
            ENDPOINTS.join(", ")
        ));
    }
    let window = text("completion_window").unwrap_or_default();
    if window != "24h" {
        return response::bad_request("Invalid completion_window: only \"24h\" is supported.");
    }
    let Some(file) = state.files.get(&file_id).cloned() else {
        return response::error(
            StatusCode::NOT_FOUND,
            &format!("No such File object: {file_id}"),
            "invalid_request_error",
            None,
        );
    };
    let (lines, mut errors) = read_file(&file, &endpoint, shared);
    let model = lines
        .first()
        .and_then(|(_, b)| b["model"].as_str())
        .unwrap_or("")
        .to_string();
    let tokens: u64 = lines.iter().map(|(_, b)| prompt_tokens(b)).sum();
    if errors.is_empty() {
        if let Some(limit) = shared.cfg.batch_enqueued_limit {
            let enqueued = enqueued_tokens(state, &model, now);
            if enqueued + tokens > limit {
                state.stats.token_limit_failures += 1;
                errors.push(batch_error(
                    "token_limit_exceeded",
                    format!(
                        "Enqueued token limit reached for {model} in organization org-mock. \
                         Limit: {} enqueued tokens. Please try again once some in_progress \
                         batches have been completed.",
                        thousands(limit)
                    ),
                    None,
                    None,
                ));
            }
        }
    }
    let fates = state.fates(
        shared.cfg.seed,
        shared.cfg.batch_error_rate,
        shared.cfg.batch_expire_rate,
        lines.len(),
    );
    let lines: Vec<Line> = lines
        .into_iter()
        .zip(fates)
        .map(|((custom_id, body), fate)| Line {
            custom_id,
            body,
            fate,
        })
        .collect();
    if errors.is_empty() {
        state.count(&lines);
    } else {
        state.stats.batches_created += 1;
        state.stats.refused_lines += errors.iter().filter(|e| e["line"].is_u64()).count() as u64;
    }
    let id = state.id("batch_");
    state.batches.push(Batch {
        id: id.clone(),
        anthropic: false,
        created_ms: now,
        done_ms: now + shared.cfg.batch_delay_ms,
        lines,
        openai: Some(Meta {
            input_file_id: file_id,
            endpoint,
            completion_window: window,
            metadata: req.get("metadata").cloned().unwrap_or(Json::Null),
            model,
            tokens,
            errors,
        }),
        output: None,
        cancelled: false,
    });
    let batch = state.batches.last().map(|b| object(b, now, true));
    respond(batch)
}

/// The lines of a batch file, and why it is invalid (if it is).
fn read_file(file: &File, endpoint: &str, shared: &Shared) -> (Vec<(String, Json)>, Vec<Json>) {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    if file.bytes.len() > MAX_BYTES {
        let message = format!("The batch input file is larger than the {MAX_BYTES} bytes allowed.");
        errors.push(batch_error("file_too_large", message, None, None));
    }
    let mut seen = std::collections::HashSet::new();
    let mut model: Option<String> = None;
    let mut inputs = 0usize;
    let rate = shared.cfg.batch_invalid_rate;
    for (n, raw) in file.bytes.split(|&b| b == b'\n').enumerate() {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line = Some(n + 1);
        let Ok(v) = serde_json::from_slice::<Json>(raw) else {
            errors.push(batch_error(
                "invalid_json_line",
                "This line is not valid JSON.".into(),
                line,
                None,
            ));
            continue;
        };
        let id = v["custom_id"].as_str().unwrap_or("").to_string();
        if id.is_empty() || !seen.insert(id.clone()) {
            let message = "The custom_id for this request is missing or repeated; it must be unique for each request in a batch.".into();
            errors.push(batch_error(
                "duplicate_custom_id",
                message,
                line,
                Some("custom_id"),
            ));
        }
        if v["url"].as_str() != Some(endpoint) || v["method"].as_str() != Some("POST") {
            let message =
                format!("The method must be POST and the url {endpoint}, the batch's endpoint.");
            errors.push(batch_error("invalid_url", message, line, Some("url")));
        }
        let this_model = v["body"]["model"].as_str().unwrap_or("").to_string();
        match &model {
            None => model = Some(this_model),
            Some(first) if *first != this_model => {
                let message = format!("The model {this_model:?} differs from the model {first:?} of this file's first request; a file holds requests to one model.");
                errors.push(batch_error(
                    "mismatched_model",
                    message,
                    line,
                    Some("body.model"),
                ));
            }
            Some(_) => {}
        }
        if endpoint == "/v1/embeddings" {
            inputs += match &v["body"]["input"] {
                Json::Array(items) if items.iter().all(Json::is_number) => 1,
                Json::Array(items) => items.len(),
                _ => 1,
            };
        }
        if rate > 0.0 {
            let x = xxhash_rust::xxh3::xxh3_64_with_seed(raw, shared.cfg.seed ^ 0x1a71d) as f64
                / u64::MAX as f64;
            if x < rate {
                let message = "This request is invalid (injected by --batch-invalid-rate).".into();
                errors.push(batch_error("invalid_request", message, line, Some("body")));
            }
        }
        lines.push((id, v["body"].clone()));
    }
    if inputs > MAX_EMBEDDING_INPUTS {
        let message = format!("The batch has {inputs} embedding inputs; at most {MAX_EMBEDDING_INPUTS} across all requests.");
        errors.push(batch_error("too_many_inputs", message, None, None));
    }
    if lines.len() > MAX_REQUESTS {
        let message = format!(
            "The file has {} requests; at most {MAX_REQUESTS}.",
            lines.len()
        );
        errors.push(batch_error("too_many_requests", message, None, None));
    }
    if lines.is_empty() {
        errors.push(batch_error(
            "empty_file",
            "The file has no requests.".into(),
            None,
            None,
        ));
    }
    (lines, errors)
}

/// Prompt tokens of a request body: its texts, counted as its model's
/// are (see [`crate::count`]).
fn prompt_tokens(body: &Json) -> u64 {
    fn text(v: &Json, counter: Counter) -> u64 {
        match v {
            Json::String(s) => counter.tokens(s),
            Json::Array(items) => items.iter().map(|i| text(i, counter)).sum(),
            Json::Object(o) => o.get("text").map_or(0, |t| text(t, counter)),
            _ => 0,
        }
    }
    let counter = Counter::for_model(body["model"].as_str().unwrap_or(""));
    let messages: u64 = body["messages"]
        .as_array()
        .map(|ms| ms.iter().map(|m| text(&m["content"], counter)).sum())
        .unwrap_or(0);
    messages + text(&body["input"], counter) + text(&body["prompt"], counter)
}

/// Prompt tokens of `model` in batches not yet processed nor failed.
fn enqueued_tokens(state: &State, model: &str, now: u64) -> u64 {
    state
        .batches
        .iter()
        .filter(|b| b.output.is_none() && !b.cancelled && now < b.done_ms)
        .filter_map(|b| b.openai.as_ref())
        .filter(|m| m.errors.is_empty() && m.model == model)
        .map(|m| m.tokens)
        .sum()
}

/// `2000000` → `2,000,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn respond(batch: Option<Json>) -> Response<Body> {
    match batch {
        Some(b) => response::json(StatusCode::OK, b.to_string().into_bytes()),
        None => response::error(
            StatusCode::NOT_FOUND,
            "No such batch.",
            "invalid_request_error",
            None,
        ),
    }
}

/// The batch object; `fresh` for the creation answer (`validating`).
fn object(b: &Batch, now: u64, fresh: bool) -> Json {
    let meta = b.openai.as_ref();
    let out = b.output.as_ref();
    let status = match (meta.is_some_and(|m| !m.errors.is_empty()), out) {
        (true, _) => "failed",
        _ if fresh => "validating",
        (false, None) if b.cancelled => "cancelling",
        (false, None) => "in_progress",
        (false, Some(_)) if b.cancelled => "cancelled",
        (false, Some(o)) if o.expired > 0 => "expired",
        (false, Some(_)) => "completed",
    };
    let errors = meta
        .filter(|m| !m.errors.is_empty())
        .map(|m| json!({"object": "list", "data": m.errors}));
    let failed = status == "failed";
    let at = |on: bool, ms: u64| on.then_some(ms / 1000);
    json!({
        "id": b.id,
        "object": "batch",
        "endpoint": meta.map(|m| m.endpoint.clone()),
        "errors": errors,
        "input_file_id": meta.map(|m| m.input_file_id.clone()),
        "completion_window": meta.map(|m| m.completion_window.clone()),
        "status": status,
        "output_file_id": out.and_then(|o| o.output_file_id.clone()),
        "error_file_id": out.and_then(|o| o.error_file_id.clone()),
        "created_at": b.created_ms / 1000,
        "in_progress_at": at(!failed && !fresh, b.created_ms),
        "expires_at": b.created_ms / 1000 + 86_400,
        "finalizing_at": at(status == "completed", b.done_ms),
        "completed_at": at(status == "completed", b.done_ms),
        "failed_at": at(failed, b.created_ms),
        "expired_at": at(status == "expired", b.done_ms),
        "cancelling_at": at(b.cancelled, b.created_ms),
        "cancelled_at": at(status == "cancelled", now),
        "model": meta.map(|m| m.model.clone()),
        "request_counts": {
            "total": b.lines.len(),
            "completed": out.map_or(0, |o| o.succeeded),
            "failed": out.map_or(0, |o| o.errored + o.expired),
        },
        "metadata": meta.map(|m| m.metadata.clone()),
    })
}

/// `GET /v1/batches/{id}`.
pub(super) fn get(state: &mut State, shared: &Shared, id: &str, now: u64) -> Response<Body> {
    let index = find(state, shared, id, now).filter(|&i| !state.batches[i].anthropic);
    respond(index.map(|i| object(&state.batches[i], now, false)))
}

/// `POST /v1/batches/{id}/cancel`: requests not yet run are cancelled.
pub(super) fn cancel(state: &mut State, shared: &Shared, id: &str, now: u64) -> Response<Body> {
    let Some(index) = find(state, shared, id, now).filter(|&i| !state.batches[i].anthropic) else {
        return respond(None);
    };
    if state.batches[index].output.is_none() {
        state.batches[index].cancelled = true;
        process(state, shared, index, now);
    }
    respond(Some(object(&state.batches[index], now, false)))
}

/// `GET /v1/batches?limit=N&after=ID`: newest first, `limit` (1–100,
/// default 20) after the batch `after`; `has_more`, `first_id`, `last_id`.
pub(super) fn list(state: &mut State, shared: &Shared, query: &str, now: u64) -> Response<Body> {
    let param = |key: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    let limit = param("limit")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let all: Vec<String> = state
        .batches
        .iter()
        .rev()
        .filter(|b| !b.anthropic)
        .map(|b| b.id.clone())
        .collect();
    let start = match param("after") {
        Some(after) => all
            .iter()
            .position(|id| *id == after)
            .map_or(all.len(), |i| i + 1),
        None => 0,
    };
    let ids: Vec<String> = all.iter().skip(start).take(limit).cloned().collect();
    let has_more = start + ids.len() < all.len();
    let data: Vec<Json> = ids
        .iter()
        .filter_map(|id| {
            find(state, shared, id, now).map(|i| object(&state.batches[i], now, false))
        })
        .collect();
    state.stats.list_calls += 1;
    let body = json!({"object": "list", "data": data, "first_id": ids.first(),
                      "last_id": ids.last(), "has_more": has_more});
    response::json(StatusCode::OK, body.to_string().into_bytes())
}

/// Every line's answer: the output file (200s) and the error file (500s and expiries).
pub(super) fn answers(
    batch: &Batch,
    shared: &Shared,
    next: &mut u64,
    now: u64,
) -> (Output, Vec<(String, File)>) {
    let api = match batch.openai.as_ref().map(|m| m.endpoint.as_str()) {
        Some("/v1/embeddings") => Api::Embeddings,
        Some("/v1/completions") => Api::Completions,
        _ => Api::Chat,
    };
    let mut output = Output::default();
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for (n, line) in batch.lines.iter().enumerate() {
        let request_id = format!("{}_req_{n}", batch.id);
        let fate = if batch.cancelled {
            Fate::Expire
        } else {
            line.fate
        };
        let bytes = line.body.to_string().into_bytes();
        let parsed = request::parse(api, &bytes, shared.cfg.default_completion_tokens());
        let record = match (fate, parsed) {
            (Fate::Answer, Ok(parsed)) => {
                output.succeeded += 1;
                let seed = seed_of(parsed.conversation, &bytes, shared.cfg.seed);
                *next += 1;
                let invalid = parsed.json.is_some() && shared.invalid_json(seed, *next);
                let body = response::success(api, &parsed, *next, now / 1000, seed, invalid);
                let body: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
                let mut out = json!({"id": request_id, "custom_id": line.custom_id,
                    "response": {"status_code": 200, "request_id": request_id, "body": body}, "error": null});
                let pad = shared.cfg.batch_result_pad_bytes as usize;
                if pad > 0 {
                    out["_mock_padding"] = Json::String("x".repeat(pad));
                }
                ok.push(out);
                continue;
            }
            (Fate::Answer, Err(message)) => {
                output.errored += 1;
                json!({"status_code": 400, "request_id": request_id,
                       "body": {"error": {"message": message, "type": "invalid_request_error"}}})
            }
            (Fate::Error, _) => {
                output.errored += 1;
                json!({"status_code": 500, "request_id": request_id,
                       "body": {"error": {"message": "The server had an error processing this request (injected).", "type": "server_error"}}})
            }
            (Fate::Expire, _) => {
                output.expired += 1;
                failed.push(json!({"id": request_id, "custom_id": line.custom_id, "response": null,
                    "error": {"code": if batch.cancelled { "batch_cancelled" } else { "batch_expired" },
                              "message": "This request could not be executed before the completion window expired."}}));
                continue;
            }
        };
        failed.push(json!({"id": request_id, "custom_id": line.custom_id, "response": record, "error": null}));
    }
    let mut files = Vec::new();
    for (lines, slot) in [
        (ok, &mut output.output_file_id),
        (failed, &mut output.error_file_id),
    ] {
        if lines.is_empty() {
            continue;
        }
        *next += 1;
        let id = format!("file-{}", *next);
        let mut bytes = Vec::new();
        for l in lines {
            bytes.extend_from_slice(l.to_string().as_bytes());
            bytes.push(b'\n');
        }
        files.push((
            id.clone(),
            File {
                bytes,
                purpose: "batch_output".into(),
                filename: format!("{}_output.jsonl", batch.id),
                created_ms: now,
            },
        ));
        *slot = Some(id);
    }
    (output, files)
}
