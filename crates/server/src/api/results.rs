//! A run's results (JSONL in input order, paged, as `sluice export` writes
//! them) and one item with every step record (attempts, errors).

use std::io::Write;

use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_engine::{export_run, ExportFormat};

use super::find;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Most lines in one page.
const MAX_PAGE: u64 = 10_000;

/// `?offset=&limit=` of the results.
#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    #[serde(default)]
    offset: u64,
    limit: Option<u64>,
}

/// Keeps lines `skip..skip + take` of what is written; stops the writer
/// (with an error it recognises) at the first line after them.
struct Page {
    skip: u64,
    take: u64,
    line: u64,
    out: Vec<u8>,
    more: bool,
}

impl Write for Page {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.line >= self.skip + self.take {
                self.more = true;
                return Err(std::io::Error::other("page full"));
            }
            let (chunk, newline) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..=i], true),
                None => (rest, false),
            };
            if self.line >= self.skip {
                self.out.extend_from_slice(chunk);
            }
            if newline {
                self.line += 1;
            }
            rest = &rest[chunk.len()..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /v1/runs/{id}/results`: JSONL, input order; `x-next-offset` names
/// the next page when there is one.
pub(crate) async fn results(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Response> {
    let take = q.limit.unwrap_or(1_000);
    if take == 0 || take > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let page = state
        .with_store(move |store| {
            let run = find(store, &id)?;
            let mut page = Page {
                skip: q.offset,
                take,
                line: 0,
                out: Vec::new(),
                more: false,
            };
            match export_run(store, &run.id, ExportFormat::Jsonl, &mut page) {
                Ok(_) => {}
                Err(_) if page.more => {}
                Err(e) => return Err(e.into()),
            }
            Ok(page)
        })
        .await?;
    let mut response = ([(CONTENT_TYPE, "application/x-ndjson")], page.out).into_response();
    if page.more {
        let next = (q.offset + take).to_string();
        if let Ok(v) = next.parse() {
            response.headers_mut().insert("x-next-offset", v);
        }
    }
    Ok(response)
}

/// `GET /v1/runs/{id}/items/{item}`: the item's outcome and result, and
/// every step record (one per step, fan-out element or turn) with its
/// attempts, status and error.
pub(crate) async fn item(
    State(state): State<AppState>,
    Path((id, item)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    state
        .with_store(move |store| {
            let run = find(store, &id)?;
            let Some(record) = store.get_item(&run.id, &item)? else {
                return Err(ApiError::not_found(format!(
                    "run {} has no outcome for item {item:?}: it is still pending, or no such item exists",
                    run.id
                )));
            };
            let steps = store.unit_steps(&run.id, &item)?;
            let job = sluice_engine::RunMode::of(&run.settings) == sluice_engine::RunMode::Job;
            let result = if job {
                sluice_engine::unit_result(&record)
            } else {
                record
                    .response
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok())
                    .unwrap_or(Value::Null)
            };
            Ok(Json(json!({
                "run_id": run.id,
                "item_id": record.item_id,
                "status": record.status,
                "attempts": record.attempts,
                "throttled": record.throttled,
                "status_code": record.status_code,
                "error": record.error,
                "latency_ms": record.latency_ms,
                "started_at": record.started_at,
                "finished_at": record.finished_at,
                "prompt_tokens": record.prompt_tokens,
                "completion_tokens": record.completion_tokens,
                "result": result,
                "steps": steps.iter().map(|s| json!({
                    "step": s.step,
                    "part": s.part,
                    "status": s.status,
                    "attempts": s.attempts,
                    "throttled": s.throttled,
                    "status_code": s.status_code,
                    "error": s.error,
                    "latency_ms": s.latency_ms,
                    "started_at": s.started_at,
                    "finished_at": s.finished_at,
                    "prompt_tokens": s.prompt_tokens,
                    "completion_tokens": s.completion_tokens,
                    "output": s.output.as_deref().and_then(|o| serde_json::from_str::<Value>(o).ok()),
                })).collect::<Vec<_>>(),
            })))
        })
        .await
}
