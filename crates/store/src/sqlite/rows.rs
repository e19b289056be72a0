//! Mapping between SQLite rows and the store's types: column lists, decoding, integer casts.

use rusqlite::types::FromSql;
use rusqlite::Row;

use crate::{During, Error, ItemRecord, ItemStatus, Result, RunMeta};

/// Columns of `runs` in the order [`run_from_row`] reads them.
macro_rules! run_columns {
    () => {
        "id, name, source, created_at, updated_at, finished_at, total, settings, state"
    };
}

/// Columns of `items` in the order [`item_from_row`] reads them.
macro_rules! item_columns {
    () => {
        "item_id, idx, hash, status, attempts, throttled, status_code, response, error, \
         prompt_tokens, completion_tokens, latency_ms, started_at, finished_at, metadata, custom_id"
    };
}

pub(super) use {item_columns, run_columns};

/// Milliseconds since the unix epoch; 0 if the clock is set before 1970.
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A `u64` for an INTEGER column, refused past `i64::MAX` rather than wrapped.
pub(super) fn to_i64(what: &'static str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::OutOfRange { what, value })
}

/// The 64-bit request hash, bit-cast: every `u64` fits and comes back unchanged.
pub(super) fn hash_to_i64(hash: u64) -> i64 {
    hash as i64
}

/// The inverse of [`hash_to_i64`].
pub(super) fn hash_from_i64(hash: i64) -> u64 {
    hash as u64
}

/// An INTEGER column that must not be negative.
pub(super) fn to_u64(what: &'static str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt(what, format!("{value} is negative")))
}

pub(super) fn to_u32(what: &'static str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(what, format!("{value} is out of range")))
}

fn corrupt(what: &'static str, detail: String) -> Error {
    Error::Corrupt { what, detail }
}

/// Decodes a status column.
pub(super) fn status_from_str(s: &str) -> Result<ItemStatus> {
    s.parse()
        .map_err(|_| corrupt("item status", format!("{s:?}")))
}

/// Reads column `i`, naming the failure as a read of the store.
pub(super) fn col<T: FromSql>(row: &Row<'_>, i: usize) -> Result<T> {
    row.get(i).during("read a stored row")
}

/// Decodes a row selected with [`run_columns!`].
pub(super) fn run_from_row(row: &Row<'_>) -> Result<RunMeta> {
    let id: String = col(row, 0)?;
    let settings: String = col(row, 7)?;
    let settings = serde_json::from_str(&settings)
        .map_err(|e| corrupt("run settings", format!("run {id}: {e}")))?;
    let total: Option<i64> = col(row, 6)?;
    Ok(RunMeta {
        name: col(row, 1)?,
        source: col(row, 2)?,
        created_at: col(row, 3)?,
        updated_at: col(row, 4)?,
        finished_at: col(row, 5)?,
        total: total.map(|t| to_u64("run total", t)).transpose()?,
        settings,
        state: col(row, 8)?,
        id,
    })
}

/// Decodes a row selected with [`item_columns!`].
pub(super) fn item_from_row(row: &Row<'_>) -> Result<ItemRecord> {
    let opt_u64 = |what, i| -> Result<Option<u64>> {
        col::<Option<i64>>(row, i)?
            .map(|v| to_u64(what, v))
            .transpose()
    };
    let status_code = match col::<Option<i64>>(row, 6)? {
        None => None,
        Some(c) => Some(u16::try_from(c).map_err(|_| corrupt("status code", c.to_string()))?),
    };
    let status: String = col(row, 3)?;
    Ok(ItemRecord {
        item_id: col(row, 0)?,
        idx: to_u64("item idx", col(row, 1)?)?,
        hash: hash_from_i64(col(row, 2)?),
        status: status_from_str(&status)?,
        attempts: to_u32("item attempts", col(row, 4)?)?,
        throttled: to_u32("item throttled", col(row, 5)?)?,
        status_code,
        response: col(row, 7)?,
        error: col(row, 8)?,
        prompt_tokens: opt_u64("prompt tokens", 9)?,
        completion_tokens: opt_u64("completion tokens", 10)?,
        latency_ms: to_u64("latency", col(row, 11)?)?,
        started_at: col(row, 12)?,
        finished_at: col(row, 13)?,
        metadata: col(row, 14)?,
        custom_id: col(row, 15)?,
    })
}
