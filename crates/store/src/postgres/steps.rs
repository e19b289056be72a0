//! Step records of pipeline units and the cross-run cache, in PostgreSQL.

use super::conn::{Conn, Handle};
use super::rows::{self, StepColumns};
use super::store::{ensure_run, touch};
use crate::num::{self, hash_to_i64};
use crate::{During, Result, StepRecord};

pub(super) fn write(handle: &Handle, run_id: &str, records: &[StepRecord]) -> Result<()> {
    let c = StepColumns::new(records)?;
    let run_id = run_id.to_owned();
    handle.call(move |conn| {
        let op = "record step results";
        conn.tx(op, |conn| {
            touch(conn, &run_id)?;
            write_in(conn, &run_id, &c)
        })
    })
}

/// Upserts step records inside the caller's transaction.
pub(super) fn write_in(conn: &mut Conn, run_id: &String, c: &StepColumns) -> Result<()> {
    const SQL: &str = "INSERT INTO steps (run_id, unit_id, step, part, hash, status, attempts, \
        throttled, status_code, prompt_tokens, completion_tokens, latency_ms, started_at, \
        finished_at, error, output) \
        SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[], \
        $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], \
        $14::int8[], $15::text[], $16::text[]) \
        ON CONFLICT (run_id, unit_id, step, part) DO UPDATE SET hash = excluded.hash, \
        status = excluded.status, attempts = excluded.attempts, throttled = excluded.throttled, \
        status_code = excluded.status_code, prompt_tokens = excluded.prompt_tokens, \
        completion_tokens = excluded.completion_tokens, latency_ms = excluded.latency_ms, \
        started_at = excluded.started_at, finished_at = excluded.finished_at, \
        error = excluded.error, output = excluded.output";
    if c.unit_id.is_empty() {
        return Ok(());
    }
    conn.execute(
        SQL,
        &[
            run_id,
            &c.unit_id,
            &c.step,
            &c.part,
            &c.hash,
            &c.status,
            &c.attempts,
            &c.throttled,
            &c.status_code,
            &c.prompt_tokens,
            &c.completion_tokens,
            &c.latency_ms,
            &c.started_at,
            &c.finished_at,
            &c.error,
            &c.output,
        ],
    )
    .during("record step results")?;
    Ok(())
}

pub(super) fn of_unit(handle: &Handle, run_id: &str, unit_id: &str) -> Result<Vec<StepRecord>> {
    const SQL: &str = "SELECT unit_id, step, part, hash, status, attempts, throttled, \
        status_code, prompt_tokens, completion_tokens, latency_ms, started_at, finished_at, \
        error, output FROM steps WHERE run_id = $1 AND unit_id = $2 ORDER BY step, part";
    let (run_id, unit_id) = (run_id.to_owned(), unit_id.to_owned());
    handle.call(move |c| {
        ensure_run(c, &run_id)?;
        let found = c
            .query(SQL, &[&run_id, &unit_id])
            .during("read step results")?;
        rows::all(&found, num::step_from)
    })
}

pub(super) fn reset_failed(handle: &Handle, run_id: &str, step: Option<&str>) -> Result<u64> {
    let (run_id, step) = (run_id.to_owned(), step.map(str::to_owned));
    handle.call(move |c| {
        let op = "reset failed steps";
        c.tx(op, |c| {
            touch(c, &run_id)?;
            // The units whose failure came from those steps become pending
            // again; without a step, every failed unit.
            let units = c
                .execute(
                    "DELETE FROM items WHERE run_id = $1 AND status = 'failed' AND ($2::text IS NULL OR \
                     item_id IN (SELECT unit_id FROM steps WHERE run_id = $1 AND status = 'failed' \
                      AND step = $2))",
                    &[&run_id, &step],
                )
                .during(op)?;
            c.execute(
                "DELETE FROM steps WHERE run_id = $1 AND status = 'failed' \
                 AND ($2::text IS NULL OR step = $2)",
                &[&run_id, &step],
            )
            .during(op)?;
            Ok(units)
        })
    })
}

pub(super) fn reset_failed_units(handle: &Handle, run_id: &str, units: &[String]) -> Result<u64> {
    let (run_id, units) = (run_id.to_owned(), units.to_vec());
    handle.call(move |c| {
        let op = "reset failed units";
        c.tx(op, |c| {
            touch(c, &run_id)?;
            // Only units that failed: their failed steps go with them.
            let reopened = c
                .query(
                    "DELETE FROM items WHERE run_id = $1 AND status = 'failed' \
                     AND item_id = ANY($2::text[]) RETURNING item_id",
                    &[&run_id, &units],
                )
                .during(op)?;
            let ids: Vec<String> = reopened.iter().map(|r| r.get(0)).collect();
            c.execute(
                "DELETE FROM steps WHERE run_id = $1 AND status = 'failed' \
                 AND unit_id = ANY($2::text[])",
                &[&run_id, &ids],
            )
            .during(op)?;
            Ok(ids.len() as u64)
        })
    })
}

pub(super) fn cache_get(handle: &Handle, key: u64, since: i64) -> Result<Option<String>> {
    let key = hash_to_i64(key);
    handle.call(move |c| {
        let row = c
            .query_opt(
                "SELECT output FROM cache WHERE key = $1 AND created_at >= $2",
                &[&key, &since],
            )
            .during("read the cache")?;
        row.map(|r| r.try_get(0).during("read the cache"))
            .transpose()
    })
}

pub(super) fn cache_put(handle: &Handle, entries: &[(u64, String, i64)]) -> Result<()> {
    // The last entry for a key wins, as with one upsert after another.
    let mut last = std::collections::HashMap::new();
    for (i, (key, _, _)) in entries.iter().enumerate() {
        last.insert(*key, i);
    }
    let (mut keys, mut outputs, mut ats) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (key, output, at)) in entries.iter().enumerate() {
        if last.get(key) == Some(&i) {
            keys.push(hash_to_i64(*key));
            outputs.push(output.clone());
            ats.push(*at);
        }
    }
    handle.call(move |c| {
        c.execute(
            "INSERT INTO cache (key, output, created_at) \
             SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[]) \
             ON CONFLICT (key) DO UPDATE SET output = excluded.output, \
             created_at = excluded.created_at",
            &[&keys, &outputs, &ats],
        )
        .during("write the cache")?;
        Ok(())
    })
}
