//! Runs the store suite against the real PostgreSQL server, each check in a
//! fresh schema dropped afterwards, plus what only this store has:
//! migrations, concurrent openers, the unit queue with leases and fencing,
//! and shared limiter state.
//!
//! The server is `SLUICE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached the
//! tests print that they skip — unless `SLUICE_REQUIRE_POSTGRES=1` (CI),
//! which makes that a failure.

use std::str::FromStr;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::conn::Handle;
use super::*;
use crate::tests::{rec, store_suite};
use crate::{ItemStatus, NewRun, QueuedUnit, SharedRuns, Store, WorkerBeat};

/// The server the tests use.
fn server_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of its own for one test, dropped (with everything in it) at the end.
pub(crate) struct TempSchema {
    /// A URL whose connections use only this schema.
    pub(crate) url: String,
    name: String,
    admin: Handle,
    /// The test's time limit (`SLUICE_TEST_TIMEOUT_SECS`).
    _limit: crate::watchdog::Watchdog,
}

impl TempSchema {
    /// A new empty schema, or `None` (after saying so) when the server is not
    /// there and not required.
    pub(crate) fn create() -> Option<TempSchema> {
        let limit = crate::watchdog::Watchdog::start();
        let base = server_url();
        let config = tokio_postgres::Config::from_str(&base).expect("SLUICE_TEST_POSTGRES URL");
        let admin = match Handle::start(
            config,
            |cause, _| crate::Error::Unsupported(cause.to_string()),
            |_| Ok(()),
        ) {
            Ok(admin) => admin,
            Err(e) => {
                if std::env::var("SLUICE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                    panic!("PostgreSQL at {} is required (SLUICE_REQUIRE_POSTGRES=1) but unreachable: {e}", crate::redact_url(&base));
                }
                eprintln!(
                    "skipping: PostgreSQL at {} is unreachable ({e}); set SLUICE_REQUIRE_POSTGRES=1 to fail instead",
                    crate::redact_url(&base)
                );
                return None;
            }
        };
        let name = format!("sluice_t_{}_{}", std::process::id(), fastrand_suffix());
        let create = format!("CREATE SCHEMA {name}");
        admin
            .call(move |c| c.batch(&create).during("create a test schema"))
            .expect("create test schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{name}");
        Some(TempSchema {
            url,
            name,
            admin,
            _limit: limit,
        })
    }

    /// A new connection to the schema.
    pub(crate) fn open(&self) -> PostgresStore {
        PostgresStore::open(&self.url).unwrap()
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        let drop_sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let _ = self
            .admin
            .call(move |c| c.batch(&drop_sql).during("drop a test schema"));
    }
}

/// Distinct per call within a process (tests run in parallel threads).
fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    nanos * 1_000 + NEXT.fetch_add(1, Ordering::Relaxed)
}

fn fresh() -> Option<(TempSchema, impl Fn() -> Box<dyn Store>)> {
    let schema = TempSchema::create()?;
    let url = schema.url.clone();
    let connect = move || -> Box<dyn Store> { Box::new(PostgresStore::open(&url).unwrap()) };
    Some((schema, connect))
}

store_suite!(optional fresh);

fn version(store: &PostgresStore) -> i64 {
    store
        .handle
        .call(|c| {
            c.query_opt("SELECT version FROM sluice_schema", &[])
                .during("read version")
                .map(|r| r.map_or(-1, |r| r.get(0)))
        })
        .unwrap()
}

#[test]
fn migrates_an_empty_database_to_the_newest_version() {
    let Some(schema) = TempSchema::create() else {
        return;
    };
    let store = schema.open();
    assert_eq!(version(&store), MIGRATIONS.len() as i64);
    let tables: Vec<String> = store
        .handle
        .call(|c| {
            let rows = c
                .query(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = current_schema() ORDER BY 1",
                    &[],
                )
                .during("list tables")?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
        .unwrap();
    for t in [
        "items",
        "run_jobs",
        "runs",
        "shared_state",
        "units",
        "workers",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
    }
}

#[test]
fn migrates_a_database_of_the_previous_version_keeping_its_data() {
    let Some(schema) = TempSchema::create() else {
        return;
    };
    let mut old = PostgresStore::open_at(&schema.url, MIGRATIONS.len() - 1).unwrap();
    assert_eq!(version(&old), MIGRATIONS.len() as i64 - 1);
    let run = old
        .create_run(&NewRun {
            name: "old".into(),
            source: "s".into(),
            settings: serde_json::json!({"rpm": 5}),
        })
        .unwrap();
    old.write_batch(
        &run.id,
        &[
            rec("a", 0, ItemStatus::Done),
            rec("b", 1, ItemStatus::Failed),
        ],
    )
    .unwrap();
    drop(old);
    let mut store = schema.open();
    assert_eq!(version(&store), MIGRATIONS.len() as i64);
    assert_eq!(store.find_run("old").unwrap(), Some(run.clone()));
    let counts = store.counts(&run.id).unwrap();
    assert_eq!((counts.done, counts.failed), (1, 1));
    assert_eq!(
        store.get_item(&run.id, "a").unwrap(),
        Some(rec("a", 0, ItemStatus::Done))
    );
    // The new version's tables work on the old run.
    let queue = store.shared().unwrap();
    queue.put_job(&run.id, &job_def()).unwrap();
    assert_eq!(queue.job_def(&run.id).unwrap(), Some(job_def()));
}

#[test]
fn concurrent_openers_migrate_once() {
    let Some(schema) = TempSchema::create() else {
        return;
    };
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (url, barrier) = (schema.url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PostgresStore::open(&url).map(drop)
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    assert_eq!(version(&schema.open()), MIGRATIONS.len() as i64);
}

#[test]
fn refuses_a_schema_newer_than_this_build() {
    let Some(schema) = TempSchema::create() else {
        return;
    };
    let store = schema.open();
    store
        .handle
        .call(|c| {
            c.batch("UPDATE sluice_schema SET version = 99")
                .during("bump")
        })
        .unwrap();
    let err = PostgresStore::open(&schema.url).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
}

#[test]
fn unreachable_server_is_a_clear_error_without_the_password() {
    let err = PostgresStore::open("postgres://bob:s3cret@127.0.0.1:1/db")
        .unwrap_err()
        .to_string();
    assert!(err.contains("postgres://bob:***@127.0.0.1:1/db"), "{err}");
    assert!(err.contains("is PostgreSQL running"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

fn job_def() -> crate::JobDef {
    crate::JobDef {
        path: "/jobs/eval.toml".into(),
        text: "name = \"eval\"\n".into(),
        sets: vec!["matrix.model=a,b".into()],
    }
}

fn units(n: u64) -> Vec<QueuedUnit> {
    (0..n)
        .map(|i| QueuedUnit {
            unit_id: format!("u{i:03}"),
            idx: i,
            hash: rec("x", i, ItemStatus::Done).hash,
            body: format!(r#"{{"i":{i}}}"#),
        })
        .collect()
}

/// A shared run with `n` units queued and ready.
fn queued_run(store: &mut PostgresStore, n: u64) -> String {
    let (run, resumed) = store
        .open_shared_run(
            &NewRun {
                name: "job".into(),
                source: "job:s".into(),
                settings: serde_json::json!({}),
            },
            false,
        )
        .unwrap();
    assert!(!resumed);
    store.put_job(&run.id, &job_def()).unwrap();
    assert_eq!(store.enqueue(&run.id, &units(n)).unwrap(), 0);
    store.finish_enqueue(&run.id).unwrap();
    run.id
}

fn done(unit: &QueuedUnit) -> crate::ItemRecord {
    let mut r = rec(&unit.unit_id, unit.idx, ItemStatus::Done);
    r.hash = unit.hash;
    r
}

#[test]
fn claims_skip_units_other_workers_hold_and_follow_input_order() {
    let Some(schema) = TempSchema::create() else {
        return;
    };
    let mut a = schema.open();
    let run = queued_run(&mut a, 10);
    let mut b = schema.open();
    let lease = Duration::from_secs(30);
    let first = a.claim(&run, "wa", 4, lease).unwrap();
    let second = b.claim(&run, "wb", 4, lease).unwrap();
    let ids = |c: &[crate::Claimed]| c.iter().map(|c| c.unit.idx).collect::<Vec<_>>();
    assert_eq!(ids(&first), [0, 1, 2, 3]);
    assert_eq!(ids(&second), [4, 5, 6, 7]);
    assert_eq!(first[0].unit.body, r#"{"i":0}"#);
    let counts = a.queue_counts(&run).unwrap();
    assert_eq!((counts.queued, counts.leased, counts.ready), (2, 8, true));
    // Concurrent claimers never get the same unit.
    let barrier = Arc::new(Barrier::new(4));
    let claimers: Vec<_> = (0..4)
        .map(|w| {
            let (url, run, barrier) = (schema.url.clone(), run.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut s = PostgresStore::open(&url).unwrap();
                barrier.wait();
                s.claim(&run, &format!("w{w}"), 1, lease).unwrap()
            })
        })
        .collect();
    let mut got: Vec<u64> = claimers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .map(|c| c.unit.idx)
        .collect();
    got.sort_unstable();
    assert_eq!(got, [8, 9]);
    assert!(a.claim(&run, "wa", 4, lease).unwrap().is_empty());
}

#[test]
fn a_result_is_accepted_only_under_its_current_lease() {
    let Some(schema) = TempSchema::create() else {
        return;
    };
    let mut a = schema.open();
    let run = queued_run(&mut a, 3);
    let short = Duration::from_millis(50);
    let lost = a.claim(&run, "wa", 1, short).unwrap().remove(0);
    std::thread::sleep(Duration::from_millis(120));
    // The lease expired: another worker takes the unit over, once the
    // queued units are claimed (they come first).
    let mut b = schema.open();
    let claimed = b.claim(&run, "wb", 3, Duration::from_secs(30)).unwrap();
    let ids: Vec<u64> = claimed.iter().map(|c| c.unit.idx).collect();
    assert_eq!(ids, [0, 1, 2]);
    let taken = claimed.into_iter().next().unwrap();
    assert_eq!(taken.unit.unit_id, lost.unit.unit_id);
    assert_ne!(taken.token, lost.token);
    assert_eq!((lost.claims, taken.claims), (1, 2));
    let step = crate::StepRecord {
        unit_id: lost.unit.unit_id.clone(),
        step: "ask".into(),
        part: -1,
        hash: 9,
        status: ItemStatus::Done,
        attempts: 1,
        throttled: 0,
        status_code: Some(200),
        prompt_tokens: None,
        completion_tokens: None,
        latency_ms: 1,
        started_at: 1,
        finished_at: 2,
        error: None,
        output: Some(r#"{"text":"x"}"#.into()),
    };
    let late = a
        .complete(
            &run,
            std::slice::from_ref(&step),
            &[(done(&lost.unit), lost.token)],
        )
        .unwrap();
    assert!(late.is_empty(), "a result under a lost lease is dropped");
    // Its step records are kept: the same output, reused by whoever finishes.
    assert_eq!(a.unit_steps(&run, &lost.unit.unit_id).unwrap(), [step]);
    assert_eq!(a.counts(&run).unwrap().done, 0);
    let mut ok = done(&taken.unit);
    ok.attempts = 2;
    let accepted = b.complete(&run, &[], &[(ok.clone(), taken.token)]).unwrap();
    assert_eq!(accepted, std::slice::from_ref(&taken.unit.unit_id));
    // The same result again (a writer retrying) is not counted twice.
    assert!(b
        .complete(&run, &[], &[(ok.clone(), taken.token)])
        .unwrap()
        .is_empty());
    assert_eq!(a.counts(&run).unwrap().done, 1);
    assert_eq!(a.get_item(&run, &ok.item_id).unwrap(), Some(ok));
    let counts = a.queue_counts(&run).unwrap();
    assert_eq!((counts.queued, counts.leased, counts.done), (0, 2, 1));
}

fn beat(run: &str, worker: &str, state: &str) -> WorkerBeat {
    WorkerBeat {
        run_id: run.into(),
        worker_id: worker.into(),
        host: "h".into(),
        pid: 1,
        started_at: 1,
        beat_at: crate::num::now_ms(),
        state: state.into(),
        in_flight: 0,
        live: serde_json::json!({}),
    }
}

#[test]
fn heartbeats_renew_leases_and_a_stopped_beat_returns_them() {
    let Some(schema) = TempSchema::create() else {
        return;
    };
    let mut a = schema.open();
    let run = queued_run(&mut a, 4);
    let mut b = schema.open();
    // Beats every 300 ms against a 2 s lease, for longer than the lease:
    // only the beats can keep it. A stall between two beats would have to
    // outlast the whole lease to spoil that, and is then named, not guessed.
    let lease = Duration::from_millis(2_000);
    let held = a.claim(&run, "wa", 2, lease).unwrap();
    let start = std::time::Instant::now();
    let mut last = start;
    while start.elapsed() < lease + Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(300));
        let gap = last.elapsed();
        assert!(
            gap < lease,
            "{gap:?} between two beats: longer than the lease"
        );
        a.heartbeat(&beat(&run, "wa", "running")).unwrap();
        last = std::time::Instant::now();
    }
    // Past the lease: still held because the beats kept it.
    let other = b.claim(&run, "wb", 4, lease).unwrap();
    // A stall between the last beat and this claim as long as the lease
    // would let it lapse: named, not guessed.
    let since_beat = last.elapsed();
    assert!(
        since_beat < lease || other.len() == 2,
        "{since_beat:?} between the last beat and the claim: longer than the lease"
    );
    assert_eq!(other.len(), 2, "only the units wa does not hold");
    a.heartbeat(&beat(&run, "wa", "stopped")).unwrap();
    let back = b.claim(&run, "wb", 4, lease).unwrap();
    let ids = |c: &[crate::Claimed]| c.iter().map(|c| c.unit.idx).collect::<Vec<_>>();
    assert_eq!(ids(&back), ids(&held));
    // Released by token too.
    let tokens: Vec<i64> = back.iter().map(|c| c.token).collect();
    assert_eq!(b.release(&run, &tokens).unwrap(), 2);
    assert_eq!(b.queue_counts(&run).unwrap().queued, 2);
}

#[test]
fn enqueue_again_skips_done_units_and_requeues_changed_ones() {
    let Some(schema) = TempSchema::create() else {
        return;
    };
    let mut s = schema.open();
    let run = queued_run(&mut s, 5);
    let claimed = s.claim(&run, "w", 5, Duration::from_secs(30)).unwrap();
    let results: Vec<_> = claimed
        .iter()
        .take(3)
        .map(|c| (done(&c.unit), c.token))
        .collect();
    s.complete(&run, &[], &results).unwrap();
    s.heartbeat(&beat(&run, "w", "stopped")).unwrap();
    // A second pass: unit 0 changed, units 1-2 the same, 3-4 never finished.
    let (again, resumed) = s
        .open_shared_run(
            &NewRun {
                name: "job".into(),
                source: "job:s".into(),
                settings: serde_json::json!({}),
            },
            false,
        )
        .unwrap();
    assert!(resumed);
    assert_eq!(again.id, run);
    s.put_job(&run, &job_def()).unwrap();
    let mut pass = units(5);
    pass[0].hash ^= 1;
    pass[2].idx = 40;
    assert_eq!(s.enqueue(&run, &pass).unwrap(), 2);
    assert!(!s.queue_counts(&run).unwrap().ready);
    s.finish_enqueue(&run).unwrap();
    let counts = s.queue_counts(&run).unwrap();
    assert_eq!((counts.queued, counts.done, counts.ready), (3, 2, true));
    assert_eq!(s.get_item(&run, "u002").unwrap().unwrap().idx, 40);
    assert_eq!(s.runnable_runs().unwrap().len(), 1);
}

#[test]
fn shared_state_updates_are_atomic_across_connections() {
    let Some(schema) = TempSchema::create() else {
        return;
    };
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = schema.url.clone();
            std::thread::spawn(move || {
                let mut s = PostgresStore::open(&url).unwrap();
                for _ in 0..25 {
                    s.update_shared(
                        "counter",
                        Box::new(|old, now_us| {
                            assert!(now_us > 1_600_000_000_000_000, "database clock in µs");
                            let n = old.and_then(|v| v.as_u64()).unwrap_or(0) + 1;
                            (serde_json::json!(n), serde_json::json!(n))
                        }),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut s = schema.open();
    let last = s
        .update_shared(
            "counter",
            Box::new(|old, _| (old.clone().unwrap(), old.unwrap())),
        )
        .unwrap();
    assert_eq!(last, serde_json::json!(100));
}

#[test]
fn works_from_inside_an_async_runtime() {
    let Some(schema) = TempSchema::create() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The engine calls the store from tasks on a current-thread runtime.
    let found = runtime.block_on(async {
        let mut s = schema.open();
        let run = s
            .create_run(&NewRun {
                name: "a".into(),
                source: "s".into(),
                settings: serde_json::json!({}),
            })
            .unwrap();
        s.write_batch(&run.id, &[rec("x", 0, ItemStatus::Done)])
            .unwrap();
        s.lookup(&run.id, &["x"]).unwrap()
    });
    assert_eq!(found.len(), 1);
}
