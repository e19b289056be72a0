//! Several processes on one run in PostgreSQL: `sluice run JOB --store
//! postgres://…` creates it, `sluice worker` processes join; every unit is
//! done once, a killed worker's units are finished by the others, the rpm is
//! held in total, SIGTERM hands units back at once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::pg::PgSchema;
use crate::util::*;

/// A job of `n` items, one chat step on the mock, with provider limits `limits`.
pub(crate) fn job(s: &Scratch, mock: &Mock, n: usize, limits: &str) -> PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            serde_json::json!({"id": format!("q{i:04}"), "q": format!("question {i}")}).to_string()
        })
        .collect();
    s.write_lines("items.jsonl", &lines);
    let path = s.path("job.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "shared"
[input]
path = "items.jsonl"
[providers.mock]
base_url = "{}"
{limits}
[[steps]]
name = "ask"
kind = "chat"
provider = "mock"
model = "m"
messages = [{{ role = "user", content = "{{{{ item.q }}}}" }}]
"#,
            mock.url("/v1")
        ),
    )
    .unwrap();
    path
}

/// `sluice ARGS` in the scratch directory against the shared store, in the background.
fn spawn(s: &Scratch, pg: &PgSchema, args: &[&str]) -> Child {
    Command::new(bin())
        .current_dir(s.dir.path())
        .args(args)
        .env("SLUICE_STORE", &pg.url)
        .env("SLUICE_PROGRESS_INTERVAL", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `sluice ARGS` against the shared store, waited for.
fn sluice(s: &Scratch, pg: &PgSchema, args: &[&str]) -> std::process::Output {
    let mut cmd = s.sluice(args);
    cmd.env("SLUICE_STORE", &pg.url);
    cmd.output().unwrap()
}

/// Waits for `child` (at most `limit`), returning its exit code and stderr.
pub(crate) fn finish(mut child: Child, limit: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `sluice status --json` satisfies `ready`.
fn wait_status(s: &Scratch, pg: &PgSchema, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = sluice(s, pg, &["status", "--json"]);
        if out.status.success() {
            let v = json_stdout(&out);
            if ready(&v) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every exported unit id, checked to appear once and be done.
pub(crate) fn exported_once(path: &Path, n: usize) {
    let rows = read_jsonl(path);
    let ids: HashSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(rows.len(), n, "one line per unit");
    assert_eq!(ids.len(), n, "no unit twice");
    assert!(
        rows.iter().all(|r| r["status"] == "done"),
        "every unit done"
    );
}

/// Units of the run claimed more than once: the only ones a unit's
/// request can have been sent twice for.
fn reclaimed_units(pg: &PgSchema) -> u64 {
    pg.count("SELECT count(*) FROM units WHERE claims > 1") as u64
}

fn worker_done(status: &Value) -> Vec<u64> {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| u(&w["live"]["counters"]["done"]))
        .collect()
}

#[test]
fn several_workers_share_a_run_and_no_unit_is_done_twice() {
    let Some(pg) = PgSchema::create() else { return };
    let mock = Mock::start(&["--latency-ms", "30"]);
    let s = Scratch::new();
    let n = 600;
    let job = job(&s, &mock, n, "concurrency = 6");
    let creator = spawn(
        &s,
        &pg,
        &["run", job.to_str().unwrap(), "--out", "out.jsonl"],
    );
    wait_status(&s, &pg, "the run to be queued", |v| {
        v["queue"]["ready"] == true
    });
    let workers: Vec<Child> = (0..2)
        .map(|_| spawn(&s, &pg, &["worker", "--exit-when-idle"]))
        .collect();
    let (code, err) = finish(creator, Duration::from_secs(120));
    assert_eq!(code, Some(0), "{err}");
    for w in workers {
        let (code, err) = finish(w, Duration::from_secs(60));
        assert_eq!(code, Some(0), "{err}");
    }
    exported_once(&s.path("out.jsonl"), n);
    let stats = mock.stats();
    assert_eq!(stats["duplicate_requests"], 0, "{stats}");
    assert_eq!(stats["requests"], n as u64, "{stats}");
    let status = wait_status(&s, &pg, "the final status", |v| {
        v["run"]["state"] == "finished"
    });
    let done = worker_done(&status);
    assert_eq!(done.len(), 3, "{status}");
    assert_eq!(done.iter().sum::<u64>(), n as u64, "{done:?}");
    assert!(
        done.iter().filter(|&&d| d > 0).count() >= 2,
        "work was shared: {done:?}"
    );
    assert_eq!(status["queue"]["queued"], 0);
    assert_eq!(status["queue"]["leased"], 0);
}

#[test]
fn a_killed_workers_units_are_finished_by_the_others() {
    let Some(pg) = PgSchema::create() else { return };
    let mock = Mock::start(&["--latency-ms", "40"]);
    let s = Scratch::new();
    let n = 900;
    let job = job(&s, &mock, n, "concurrency = 6");
    let creator = spawn(
        &s,
        &pg,
        &[
            "run",
            job.to_str().unwrap(),
            "--out",
            "out.jsonl",
            "--lease",
            "2s",
        ],
    );
    wait_status(&s, &pg, "the run to be queued", |v| {
        v["queue"]["ready"] == true
    });
    let mut victim = spawn(&s, &pg, &["worker", "--exit-when-idle", "--lease", "5s"]);
    let survivor = spawn(&s, &pg, &["worker", "--exit-when-idle", "--lease", "5s"]);
    // Kill the first worker once it has recorded some units.
    let pid = victim.id();
    wait_status(&s, &pg, "the victim's first results", |v| {
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| u(&w["pid"]) == u64::from(pid) && u(&w["live"]["counters"]["done"]) >= 20)
    });
    let at_kill = u(&mock.stats()["ok"]);
    victim.kill().unwrap(); // SIGKILL: no last beat, its leases must expire
    victim.wait().unwrap();
    assert!(at_kill < n as u64, "the kill came after the run finished");
    let (code, err) = finish(creator, Duration::from_secs(120));
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = finish(survivor, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    exported_once(&s.path("out.jsonl"), n);
    // Sent twice: only units the victim held when it died (on the wire, or
    // answered but not yet committed), which the survivor claimed again —
    // never a unit it had committed. How many it held is not a matter of
    // timing luck (how far the writer lagged) but recorded: every claim
    // counts in `units.claims`.
    let dup = u(&mock.stats()["duplicate_requests"]);
    let reclaimed = reclaimed_units(&pg);
    eprintln!("{dup} duplicates; {reclaimed} units claimed twice");
    assert!(
        dup <= reclaimed,
        "{dup} duplicates, but only {reclaimed} units were claimed twice"
    );
    let status = wait_status(&s, &pg, "the final status", |v| {
        v["run"]["state"] == "finished"
    });
    let victim_beat = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| u(&w["pid"]) == u64::from(pid))
        .cloned()
        .unwrap();
    assert_eq!(
        victim_beat["state"], "lost",
        "killed: it never said it stopped, and its pid is gone on this host"
    );
}

#[test]
fn three_workers_hold_one_shared_rpm() {
    let Some(pg) = PgSchema::create() else { return };
    // 1,200/min (20/s), enforced by the mock as providers do: no bursts,
    // but 125 ms of slack for a loaded machine's stalls, which bunch the
    // requests of three processes (see limits.rs); workers that each sent
    // at the full rate would still run 100 ms further ahead every 50 ms.
    let mock = Mock::start(&["--rpm", "1200", "--slack-ms", "125"]);
    let s = Scratch::new();
    let n = 160;
    let job = job(&s, &mock, n, "concurrency = 8\nrpm = 1200");
    // Queued only: the three workers share the whole run.
    let queued = sluice(
        &s,
        &pg,
        &["run", job.to_str().unwrap(), "--queue-only", "--json"],
    );
    assert!(queued.status.success(), "{}", stderr(&queued));
    assert_eq!(json_stdout(&queued)["run"], "shared-1");
    assert_eq!(mock.stats()["requests"], 0, "queueing sends nothing");
    let workers: Vec<Child> = (0..3)
        .map(|_| spawn(&s, &pg, &["worker", "--exit-when-idle"]))
        .collect();
    for w in workers {
        let (code, err) = finish(w, Duration::from_secs(120));
        assert_eq!(code, Some(0), "{err}");
    }
    let export = sluice(&s, &pg, &["export", "shared-1", "--out", "out.jsonl"]);
    assert!(export.status.success(), "{}", stderr(&export));
    exported_once(&s.path("out.jsonl"), n);
    let stats = mock.stats();
    assert_eq!(
        stats["rate_limited"], 0,
        "the workers together went too fast: {stats}"
    );
    assert!(u(&stats["max_requests_per_minute"]) <= 1200, "{stats}");
    // The other side, as the mock's referee measured it. The steady state
    // is the busiest 5 s of the ~9 s run (start-up and drain left out): at
    // the limit that is 100 requests, at most 102 with the 125 ms slack.
    // Each slice of 250 ms holds 5 requests only if it has room for their
    // lateness (a late request's `reset` from the mock holds the next one
    // later): without it, 4 of 5 (80 or 81 of 100 measured, 6 of 6 runs).
    // With room for the lateness each worker saw lately (debug build; 2 runs
    // quiet: 96-97 and 1,113-1,131/min over the whole run; 6 under two CPU
    // hogs, benches/under-load.sh: 88-94 and 993-1,092/min). The lower
    // bounds are the worst of these less 4-5 points of the limit (84 of
    // 100, above the 80-81 of slices that lose one request in five; 78% of
    // 1200 over the run, whose start-up weighs a little more); the upper
    // bounds are the limit's, so a faster limiter passes.
    let steady = u(&mock.rates(5_000)["max_requests"]);
    let achieved = mock.rates(60_000)["requests_per_minute"].as_f64().unwrap();
    eprintln!("three workers: busiest 5 s {steady} of 100, {achieved:.1} of 1200/min over the run");
    assert!(
        (84..=102).contains(&steady),
        "three workers sent {steady} requests in their busiest 5 s, against 100 at the limit"
    );
    assert!(
        (0.78 * 1200.0..=1.02 * 1200.0).contains(&achieved),
        "three workers achieved {achieved:.1} of 1200/min"
    );
    let status = wait_status(&s, &pg, "the final status", |v| {
        v["run"]["state"] == "finished"
    });
    let done = worker_done(&status);
    assert_eq!(done.len(), 3, "{status}");
    assert!(
        done.iter().filter(|&&d| d > 0).count() >= 2,
        "work was shared: {done:?}"
    );
}

#[test]
fn sigterm_hands_a_workers_units_back_at_once() {
    let Some(pg) = PgSchema::create() else { return };
    let mock = Mock::start(&["--latency-ms", "200"]);
    let s = Scratch::new();
    let n = 60;
    let job = job(&s, &mock, n, "concurrency = 2");
    // A long lease: the second worker can only finish quickly if the first
    // gave its units back when told to stop.
    let first = spawn(
        &s,
        &pg,
        &[
            "run",
            job.to_str().unwrap(),
            "--lease",
            "120s",
            "--out",
            "out.jsonl",
        ],
    );
    wait_status(&s, &pg, "some results", |v| u(&v["counts"]["done"]) >= 4);
    let kill = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", first.id())])
        .status()
        .unwrap();
    assert!(kill.success());
    let (code, err) = finish(first, Duration::from_secs(30));
    assert_eq!(code, Some(130), "interrupted like any run: {err}");
    let status = wait_status(&s, &pg, "the stopped beat", |v| {
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["state"] == "stopped")
    });
    assert_eq!(status["queue"]["leased"], 0, "{status}");
    let started = Instant::now();
    let out = sluice(&s, &pg, &["worker", "--exit-when-idle", "--lease", "120s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "waited for a lease to expire"
    );
    let export = sluice(&s, &pg, &["export", "shared", "--out", "all.jsonl"]);
    assert!(export.status.success(), "{}", stderr(&export));
    exported_once(&s.path("all.jsonl"), n);
    assert_eq!(mock.stats()["duplicate_requests"], 0);
}

#[test]
fn quick_mode_runs_on_postgres_and_resumes() {
    let Some(pg) = PgSchema::create() else { return };
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(40));
    let run = |extra: &[&str]| {
        let mut cmd = s.run(&input, &mock.chat_url(), extra);
        cmd.env("SLUICE_STORE", &pg.url);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        json_stdout(&out)
    };
    assert_eq!(run(&["--json"])["this_run"]["done"], 40);
    let again = run(&["--json"]);
    assert_eq!(again["this_run"]["skipped"], 40);
    assert_eq!(mock.stats()["requests"], 40);
    let export = sluice(&s, &pg, &["export", "in", "--out", "out.jsonl"]);
    assert!(export.status.success(), "{}", stderr(&export));
    assert_eq!(read_jsonl(&s.path("out.jsonl")).len(), 40);
}

#[test]
fn a_worker_refuses_a_sqlite_store() {
    let s = Scratch::new();
    let out = s.sluice(&["worker", "--exit-when-idle"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("postgres://"), "{}", stderr(&out));
}

#[test]
fn workers_hold_on_pause_and_give_their_units_back_on_cancel() {
    use crate::control::{held, no_new_requests};
    let Some(pg) = PgSchema::create() else { return };
    let mock = Mock::start(&["--latency-ms", "200"]);
    let s = Scratch::new();
    let n = 120;
    let job = job(&s, &mock, n, "concurrency = 2");
    let queued = sluice(&s, &pg, &["run", job.to_str().unwrap(), "--queue-only"]);
    assert!(queued.status.success(), "{}", stderr(&queued));
    let workers: Vec<Child> = (0..2)
        .map(|_| spawn(&s, &pg, &["worker", "--exit-when-idle"]))
        .collect();
    wait_status(&s, &pg, "some results", |v| u(&v["counts"]["done"]) >= 6);
    let out = sluice(&s, &pg, &["pause", "shared-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("the 2 processes"), "{}", stderr(&out));
    let status = wait_status(&s, &pg, "both workers to hold", |v| {
        held(v)
            && v["workers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|w| w["state"] == "running")
                .count()
                == 2
    });
    assert_eq!(status["state"], "paused", "{status}");
    no_new_requests(&mock);
    let out = sluice(&s, &pg, &["resume", "shared-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let resumed = u(&status["counts"]["done"]);
    wait_status(&s, &pg, "progress after the resume", |v| {
        u(&v["counts"]["done"]) > resumed + 4
    });
    let out = sluice(&s, &pg, &["cancel", "shared-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stopped (interrupted)"),
        "{}",
        stderr(&out)
    );
    // A cancelled run is left, not the worker's reason to stop: with
    // nothing else to claim, `--exit-when-idle` ends them normally.
    for w in workers {
        let (code, err) = finish(w, Duration::from_secs(60));
        assert_eq!(code, Some(0), "{err}");
        assert!(err.contains("left shared-1 (stopping)"), "{err}");
    }
    let status = wait_status(&s, &pg, "the cancelled state", |v| {
        v["run"]["state"] == "interrupted"
    });
    assert_eq!(status["queue"]["leased"], 0, "leases given back: {status}");
    let done = u(&status["counts"]["done"]);
    assert!(done < n as u64, "{status}");
    assert_eq!(status["control"]["state"], "cancel");
    // Cancelled: a worker started now does not join it.
    let sent = u(&mock.stats()["requests"]);
    let idle = sluice(&s, &pg, &["worker", "--exit-when-idle"]);
    assert!(idle.status.success(), "{}", stderr(&idle));
    assert!(!stderr(&idle).contains("joined"), "{}", stderr(&idle));
    assert_eq!(u(&mock.stats()["requests"]), sent);
    // Resumed: workers (any number, started afresh) finish it.
    let out = sluice(&s, &pg, &["resume", "shared-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("`sluice worker`"), "{}", stderr(&out));
    let workers: Vec<Child> = (0..2)
        .map(|_| spawn(&s, &pg, &["worker", "--exit-when-idle"]))
        .collect();
    for w in workers {
        let (code, err) = finish(w, Duration::from_secs(120));
        assert_eq!(code, Some(0), "{err}");
    }
    let export = sluice(&s, &pg, &["export", "shared-1", "--out", "all.jsonl"]);
    assert!(export.status.success(), "{}", stderr(&export));
    exported_once(&s.path("all.jsonl"), n);
    let stats = mock.stats();
    assert_eq!(stats["duplicate_requests"], 0, "{stats}");
    assert_eq!(stats["requests"], n as u64, "{stats}");
}

#[test]
fn sigterm_to_a_worker_hands_its_units_back_and_exits_0() {
    let Some(pg) = PgSchema::create() else { return };
    let mock = Mock::start(&["--latency-ms", "200"]);
    let s = Scratch::new();
    let n = 40;
    let job = job(&s, &mock, n, "concurrency = 2");
    let queued = sluice(
        &s,
        &pg,
        &["run", job.to_str().unwrap(), "--queue-only", "--json"],
    );
    assert!(queued.status.success(), "{}", stderr(&queued));
    // No --exit-when-idle: only the signal ends it.
    let worker = spawn(&s, &pg, &["worker", "--lease", "120s"]);
    wait_status(&s, &pg, "some results", |v| u(&v["counts"]["done"]) >= 2);
    let kill = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", worker.id())])
        .status()
        .unwrap();
    assert!(kill.success());
    let (code, err) = finish(worker, Duration::from_secs(30));
    assert_eq!(code, Some(0), "a worker told to stop exits 0: {err}");
    let status = wait_status(&s, &pg, "the stopped beat", |v| {
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["state"] == "stopped")
    });
    assert_eq!(status["queue"]["leased"], 0, "units handed back: {status}");
    // Another worker finishes without waiting for the 120 s lease.
    let out = sluice(&s, &pg, &["worker", "--exit-when-idle", "--lease", "120s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let export = sluice(&s, &pg, &["export", "shared-1", "--out", "all.jsonl"]);
    assert!(export.status.success(), "{}", stderr(&export));
    exported_once(&s.path("all.jsonl"), n);
}

#[test]
fn the_api_key_reaches_the_provider_but_never_the_postgresql_store() {
    let Some(pg) = PgSchema::create() else { return };
    let secret = "sk-test-pg-0123456789-very-secret";
    let mock = Mock::start_with_env(&["--api-key-env", "MOCK_KEY"], &[("MOCK_KEY", secret)]);
    let s = Scratch::new();
    let job = job(&s, &mock, 10, "api_key_env = \"MY_KEY\"");
    let out = s
        .sluice(&["run", job.to_str().unwrap(), "--out", "out.jsonl"])
        .env("SLUICE_STORE", &pg.url)
        .env("MY_KEY", secret)
        .env("SLUICE_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // It was sent: the mock answers 401 without it.
    assert_eq!(mock.stats()["ok"], 10);
    let dump = pg.dump();
    assert!(
        dump.contains("question 3"),
        "the dump holds the run: {dump:.200}"
    );
    assert!(!dump.contains(secret), "the key is in the PostgreSQL store");
    for hay in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(hay).contains(secret));
    }
    assert!(!std::fs::read_to_string(s.path("out.jsonl"))
        .unwrap()
        .contains(secret));
}

#[test]
fn the_process_that_created_a_postgresql_run_killed_with_9_its_units_are_finished_by_a_worker() {
    let Some(pg) = PgSchema::create() else { return };
    let mock = Mock::start(&["--latency-ms", "100"]);
    let s = Scratch::new();
    let n = 200;
    let job = job(&s, &mock, n, "concurrency = 4");
    // The creator leases units for 3 s at a time; killed, it renews none.
    let mut creator = spawn(&s, &pg, &["run", job.to_str().unwrap(), "--lease", "3s"]);
    wait_status(&s, &pg, "some results", |v| u(&v["counts"]["done"]) >= 8);
    creator.kill().unwrap(); // SIGKILL: no last beat, no units handed back
    creator.wait().unwrap();
    let at_kill = u(&mock.stats()["ok"]);
    assert!(at_kill < n as u64, "the kill came after the run finished");
    let out = sluice(&s, &pg, &["worker", "--exit-when-idle", "--lease", "3s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let export = sluice(&s, &pg, &["export", "shared", "--out", "all.jsonl"]);
    assert!(export.status.success(), "{}", stderr(&export));
    exported_once(&s.path("all.jsonl"), n);
    // Sent twice: only units the creator held when it died (on the wire, or
    // answered but not yet committed), each claimed again by the worker.
    let dup = u(&mock.stats()["duplicate_requests"]);
    let reclaimed = reclaimed_units(&pg);
    eprintln!("{dup} duplicates; {reclaimed} units claimed twice");
    assert!(
        dup <= reclaimed,
        "{dup} duplicates, but only {reclaimed} units were claimed twice"
    );
}
