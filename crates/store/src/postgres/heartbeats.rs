//! Worker heartbeats (which also renew or return the worker's leases) and
//! named run state, in PostgreSQL.

use super::conn::Handle;
use super::queue::db_now_ms;
use super::rows;
use super::store::ensure_run;
use crate::num::{self, now_ms};
use crate::{During, Result, WorkerBeat};

/// Records a beat with the database's clock (`seen_at`), which keeps every
/// lease the worker holds in the run alive; a `stopped` beat returns them to
/// the queue in the same transaction.
pub(super) fn heartbeat(handle: &Handle, beat: &WorkerBeat) -> Result<()> {
    let beat = beat.clone();
    handle.call(move |c| {
        let op = "record a worker heartbeat";
        c.tx(op, |c| {
            ensure_run(c, &beat.run_id)?;
            let in_flight = i64::try_from(beat.in_flight).unwrap_or(i64::MAX);
            let live = beat.live.to_string();
            c.execute(
                concat!(
                    "INSERT INTO workers (run_id, worker_id, host, pid, started_at, beat_at, \
                     state, in_flight, live, seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                     $9, ",
                    db_now_ms!(),
                    ") ON CONFLICT (run_id, worker_id) DO UPDATE SET host = excluded.host, \
                     pid = excluded.pid, started_at = excluded.started_at, \
                     beat_at = excluded.beat_at, state = excluded.state, \
                     in_flight = excluded.in_flight, live = excluded.live, \
                     seen_at = excluded.seen_at"
                ),
                &[
                    &beat.run_id,
                    &beat.worker_id,
                    &beat.host,
                    &i64::from(beat.pid),
                    &beat.started_at,
                    &beat.beat_at,
                    &beat.state,
                    &in_flight,
                    &live,
                ],
            )
            .during(op)?;
            if beat.state != "running" {
                c.execute(
                    "UPDATE units SET state = 'queued', lease_owner = NULL, \
                     lease_expires = NULL WHERE run_id = $1 AND state = 'leased' \
                     AND lease_owner = $2",
                    &[&beat.run_id, &beat.worker_id],
                )
                .during(op)?;
            }
            Ok(())
        })
    })
}

pub(super) fn workers(handle: &Handle, run_id: &str) -> Result<Vec<WorkerBeat>> {
    let run_id = run_id.to_owned();
    handle.call(move |c| {
        ensure_run(c, &run_id)?;
        let op = "read worker heartbeats";
        let rows = c
            .query(
                "SELECT worker_id, host, pid, started_at, beat_at, state, in_flight, live \
                 FROM workers WHERE run_id = $1 ORDER BY beat_at DESC, worker_id",
                &[&run_id],
            )
            .during(op)?;
        rows.iter()
            .map(|r| {
                let live: String = r.try_get(7).during(op)?;
                let pid: i64 = r.try_get(2).during(op)?;
                Ok(WorkerBeat {
                    run_id: run_id.clone(),
                    worker_id: r.try_get(0).during(op)?,
                    host: r.try_get(1).during(op)?,
                    pid: u32::try_from(pid).map_err(|_| num::corrupt("pid", pid.to_string()))?,
                    started_at: r.try_get(3).during(op)?,
                    beat_at: r.try_get(4).during(op)?,
                    state: r.try_get(5).during(op)?,
                    in_flight: num::to_u64("in flight", r.try_get(6).during(op)?)?,
                    live: rows::json("worker live state", &live)?,
                })
            })
            .collect()
    })
}

pub(super) fn put_run_state(
    handle: &Handle,
    run_id: &str,
    key: &str,
    value: &serde_json::Value,
) -> Result<()> {
    let (run_id, key, value) = (run_id.to_owned(), key.to_owned(), value.to_string());
    handle.call(move |c| {
        ensure_run(c, &run_id)?;
        c.execute(
            "INSERT INTO run_state (run_id, key, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at",
            &[&run_id, &key, &value, &now_ms()],
        )
        .during("record run state")?;
        Ok(())
    })
}

pub(super) fn run_state(
    handle: &Handle,
    run_id: &str,
    prefix: &str,
) -> Result<Vec<(String, serde_json::Value)>> {
    let (run_id, prefix) = (run_id.to_owned(), prefix.to_owned());
    handle.call(move |c| {
        ensure_run(c, &run_id)?;
        let op = "read run state";
        // left(), not LIKE: a key may contain % or _.
        let rows = c
            .query(
                "SELECT key, value FROM run_state WHERE run_id = $1 \
                 AND left(key, length($2)) = $2 ORDER BY key",
                &[&run_id, &prefix],
            )
            .during(op)?;
        rows.iter()
            .map(|r| {
                let value: String = r.try_get(1).during(op)?;
                Ok((r.try_get(0).during(op)?, rows::json("run state", &value)?))
            })
            .collect()
    })
}
