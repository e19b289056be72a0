//! OpenAI's Batch API: create from an uploaded file, list, get, cancel; the
//! output and error files written when a batch is processed.

use http::{Response, StatusCode};
use serde_json::{json, Value as Json};

use super::files::File;
use super::{find, process, seed_of, Batch, Fate, Line, Output, State};
use crate::request::{self, Api};
use crate::response::{self, Body};
use crate::state::Shared;

const MAX_REQUESTS: usize = 50_000;
const MAX_BYTES: usize = 200 * 1024 * 1024;
const ENDPOINTS: [&str; 3] = ["/v1/chat/completions", "/v1/embeddings", "/v1/completions"];

/// What an OpenAI batch was created with.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    metadata: Json,
    /// Validation errors: the batch is `failed`.
    pub(super) errors: Vec<String>,
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
    let (lines, errors) = read_file(&file, &endpoint);
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
            errors,
        }),
        output: None,
        cancelled: false,
    });
    let batch = state.batches.last().map(|b| object(b, now, true));
    respond(batch)
}

/// The lines of a batch file, and why it is invalid (if it is).
fn read_file(file: &File, endpoint: &str) -> (Vec<(String, Json)>, Vec<String>) {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    if file.bytes.len() > MAX_BYTES {
        errors.push(format!("The file is larger than {MAX_BYTES} bytes."));
    }
    let mut seen = std::collections::HashSet::new();
    for (n, raw) in file.bytes.split(|&b| b == b'\n').enumerate() {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Json>(raw) else {
            errors.push(format!("Line {}: invalid JSON.", n + 1));
            continue;
        };
        let id = v["custom_id"].as_str().unwrap_or("").to_string();
        if id.is_empty() || !seen.insert(id.clone()) {
            errors.push(format!("Line {}: custom_id missing or repeated.", n + 1));
        }
        if v["url"].as_str() != Some(endpoint) || v["method"].as_str() != Some("POST") {
            errors.push(format!(
                "Line {}: method must be POST and url {endpoint}.",
                n + 1
            ));
        }
        lines.push((id, v["body"].clone()));
    }
    if lines.len() > MAX_REQUESTS {
        errors.push(format!(
            "The file has {} requests; at most {MAX_REQUESTS}.",
            lines.len()
        ));
    }
    if lines.is_empty() {
        errors.push("The file has no requests.".into());
    }
    (lines, errors)
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
        .map(|m| json!({"object": "list", "data": m.errors.iter().map(|e| json!({"code": "invalid_file", "message": e})).collect::<Vec<_>>()}));
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
        "in_progress_at": b.created_ms / 1000,
        "expires_at": b.created_ms / 1000 + 86_400,
        "completed_at": out.map(|_| now / 1000),
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

/// `GET /v1/batches?limit=N`: newest first.
pub(super) fn list(state: &mut State, shared: &Shared, query: &str, now: u64) -> Response<Body> {
    let limit = query
        .split('&')
        .find_map(|p| p.strip_prefix("limit="))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(20);
    let ids: Vec<String> = state
        .batches
        .iter()
        .rev()
        .filter(|b| !b.anthropic)
        .take(limit)
        .map(|b| b.id.clone())
        .collect();
    let data: Vec<Json> = ids
        .iter()
        .filter_map(|id| {
            find(state, shared, id, now).map(|i| object(&state.batches[i], now, false))
        })
        .collect();
    let body = json!({"object": "list", "data": data, "has_more": false});
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
                ok.push(json!({"id": request_id, "custom_id": line.custom_id,
                    "response": {"status_code": 200, "request_id": request_id, "body": body}, "error": null}));
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
