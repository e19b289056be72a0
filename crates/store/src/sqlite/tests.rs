//! Runs the store suite against SQLite, plus what only SQLite has: pragmas,
//! query plans, migrations, kill -9 recovery and a throughput measurement.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use super::*;
use crate::tests::{rec, store_suite};
use crate::ItemStatus;
use crate::{NewRun, Store};

/// A fresh store file in a temporary directory, and a way to connect to it.
fn fresh() -> (tempfile::TempDir, impl Fn() -> Box<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/sluice.db");
    let connect = move || -> Box<dyn Store> { Box::new(SqliteStore::open(&path).unwrap()) };
    (dir, connect)
}

store_suite!(fresh);

/// A temporary directory for one test, and the test's time limit
/// (`SLUICE_TEST_TIMEOUT_SECS`).
fn scratch() -> (tempfile::TempDir, crate::watchdog::Watchdog) {
    (
        tempfile::tempdir().unwrap(),
        crate::watchdog::Watchdog::start(),
    )
}

fn run_in(store: &mut SqliteStore, name: &str) -> String {
    let new = NewRun {
        name: name.into(),
        source: "s".into(),
        settings: serde_json::json!(null),
    };
    store.create_run(&new).unwrap().id
}

fn pragma(store: &SqliteStore, name: &str) -> String {
    let sql = format!("PRAGMA {name}");
    store
        .conn
        .query_row(&sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
        .map_or_else(
            |e| panic!("{name}: {e}"),
            |v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            },
        )
}

#[test]
fn opens_with_wal_normal_sync_foreign_keys_and_busy_timeout() {
    let (dir, _limit) = scratch();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    assert_eq!(pragma(&store, "journal_mode"), "wal");
    assert_eq!(pragma(&store, "synchronous"), "1", "NORMAL");
    assert_eq!(pragma(&store, "foreign_keys"), "1");
    assert_eq!(pragma(&store, "busy_timeout"), "5000");
    assert_eq!(pragma(&store, "user_version"), MIGRATIONS.len().to_string());
}

#[test]
fn hot_queries_use_indexes() {
    let (dir, _limit) = scratch();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    // Parameters stay unbound: the plan does not depend on their values.
    let plan = |sql: &str| -> String {
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let mut rows = stmt.raw_query();
        let mut steps = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            steps.push(row.get::<_, String>(3).unwrap());
        }
        steps.join("; ")
    };
    let export = plan(FOR_EACH_SQL);
    assert!(
        export.contains("items_by_position") && !export.contains("TEMP B-TREE"),
        "{export}"
    );
    for sql in &store.lookup_sql {
        let lookup = plan(sql);
        assert!(
            lookup.contains("USING INDEX") && !lookup.contains("SCAN"),
            "{lookup}"
        );
    }
}

#[test]
fn concurrent_opens_of_a_new_file_all_succeed() {
    let (dir, _limit) = scratch();
    let path = Arc::new(dir.path().join("new.db"));
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (path, start) = (Arc::clone(&path), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                run_in(&mut SqliteStore::open(&path).unwrap(), "r")
            })
        })
        .collect();
    let mut ids: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    ids.sort_by_key(|id| id[2..].parse::<u32>().unwrap());
    assert_eq!(ids, (1..=8).map(|i| format!("r-{i}")).collect::<Vec<_>>());
}

#[test]
fn refuses_a_store_from_a_newer_sluice() {
    let (dir, _limit) = scratch();
    let path = dir.path().join("s.db");
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).err().unwrap();
    assert!(matches!(err, Error::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("upgrade sluice"), "{err}");
}

#[test]
fn open_errors_say_where_and_what_to_do() {
    let (dir, _limit) = scratch();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let err = SqliteStore::open(&file.join("sluice.db")).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("a-file") && msg.contains("writable"), "{msg}");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 8192]).unwrap();
    let msg = SqliteStore::open(&garbage).err().unwrap().to_string();
    assert!(
        msg.starts_with("cannot open store at ") && msg.contains("not an intact"),
        "{msg}"
    );
}

#[test]
fn default_path_is_under_dot_sluice() {
    assert_eq!(crate::default_sqlite_path(), Path::new(".sluice/sluice.db"));
}

const CHILD_ENV: &str = "SLUICE_STORE_TEST_KILL_CHILD";
const KILL_BATCH: u64 = 200;

/// The child half of `kill_9_loses_no_committed_batch`: writes batches forever,
/// reporting each one on stdout only after `write_batch` returned.
fn write_until_killed(path: &Path) {
    let mut store = SqliteStore::open(path).unwrap();
    let run = run_in(&mut store, "killed");
    let mut out = std::io::stdout();
    for b in 0..100_000u64 {
        let batch: Vec<_> = (0..KILL_BATCH)
            .map(|i| rec(&format!("{b}-{i}"), b * KILL_BATCH + i, ItemStatus::Done))
            .collect();
        store.write_batch(&run, &batch).unwrap();
        writeln!(out, "{b}").and_then(|()| out.flush()).unwrap();
    }
}

#[test]
fn kill_9_loses_no_committed_batch() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        return write_until_killed(Path::new(&path));
    }
    let (dir, _limit) = scratch();
    let path: PathBuf = dir.path().join("s.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite::tests::kill_9_loses_no_committed_batch",
            "--nocapture",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged = None;
    // Kill mid-stream, well past the first commits and checkpoints.
    for line in lines.by_ref() {
        if let Ok(b) = line.unwrap().trim().parse::<u64>() {
            acknowledged = Some(b);
            if b == 60 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no close, WAL left behind
    child.wait().unwrap();
    assert_eq!(
        acknowledged,
        Some(60),
        "the child stopped early: see its stderr above"
    );
    let acknowledged = 60;

    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(pragma(&store, "integrity_check"), "ok");
    let done = store.counts("killed-1").unwrap().done;
    assert!(
        done >= (acknowledged + 1) * KILL_BATCH,
        "{done} rows, {acknowledged} acknowledged"
    );
    assert!(done.is_multiple_of(KILL_BATCH), "a batch was partly stored");
}

/// Measures `write_batch` for small rows; run with
/// `cargo test --release -p sluice-store -- --ignored --nocapture write_throughput`.
#[test]
#[ignore = "a measurement, not a check"]
fn write_throughput() {
    const ROWS: u64 = 100_000;
    const BATCH: u64 = 500;
    let (dir, _limit) = scratch();
    let mut store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    let run = run_in(&mut store, "bench");
    let batches: Vec<Vec<_>> = (0..ROWS / BATCH)
        .map(|b| {
            (0..BATCH)
                .map(|i| {
                    rec(
                        &format!("line-{}", b * BATCH + i),
                        b * BATCH + i,
                        ItemStatus::Done,
                    )
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    for batch in &batches {
        store.write_batch(&run, batch).unwrap();
    }
    let write = start.elapsed();
    let ids: Vec<String> = (0..ROWS).map(|i| format!("line-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let start = Instant::now();
    let found: usize = refs
        .chunks(1_000)
        .map(|c| store.lookup(&run, c).unwrap().len())
        .sum();
    let lookup = start.elapsed();
    assert_eq!(found as u64, ROWS);
    let per_s = |d: std::time::Duration| (ROWS as f64 / d.as_secs_f64()) as u64;
    eprintln!(
        "write_batch: {ROWS} rows in batches of {BATCH}: {write:?} = {} rows/s; \
         lookup in batches of 1000: {lookup:?} = {} ids/s",
        per_s(write),
        per_s(lookup)
    );
}
