//! `impl Store for PostgresStore`: runs, item outcomes, exports, heartbeats
//! (which also renew the worker's leases) and named run state.

use super::conn::Conn;
use super::rows::{self, ItemColumns};
use super::PostgresStore;
use crate::num::{
    self, count_sums, hash_from_i64, item_columns, now_ms, run_columns, to_i64, to_u64,
};
use crate::{
    During, Error, ErrorMessage, InputCounts, InputRow, ItemRecord, Lease, LeaseHolder, NewRun,
    Output, RecordedItem, Result, RunCounts, RunMeta, RunSummary, SharedRuns, SinkError,
    StepRecord, Store, WorkerBeat, RUN_STATES,
};

macro_rules! item_upsert_set {
    () => {
        " ON CONFLICT (run_id, item_id) DO UPDATE SET idx = excluded.idx, \
         hash = excluded.hash, status = excluded.status, attempts = excluded.attempts, \
         throttled = excluded.throttled, status_code = excluded.status_code, \
         response = excluded.response, error = excluded.error, \
         prompt_tokens = excluded.prompt_tokens, \
         completion_tokens = excluded.completion_tokens, latency_ms = excluded.latency_ms, \
         started_at = excluded.started_at, finished_at = excluded.finished_at, \
         metadata = excluded.metadata, custom_id = excluded.custom_id"
    };
}
pub(super) use item_upsert_set;

/// Rows per page of `for_each_item`.
const PAGE: i64 = 1_000;

/// `$1` the run id, then the arrays of [`ItemColumns`] in column order.
pub(super) fn item_params<'a>(
    run_id: &'a String,
    c: &'a ItemColumns,
) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 17] {
    [
        run_id,
        &c.item_id,
        &c.idx,
        &c.hash,
        &c.status,
        &c.attempts,
        &c.throttled,
        &c.status_code,
        &c.response,
        &c.error,
        &c.prompt_tokens,
        &c.completion_tokens,
        &c.latency_ms,
        &c.started_at,
        &c.finished_at,
        &c.metadata,
        &c.custom_id,
    ]
}

/// Fails with [`Error::NoSuchRun`] unless the run exists.
pub(super) fn ensure_run(c: &mut Conn, run_id: &str) -> Result<()> {
    match c
        .query_opt("SELECT 1 FROM runs WHERE id = $1", &[&run_id])
        .during("look up a run")?
    {
        Some(_) => Ok(()),
        None => Err(Error::NoSuchRun(run_id.to_owned())),
    }
}

/// Proves the run exists and moves its `updated_at` forward, at most once a
/// second: writers of several workers would otherwise queue on the run's row
/// lock for every batch.
pub(super) fn touch(c: &mut Conn, run_id: &str) -> Result<()> {
    let now = now_ms();
    let changed = c
        .execute(
            "UPDATE runs SET updated_at = $2::int8 WHERE id = $1 AND updated_at < $2::int8 - 1000",
            &[&run_id, &now],
        )
        .during("update a run")?;
    if changed == 0 {
        ensure_run(c, run_id)?;
    }
    Ok(())
}

fn update_run(c: &mut Conn, sql: &'static str, run_id: &str, rest: RunUpdate) -> Result<()> {
    let now = now_ms();
    let changed = match rest {
        RunUpdate::Int(v) => c.execute(sql, &[&run_id, &v, &now]),
        RunUpdate::State(s, at) => c.execute(sql, &[&run_id, &s, &at, &now]),
        RunUpdate::Text(t) => c.execute(sql, &[&run_id, &t, &now]),
    }
    .during("update a run")?;
    if changed == 0 {
        return Err(Error::NoSuchRun(run_id.to_owned()));
    }
    Ok(())
}

enum RunUpdate {
    Int(i64),
    State(String, Option<i64>),
    Text(String),
}

pub(super) fn one_run(c: &mut Conn, sql: &'static str, key: &str) -> Result<Option<RunMeta>> {
    match c.query_opt(sql, &[&key]).during("read runs")? {
        Some(row) => num::run_from(&row).map(Some),
        None => Ok(None),
    }
}

pub(super) const LATEST_FOR_SOURCE: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM runs WHERE source = $1 ORDER BY created_at DESC, seq DESC, ord DESC LIMIT 1"
);

/// Creates a run inside the caller's transaction; the advisory lock makes
/// `seq` unique among concurrent creators of the same name.
pub(super) fn create_run_in(c: &mut Conn, new: &NewRun) -> Result<RunMeta> {
    let op = "create a run";
    c.query(
        "SELECT pg_advisory_xact_lock(hashtext('sluice-run:' || $1))",
        &[&new.name],
    )
    .during(op)?;
    let seq: i64 = c
        .query_opt(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM runs WHERE name = $1",
            &[&new.name],
        )
        .during(op)?
        .map_or(1, |r| r.get(0));
    let now = now_ms();
    let run = new.created(seq, now);
    let settings = run.settings.to_string();
    c.execute(
        "INSERT INTO runs (id, name, seq, source, created_at, updated_at, settings, state) \
         VALUES ($1, $2, $3, $4, $5, $5, $6, $7)",
        &[
            &run.id,
            &run.name,
            &seq,
            &run.source,
            &now,
            &settings,
            &run.state,
        ],
    )
    .during(op)?;
    Ok(run)
}

/// Retries: a pipeline unit's record sums its steps' attempts, so a run with
/// step records counts retries per step (webhook deliveries aside). A run
/// with an input list counts its listed items' current records.
pub(super) fn counts_of(c: &mut Conn, run_id: &str) -> Result<RunCounts> {
    macro_rules! counts_sql {
        ($from:literal) => {
            concat!(
                "SELECT ",
                count_sums!(),
                ", CASE WHEN EXISTS (SELECT 1 FROM steps WHERE run_id = $1) \
                 THEN (SELECT COALESCE(SUM(GREATEST(attempts - 1, 0)), 0)::int8 FROM steps \
                       WHERE run_id = $1 AND step <> '(webhook)') \
                 ELSE COALESCE(SUM(GREATEST(it.attempts - 1, 0)), 0)::int8 END ",
                $from
            )
        };
    }
    const ALL: &str = counts_sql!("FROM items it WHERE it.run_id = $1");
    const LISTED: &str = counts_sql!(
        "FROM inputs i JOIN items it ON it.run_id = i.run_id \
         AND it.item_id = i.item_id AND it.hash = i.hash WHERE i.run_id = $1"
    );
    let sql = if super::executions::has_inputs(c, run_id)? {
        LISTED
    } else {
        ALL
    };
    let row = c
        .query_opt(sql, &[&run_id])
        .during("count items")?
        .ok_or_else(|| num::corrupt("counts", "no row".into()))?;
    let get = |i: usize, what| -> Result<u64> {
        to_u64(what, row.try_get::<_, i64>(i).during("count items")?)
    };
    Ok(RunCounts {
        done: get(0, "done count")?,
        failed: get(1, "failed count")?,
        attempts: get(2, "attempts")?,
        throttled: get(3, "throttled")?,
        prompt_tokens: get(4, "prompt tokens")?,
        completion_tokens: get(5, "completion tokens")?,
        latency_ms_sum: get(6, "latency")?,
        first_started_at: row.try_get(7).during("count items")?,
        last_finished_at: row.try_get(8).during("count items")?,
        retries: get(9, "retries")?,
    })
}

impl Store for PostgresStore {
    fn create_run(&mut self, new: &NewRun) -> Result<RunMeta> {
        let new = new.clone();
        self.handle
            .call(move |c| c.tx("create a run", |c| create_run_in(c, &new)))
    }

    fn find_run(&mut self, key: &str) -> Result<Option<RunMeta>> {
        const BY_ID: &str = concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1");
        const BY_NAME: &str = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE name = $1 ORDER BY seq DESC LIMIT 1"
        );
        let key = key.to_owned();
        self.handle.call(move |c| match one_run(c, BY_ID, &key)? {
            Some(run) => Ok(Some(run)),
            None => one_run(c, BY_NAME, &key),
        })
    }

    fn latest_run_for_source(&mut self, source: &str) -> Result<Option<RunMeta>> {
        let source = source.to_owned();
        self.handle
            .call(move |c| one_run(c, LATEST_FOR_SOURCE, &source))
    }

    fn list_runs(&mut self) -> Result<Vec<RunSummary>> {
        const SQL: &str = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs ORDER BY created_at DESC, seq DESC, ord DESC"
        );
        self.handle.call(|c| {
            let rows = c.query(SQL, &[]).during("list runs")?;
            let runs = rows::all(&rows, num::run_from)?;
            runs.into_iter()
                .map(|run| {
                    Ok(RunSummary {
                        counts: counts_of(c, &run.id)?,
                        run,
                    })
                })
                .collect()
        })
    }

    fn set_total(&mut self, run_id: &str, total: u64) -> Result<()> {
        let total = to_i64("run total", total)?;
        let run_id = run_id.to_owned();
        self.handle.call(move |c| {
            let sql = "UPDATE runs SET total = $2, updated_at = $3 WHERE id = $1";
            update_run(c, sql, &run_id, RunUpdate::Int(total))
        })
    }

    fn set_state(&mut self, run_id: &str, state: &str, finished_at: Option<i64>) -> Result<()> {
        if !RUN_STATES.contains(&state) {
            return Err(Error::InvalidState(state.to_owned()));
        }
        let (run_id, state) = (run_id.to_owned(), state.to_owned());
        self.handle.call(move |c| {
            let sql = "UPDATE runs SET state = $2, finished_at = $3, updated_at = $4 WHERE id = $1";
            update_run(
                c,
                sql,
                &run_id,
                RunUpdate::State(state.clone(), finished_at),
            )
        })
    }

    fn update_settings(&mut self, run_id: &str, settings: &serde_json::Value) -> Result<()> {
        let (run_id, text) = (run_id.to_owned(), settings.to_string());
        self.handle.call(move |c| {
            let sql = "UPDATE runs SET settings = $2, updated_at = $3 WHERE id = $1";
            update_run(c, sql, &run_id, RunUpdate::Text(text.clone()))
        })
    }

    fn lookup(&mut self, run_id: &str, item_ids: &[&str]) -> Result<Vec<RecordedItem>> {
        let run_id = run_id.to_owned();
        let ids: Vec<String> = item_ids.iter().map(|s| (*s).to_owned()).collect();
        self.handle.call(move |c| {
            ensure_run(c, &run_id)?;
            let op = "look up items";
            let rows = c
                .query(
                    "SELECT item_id, hash, status, idx FROM items \
                     WHERE run_id = $1 AND item_id = ANY($2)",
                    &[&run_id, &ids],
                )
                .during(op)?;
            rows.iter()
                .map(|r| {
                    let status: String = r.try_get(2).during(op)?;
                    Ok(RecordedItem {
                        item_id: r.try_get(0).during(op)?,
                        hash: hash_from_i64(r.try_get(1).during(op)?),
                        status: num::status_from_str(&status)?,
                        idx: to_u64("item idx", r.try_get(3).during(op)?)?,
                    })
                })
                .collect()
        })
    }

    fn set_positions(&mut self, run_id: &str, moves: &[(String, u64)]) -> Result<()> {
        let run_id = run_id.to_owned();
        let ids: Vec<String> = moves.iter().map(|(id, _)| id.clone()).collect();
        let idx = moves
            .iter()
            .map(|(_, i)| to_i64("item idx", *i))
            .collect::<Result<Vec<i64>>>()?;
        self.handle.call(move |c| {
            c.tx("move items", |c| {
                touch(c, &run_id)?;
                c.execute(
                    "UPDATE items SET idx = m.idx FROM unnest($2::text[], $3::int8[]) AS m(item_id, idx) \
                     WHERE items.run_id = $1 AND items.item_id = m.item_id",
                    &[&run_id, &ids, &idx],
                )
                .during("move items")?;
                Ok(())
            })
        })
    }

    fn write_batch(&mut self, run_id: &str, records: &[ItemRecord]) -> Result<()> {
        const UPSERT: &str = concat!(
            "INSERT INTO items (run_id, ",
            item_columns!(),
            ") SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::int8[], $5::text[], \
             $6::int8[], $7::int8[], $8::int8[], $9::text[], $10::text[], $11::int8[], \
             $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::text[], $17::text[])",
            item_upsert_set!()
        );
        let refs: Vec<&ItemRecord> = records.iter().collect();
        let columns = ItemColumns::new(&refs)?;
        let run_id = run_id.to_owned();
        self.handle.call(move |c| {
            let op = "record results";
            c.tx(op, |c| {
                touch(c, &run_id)?;
                c.execute(UPSERT, &item_params(&run_id, &columns))
                    .during(op)?;
                Ok(())
            })
        })
    }

    fn counts(&mut self, run_id: &str) -> Result<RunCounts> {
        let run_id = run_id.to_owned();
        self.handle.call(move |c| {
            ensure_run(c, &run_id)?;
            counts_of(c, &run_id)
        })
    }

    fn error_messages(&mut self, run_id: &str, limit: usize) -> Result<Vec<ErrorMessage>> {
        let run_id = run_id.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.handle.call(move |c| {
            ensure_run(c, &run_id)?;
            let op = "group errors";
            let rows = c
                .query(
                    "SELECT COALESCE(error, '(no error message)') AS message, COUNT(*) AS n, \
                     MIN(item_id COLLATE \"C\") FROM items WHERE run_id = $1 AND status = 'failed' \
                     GROUP BY message ORDER BY n DESC, COALESCE(error, '(no error message)') COLLATE \"C\" ASC LIMIT $2",
                    &[&run_id, &limit],
                )
                .during(op)?;
            rows.iter()
                .map(|r| {
                    let n: i64 = r.try_get(1).during(op)?;
                    Ok(ErrorMessage {
                        message: r.try_get(0).during(op)?,
                        count: to_u64("error count", n)?,
                        example: r.try_get(2).during(op)?,
                    })
                })
                .collect()
        })
    }

    fn top_errors(&mut self, run_id: &str, limit: usize) -> Result<Vec<(String, u64)>> {
        let run_id = run_id.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.handle.call(move |c| {
            ensure_run(c, &run_id)?;
            let op = "summarise errors";
            let rows = c
                .query(
                    "SELECT COALESCE(error, '(no error message)') AS message, COUNT(*) AS n \
                     FROM items WHERE run_id = $1 AND status = 'failed' \
                     GROUP BY message ORDER BY n DESC, COALESCE(error, '(no error message)') COLLATE \"C\" ASC LIMIT $2",
                    &[&run_id, &limit],
                )
                .during(op)?;
            rows.iter()
                .map(|r| {
                    let n: i64 = r.try_get(1).during(op)?;
                    Ok((r.try_get(0).during(op)?, to_u64("error count", n)?))
                })
                .collect()
        })
    }

    fn for_each_item(
        &mut self,
        run_id: &str,
        f: &mut dyn FnMut(ItemRecord) -> std::result::Result<(), SinkError>,
    ) -> Result<()> {
        const FIRST: &str = concat!(
            "SELECT ",
            item_columns!(),
            " FROM items WHERE run_id = $1 ORDER BY idx, item_id LIMIT $2"
        );
        const NEXT: &str = concat!(
            "SELECT ",
            item_columns!(),
            " FROM items WHERE run_id = $1 AND (idx, item_id) > ($3, $4) \
             ORDER BY idx, item_id LIMIT $2"
        );
        let id = run_id.to_owned();
        // Pages in one read-only snapshot: the export is consistent while
        // writers keep committing. The transaction spans several calls on
        // this connection and is always ended below.
        self.handle.call(move |c| {
            c.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .during("read items")?;
            let found = ensure_run(c, &id);
            if found.is_err() {
                let _ = c.batch("ROLLBACK");
            }
            found
        })?;
        let mut after: Option<(i64, String)> = None;
        let result = loop {
            let (id, from) = (run_id.to_owned(), after.clone());
            let page = self.handle.call(move |c| {
                let rows = match &from {
                    None => c.query(FIRST, &[&id, &PAGE]),
                    Some((idx, item)) => c.query(NEXT, &[&id, &PAGE, idx, item]),
                }
                .during("read items")?;
                rows::all(&rows, num::item_from)
            });
            let page = match page {
                Ok(page) => page,
                Err(e) => break Err(e),
            };
            let full = page.len() as i64 == PAGE;
            if let Some(last) = page.last() {
                match to_i64("item idx", last.idx) {
                    Ok(idx) => after = Some((idx, last.item_id.clone())),
                    Err(e) => break Err(e),
                }
            }
            if let Some(e) = page.into_iter().find_map(|r| f(r).err()) {
                break Err(Error::Callback(e));
            }
            if !full {
                break Ok(());
            }
        };
        let end = self.handle.call(|c| c.batch("COMMIT").during("read items"));
        result.and(end)
    }

    fn reset_failed(&mut self, run_id: &str) -> Result<u64> {
        let run_id = run_id.to_owned();
        self.handle.call(move |c| {
            let op = "reset failed items";
            c.tx(op, |c| {
                touch(c, &run_id)?;
                c.execute(
                    "DELETE FROM items WHERE run_id = $1 AND status = 'failed'",
                    &[&run_id],
                )
                .during(op)
            })
        })
    }

    fn get_item(&mut self, run_id: &str, item_id: &str) -> Result<Option<ItemRecord>> {
        const SQL: &str = concat!(
            "SELECT ",
            item_columns!(),
            " FROM items WHERE run_id = $1 AND item_id = $2"
        );
        let (run_id, item_id) = (run_id.to_owned(), item_id.to_owned());
        self.handle.call(move |c| {
            ensure_run(c, &run_id)?;
            match c
                .query_opt(SQL, &[&run_id, &item_id])
                .during("read an item")?
            {
                Some(row) => num::item_from(&row).map(Some),
                None => Ok(None),
            }
        })
    }

    fn write_steps(&mut self, run_id: &str, records: &[StepRecord]) -> Result<()> {
        super::steps::write(&self.handle, run_id, records)
    }

    fn unit_steps(&mut self, run_id: &str, unit_id: &str) -> Result<Vec<StepRecord>> {
        super::steps::of_unit(&self.handle, run_id, unit_id)
    }

    fn reset_failed_steps(&mut self, run_id: &str, step: Option<&str>) -> Result<u64> {
        super::steps::reset_failed(&self.handle, run_id, step)
    }

    fn reset_failed_units(&mut self, run_id: &str, units: &[String]) -> Result<u64> {
        super::steps::reset_failed_units(&self.handle, run_id, units)
    }

    fn cache_get(&mut self, key: u64, since: i64) -> Result<Option<String>> {
        super::steps::cache_get(&self.handle, key, since)
    }

    fn cache_put(&mut self, entries: &[(u64, String, i64)]) -> Result<()> {
        super::steps::cache_put(&self.handle, entries)
    }

    fn heartbeat(&mut self, beat: &WorkerBeat) -> Result<()> {
        super::heartbeats::heartbeat(&self.handle, beat)
    }

    fn workers(&mut self, run_id: &str) -> Result<Vec<WorkerBeat>> {
        super::heartbeats::workers(&self.handle, run_id)
    }

    fn put_run_state(&mut self, run_id: &str, key: &str, value: &serde_json::Value) -> Result<()> {
        super::heartbeats::put_run_state(&self.handle, run_id, key, value)
    }

    fn run_state(
        &mut self,
        run_id: &str,
        prefix: &str,
    ) -> Result<Vec<(String, serde_json::Value)>> {
        super::heartbeats::run_state(&self.handle, run_id, prefix)
    }

    fn acquire_lease(
        &mut self,
        key: &str,
        holder: &LeaseHolder,
        ttl: std::time::Duration,
        replace: Option<&str>,
    ) -> Result<Option<Lease>> {
        super::executions::acquire_lease(&self.handle, key, holder, ttl, replace)
    }

    fn renew_lease(&mut self, key: &str, holder: &str, ttl: std::time::Duration) -> Result<bool> {
        super::executions::renew_lease(&self.handle, key, holder, ttl)
    }

    fn release_lease(&mut self, key: &str, holder: &str) -> Result<()> {
        super::executions::release_lease(&self.handle, key, holder)
    }

    fn lease(&mut self, key: &str) -> Result<Option<Lease>> {
        super::executions::lease(&self.handle, key)
    }

    fn replace_inputs(
        &mut self,
        run_id: &str,
        rows: &mut dyn Iterator<Item = std::result::Result<InputRow, SinkError>>,
    ) -> Result<InputCounts> {
        super::executions::replace_inputs(&self.handle, run_id, rows)
    }

    fn for_each_output(
        &mut self,
        run_id: &str,
        f: &mut dyn FnMut(Output) -> std::result::Result<(), SinkError>,
    ) -> Result<()> {
        super::executions::for_each_output(self, run_id, f)
    }

    fn shared(&mut self) -> Option<&mut dyn SharedRuns> {
        Some(self)
    }
}
