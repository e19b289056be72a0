//! Conversions every backend shares: the clock, integer casts for signed
//! 64-bit columns, the bit-cast request hash, and stored status strings.

use crate::{Error, ItemStatus, Result};

/// Milliseconds since the unix epoch; 0 if the clock is set before 1970.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A `u64` for an INTEGER column, refused past `i64::MAX` rather than wrapped.
pub(crate) fn to_i64(what: &'static str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::OutOfRange { what, value })
}

/// The 64-bit request hash, bit-cast: every `u64` fits and comes back unchanged.
pub(crate) fn hash_to_i64(hash: u64) -> i64 {
    hash as i64
}

/// The inverse of [`hash_to_i64`].
pub(crate) fn hash_from_i64(hash: i64) -> u64 {
    hash as u64
}

/// An INTEGER column that must not be negative.
pub(crate) fn to_u64(what: &'static str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt(what, format!("{value} is negative")))
}

/// An INTEGER column holding a `u32`.
pub(crate) fn to_u32(what: &'static str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(what, format!("{value} is out of range")))
}

/// A stored value that does not decode.
pub(crate) fn corrupt(what: &'static str, detail: String) -> Error {
    Error::Corrupt { what, detail }
}

/// Decodes a status column.
pub(crate) fn status_from_str(s: &str) -> Result<ItemStatus> {
    s.parse()
        .map_err(|_| corrupt("item status", format!("{s:?}")))
}

/// Decodes a JSON text column.
pub(crate) fn parse_json(what: &'static str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e.to_string()))
}

/// One stored row, read column by column: what the decoders below need from
/// either driver. Columns are numbered from 0 in the order of the SELECT.
pub(crate) trait Columns {
    /// A non-null integer.
    fn int(&self, i: usize) -> Result<i64>;
    /// A nullable integer.
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
    /// A non-null text.
    fn text(&self, i: usize) -> Result<String>;
    /// A nullable text.
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
}

/// Columns of `runs` in the order [`run_from`] reads them.
macro_rules! run_columns {
    () => {
        "id, name, source, created_at, updated_at, finished_at, total, settings, state"
    };
}

/// Columns of `items` in the order [`item_from`] reads them.
macro_rules! item_columns {
    () => {
        "item_id, idx, hash, status, attempts, throttled, status_code, response, error, \
         prompt_tokens, completion_tokens, latency_ms, started_at, finished_at, metadata, custom_id"
    };
}

/// [`item_columns!`] over `inputs i LEFT JOIN items it`: the input's id and
/// position, the record's other columns (NULL for a pending item), then the
/// record's own position (NULL: pending), read by [`output_from`].
macro_rules! output_columns {
    () => {
        "i.item_id, i.idx, it.hash, it.status, it.attempts, it.throttled, it.status_code, \
         it.response, it.error, it.prompt_tokens, it.completion_tokens, it.latency_ms, \
         it.started_at, it.finished_at, it.metadata, it.custom_id, it.idx"
    };
}

/// The sums of `counts` over the items in `FROM` (aliased `it`), in SQL
/// both backends read alike (`CAST`: PostgreSQL sums BIGINT to NUMERIC).
macro_rules! count_sums {
    () => {
        "COUNT(*) FILTER (WHERE it.status = 'done'), \
         COUNT(*) FILTER (WHERE it.status = 'failed'), \
         CAST(COALESCE(SUM(it.attempts), 0) AS BIGINT), \
         CAST(COALESCE(SUM(it.throttled), 0) AS BIGINT), \
         CAST(COALESCE(SUM(it.prompt_tokens), 0) AS BIGINT), \
         CAST(COALESCE(SUM(it.completion_tokens), 0) AS BIGINT), \
         CAST(COALESCE(SUM(it.latency_ms), 0) AS BIGINT), \
         MIN(it.started_at), MAX(it.finished_at)"
    };
}

pub(crate) use {count_sums, item_columns, output_columns, run_columns};

/// Decodes a row selected with [`output_columns!`].
pub(crate) fn output_from(row: &dyn Columns) -> Result<crate::Output> {
    if row.opt_int(16)?.is_none() {
        return Ok(crate::Output::Pending {
            item_id: row.text(0)?,
            idx: to_u64("input idx", row.int(1)?)?,
        });
    }
    item_from(row).map(crate::Output::Recorded)
}

/// Decodes a row selected with [`run_columns!`].
pub(crate) fn run_from(row: &dyn Columns) -> Result<crate::RunMeta> {
    let id = row.text(0)?;
    let settings = serde_json::from_str(&row.text(7)?)
        .map_err(|e| corrupt("run settings", format!("run {id}: {e}")))?;
    Ok(crate::RunMeta {
        name: row.text(1)?,
        source: row.text(2)?,
        created_at: row.int(3)?,
        updated_at: row.int(4)?,
        finished_at: row.opt_int(5)?,
        total: row
            .opt_int(6)?
            .map(|t| to_u64("run total", t))
            .transpose()?,
        settings,
        state: row.text(8)?,
        id,
    })
}

fn opt_u64(row: &dyn Columns, i: usize, what: &'static str) -> Result<Option<u64>> {
    row.opt_int(i)?.map(|v| to_u64(what, v)).transpose()
}

fn status_code(row: &dyn Columns, i: usize) -> Result<Option<u16>> {
    match row.opt_int(i)? {
        None => Ok(None),
        Some(c) => Ok(Some(
            u16::try_from(c).map_err(|_| corrupt("status code", c.to_string()))?,
        )),
    }
}

/// Decodes a row selected with [`item_columns!`].
pub(crate) fn item_from(row: &dyn Columns) -> Result<crate::ItemRecord> {
    Ok(crate::ItemRecord {
        item_id: row.text(0)?,
        idx: to_u64("item idx", row.int(1)?)?,
        hash: hash_from_i64(row.int(2)?),
        status: status_from_str(&row.text(3)?)?,
        attempts: to_u32("item attempts", row.int(4)?)?,
        throttled: to_u32("item throttled", row.int(5)?)?,
        status_code: status_code(row, 6)?,
        response: row.opt_text(7)?,
        error: row.opt_text(8)?,
        prompt_tokens: opt_u64(row, 9, "prompt tokens")?,
        completion_tokens: opt_u64(row, 10, "completion tokens")?,
        latency_ms: to_u64("latency", row.int(11)?)?,
        started_at: row.int(12)?,
        finished_at: row.int(13)?,
        metadata: row.opt_text(14)?,
        custom_id: row.opt_text(15)?,
    })
}

/// Columns of `steps` in the order [`step_from`] reads them.
pub(crate) const STEP_COLUMNS: &str = "unit_id, step, part, hash, status, attempts, throttled, \
    status_code, prompt_tokens, completion_tokens, latency_ms, started_at, finished_at, error, output";

/// Decodes a row selected with [`STEP_COLUMNS`].
pub(crate) fn step_from(row: &dyn Columns) -> Result<crate::StepRecord> {
    Ok(crate::StepRecord {
        unit_id: row.text(0)?,
        step: row.text(1)?,
        part: row.int(2)?,
        hash: hash_from_i64(row.int(3)?),
        status: status_from_str(&row.text(4)?)?,
        attempts: to_u32("step attempts", row.int(5)?)?,
        throttled: to_u32("step throttled", row.int(6)?)?,
        status_code: row.opt_int(7)?.and_then(|c| u16::try_from(c).ok()),
        prompt_tokens: opt_u64(row, 8, "prompt tokens")?,
        completion_tokens: opt_u64(row, 9, "completion tokens")?,
        latency_ms: to_u64("latency", row.int(10)?)?,
        started_at: row.int(11)?,
        finished_at: row.int(12)?,
        error: row.opt_text(13)?,
        output: row.opt_text(14)?,
    })
}
