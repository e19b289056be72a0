//! Reading PostgreSQL rows into the store's types (the decoders are shared
//! with SQLite, see `num.rs`), and the column arrays written with `unnest`.

use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::num::{self, hash_to_i64, to_i64, Columns};
use crate::{During, ItemRecord, Result, StepRecord};

fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i).during("read a stored row")
}

impl Columns for Row {
    fn int(&self, i: usize) -> Result<i64> {
        col(self, i)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        col(self, i)
    }
    fn text(&self, i: usize) -> Result<String> {
        col(self, i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        col(self, i)
    }
}

/// Decodes every row with `decode`.
pub(super) fn all<T>(rows: &[Row], decode: fn(&dyn Columns) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(|r| decode(r)).collect()
}

/// Text PostgreSQL can keep: a NUL character (which it refuses, failing the
/// whole commit) becomes U+FFFD. Input holding one is refused before
/// anything is sent; this keeps what a service answers (a response, an
/// error message) from stopping a run.
fn storable(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_owned()
    }
}

fn opt_storable(s: &Option<String>) -> Option<String> {
    s.as_deref().map(storable)
}

fn opt(what: &'static str, v: Option<u64>) -> Result<Option<i64>> {
    v.map(|v| to_i64(what, v)).transpose()
}

/// Item records as one array per column, for `INSERT ... SELECT FROM unnest(...)`.
/// A later record for the same id wins, as with row-by-row upserts (one
/// statement may not update a row twice).
#[derive(Default)]
pub(super) struct ItemColumns {
    pub(super) item_id: Vec<String>,
    pub(super) idx: Vec<i64>,
    pub(super) hash: Vec<i64>,
    pub(super) status: Vec<&'static str>,
    pub(super) attempts: Vec<i64>,
    pub(super) throttled: Vec<i64>,
    pub(super) status_code: Vec<Option<i64>>,
    pub(super) response: Vec<Option<String>>,
    pub(super) error: Vec<Option<String>>,
    pub(super) prompt_tokens: Vec<Option<i64>>,
    pub(super) completion_tokens: Vec<Option<i64>>,
    pub(super) latency_ms: Vec<i64>,
    pub(super) started_at: Vec<i64>,
    pub(super) finished_at: Vec<i64>,
    pub(super) metadata: Vec<Option<String>>,
    pub(super) custom_id: Vec<Option<String>>,
}

impl ItemColumns {
    pub(super) fn new(records: &[&ItemRecord]) -> Result<ItemColumns> {
        let mut last = std::collections::HashMap::new();
        for (i, r) in records.iter().enumerate() {
            last.insert(r.item_id.as_str(), i);
        }
        let mut c = ItemColumns::default();
        for (i, r) in records.iter().enumerate() {
            if last.get(r.item_id.as_str()) != Some(&i) {
                continue;
            }
            c.item_id.push(storable(&r.item_id));
            c.idx.push(to_i64("item idx", r.idx)?);
            c.hash.push(hash_to_i64(r.hash));
            c.status.push(r.status.as_str());
            c.attempts.push(i64::from(r.attempts));
            c.throttled.push(i64::from(r.throttled));
            c.status_code.push(r.status_code.map(i64::from));
            c.response.push(opt_storable(&r.response));
            c.error.push(opt_storable(&r.error));
            c.prompt_tokens.push(opt("prompt tokens", r.prompt_tokens)?);
            c.completion_tokens
                .push(opt("completion tokens", r.completion_tokens)?);
            c.latency_ms.push(to_i64("latency", r.latency_ms)?);
            c.started_at.push(r.started_at);
            c.finished_at.push(r.finished_at);
            c.metadata.push(opt_storable(&r.metadata));
            c.custom_id.push(opt_storable(&r.custom_id));
        }
        Ok(c)
    }
}

/// Step records as one array per column (a later record for the same
/// unit, step and part wins).
#[derive(Default)]
pub(super) struct StepColumns {
    pub(super) unit_id: Vec<String>,
    pub(super) step: Vec<String>,
    pub(super) part: Vec<i64>,
    pub(super) hash: Vec<i64>,
    pub(super) status: Vec<&'static str>,
    pub(super) attempts: Vec<i64>,
    pub(super) throttled: Vec<i64>,
    pub(super) status_code: Vec<Option<i64>>,
    pub(super) prompt_tokens: Vec<Option<i64>>,
    pub(super) completion_tokens: Vec<Option<i64>>,
    pub(super) latency_ms: Vec<i64>,
    pub(super) started_at: Vec<i64>,
    pub(super) finished_at: Vec<i64>,
    pub(super) error: Vec<Option<String>>,
    pub(super) output: Vec<Option<String>>,
}

impl StepColumns {
    pub(super) fn new(records: &[StepRecord]) -> Result<StepColumns> {
        let mut last = std::collections::HashMap::new();
        for (i, r) in records.iter().enumerate() {
            last.insert((r.unit_id.as_str(), r.step.as_str(), r.part), i);
        }
        let mut c = StepColumns::default();
        for (i, r) in records.iter().enumerate() {
            if last.get(&(r.unit_id.as_str(), r.step.as_str(), r.part)) != Some(&i) {
                continue;
            }
            c.unit_id.push(storable(&r.unit_id));
            c.step.push(storable(&r.step));
            c.part.push(r.part);
            c.hash.push(hash_to_i64(r.hash));
            c.status.push(r.status.as_str());
            c.attempts.push(i64::from(r.attempts));
            c.throttled.push(i64::from(r.throttled));
            c.status_code.push(r.status_code.map(i64::from));
            c.prompt_tokens.push(opt("prompt tokens", r.prompt_tokens)?);
            c.completion_tokens
                .push(opt("completion tokens", r.completion_tokens)?);
            c.latency_ms.push(to_i64("latency", r.latency_ms)?);
            c.started_at.push(r.started_at);
            c.finished_at.push(r.finished_at);
            c.error.push(opt_storable(&r.error));
            c.output.push(opt_storable(&r.output));
        }
        Ok(c)
    }
}

/// Decodes JSON text stored in a column.
pub(super) fn json(what: &'static str, text: &str) -> Result<serde_json::Value> {
    num::parse_json(what, text)
}
