//! Step records of pipeline units: write, read one unit's, reset failed ones.

use rusqlite::{params, Row, TransactionBehavior};

use super::rows;
use super::SqliteStore;
use crate::{During, Result, StepRecord};

const COLUMNS: &str = "unit_id, step, part, hash, status, attempts, throttled, status_code, \
    prompt_tokens, completion_tokens, latency_ms, started_at, finished_at, error, output";

pub(super) fn write(store: &mut SqliteStore, run_id: &str, records: &[StepRecord]) -> Result<()> {
    let op = "record step results";
    let sql = format!(
        "INSERT INTO steps (run_id, {COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
         ON CONFLICT (run_id, unit_id, step, part) DO UPDATE SET hash = excluded.hash, \
         status = excluded.status, attempts = excluded.attempts, throttled = excluded.throttled, \
         status_code = excluded.status_code, prompt_tokens = excluded.prompt_tokens, \
         completion_tokens = excluded.completion_tokens, latency_ms = excluded.latency_ms, \
         started_at = excluded.started_at, finished_at = excluded.finished_at, \
         error = excluded.error, output = excluded.output"
    );
    let tx = store
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .during(op)?;
    SqliteStore::touch(&tx, run_id)?;
    {
        let mut stmt = tx.prepare_cached(&sql).during(op)?;
        for r in records {
            let opt = |what, v: Option<u64>| v.map(|v| rows::to_i64(what, v)).transpose();
            stmt.execute(params![
                run_id,
                r.unit_id,
                r.step,
                r.part,
                rows::hash_to_i64(r.hash),
                r.status.as_str(),
                r.attempts,
                r.throttled,
                r.status_code,
                opt("prompt tokens", r.prompt_tokens)?,
                opt("completion tokens", r.completion_tokens)?,
                rows::to_i64("latency", r.latency_ms)?,
                r.started_at,
                r.finished_at,
                r.error,
                r.output,
            ])
            .during(op)?;
        }
    }
    tx.commit().during(op)
}

pub(super) fn of_unit(
    store: &mut SqliteStore,
    run_id: &str,
    unit_id: &str,
) -> Result<Vec<StepRecord>> {
    let op = "read step results";
    let sql = format!(
        "SELECT {COLUMNS} FROM steps WHERE run_id = ?1 AND unit_id = ?2 ORDER BY step, part"
    );
    let mut stmt = store.conn.prepare_cached(&sql).during(op)?;
    let mut found = stmt.query(params![run_id, unit_id]).during(op)?;
    let mut out = Vec::new();
    while let Some(row) = found.next().during(op)? {
        out.push(from_row(row)?);
    }
    Ok(out)
}

pub(super) fn reset_failed(
    store: &mut SqliteStore,
    run_id: &str,
    step: Option<&str>,
) -> Result<u64> {
    let op = "reset failed steps";
    let tx = store
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .during(op)?;
    SqliteStore::touch(&tx, run_id)?;
    // The units whose failure came from those steps become pending again;
    // without a step, every failed unit (a template error records no step).
    let units = tx
        .prepare_cached(
            "DELETE FROM items WHERE run_id = ?1 AND status = 'failed' AND (?2 IS NULL OR \
             item_id IN (SELECT unit_id FROM steps WHERE run_id = ?1 AND status = 'failed' \
              AND step = ?2))",
        )
        .and_then(|mut s| s.execute(params![run_id, step]))
        .during(op)?;
    tx.prepare_cached(
        "DELETE FROM steps WHERE run_id = ?1 AND status = 'failed' AND (?2 IS NULL OR step = ?2)",
    )
    .and_then(|mut s| s.execute(params![run_id, step]))
    .during(op)?;
    tx.commit().during(op)?;
    Ok(units as u64)
}

fn from_row(row: &Row<'_>) -> Result<StepRecord> {
    let get_u64 = |i: usize, what: &'static str| -> Result<Option<u64>> {
        rows::col::<Option<i64>>(row, i)?
            .map(|v| rows::to_u64(what, v))
            .transpose()
    };
    let status: String = rows::col(row, 4)?;
    Ok(StepRecord {
        unit_id: rows::col(row, 0)?,
        step: rows::col(row, 1)?,
        part: rows::col(row, 2)?,
        hash: rows::hash_from_i64(rows::col(row, 3)?),
        status: rows::status_from_str(&status)?,
        attempts: rows::to_u32("step attempts", rows::col(row, 5)?)?,
        throttled: rows::to_u32("step throttled", rows::col(row, 6)?)?,
        status_code: rows::col::<Option<i64>>(row, 7)?.and_then(|c| u16::try_from(c).ok()),
        prompt_tokens: get_u64(8, "prompt tokens")?,
        completion_tokens: get_u64(9, "completion tokens")?,
        latency_ms: rows::to_u64("latency", rows::col(row, 10)?)?,
        started_at: rows::col(row, 11)?,
        finished_at: rows::col(row, 12)?,
        error: rows::col(row, 13)?,
        output: rows::col(row, 14)?,
    })
}

pub(super) fn cache_get(store: &mut SqliteStore, key: u64, since: i64) -> Result<Option<String>> {
    let op = "read the cache";
    let mut stmt = store
        .conn
        .prepare_cached("SELECT output FROM cache WHERE key = ?1 AND created_at >= ?2")
        .during(op)?;
    let mut found = stmt
        .query(params![rows::hash_to_i64(key), since])
        .during(op)?;
    match found.next().during(op)? {
        Some(row) => Ok(Some(rows::col(row, 0)?)),
        None => Ok(None),
    }
}

pub(super) fn cache_put(store: &mut SqliteStore, entries: &[(u64, String, i64)]) -> Result<()> {
    let op = "write the cache";
    let tx = store
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .during(op)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO cache (key, output, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO UPDATE SET output = excluded.output, created_at = excluded.created_at",
            )
            .during(op)?;
        for (key, output, at) in entries {
            stmt.execute(params![rows::hash_to_i64(*key), output, at])
                .during(op)?;
        }
    }
    tx.commit().during(op)
}
