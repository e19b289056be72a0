//! A run's failed items grouped by cause — step, code and normalised
//! message — with every item of each group (`GET /v1/runs/{id}/failures`),
//! and the selections a retry can re-queue: one group, or the failures
//! that trying again may cure. Results to download live here too
//! (`GET /v1/runs/{id}/export?format=`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sluice_engine::{export_run, normalise, ErrorKey, ExportFormat};
use sluice_store::{ItemStatus, Store};

use super::find;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Items listed per group at most (the count is always whole).
const DEFAULT_ITEMS: usize = 200;
const MAX_ITEMS: usize = 10_000;

/// Codes of failures another attempt may cure: limits, server errors,
/// timeouts, broken connections, truncated answers. The rest (a 4xx other
/// than 429, a template or schema problem) fail the same way again.
const RETRYABLE: [&str; 6] = [
    "rate_limited",
    "server_error",
    "timeout",
    "connect_error",
    "connection_error",
    "bad_response",
];

/// Whether a failure with `code` may succeed when tried again.
pub(crate) fn retryable(code: &str) -> bool {
    RETRYABLE.contains(&code)
}

/// The stable id of a cause (what `?group=` names).
pub(crate) fn group_id(key: &ErrorKey) -> String {
    let text = format!(
        "{}\u{1f}{}\u{1f}{}",
        key.step.as_deref().unwrap_or(""),
        key.code,
        key.cause
    );
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// One failed item as listed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FailedItem {
    item: String,
    message: String,
    status_code: Option<u16>,
    attempts: u32,
}

/// Failures with one cause.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Group {
    id: String,
    #[serde(flatten)]
    key: ErrorKey,
    retryable: bool,
    count: u64,
    items: Vec<FailedItem>,
}

/// Which failures a retry re-queues.
#[derive(Debug, Clone)]
pub(crate) enum Select {
    /// One cause (its [`group_id`]).
    Group(String),
    /// Every failure another attempt may cure.
    Retryable,
}

/// Calls `f` with every failed item of the run and its cause.
fn each_failure(
    store: &mut dyn Store,
    run_id: &str,
    f: &mut dyn FnMut(&sluice_store::ItemRecord, ErrorKey),
) -> ApiResult<()> {
    store.for_each_item(run_id, &mut |item| {
        if item.status == ItemStatus::Failed {
            let key = normalise(item.error.as_deref().unwrap_or("error: no message"));
            f(&item, key);
        }
        Ok(())
    })?;
    Ok(())
}

/// The run's failures by cause, most frequent first, `per_group` items each.
pub(crate) fn groups(
    store: &mut dyn Store,
    run_id: &str,
    per_group: usize,
) -> ApiResult<Vec<Group>> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<ErrorKey, usize> = HashMap::new();
    each_failure(store, run_id, &mut |item, key| {
        let i = *index.entry(key.clone()).or_insert_with(|| {
            groups.push(Group {
                id: group_id(&key),
                retryable: retryable(&key.code),
                key,
                count: 0,
                items: Vec::new(),
            });
            groups.len() - 1
        });
        let g = &mut groups[i];
        g.count += 1;
        if g.items.len() < per_group {
            g.items.push(FailedItem {
                item: item.item_id.clone(),
                message: item.error.clone().unwrap_or_default(),
                status_code: item.status_code,
                attempts: item.attempts,
            });
        }
    })?;
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    Ok(groups)
}

/// The failed items `select` names.
pub(crate) fn selected(
    store: &mut dyn Store,
    run_id: &str,
    select: &Select,
) -> ApiResult<Vec<String>> {
    let mut ids = Vec::new();
    each_failure(store, run_id, &mut |item, key| {
        let chosen = match select {
            Select::Group(id) => &group_id(&key) == id,
            Select::Retryable => retryable(&key.code),
        };
        if chosen {
            ids.push(item.item_id.clone());
        }
    })?;
    Ok(ids)
}

/// `?items=` of the failures.
#[derive(Debug, Deserialize)]
pub(crate) struct FailuresQuery {
    items: Option<usize>,
}

/// `GET /v1/runs/{id}/failures`.
pub(crate) async fn failures(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<FailuresQuery>,
) -> ApiResult<Json<Value>> {
    let per_group = q.items.unwrap_or(DEFAULT_ITEMS);
    if per_group > MAX_ITEMS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("items must be at most {MAX_ITEMS}"),
        ));
    }
    state
        .with_store(move |store| {
            let run = find(store, &id)?;
            let groups = groups(store, &run.id, per_group)?;
            let total: u64 = groups.iter().map(|g| g.count).sum();
            let retryable: u64 = groups.iter().filter(|g| g.retryable).map(|g| g.count).sum();
            Ok(Json(json!({
                "run_id": run.id,
                "failed": total,
                "retryable": retryable,
                "groups": groups,
            })))
        })
        .await
}

/// `?format=` of an export.
#[derive(Debug, Deserialize)]
pub(crate) struct ExportQuery {
    format: Option<String>,
}

/// `GET /v1/runs/{id}/export?format=jsonl|csv|parquet`: every result as
/// `sluice export` writes it, as a file to save.
pub(crate) async fn export(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    let name = q.format.unwrap_or_else(|| "jsonl".into());
    let (format, kind) = match name.as_str() {
        "jsonl" => (ExportFormat::Jsonl, "application/x-ndjson"),
        "csv" => (ExportFormat::Csv, "text/csv; charset=utf-8"),
        "parquet" => (ExportFormat::Parquet, "application/vnd.apache.parquet"),
        other => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("format={other:?} is not known; use jsonl, csv or parquet"),
            ))
        }
    };
    let (run_id, bytes) = state
        .with_store(move |store| {
            let run = find(store, &id)?;
            let mut out = Vec::new();
            export_run(store, &run.id, format, &mut out)?;
            Ok((run.id, out))
        })
        .await?;
    let file = format!("attachment; filename=\"{run_id}.{name}\"");
    Ok((
        [(CONTENT_TYPE, kind.to_owned()), (CONTENT_DISPOSITION, file)],
        bytes,
    )
        .into_response())
}
