//! The SQLite store: one file in WAL mode, one connection per `SqliteStore` value.
//!
//! Durability: `synchronous = NORMAL` in WAL mode means a committed transaction is
//! in the WAL file (written, not yet fsynced) before the call returns. That
//! survives the process dying at any moment — panic, `kill -9`, OOM kill — which is
//! the bar sluice sets. Only a power loss or OS crash can undo the last few
//! commits, never corrupt the file. `FULL` would fsync every commit and cap the
//! writer at the disk's flush rate.

mod executions;
mod heartbeats;
mod rows;
mod steps;
mod store;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};

use crate::num::count_sums;
use crate::{During, Error, Result, RunCounts, RunMeta};
use rows::item_columns;

/// The schema, one step per `user_version`: entry `i` migrates version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_steps.sql"),
    include_str!("../../migrations/0003_cache.sql"),
    include_str!("../../migrations/0004_workers.sql"),
    include_str!("../../migrations/0005_executions.sql"),
];

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Id-list sizes of the cached lookup statements; a batch uses the smallest that
/// fits and pads with NULL (which matches nothing), so a few statements serve
/// every batch size.
const LOOKUP_SIZES: [usize; 3] = [16, 128, 512];

/// Every item of a run in export order; `items_by_position` serves it without sorting.
const FOR_EACH_SQL: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM items WHERE run_id = ?1 ORDER BY idx, item_id"
);

/// A connection to a SQLite store file.
///
/// Open one per thread that needs it (the engine's writer, a reader for status
/// and exports): WAL lets readers proceed while one writer commits, and the
/// 5 s busy timeout absorbs brief contention between writers.
pub struct SqliteStore {
    conn: Connection,
    /// `lookup` SQL for each of [`LOOKUP_SIZES`], built once so the statement
    /// cache is keyed by a borrowed string.
    lookup_sql: [String; 3],
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.conn.path())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating parent directories and the file) and migrates.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|cause| Error::CreateDir {
                path: dir.to_owned(),
                cause,
            })?;
        }
        let open_err = |e| open_error(path, e);
        let mut conn = Connection::open(path).map_err(open_err)?;
        // Before anything else: every later statement waits out other connections.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode = enable_wal(&conn).map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::NoWal {
                path: path.to_owned(),
                mode,
            });
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(32);
        migrate(&mut conn, path)?;
        let lookup_sql = LOOKUP_SIZES.map(|n| {
            let marks = vec!["?"; n].join(", ");
            format!(
                "SELECT item_id, hash, status, idx FROM items \
                 WHERE run_id = ?1 AND item_id IN ({marks})"
            )
        });
        Ok(SqliteStore { conn, lookup_sql })
    }

    /// Fails with [`Error::NoSuchRun`] unless the run exists.
    fn ensure_run(&self, run_id: &str) -> Result<()> {
        let exists = self
            .conn
            .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")
            .and_then(|mut s| s.exists([run_id]))
            .during("look up a run")?;
        if exists {
            Ok(())
        } else {
            Err(Error::NoSuchRun(run_id.to_owned()))
        }
    }

    /// Selects at most one run with `sql` (which selects [`run_columns!`]).
    fn one_run(&self, sql: &str, key: &str) -> Result<Option<RunMeta>> {
        let mut stmt = self.conn.prepare_cached(sql).during("read runs")?;
        let mut rows = stmt.query([key]).during("read runs")?;
        match rows.next().during("read runs")? {
            Some(row) => rows::run_from_row(row).map(Some),
            None => Ok(None),
        }
    }

    /// Sets `updated_at` on a run inside `tx`, which also proves it exists.
    fn touch(tx: &Connection, run_id: &str) -> Result<()> {
        let changed = tx
            .prepare_cached("UPDATE runs SET updated_at = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![run_id, rows::now_ms()]))
            .during("update a run")?;
        if changed == 0 {
            return Err(Error::NoSuchRun(run_id.to_owned()));
        }
        Ok(())
    }

    /// Runs an UPDATE on one run, `?1` being its id.
    fn update_run(&self, run_id: &str, sql: &str, rest: &[&dyn rusqlite::ToSql]) -> Result<()> {
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&run_id];
        args.extend_from_slice(rest);
        let changed = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(args.as_slice()))
            .during("update a run")?;
        if changed == 0 {
            return Err(Error::NoSuchRun(run_id.to_owned()));
        }
        Ok(())
    }

    /// Retries: a pipeline unit's record sums its steps' attempts, so a run
    /// with step records counts retries per step (webhook deliveries aside).
    /// A run with an input list counts its listed items' current records.
    fn counts_unchecked(&self, run_id: &str) -> Result<RunCounts> {
        macro_rules! counts_sql {
            ($from:literal) => {
                concat!(
                    "SELECT ",
                    count_sums!(),
                    ", CASE WHEN EXISTS (SELECT 1 FROM steps WHERE run_id = ?1) \
                     THEN (SELECT COALESCE(SUM(MAX(attempts - 1, 0)), 0) FROM steps \
                           WHERE run_id = ?1 AND step <> '(webhook)') \
                     ELSE COALESCE(SUM(MAX(it.attempts - 1, 0)), 0) END ",
                    $from
                )
            };
        }
        const ALL: &str = counts_sql!("FROM items it WHERE it.run_id = ?1");
        const LISTED: &str = counts_sql!(
            "FROM inputs i JOIN items it ON it.run_id = i.run_id \
             AND it.item_id = i.item_id AND it.hash = i.hash WHERE i.run_id = ?1"
        );
        let sql = if executions::has_inputs(&self.conn, run_id)? {
            LISTED
        } else {
            ALL
        };
        let (sums, first_started_at, last_finished_at, retries) = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.query_row([run_id], |r| {
                    let mut sums = [0i64; 7];
                    for (i, v) in sums.iter_mut().enumerate() {
                        *v = r.get(i)?;
                    }
                    Ok((sums, r.get(7)?, r.get(8)?, r.get::<_, i64>(9)?))
                })
            })
            .during("count items")?;
        let [done, failed, attempts, throttled, prompt, completion, latency] = sums;
        Ok(RunCounts {
            done: rows::to_u64("done count", done)?,
            failed: rows::to_u64("failed count", failed)?,
            attempts: rows::to_u64("attempts", attempts)?,
            retries: rows::to_u64("retries", retries)?,
            throttled: rows::to_u64("throttled", throttled)?,
            prompt_tokens: rows::to_u64("prompt tokens", prompt)?,
            completion_tokens: rows::to_u64("completion tokens", completion)?,
            latency_ms_sum: rows::to_u64("latency", latency)?,
            first_started_at,
            last_finished_at,
        })
    }
}

/// Switches the file to WAL mode (a no-op once it is: the mode is stored in the
/// file) and returns the mode SQLite reports. Two connections switching a new file
/// at the same moment get SQLITE_BUSY without the busy handler being consulted,
/// so this retries on its own, for as long as the busy timeout.
fn enable_wal(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Err(e)
                if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            done => return done,
        }
    }
}

/// Brings the schema to the newest version. Concurrent openers serialise on the
/// write lock and re-read the version, so each migration runs exactly once.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let known = MIGRATIONS.len() as i64;
    let open_err = |e| open_error(path, e);
    let version = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
    let too_new = |found| Error::TooNew {
        path: PathBuf::from(path),
        found,
        known,
    };
    // Fast path without the write lock: every open after the first lands here.
    match version(conn).map_err(open_err)? {
        v if v == known => return Ok(()),
        v if v > known => return Err(too_new(v)),
        _ => {}
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_err)?;
    let current = version(&tx).map_err(open_err)?;
    if current > known {
        return Err(too_new(current));
    }
    for sql in MIGRATIONS
        .iter()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.execute_batch(sql).map_err(open_err)?;
    }
    tx.pragma_update(None, "user_version", known)
        .map_err(open_err)?;
    tx.commit().map_err(open_err)
}

fn open_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::Open {
        path: path.to_owned(),
        hint: hint(&e),
        cause: Box::new(e),
    }
}

impl<T> During<T> for rusqlite::Result<T> {
    fn during(self, op: &'static str) -> Result<T> {
        self.map_err(|e| Error::Db {
            op,
            hint: hint(&e),
            cause: Box::new(e),
        })
    }
}

/// What to try, for the SQLite errors a user can do something about.
fn hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            " (the store stayed locked for 5 s: is another process holding it? \
             wait for it, or use a separate store)"
        }
        Some(ErrorCode::DiskFull) => " (is the disk full?)",
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => " (is the store file writable?)",
        Some(ErrorCode::CannotOpen) => " (does the directory exist, is the path writable?)",
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            " (the file is not an intact sluice store: move it aside and start a fresh run)"
        }
        Some(ErrorCode::SystemIoFailure) => " (disk I/O error: is the disk full or failing?)",
        _ => "",
    }
}

#[cfg(test)]
mod tests;
