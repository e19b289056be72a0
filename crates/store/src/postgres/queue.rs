//! Shared runs in PostgreSQL: units leased with `FOR UPDATE SKIP LOCKED`,
//! renewed by each worker's heartbeat, fenced by a token when their result
//! is written; the job definition; shared limiter state.

use std::time::Duration;

use super::conn::Conn;
use super::rows::{self, ItemColumns, StepColumns};
use super::store::{
    create_run_in, ensure_run, item_params, item_upsert_set, one_run, LATEST_FOR_SOURCE,
};
use super::PostgresStore;
use crate::num::{self, hash_from_i64, hash_to_i64, item_columns, now_ms, run_columns, to_i64};
use crate::{
    Claimed, During, ItemRecord, JobDef, NewRun, QueueCounts, QueuedUnit, Result, RunMeta,
    SharedRuns, SharedUpdate, StepRecord,
};

/// The database clock in unix milliseconds, the one clock every lease is
/// measured by (workers' clocks may disagree).
macro_rules! db_now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::int8"
    };
}
pub(super) use db_now_ms;

/// Whether unit `u`'s lease is lost: past its expiry, and its worker's
/// heartbeat (which keeps every lease of that worker alive with one row a
/// second, instead of rewriting each leased unit) not fresh either.
macro_rules! lease_lost {
    () => {
        concat!(
            "(u.lease_expires < ",
            db_now_ms!(),
            " AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.run_id = u.run_id \
             AND w.worker_id = u.lease_owner AND w.state = 'running' \
             AND w.seen_at + u.lease_ms >= ",
            db_now_ms!(),
            "))"
        )
    };
}

fn sets_json(sets: &[String]) -> String {
    serde_json::Value::from(sets.to_vec()).to_string()
}

impl SharedRuns for PostgresStore {
    fn open_shared_run(&mut self, new: &NewRun, fresh: bool) -> Result<(RunMeta, bool)> {
        let new = new.clone();
        self.handle.call(move |c| {
            c.tx("open a shared run", |c| {
                // Serialises openers of one source: the second finds the
                // first one's run instead of creating another.
                c.query(
                    "SELECT pg_advisory_xact_lock(hashtext('sluice-source:' || $1))",
                    &[&new.source],
                )
                .during("open a shared run")?;
                if !fresh {
                    if let Some(run) = one_run(c, LATEST_FOR_SOURCE, &new.source)? {
                        return Ok((run, true));
                    }
                }
                Ok((create_run_in(c, &new)?, false))
            })
        })
    }

    fn put_job(&mut self, run_id: &str, job: &JobDef) -> Result<()> {
        let run_id = run_id.to_owned();
        let (path, text, sets) = (job.path.clone(), job.text.clone(), sets_json(&job.sets));
        self.handle.call(move |c| {
            let op = "store the job definition";
            c.tx(op, |c| {
                ensure_run(c, &run_id)?;
                c.execute(
                    "INSERT INTO run_jobs (run_id, path, body, sets, ready, updated_at) \
                     VALUES ($1, $2, $3, $4, false, $5) ON CONFLICT (run_id) DO UPDATE SET \
                     path = excluded.path, body = excluded.body, sets = excluded.sets, \
                     ready = false, updated_at = excluded.updated_at",
                    &[&run_id, &path, &text, &sets, &now_ms()],
                )
                .during(op)?;
                // This pass queues again whatever the input still holds.
                c.execute(
                    "DELETE FROM units WHERE run_id = $1 AND state = 'queued'",
                    &[&run_id],
                )
                .during(op)?;
                Ok(())
            })
        })
    }

    fn job_def(&mut self, run_id: &str) -> Result<Option<JobDef>> {
        let run_id = run_id.to_owned();
        self.handle.call(move |c| {
            ensure_run(c, &run_id)?;
            let op = "read the job definition";
            let Some(row) = c
                .query_opt(
                    "SELECT path, body, sets FROM run_jobs WHERE run_id = $1",
                    &[&run_id],
                )
                .during(op)?
            else {
                return Ok(None);
            };
            let sets: String = row.try_get(2).during(op)?;
            let sets = match rows::json("job overrides", &sets)? {
                serde_json::Value::Array(a) => a
                    .into_iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            Ok(Some(JobDef {
                path: row.try_get(0).during(op)?,
                text: row.try_get(1).during(op)?,
                sets,
            }))
        })
    }

    fn enqueue(&mut self, run_id: &str, units: &[QueuedUnit]) -> Result<u64> {
        const SQL: &str = "INSERT INTO units (run_id, unit_id, idx, hash, body, state) \
            SELECT $1, u.unit_id, u.idx, u.hash, u.body, \
              CASE WHEN EXISTS (SELECT 1 FROM items i WHERE i.run_id = $1 \
                AND i.item_id = u.unit_id AND i.status = 'done' AND i.hash = u.hash) \
              THEN 'done' ELSE 'queued' END \
            FROM unnest($2::text[], $3::int8[], $4::int8[], $5::text[]) AS u(unit_id, idx, hash, body) \
            ON CONFLICT (run_id, unit_id) DO UPDATE SET idx = excluded.idx, hash = excluded.hash, \
              body = excluded.body, state = CASE WHEN units.state = 'leased' \
                AND units.hash = excluded.hash THEN 'leased' ELSE excluded.state END \
            RETURNING state = 'done'";
        let run_id = run_id.to_owned();
        let ids: Vec<String> = units.iter().map(|u| u.unit_id.clone()).collect();
        let idx = units
            .iter()
            .map(|u| to_i64("unit idx", u.idx))
            .collect::<Result<Vec<_>>>()?;
        let hashes: Vec<i64> = units.iter().map(|u| hash_to_i64(u.hash)).collect();
        let bodies: Vec<String> = units.iter().map(|u| u.body.clone()).collect();
        self.handle.call(move |c| {
            let op = "queue units";
            c.tx(op, |c| {
                ensure_run(c, &run_id)?;
                let rows = c
                    .query(SQL, &[&run_id, &ids, &idx, &hashes, &bodies])
                    .during(op)?;
                Ok(rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64)
            })
        })
    }

    fn finish_enqueue(&mut self, run_id: &str) -> Result<()> {
        let run_id = run_id.to_owned();
        self.handle.call(move |c| {
            let op = "finish queueing units";
            c.tx(op, |c| {
                ensure_run(c, &run_id)?;
                // Recorded items follow the input's new order (an edited file).
                c.execute(
                    "UPDATE items i SET idx = u.idx FROM units u WHERE u.run_id = $1 \
                     AND i.run_id = $1 AND i.item_id = u.unit_id AND i.idx <> u.idx",
                    &[&run_id],
                )
                .during(op)?;
                c.execute(
                    "UPDATE run_jobs SET ready = true, updated_at = $2 WHERE run_id = $1",
                    &[&run_id, &now_ms()],
                )
                .during(op)?;
                Ok(())
            })
        })
    }

    fn claim(
        &mut self,
        run_id: &str,
        worker_id: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>> {
        // Queued units first (their own index); leased ones are looked at,
        // for leases lost by dead workers, only when the queue runs short:
        // that scan reads every leased unit of the run.
        macro_rules! claim_sql {
            ($which:expr) => {
                concat!(
                    "WITH picked AS (SELECT u.unit_id FROM units u WHERE u.run_id = $1 \
                     AND u.idx >= $5 AND ",
                    $which,
                    " ORDER BY u.idx LIMIT $2 FOR UPDATE OF u SKIP LOCKED) \
                     UPDATE units u SET state = 'leased', lease_owner = $3, \
                       lease_token = nextval('lease_tokens'), lease_ms = $4, \
                       claims = u.claims + 1, lease_expires = ",
                    db_now_ms!(),
                    " + $4 FROM picked WHERE u.run_id = $1 AND u.unit_id = picked.unit_id \
                     RETURNING u.unit_id, u.idx, u.hash, u.body, u.lease_token, u.claims"
                )
            };
        }
        const QUEUED: &str = claim_sql!("u.state = 'queued'");
        const LOST: &str = claim_sql!(concat!("u.state = 'leased' AND ", lease_lost!()));
        let (run_id, worker_id) = (run_id.to_owned(), worker_id.to_owned());
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX).max(1);
        let from = self.claim_from.get(&run_id).copied().unwrap_or(0);
        let run = run_id.clone();
        let claimed = self.handle.call(move |c| {
            let op = "claim units";
            let mut rows = c
                .query(QUEUED, &[&run_id, &max, &worker_id, &lease_ms, &from])
                .during(op)?;
            let short = |rows: &Vec<_>| max - rows.len() as i64;
            if short(&rows) > 0 && from > 0 {
                // Units released or given back behind this connection's position.
                let more = c
                    .query(
                        QUEUED,
                        &[&run_id, &short(&rows), &worker_id, &lease_ms, &0i64],
                    )
                    .during(op)?;
                rows.extend(more);
            }
            if short(&rows) > 0 {
                let lost = c
                    .query(
                        LOST,
                        &[&run_id, &short(&rows), &worker_id, &lease_ms, &0i64],
                    )
                    .during(op)?;
                rows.extend(lost);
            }
            let mut claimed = rows
                .iter()
                .map(|r| {
                    Ok(Claimed {
                        unit: QueuedUnit {
                            unit_id: r.try_get(0).during(op)?,
                            idx: num::to_u64("unit idx", r.try_get(1).during(op)?)?,
                            hash: hash_from_i64(r.try_get(2).during(op)?),
                            body: r.try_get(3).during(op)?,
                        },
                        token: r.try_get(4).during(op)?,
                        claims: num::to_u64("claims", r.try_get(5).during(op)?)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            // RETURNING follows no order: input order is what workers expect.
            claimed.sort_by_key(|c| c.unit.idx);
            Ok(claimed)
        })?;
        if let Some(last) = claimed.iter().map(|c| c.unit.idx).max() {
            let next = i64::try_from(last).unwrap_or(i64::MAX).saturating_add(1);
            let at = self.claim_from.entry(run).or_insert(0);
            *at = (*at).max(next);
        } else {
            self.claim_from.remove(&run);
        }
        Ok(claimed)
    }

    fn release(&mut self, run_id: &str, tokens: &[i64]) -> Result<u64> {
        let (run_id, tokens) = (run_id.to_owned(), tokens.to_vec());
        self.handle.call(move |c| {
            c.execute(
                "UPDATE units SET state = 'queued', lease_owner = NULL, lease_expires = NULL \
                 WHERE run_id = $1 AND state = 'leased' AND lease_token = ANY($2)",
                &[&run_id, &tokens],
            )
            .during("release units")
        })
    }

    fn complete(
        &mut self,
        run_id: &str,
        steps: &[StepRecord],
        records: &[(ItemRecord, i64)],
    ) -> Result<Vec<String>> {
        // One statement: the lease check and the result write cannot be
        // separated by another worker's claim.
        const SQL: &str = concat!(
            // A token is issued (from one sequence) for one claim of one unit
            // of this run, so the tokens alone pick each result's own lease,
            // through their index; the run and the ids would steer the
            // planner to scan every leased unit of the run per result.
            "WITH fenced AS (UPDATE units u SET state = 'done', lease_owner = NULL, \
               lease_expires = NULL WHERE u.lease_token = ANY($18::int8[]) \
               AND u.state = 'leased' RETURNING u.unit_id) \
             INSERT INTO items (run_id, ",
            item_columns!(),
            ") SELECT $1, r.* FROM unnest($2::text[], $3::int8[], $4::int8[], $5::text[], \
             $6::int8[], $7::int8[], $8::int8[], $9::text[], $10::text[], $11::int8[], \
             $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::text[], $17::text[]) \
             AS r (item_id, idx, hash, status, attempts, throttled, status_code, response, \
             error, prompt_tokens, completion_tokens, latency_ms, started_at, finished_at, \
             metadata, custom_id) WHERE r.item_id IN (SELECT unit_id FROM fenced)",
            item_upsert_set!(),
            " RETURNING item_id"
        );
        let refs: Vec<&ItemRecord> = records.iter().map(|(r, _)| r).collect();
        let columns = ItemColumns::new(&refs)?;
        let steps = StepColumns::new(steps)?;
        let tokens: Vec<i64> = records.iter().map(|(_, t)| *t).collect();
        let run_id = run_id.to_owned();
        self.handle.call(move |c| {
            let op = "record results";
            c.tx(op, |c| {
                super::store::touch(c, &run_id)?;
                super::steps::write_in(c, &run_id, &steps)?;
                if tokens.is_empty() {
                    return Ok(Vec::new());
                }
                let items = item_params(&run_id, &columns);
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = items.to_vec();
                params.push(&tokens);
                let rows = c.query(SQL, &params).during(op)?;
                rows.iter()
                    .map(|r| r.try_get::<_, String>(0).during(op))
                    .collect()
            })
        })
    }

    fn queue_counts(&mut self, run_id: &str) -> Result<QueueCounts> {
        const SQL: &str = concat!(
            "SELECT COUNT(*) FILTER (WHERE u.state = 'queued'), \
               COUNT(*) FILTER (WHERE u.state = 'leased'), \
               COUNT(*) FILTER (WHERE u.state = 'leased' AND ",
            lease_lost!(),
            "), (SELECT COUNT(*) FROM units WHERE run_id = $1 AND state = 'done'), \
               COALESCE((SELECT ready FROM run_jobs WHERE run_id = $1), false) \
             FROM units u WHERE u.run_id = $1 AND u.state <> 'done'"
        );
        let run_id = run_id.to_owned();
        self.handle.call(move |c| {
            ensure_run(c, &run_id)?;
            let op = "count queued units";
            let row = c
                .query_opt(SQL, &[&run_id])
                .during(op)?
                .ok_or_else(|| num::corrupt("queue counts", "no row".into()))?;
            let n = |i: usize| -> Result<u64> {
                num::to_u64("unit count", row.try_get::<_, i64>(i).during(op)?)
            };
            Ok(QueueCounts {
                queued: n(0)?,
                leased: n(1)?,
                expired: n(2)?,
                done: n(3)?,
                ready: row.try_get(4).during(op)?,
            })
        })
    }

    fn runnable_runs(&mut self) -> Result<Vec<RunMeta>> {
        const SQL: &str = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs r WHERE r.state <> 'finished' \
               AND EXISTS (SELECT 1 FROM run_jobs j WHERE j.run_id = r.id) \
               AND EXISTS (SELECT 1 FROM units u WHERE u.run_id = r.id AND u.state <> 'done' \
                 AND (u.state = 'queued' OR ",
            lease_lost!(),
            ")) ORDER BY r.created_at, r.ord"
        );
        self.handle.call(|c| {
            let rows = c.query(SQL, &[]).during("find runnable runs")?;
            rows::all(&rows, num::run_from)
        })
    }

    fn update_shared(&mut self, key: &str, update: SharedUpdate) -> Result<serde_json::Value> {
        let key = key.to_owned();
        let mut update = Some(update);
        self.handle
            .call(move |c| c.tx("update shared limits", |c| update_in(c, &key, &mut update)))
    }
}

/// `update` runs once: if the connection is lost after it ran, the call
/// fails rather than running again (the caller's next exchange retries).
fn update_in(
    c: &mut Conn,
    key: &str,
    update: &mut Option<SharedUpdate>,
) -> Result<serde_json::Value> {
    let op = "update shared limits";
    c.execute(
        "INSERT INTO shared_state (key, value, updated_at) VALUES ($1, 'null', $2) \
         ON CONFLICT (key) DO NOTHING",
        &[&key, &now_ms()],
    )
    .during(op)?;
    let row = c
        .query_opt(
            "SELECT value, (extract(epoch from clock_timestamp()) * 1000000)::int8 \
             FROM shared_state WHERE key = $1 FOR UPDATE",
            &[&key],
        )
        .during(op)?
        .ok_or_else(|| num::corrupt("shared state", format!("{key}: no row")))?;
    let text: String = row.try_get(0).during(op)?;
    let now_us: i64 = row.try_get(1).during(op)?;
    let stored = match rows::json("shared state", &text)? {
        serde_json::Value::Null => None,
        v => Some(v),
    };
    let Some(update) = update.take() else {
        return Err(crate::Error::Unsupported(
            "the PostgreSQL connection was lost while shared limits were being updated; \
             the next exchange tries again"
                .into(),
        ));
    };
    let (value, out) = update(stored, now_us);
    c.execute(
        "UPDATE shared_state SET value = $2, updated_at = $3 WHERE key = $1",
        &[&key, &value.to_string(), &now_ms()],
    )
    .during(op)?;
    Ok(out)
}
