//! Worker heartbeats and named run state in SQLite.

use rusqlite::params;

use super::rows;
use super::SqliteStore;
use crate::num::parse_json;
use crate::{During, Result, WorkerBeat};

pub(super) fn heartbeat(store: &mut SqliteStore, beat: &WorkerBeat) -> Result<()> {
    store.ensure_run(&beat.run_id)?;
    let op = "record a worker heartbeat";
    store
        .conn
        .prepare_cached(
            "INSERT INTO workers (run_id, worker_id, host, pid, started_at, beat_at, state, \
             in_flight, live) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (run_id, worker_id) DO UPDATE SET host = excluded.host, \
             pid = excluded.pid, started_at = excluded.started_at, beat_at = excluded.beat_at, \
             state = excluded.state, in_flight = excluded.in_flight, live = excluded.live",
        )
        .and_then(|mut s| {
            s.execute(params![
                beat.run_id,
                beat.worker_id,
                beat.host,
                beat.pid,
                beat.started_at,
                beat.beat_at,
                beat.state,
                i64::try_from(beat.in_flight).unwrap_or(i64::MAX),
                beat.live.to_string(),
            ])
        })
        .during(op)?;
    Ok(())
}

pub(super) fn workers(store: &mut SqliteStore, run_id: &str) -> Result<Vec<WorkerBeat>> {
    let op = "read worker heartbeats";
    let mut stmt = store
        .conn
        .prepare_cached(
            "SELECT worker_id, host, pid, started_at, beat_at, state, in_flight, live \
             FROM workers WHERE run_id = ?1 ORDER BY beat_at DESC, worker_id",
        )
        .during(op)?;
    let mut rows = stmt.query([run_id]).during(op)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().during(op)? {
        let live: String = row.get(7).during(op)?;
        out.push(WorkerBeat {
            run_id: run_id.to_owned(),
            worker_id: row.get(0).during(op)?,
            host: row.get(1).during(op)?,
            pid: row.get(2).during(op)?,
            started_at: row.get(3).during(op)?,
            beat_at: row.get(4).during(op)?,
            state: row.get(5).during(op)?,
            in_flight: rows::to_u64("in flight", row.get(6).during(op)?)?,
            live: parse_json("worker live state", &live)?,
        });
    }
    Ok(out)
}

pub(super) fn put_run_state(
    store: &mut SqliteStore,
    run_id: &str,
    key: &str,
    value: &serde_json::Value,
) -> Result<()> {
    store.ensure_run(run_id)?;
    store
        .conn
        .prepare_cached(
            "INSERT INTO run_state (run_id, key, value, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at",
        )
        .and_then(|mut s| s.execute(params![run_id, key, value.to_string(), rows::now_ms()]))
        .during("record run state")?;
    Ok(())
}

pub(super) fn run_state(
    store: &mut SqliteStore,
    run_id: &str,
    prefix: &str,
) -> Result<Vec<(String, serde_json::Value)>> {
    let op = "read run state";
    // substr, not LIKE: a key may contain % or _.
    let mut stmt = store
        .conn
        .prepare_cached(
            "SELECT key, value FROM run_state WHERE run_id = ?1 \
             AND substr(key, 1, length(?2)) = ?2 ORDER BY key",
        )
        .during(op)?;
    let found = stmt
        .query_map(params![run_id, prefix], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .during(op)?;
    found
        .into_iter()
        .map(|(k, v)| Ok((k, parse_json("run state", &v)?)))
        .collect()
}
