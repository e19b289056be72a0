//! One executor per run: processes started on the same input at once send
//! every item once; a second `sluice run` is refused at once naming the
//! process that holds the run; a killed holder does not block the run.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pg::PgSchema;
use crate::shared::finish;
use crate::util::*;

/// `sluice ARGS` in the scratch directory against `store`, started now.
fn spawn(s: &Scratch, store: &str, args: &[&str]) -> Child {
    Command::new(bin())
        .current_dir(s.dir.path())
        .args(args)
        .env("SLUICE_STORE", store)
        .env("SLUICE_PROGRESS_INTERVAL", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the mock has received at least `n` requests.
pub(crate) fn wait_for_requests(mock: &Mock, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while u(&mock.stats()["requests"]) < n {
        assert!(Instant::now() < deadline, "the mock never got {n} requests");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `n` processes with `args` at once and waits for them all: their
/// exit codes and stderr.
fn race(s: &Scratch, store: &str, n: usize, args: &[&str]) -> Vec<(Option<i32>, String)> {
    let children: Vec<Child> = (0..n).map(|_| spawn(s, store, args)).collect();
    children
        .into_iter()
        .map(|c| finish(c, Duration::from_secs(120)))
        .collect()
}

/// Every racer either executed the run (0) or was refused naming the
/// holder (2); at least one executed it.
fn one_executed(ended: &[(Option<i32>, String)]) {
    for (code, err) in ended {
        match code {
            Some(0) => {}
            Some(2) => assert!(
                err.contains("is being executed by pid") && err.contains("nothing was sent"),
                "{err}"
            ),
            other => panic!("exit {other:?}: {err}"),
        }
    }
    assert!(ended.iter().any(|(c, _)| *c == Some(0)), "{ended:?}");
}

fn quick_race(processes: usize) {
    let mock = Mock::start(&["--latency-ms", "20"]);
    let s = Scratch::new();
    let n = 300;
    let input = s.write_lines("in.jsonl", &chat_lines(n));
    let store = s.store();
    let url = mock.chat_url();
    let args = [
        "run",
        input.to_str().unwrap(),
        "--url",
        &url,
        "--concurrency",
        "16",
    ];
    let ended = race(&s, store.to_str().unwrap(), processes, &args);
    one_executed(&ended);
    assert_eq!(u(&mock.stats()["requests"]), n as u64, "{ended:?}");
    let out = s.path("out.jsonl");
    s.sluice(&["export", "in", "--out", out.to_str().unwrap()])
        .assert()
        .success();
    let results = read_jsonl(&out);
    assert_eq!(results.len(), n);
    assert!(results.iter().all(|r| r["error"].is_null()));
}

#[test]
fn two_runs_of_one_input_started_together_send_every_item_once() {
    quick_race(2);
}

#[test]
fn four_runs_of_one_input_started_together_send_every_item_once() {
    quick_race(4);
}

/// A job file with one chat step per item.
fn chat_job(s: &Scratch, mock: &Mock, n: usize) -> std::path::PathBuf {
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
            r#"name = "race"
[input]
path = "items.jsonl"
[providers.mock]
base_url = "{}"
concurrency = 16
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

#[test]
fn job_runs_started_together_send_every_unit_once() {
    let mock = Mock::start(&["--latency-ms", "20"]);
    let s = Scratch::new();
    let n = 200;
    let job = chat_job(&s, &mock, n);
    let store = s.store();
    let ended = race(
        &s,
        store.to_str().unwrap(),
        3,
        &["run", job.to_str().unwrap()],
    );
    one_executed(&ended);
    assert_eq!(u(&mock.stats()["requests"]), n as u64, "{ended:?}");
}

#[test]
fn a_second_run_is_refused_at_once_and_a_killed_holder_is_taken_over_at_once() {
    let mock = Mock::start(&["--latency-ms", "1500"]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(4));
    let store = s.store();
    let url = mock.chat_url();
    let args = [
        "run",
        input.to_str().unwrap(),
        "--url",
        &url,
        "--concurrency",
        "1",
    ];
    let mut first = spawn(&s, store.to_str().unwrap(), &args);
    wait_for_requests(&mock, 1);
    let second = s
        .run(&input, &url, &["--concurrency", "1"])
        .output()
        .unwrap();
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("pid {} on ", first.id())), "{err}");
    assert!(err.contains("sluice cancel in-1"), "{err}");
    assert!(err.contains("lapses"), "{err}");
    assert_eq!(
        u(&mock.stats()["requests"]),
        1,
        "the refused run sent nothing"
    );

    // kill -9: the holder is gone on this machine, so the next run takes
    // over at once rather than waiting for its lease to lapse.
    first.kill().unwrap();
    first.wait().unwrap();
    let third = s
        .run(&input, &url, &["--concurrency", "4"])
        .output()
        .unwrap();
    let err = stderr(&third);
    assert_eq!(third.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("took it over from pid {}", first.id())),
        "{err}"
    );
    let out = s.path("out.jsonl");
    s.sluice(&["export", "in-1", "--out", out.to_str().unwrap()])
        .assert()
        .success();
    assert!(read_jsonl(&out).iter().all(|r| r["error"].is_null()));
}

/// Writes a lease on `source` held by a process on another machine until
/// `expires_at` (unix ms), as a `sluice run` there would.
fn lease_from_elsewhere(store: &Path, source: &str, expires_at: i64) {
    let db = rusqlite::Connection::open(store).unwrap();
    db.execute(
        "INSERT INTO run_leases (source, holder, host, pid, machine, pid_start, acquired_at, \
         renewed_at, expires_at) VALUES (?1, 'far:77:1#1', 'far-away', 77, 'other-boot/pid:[1]', \
         NULL, ?2, ?2, ?3)",
        rusqlite::params![source, expires_at - 10_000, expires_at],
    )
    .unwrap();
}

#[test]
fn a_lease_held_on_another_machine_blocks_until_it_lapses() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(5));
    // A first run creates the store and the run.
    s.run(&input, &mock.chat_url(), &[]).assert().success();
    let source = format!("quick:{}", std::fs::canonicalize(&input).unwrap().display());
    let lapses = now_ms() + 1_500;
    lease_from_elsewhere(&s.store(), &source, lapses);
    let refused = s.run(&input, &mock.chat_url(), &[]).output().unwrap();
    let err = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("pid 77 on far-away"), "{err}");
    // Its holder never renews it: once past its expiry the run is free.
    while now_ms() <= lapses {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = s.run(&input, &mock.chat_url(), &[]).output().unwrap();
    assert_eq!(after.status.code(), Some(0), "{}", stderr(&after));
    assert_eq!(u(&mock.stats()["requests"]), 5);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn on_postgres_a_quick_mode_run_has_one_executor_and_a_shared_job_run_many() {
    let Some(pg) = PgSchema::create() else { return };
    let mock = Mock::start(&["--latency-ms", "20"]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(200));
    let url = mock.chat_url();
    let args = [
        "run",
        input.to_str().unwrap(),
        "--url",
        &url,
        "--concurrency",
        "16",
    ];
    let ended = race(&s, &pg.url, 3, &args);
    one_executed(&ended);
    assert_eq!(u(&mock.stats()["requests"]), 200, "{ended:?}");

    // Processes joining a shared job run are workers of it, not a second
    // executor: both work it, and every unit is sent once.
    let job = chat_job(&s, &mock, 100);
    let ended = race(&s, &pg.url, 2, &["run", job.to_str().unwrap()]);
    for (code, err) in &ended {
        assert_eq!(*code, Some(0), "{err}");
    }
    assert_eq!(u(&mock.stats()["requests"]), 300, "{ended:?}");
}
