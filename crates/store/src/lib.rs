//! Durable state of sluice runs: the [`Store`] trait, its SQLite
//! implementation (one machine) and its PostgreSQL one (several workers).
//!
//! The engine records every item's outcome here before it reports it, and on a
//! second invocation asks which items already have one, so a run resumes exactly
//! where it stopped. The trait is synchronous and free of SQLite specifics so a
//! PostgreSQL store implements it too; the engine calls it from a dedicated
//! writer thread and from blocking tasks, one store value (connection) each.
//!
//! An item with no record is pending; a record is either `done` or `failed`, and a
//! later record for the same `(run, item_id)` replaces an earlier one.

mod error;
mod executions;
mod location;
mod num;
mod postgres;
mod shared;
mod sqlite;
mod types;

#[cfg(test)]
mod tests;
#[cfg(test)]
#[path = "../../../tests/support/watchdog.rs"]
mod watchdog;

pub(crate) use error::During;
pub use error::{Error, Result};
pub use executions::{InputCounts, InputRow, Lease, LeaseHolder, Output};
pub use location::{redact_url, StoreLocation};
pub use postgres::PostgresStore;
pub use shared::{Claimed, JobDef, QueueCounts, QueuedUnit, SharedRuns, SharedUpdate};
pub use sqlite::SqliteStore;
pub use types::{
    ErrorMessage, ItemRecord, ItemStatus, NewRun, RecordedItem, RunCounts, RunMeta, RunSummary,
    StepRecord, WorkerBeat, RUN_STATES, STATE_FINISHED, STATE_INTERRUPTED, STATE_RUNNING,
};

use std::path::PathBuf;

/// The callback error type of [`Store::for_each_item`]: whatever the sink (a file,
/// stdout, a socket) failed with.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where runs and their item outcomes are kept.
///
/// Every method taking a `run_id` returns [`Error::NoSuchRun`] when the store does
/// not hold that run. Every write is durable when the method returns (for SQLite:
/// against a process crash or `kill -9`; see [`SqliteStore`]).
pub trait Store: Send {
    /// Creates a run with id `<name>-<seq>` (seq counts runs of that name, from 1),
    /// in state `running`.
    fn create_run(&mut self, new: &NewRun) -> Result<RunMeta>;
    /// By exact id, else the latest run with that name.
    fn find_run(&mut self, key: &str) -> Result<Option<RunMeta>>;
    /// Latest run (by created_at, then seq) whose `source` equals `source`.
    fn latest_run_for_source(&mut self, source: &str) -> Result<Option<RunMeta>>;
    /// Every run with its counts, newest first.
    fn list_runs(&mut self) -> Result<Vec<RunSummary>>;
    /// Records how many input items the run has, once known.
    fn set_total(&mut self, run_id: &str, total: u64) -> Result<()>;
    /// Moves the run to `state` (one of [`RUN_STATES`]), setting `finished_at`
    /// (`None` clears it, e.g. when a finished run is resumed for a retry).
    fn set_state(&mut self, run_id: &str, state: &str, finished_at: Option<i64>) -> Result<()>;
    /// Replaces the run's settings (e.g. flags changed on resume). No secrets.
    fn update_settings(&mut self, run_id: &str, settings: &serde_json::Value) -> Result<()>;
    /// Existing outcomes for these ids (any order; ids not found are absent).
    /// Meant for batches of ~1,000 ids.
    fn lookup(&mut self, run_id: &str, item_ids: &[&str]) -> Result<Vec<RecordedItem>>;
    /// Moves known items to a new input position (an edited input file shifted
    /// them). Ids without a record are ignored.
    fn set_positions(&mut self, run_id: &str, moves: &[(String, u64)]) -> Result<()>;
    /// Records outcomes in one transaction: all or none are stored. A record
    /// replaces an earlier one with the same item id (e.g. a failed item retried).
    fn write_batch(&mut self, run_id: &str, records: &[ItemRecord]) -> Result<()>;
    /// Totals over the run's recorded items (for a run with an input list,
    /// those of listed items with their current request).
    fn counts(&mut self, run_id: &str) -> Result<RunCounts>;
    /// The most frequent error messages of failed items: (message, count), most
    /// frequent first (ties by message), at most `limit`.
    fn top_errors(&mut self, run_id: &str, limit: usize) -> Result<Vec<(String, u64)>>;
    /// The distinct error messages of failed items with their counts and an
    /// example item, most frequent first (ties by message), at most `limit`:
    /// the input of grouping by cause, which happens outside the store.
    fn error_messages(&mut self, run_id: &str, limit: usize) -> Result<Vec<ErrorMessage>>;
    /// Calls `f` for every recorded item in input order (idx, then item_id),
    /// streaming rather than loading all rows. Stops at the first error `f`
    /// returns and passes it on as [`Error::Callback`].
    fn for_each_item(
        &mut self,
        run_id: &str,
        f: &mut dyn FnMut(ItemRecord) -> std::result::Result<(), SinkError>,
    ) -> Result<()>;
    /// Deletes failed items' records so they become pending again; returns how many.
    fn reset_failed(&mut self, run_id: &str) -> Result<u64>;
    /// The record of one item, if it has one.
    fn get_item(&mut self, run_id: &str, item_id: &str) -> Result<Option<ItemRecord>>;
    /// Records step outcomes of pipeline units in one transaction; a record
    /// replaces an earlier one for the same (unit, step, part).
    fn write_steps(&mut self, run_id: &str, records: &[StepRecord]) -> Result<()>;
    /// Every step record of one unit, by step then part.
    fn unit_steps(&mut self, run_id: &str, unit_id: &str) -> Result<Vec<StepRecord>>;
    /// Deletes failed step records (of `step`, or of every step) and the
    /// records of the units they failed (without a step: every failed unit),
    /// so a rerun retries them; returns how many units became pending.
    fn reset_failed_steps(&mut self, run_id: &str, step: Option<&str>) -> Result<u64>;
    /// Deletes the records of the failed units among `units` and their
    /// failed step records, so a rerun retries just them (a group of
    /// failures, the retryable ones); returns how many became pending.
    fn reset_failed_units(&mut self, run_id: &str, units: &[String]) -> Result<u64>;
    /// A cached step output stored at or after `since` (unix ms), if any.
    fn cache_get(&mut self, key: u64, since: i64) -> Result<Option<String>>;
    /// Stores step outputs in the cache (replacing older ones), in one transaction.
    fn cache_put(&mut self, entries: &[(u64, String, i64)]) -> Result<()>;
    /// Records one process's live state for a run, replacing its previous beat
    /// (same run and `worker_id`).
    fn heartbeat(&mut self, beat: &WorkerBeat) -> Result<()>;
    /// Every process that has beaten for the run, latest beat first.
    fn workers(&mut self, run_id: &str) -> Result<Vec<WorkerBeat>>;
    /// Stores a named piece of run state (JSON), replacing an earlier value.
    fn put_run_state(&mut self, run_id: &str, key: &str, value: &serde_json::Value) -> Result<()>;
    /// The run's state entries whose key starts with `prefix` (`""`: all), by key.
    fn run_state(&mut self, run_id: &str, prefix: &str)
        -> Result<Vec<(String, serde_json::Value)>>;
    /// Takes the executor lease on `key` for `holder`, valid for `ttl` by
    /// the store's clock: granted (`None`) when nobody holds it, when its
    /// lease lapsed, when `holder` already holds it, or when it is held by
    /// `replace` (a holder known to be gone). Otherwise nothing changes and
    /// the live lease is returned. Atomic: of processes asking at once, one
    /// gets it.
    fn acquire_lease(
        &mut self,
        key: &str,
        holder: &LeaseHolder,
        ttl: std::time::Duration,
        replace: Option<&str>,
    ) -> Result<Option<Lease>>;
    /// Extends `holder`'s lease on `key` to `ttl` from now; `false` when it
    /// no longer holds it (it lapsed and another process took it).
    fn renew_lease(&mut self, key: &str, holder: &str, ttl: std::time::Duration) -> Result<bool>;
    /// Gives up `holder`'s lease on `key` (nothing if it does not hold it).
    fn release_lease(&mut self, key: &str, holder: &str) -> Result<()>;
    /// The lease on `key`, lapsed or not, if there is one.
    fn lease(&mut self, key: &str) -> Result<Option<Lease>>;
    /// Replaces the run's input list with `rows` in one transaction (an
    /// `Err` from `rows` rolls it back and is returned as
    /// [`Error::Callback`]; a repeated id keeps its first row), and makes
    /// earlier failures pending again (the execution starting sends them
    /// again). From then on exports and counts follow the list.
    fn replace_inputs(
        &mut self,
        run_id: &str,
        rows: &mut dyn Iterator<Item = std::result::Result<InputRow, SinkError>>,
    ) -> Result<InputCounts>;
    /// Calls `f` with every line of the run's results in input order: for a
    /// run with an input list, one per listed item (pending where it has no
    /// outcome for its current request); otherwise one per recorded item.
    /// Stops at the first error `f` returns ([`Error::Callback`]).
    fn for_each_output(
        &mut self,
        run_id: &str,
        f: &mut dyn FnMut(Output) -> std::result::Result<(), SinkError>,
    ) -> Result<()>;
    /// The shared-run operations, for a store several processes work on at
    /// once (PostgreSQL); `None` for a single-process store (SQLite).
    fn shared(&mut self) -> Option<&mut dyn SharedRuns> {
        None
    }
}

/// The default store path: `.sluice/sluice.db` under the current directory
/// (returned relative, so it follows the process's working directory).
pub fn default_sqlite_path() -> PathBuf {
    PathBuf::from(".sluice").join("sluice.db")
}
