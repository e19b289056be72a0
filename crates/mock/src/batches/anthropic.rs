//! Anthropic's Message Batches API: create (requests in the body), list
//! (paged with `after_id`), get, and the results JSONL once the batch has
//! ended.
//!
//! As the references describe it (Batch processing guide, API reference):
//! at most 100,000 requests or 256 MB per batch, custom ids matching
//! `^[a-zA-Z0-9_-]{1,64}$` and unique in the batch, `params` validated only
//! when the batch is processed (an invalid one is an `errored` result),
//! `results_url` null until the batch has ended.

use http::{Response, StatusCode};
use serde_json::{json, Value as Json};

use super::{find, Batch, Fate, Line, Output, State};
use crate::anthropic::{answer, error, rfc3339};
use crate::response::{self, Body};
use crate::state::Shared;

const MAX_REQUESTS: usize = 100_000;
/// "256 MB": read as 10^6 bytes (the references do not say which).
const MAX_BYTES: usize = 256 * 1_000_000;

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `POST /v1/messages/batches`.
pub(super) fn create(state: &mut State, shared: &Shared, body: &[u8], now: u64) -> Response<Body> {
    let invalid = |m: &str| error(StatusCode::BAD_REQUEST, "invalid_request_error", m);
    if body.len() > MAX_BYTES {
        return invalid("requests: a batch may be at most 256 MB");
    }
    let Ok(req) = serde_json::from_slice::<Json>(body) else {
        return invalid("Invalid request body: expected JSON.");
    };
    let Some(requests) = req["requests"].as_array() else {
        return invalid("requests: Field required");
    };
    if requests.is_empty() || requests.len() > MAX_REQUESTS {
        return invalid("requests: between 1 and 100,000 requests");
    }
    let mut seen = std::collections::HashSet::new();
    for r in requests {
        let id = r["custom_id"].as_str().unwrap_or("");
        if !valid_id(id) {
            return invalid(&format!(
                "custom_id {id:?}: must match ^[a-zA-Z0-9_-]{{1,64}}$"
            ));
        }
        if !seen.insert(id) {
            return invalid(&format!(
                "custom_id {id:?} is used more than once in this batch"
            ));
        }
        if !r["params"].is_object() {
            return invalid("params: Field required");
        }
    }
    let fates = state.fates(
        shared.cfg.seed,
        shared.cfg.batch_error_rate,
        shared.cfg.batch_expire_rate,
        requests.len(),
    );
    let lines: Vec<Line> = requests
        .iter()
        .zip(fates)
        .map(|(r, fate)| Line {
            custom_id: r["custom_id"].as_str().unwrap_or("").to_string(),
            body: r["params"].clone(),
            fate,
        })
        .collect();
    state.count(&lines);
    let id = state.id("msgbatch_");
    state.batches.push(Batch {
        id,
        anthropic: true,
        created_ms: now,
        done_ms: now + shared.cfg.batch_delay_ms,
        lines,
        openai: None,
        output: None,
        cancelled: false,
    });
    let b = state.batches.last().map(|b| object(b, "", now));
    respond(b)
}

fn respond(batch: Option<Json>) -> Response<Body> {
    match batch {
        Some(b) => response::json(StatusCode::OK, b.to_string().into_bytes()),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "No such message batch.",
        ),
    }
}

fn object(b: &Batch, host: &str, _now: u64) -> Json {
    let out = b.output.as_ref();
    let n = b.lines.len() as u64;
    json!({
        "id": b.id,
        "type": "message_batch",
        "processing_status": if out.is_some() { "ended" } else { "in_progress" },
        "request_counts": {
            "processing": if out.is_some() { 0 } else { n },
            "succeeded": out.map_or(0, |o| o.succeeded),
            "errored": out.map_or(0, |o| o.errored),
            "canceled": 0,
            "expired": out.map_or(0, |o| o.expired),
        },
        "ended_at": out.map(|_| rfc3339(b.done_ms)),
        "archived_at": null,
        "created_at": rfc3339(b.created_ms),
        "expires_at": rfc3339(b.created_ms + 86_400_000),
        "cancel_initiated_at": null,
        "results_url": out.filter(|_| !host.is_empty()).map(|_| format!("http://{host}/v1/messages/batches/{}/results", b.id)),
    })
}

/// `GET /v1/messages/batches/{id}`.
pub(super) fn get(
    state: &mut State,
    shared: &Shared,
    id: &str,
    host: &str,
    now: u64,
) -> Response<Body> {
    let index = find(state, shared, id, now).filter(|&i| state.batches[i].anthropic);
    respond(index.map(|i| object(&state.batches[i], host, now)))
}

/// `GET /v1/messages/batches?limit=N&after_id=ID`: newest first, `limit`
/// (1–1000, default 20) after `after_id`; `has_more`, `first_id`, `last_id`.
pub(super) fn list(
    state: &mut State,
    shared: &Shared,
    query: &str,
    host: &str,
    now: u64,
) -> Response<Body> {
    let param = |key: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    let limit = param("limit")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 1000);
    let all: Vec<String> = state
        .batches
        .iter()
        .rev()
        .filter(|b| b.anthropic)
        .map(|b| b.id.clone())
        .collect();
    let start = match param("after_id") {
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
        .filter_map(|id| find(state, shared, id, now).map(|i| object(&state.batches[i], host, now)))
        .collect();
    state.stats.list_calls += 1;
    let body =
        json!({"data": data, "has_more": has_more, "first_id": ids.first(), "last_id": ids.last()});
    response::json(StatusCode::OK, body.to_string().into_bytes())
}

/// `GET /v1/messages/batches/{id}/results`.
pub(super) fn results(state: &mut State, shared: &Shared, id: &str, now: u64) -> Response<Body> {
    let Some(index) = find(state, shared, id, now).filter(|&i| state.batches[i].anthropic) else {
        return respond(None);
    };
    match &state.batches[index].output {
        Some(o) => response::json(StatusCode::OK, o.results.clone()),
        None => error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "This batch is still processing; its results are not available yet.",
        ),
    }
}

/// Every request's result, as the live route would answer it.
pub(super) fn answers(batch: &Batch, shared: &Shared) -> Output {
    let mut output = Output::default();
    for (n, line) in batch.lines.iter().enumerate() {
        let result = match line.fate {
            Fate::Answer => match answer(
                &line.body,
                shared.cfg.default_completion_tokens(),
                shared.cfg.seed,
                n as u64 + 1,
            ) {
                Ok(message) => {
                    output.succeeded += 1;
                    json!({"type": "succeeded", "message": message})
                }
                Err(m) => {
                    output.errored += 1;
                    json!({"type": "errored", "error": {"type": "error", "error": {"type": "invalid_request_error", "message": m}}})
                }
            },
            Fate::Error => {
                output.errored += 1;
                json!({"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": "Internal server error (injected)."}}})
            }
            Fate::Expire => {
                output.expired += 1;
                json!({"type": "expired"})
            }
        };
        output.results.extend_from_slice(
            json!({"custom_id": line.custom_id, "result": result})
                .to_string()
                .as_bytes(),
        );
        output.results.push(b'\n');
    }
    output
}
