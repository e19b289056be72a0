//! `impl Store for SqliteStore`: the SQL behind each operation of the store contract.

use rusqlite::types::Null;
use rusqlite::{params, TransactionBehavior};

use super::rows::{self, item_columns, run_columns};
use super::{SqliteStore, FOR_EACH_SQL, LOOKUP_SIZES};
use crate::{
    During, Error, ErrorMessage, InputCounts, InputRow, ItemRecord, Lease, LeaseHolder, NewRun,
    Output, RecordedItem, Result, RunCounts, RunMeta, RunSummary, SinkError, StepRecord, Store,
    WorkerBeat, RUN_STATES,
};

impl Store for SqliteStore {
    fn create_run(&mut self, new: &NewRun) -> Result<RunMeta> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("create a run")?;
        let seq: i64 = tx
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs WHERE name = ?1")
            .and_then(|mut s| s.query_row([&new.name], |r| r.get(0)))
            .during("create a run")?;
        let now = rows::now_ms();
        let run = new.created(seq, now);
        tx.prepare_cached(
            "INSERT INTO runs (id, name, seq, source, created_at, updated_at, settings, state) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            let settings = run.settings.to_string();
            s.execute(params![
                run.id, run.name, seq, run.source, now, settings, run.state
            ])
        })
        .and_then(|_| tx.commit())
        .during("create a run")?;
        Ok(run)
    }

    fn find_run(&mut self, key: &str) -> Result<Option<RunMeta>> {
        const BY_ID: &str = concat!("SELECT ", run_columns!(), " FROM runs WHERE id = ?1");
        const BY_NAME: &str = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE name = ?1 ORDER BY seq DESC LIMIT 1"
        );
        match self.one_run(BY_ID, key)? {
            Some(run) => Ok(Some(run)),
            None => self.one_run(BY_NAME, key),
        }
    }

    fn latest_run_for_source(&mut self, source: &str) -> Result<Option<RunMeta>> {
        const SQL: &str = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE source = ?1 ORDER BY created_at DESC, seq DESC, rowid DESC LIMIT 1"
        );
        self.one_run(SQL, source)
    }

    fn list_runs(&mut self) -> Result<Vec<RunSummary>> {
        const SQL: &str = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs ORDER BY created_at DESC, seq DESC, rowid DESC"
        );
        let runs = {
            let mut stmt = self.conn.prepare_cached(SQL).during("list runs")?;
            let mut rows = stmt.query([]).during("list runs")?;
            let mut runs = Vec::new();
            while let Some(row) = rows.next().during("list runs")? {
                runs.push(rows::run_from_row(row)?);
            }
            runs
        };
        runs.into_iter()
            .map(|run| {
                Ok(RunSummary {
                    counts: self.counts_unchecked(&run.id)?,
                    run,
                })
            })
            .collect()
    }

    fn set_total(&mut self, run_id: &str, total: u64) -> Result<()> {
        let total = rows::to_i64("run total", total)?;
        let sql = "UPDATE runs SET total = ?2, updated_at = ?3 WHERE id = ?1";
        self.update_run(run_id, sql, &[&total, &rows::now_ms()])
    }

    fn set_state(&mut self, run_id: &str, state: &str, finished_at: Option<i64>) -> Result<()> {
        if !RUN_STATES.contains(&state) {
            return Err(Error::InvalidState(state.to_owned()));
        }
        let sql = "UPDATE runs SET state = ?2, finished_at = ?3, updated_at = ?4 WHERE id = ?1";
        self.update_run(run_id, sql, &[&state, &finished_at, &rows::now_ms()])
    }

    fn update_settings(&mut self, run_id: &str, settings: &serde_json::Value) -> Result<()> {
        let sql = "UPDATE runs SET settings = ?2, updated_at = ?3 WHERE id = ?1";
        self.update_run(run_id, sql, &[&settings.to_string(), &rows::now_ms()])
    }

    fn lookup(&mut self, run_id: &str, item_ids: &[&str]) -> Result<Vec<RecordedItem>> {
        self.ensure_run(run_id)?;
        let op = "look up items";
        let max = LOOKUP_SIZES[LOOKUP_SIZES.len() - 1];
        let mut found = Vec::new();
        for chunk in item_ids.chunks(max) {
            let slot = LOOKUP_SIZES
                .iter()
                .position(|&n| n >= chunk.len())
                .unwrap_or(0);
            let mut stmt = self
                .conn
                .prepare_cached(&self.lookup_sql[slot])
                .during(op)?;
            stmt.raw_bind_parameter(1, run_id).during(op)?;
            for i in 0..LOOKUP_SIZES[slot] {
                let bound = match chunk.get(i) {
                    Some(id) => stmt.raw_bind_parameter(i + 2, id),
                    None => stmt.raw_bind_parameter(i + 2, Null),
                };
                bound.during(op)?;
            }
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next().during(op)? {
                let read = |i| row.get::<_, i64>(i).during(op);
                let status: String = row.get(2).during(op)?;
                found.push(RecordedItem {
                    item_id: row.get(0).during(op)?,
                    hash: rows::hash_from_i64(read(1)?),
                    status: rows::status_from_str(&status)?,
                    idx: rows::to_u64("item idx", read(3)?)?,
                });
            }
        }
        Ok(found)
    }

    fn set_positions(&mut self, run_id: &str, moves: &[(String, u64)]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("move items")?;
        Self::touch(&tx, run_id)?;
        {
            let mut stmt = tx
                .prepare_cached("UPDATE items SET idx = ?3 WHERE run_id = ?1 AND item_id = ?2")
                .during("move items")?;
            for (item_id, idx) in moves {
                let idx = rows::to_i64("item idx", *idx)?;
                stmt.execute(params![run_id, item_id, idx])
                    .during("move items")?;
            }
        }
        tx.commit().during("move items")
    }

    fn write_batch(&mut self, run_id: &str, records: &[ItemRecord]) -> Result<()> {
        const UPSERT: &str = concat!(
            "INSERT INTO items (run_id, ",
            item_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
             ON CONFLICT (run_id, item_id) DO UPDATE SET idx = excluded.idx, \
             hash = excluded.hash, status = excluded.status, attempts = excluded.attempts, \
             throttled = excluded.throttled, status_code = excluded.status_code, \
             response = excluded.response, error = excluded.error, \
             prompt_tokens = excluded.prompt_tokens, \
             completion_tokens = excluded.completion_tokens, latency_ms = excluded.latency_ms, \
             started_at = excluded.started_at, finished_at = excluded.finished_at, \
             metadata = excluded.metadata, custom_id = excluded.custom_id"
        );
        let op = "record results";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(op)?;
        Self::touch(&tx, run_id)?;
        {
            let mut stmt = tx.prepare_cached(UPSERT).during(op)?;
            for r in records {
                let opt = |what, v: Option<u64>| v.map(|v| rows::to_i64(what, v)).transpose();
                stmt.execute(params![
                    run_id,
                    r.item_id,
                    rows::to_i64("item idx", r.idx)?,
                    rows::hash_to_i64(r.hash),
                    r.status.as_str(),
                    r.attempts,
                    r.throttled,
                    r.status_code,
                    r.response,
                    r.error,
                    opt("prompt tokens", r.prompt_tokens)?,
                    opt("completion tokens", r.completion_tokens)?,
                    rows::to_i64("latency", r.latency_ms)?,
                    r.started_at,
                    r.finished_at,
                    r.metadata,
                    r.custom_id,
                ])
                .during(op)?;
            }
        }
        tx.commit().during(op)
    }

    fn counts(&mut self, run_id: &str) -> Result<RunCounts> {
        self.ensure_run(run_id)?;
        self.counts_unchecked(run_id)
    }

    fn top_errors(&mut self, run_id: &str, limit: usize) -> Result<Vec<(String, u64)>> {
        self.ensure_run(run_id)?;
        const SQL: &str = "SELECT COALESCE(error, '(no error message)') AS message, COUNT(*) AS n \
            FROM items WHERE run_id = ?1 AND status = 'failed' \
            GROUP BY message ORDER BY n DESC, message ASC LIMIT ?2";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let op = "summarise errors";
        let mut stmt = self.conn.prepare_cached(SQL).during(op)?;
        let found = stmt
            .query_map(params![run_id, limit], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .during(op)?;
        found
            .into_iter()
            .map(|(m, n)| Ok((m, rows::to_u64("error count", n)?)))
            .collect()
    }

    fn error_messages(&mut self, run_id: &str, limit: usize) -> Result<Vec<ErrorMessage>> {
        self.ensure_run(run_id)?;
        const SQL: &str =
            "SELECT COALESCE(error, '(no error message)') AS message, COUNT(*) AS n, \
            MIN(item_id) FROM items WHERE run_id = ?1 AND status = 'failed' \
            GROUP BY message ORDER BY n DESC, message ASC LIMIT ?2";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let op = "group errors";
        let mut stmt = self.conn.prepare_cached(SQL).during(op)?;
        let found = stmt
            .query_map(params![run_id, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .during(op)?;
        found
            .into_iter()
            .map(|(message, n, example)| {
                Ok(ErrorMessage {
                    message,
                    count: rows::to_u64("error count", n)?,
                    example,
                })
            })
            .collect()
    }

    fn for_each_item(
        &mut self,
        run_id: &str,
        f: &mut dyn FnMut(ItemRecord) -> std::result::Result<(), SinkError>,
    ) -> Result<()> {
        self.ensure_run(run_id)?;
        let op = "read items";
        let mut stmt = self.conn.prepare_cached(FOR_EACH_SQL).during(op)?;
        // One statement is one read transaction: the export sees a consistent
        // snapshot while the writer keeps committing to the WAL.
        let mut rows = stmt.query([run_id]).during(op)?;
        while let Some(row) = rows.next().during(op)? {
            f(rows::item_from_row(row)?).map_err(Error::Callback)?;
        }
        Ok(())
    }

    fn reset_failed(&mut self, run_id: &str) -> Result<u64> {
        let op = "reset failed items";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(op)?;
        Self::touch(&tx, run_id)?;
        let deleted = tx
            .prepare_cached("DELETE FROM items WHERE run_id = ?1 AND status = 'failed'")
            .and_then(|mut s| s.execute([run_id]))
            .during(op)?;
        tx.commit().during(op)?;
        Ok(deleted as u64)
    }

    fn get_item(&mut self, run_id: &str, item_id: &str) -> Result<Option<ItemRecord>> {
        self.ensure_run(run_id)?;
        const SQL: &str = concat!(
            "SELECT ",
            item_columns!(),
            " FROM items WHERE run_id = ?1 AND item_id = ?2"
        );
        let op = "read an item";
        let mut stmt = self.conn.prepare_cached(SQL).during(op)?;
        let mut rows = stmt.query([run_id, item_id]).during(op)?;
        match rows.next().during(op)? {
            Some(row) => rows::item_from_row(row).map(Some),
            None => Ok(None),
        }
    }

    fn write_steps(&mut self, run_id: &str, records: &[StepRecord]) -> Result<()> {
        super::steps::write(self, run_id, records)
    }

    fn unit_steps(&mut self, run_id: &str, unit_id: &str) -> Result<Vec<StepRecord>> {
        self.ensure_run(run_id)?;
        super::steps::of_unit(self, run_id, unit_id)
    }

    fn reset_failed_steps(&mut self, run_id: &str, step: Option<&str>) -> Result<u64> {
        super::steps::reset_failed(self, run_id, step)
    }

    fn reset_failed_units(&mut self, run_id: &str, units: &[String]) -> Result<u64> {
        super::steps::reset_failed_units(self, run_id, units)
    }

    fn cache_get(&mut self, key: u64, since: i64) -> Result<Option<String>> {
        super::steps::cache_get(self, key, since)
    }

    fn cache_put(&mut self, entries: &[(u64, String, i64)]) -> Result<()> {
        super::steps::cache_put(self, entries)
    }

    fn heartbeat(&mut self, beat: &WorkerBeat) -> Result<()> {
        super::heartbeats::heartbeat(self, beat)
    }

    fn workers(&mut self, run_id: &str) -> Result<Vec<WorkerBeat>> {
        self.ensure_run(run_id)?;
        super::heartbeats::workers(self, run_id)
    }

    fn put_run_state(&mut self, run_id: &str, key: &str, value: &serde_json::Value) -> Result<()> {
        super::heartbeats::put_run_state(self, run_id, key, value)
    }

    fn run_state(
        &mut self,
        run_id: &str,
        prefix: &str,
    ) -> Result<Vec<(String, serde_json::Value)>> {
        self.ensure_run(run_id)?;
        super::heartbeats::run_state(self, run_id, prefix)
    }

    fn acquire_lease(
        &mut self,
        key: &str,
        holder: &LeaseHolder,
        ttl: std::time::Duration,
        replace: Option<&str>,
    ) -> Result<Option<Lease>> {
        super::executions::acquire_lease(self, key, holder, ttl, replace)
    }

    fn renew_lease(&mut self, key: &str, holder: &str, ttl: std::time::Duration) -> Result<bool> {
        super::executions::renew_lease(self, key, holder, ttl)
    }

    fn release_lease(&mut self, key: &str, holder: &str) -> Result<()> {
        super::executions::release_lease(self, key, holder)
    }

    fn lease(&mut self, key: &str) -> Result<Option<Lease>> {
        super::executions::lease(self, key)
    }

    fn replace_inputs(
        &mut self,
        run_id: &str,
        rows: &mut dyn Iterator<Item = std::result::Result<InputRow, SinkError>>,
    ) -> Result<InputCounts> {
        super::executions::replace_inputs(self, run_id, rows)
    }

    fn for_each_output(
        &mut self,
        run_id: &str,
        f: &mut dyn FnMut(Output) -> std::result::Result<(), SinkError>,
    ) -> Result<()> {
        super::executions::for_each_output(self, run_id, f)
    }
}
