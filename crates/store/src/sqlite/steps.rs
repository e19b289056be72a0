//! Step records of pipeline units: write, read one unit's, reset failed ones.

use rusqlite::{params, Row, TransactionBehavior};

use super::rows;
use super::SqliteStore;
use crate::{During, Result, StepRecord};

use crate::num::STEP_COLUMNS as COLUMNS;

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

pub(super) fn reset_failed_units(
    store: &mut SqliteStore,
    run_id: &str,
    units: &[String],
) -> Result<u64> {
    let op = "reset failed units";
    let tx = store
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .during(op)?;
    SqliteStore::touch(&tx, run_id)?;
    let mut reopened = 0;
    for unit in units {
        let n = tx
            .prepare_cached(
                "DELETE FROM items WHERE run_id = ?1 AND item_id = ?2 AND status = 'failed'",
            )
            .and_then(|mut s| s.execute(params![run_id, unit]))
            .during(op)?;
        if n > 0 {
            tx.prepare_cached(
                "DELETE FROM steps WHERE run_id = ?1 AND unit_id = ?2 AND status = 'failed'",
            )
            .and_then(|mut s| s.execute(params![run_id, unit]))
            .during(op)?;
        }
        reopened += n as u64;
    }
    tx.commit().during(op)?;
    Ok(reopened)
}

fn from_row(row: &Row<'_>) -> Result<StepRecord> {
    crate::num::step_from(row)
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
