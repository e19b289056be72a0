//! `sluice pause|resume|cancel` from a second process: a run started with
//! `sluice run` stops sending while paused, finishes once resumed, ends
//! interrupted when cancelled (a rerun finishes the rest, every item once);
//! a server steers such a run through the store too.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::serve::Serve;
use crate::shared::{exported_once, finish, job};
use crate::util::*;

/// `sluice ARGS` in the scratch directory over its store, in the background.
fn spawn(s: &Scratch, args: &[&str]) -> Child {
    Command::new(bin())
        .current_dir(s.dir.path())
        .args(args)
        .env("SLUICE_STORE", s.store())
        .env("SLUICE_PROGRESS_INTERVAL", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `sluice status RUN --json`, once it satisfies `ready` (at most a minute).
fn wait_status(s: &Scratch, run: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = s.sluice(&["status", run, "--json"]).output().unwrap();
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

/// Every process still executing the run has applied the pause and has no
/// call on the wire.
pub(crate) fn held(status: &Value) -> bool {
    let running: Vec<&Value> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "running")
        .collect();
    !running.is_empty()
        && running
            .iter()
            .all(|w| w["live"]["control"] == "pause" && w["in_flight"] == 0)
}

/// Asserts the mock sees no new request for a while (the run is paused).
pub(crate) fn no_new_requests(mock: &Mock) -> u64 {
    let before = u(&mock.stats()["requests"]);
    std::thread::sleep(Duration::from_millis(1_500));
    let after = u(&mock.stats()["requests"]);
    assert_eq!(after, before, "requests were sent while paused");
    before
}

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    stderr(out)
}

#[test]
fn a_paused_cli_run_sends_nothing_until_resumed_from_another_process() {
    let mock = Mock::start(&["--latency-ms", "200"]);
    let s = Scratch::new();
    let n = 80;
    let job = job(&s, &mock, n, "concurrency = 2");
    let run = spawn(&s, &["run", job.to_str().unwrap(), "--out", "out.jsonl"]);
    wait_status(&s, "shared", "some results", |v| {
        u(&v["counts"]["done"]) >= 4
    });
    let said = ok(&s.sluice(&["pause", "shared"]).output().unwrap());
    assert!(said.contains("run shared-1 paused"), "{said}");
    let status = wait_status(&s, "shared-1", "the pause to hold", held);
    assert_eq!(status["state"], "paused", "{status}");
    assert_eq!(status["control"]["state"], "pause");
    let sent = no_new_requests(&mock);
    assert!(sent < n as u64, "the run finished before the pause");
    let shown =
        String::from_utf8_lossy(&s.sluice(&["status"]).output().unwrap().stdout).into_owned();
    assert!(shown.contains("shared-1 (paused)"), "{shown}");
    assert!(
        shown.contains("control    paused by sluice pause on")
            && shown.contains("applied by 1 of 1 processes"),
        "{shown}"
    );
    let again = ok(&s.sluice(&["pause", "shared-1"]).output().unwrap());
    assert!(again.contains("already paused"), "{again}");
    let said = ok(&s.sluice(&["resume", "shared-1"]).output().unwrap());
    assert!(said.contains("resumed"), "{said}");
    let (code, err) = finish(run, Duration::from_secs(120));
    assert_eq!(code, Some(0), "{err}");
    exported_once(&s.path("out.jsonl"), n);
    let stats = mock.stats();
    assert_eq!(stats["requests"], n as u64, "{stats}");
}

/// The custom ids of a quick-mode export, each checked to appear once.
fn ids_once(path: &Path, n: usize) {
    let rows = read_jsonl(path);
    let ids: HashSet<&str> = rows
        .iter()
        .map(|r| r["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!((rows.len(), ids.len()), (n, n), "every item once");
    assert!(rows.iter().all(|r| r["error"].is_null()), "every item done");
}

#[test]
fn a_cancelled_cli_run_ends_interrupted_and_a_rerun_finishes_the_rest() {
    let mock = Mock::start(&["--latency-ms", "200"]);
    let s = Scratch::new();
    // One call at a time for 40 s: on a loaded machine the status polls and
    // the cancel take seconds, and a run that finished first would make the
    // cancel a no-op ("stopped (finished)"). The rerun goes wide.
    let n = 200;
    let input = s.write_lines("in.jsonl", &chat_lines(n));
    let url = mock.chat_url();
    let args = [
        "run",
        input.to_str().unwrap(),
        "--url",
        &url,
        "--concurrency",
        "1",
    ];
    let run = spawn(&s, &args);
    wait_status(&s, "in", "some results", |v| u(&v["counts"]["done"]) >= 4);
    let said = ok(&s.sluice(&["cancel", "in"]).output().unwrap());
    assert!(said.contains("run in-1 stopped (interrupted)"), "{said}");
    let (code, err) = finish(run, Duration::from_secs(60));
    assert_eq!(code, Some(130), "interrupted like on Ctrl-C: {err}");
    let status = wait_status(&s, "in-1", "the interrupted state", |v| {
        v["run"]["state"] == "interrupted"
    });
    let pending = u(&status["pending"]);
    assert!(pending > 0 && pending < n as u64, "{status}");
    assert_eq!(status["counts"]["failed"], 0, "cancelled items are pending");
    let shown =
        String::from_utf8_lossy(&s.sluice(&["status"]).output().unwrap().stdout).into_owned();
    assert!(
        shown.contains("control    cancelled by sluice cancel"),
        "{shown}"
    );

    // Nothing executes it now: pause and cancel say so; resume says how.
    let paused = s.sluice(&["pause", "in-1"]).output().unwrap();
    assert_eq!(paused.status.code(), Some(1), "{}", stderr(&paused));
    assert!(
        stderr(&paused).contains("is not executing"),
        "{}",
        stderr(&paused)
    );
    let said = ok(&s.sluice(&["resume", "in-1"]).output().unwrap());
    assert!(
        said.contains("is not executing") && said.contains("rerun `sluice run"),
        "{said}"
    );
    let mut wide = args;
    wide[5] = "50";
    let rerun = s
        .sluice(&wide)
        .arg("--out")
        .arg("out.jsonl")
        .output()
        .unwrap();
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    ids_once(&s.path("out.jsonl"), n);
    let stats = mock.stats();
    // Calls on the wire at the cancel got the grace period and were recorded.
    assert_eq!(stats["duplicate_requests"], 0, "{stats}");
    assert_eq!(stats["requests"], n as u64, "{stats}");

    let done = s.sluice(&["cancel", "in-1"]).output().unwrap();
    assert_eq!(done.status.code(), Some(1), "{}", stderr(&done));
    assert!(stderr(&done).contains("has finished"), "{}", stderr(&done));
    let unknown = s.sluice(&["resume", "nope"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("no run \"nope\"") && stderr(&unknown).contains("sluice runs"),
        "{}",
        stderr(&unknown)
    );
}

fn get(server: &Serve, path: &str) -> Value {
    let (status, body) = server.http("GET", path, &[], "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn post(server: &Serve, path: &str) -> Value {
    let (status, body) = server.http("POST", path, &[], "");
    assert_eq!(status, 200, "POST {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_server_pauses_resumes_and_cancels_a_run_started_from_the_cli() {
    let mock = Mock::start(&["--latency-ms", "200"]);
    let s = Scratch::new();
    let server = Serve::start(&s, &[], &[]);
    // 100 s at one call at a time: the run cannot end on its own before the
    // cancel however slowly this machine polls.
    let n = 500;
    let job = job(&s, &mock, n, "concurrency = 1");
    let run = spawn(&s, &["run", job.to_str().unwrap()]);
    wait_status(&s, "shared", "some results", |v| {
        u(&v["counts"]["done"]) >= 4
    });
    let view = post(&server, "/v1/runs/shared-1/pause");
    // `paused` once the process executing it applied it (within a beat).
    assert!(
        view["state"] == "pausing" || view["state"] == "paused",
        "{view}"
    );
    assert_eq!(view["executed_here"], false);
    assert_eq!(view["control"]["state"], "pause");
    assert!(
        view["control"]["by"]
            .as_str()
            .unwrap()
            .starts_with("sluice serve (API)"),
        "{view}"
    );
    wait_status(&s, "shared-1", "the pause to hold", held);
    no_new_requests(&mock);
    assert_eq!(get(&server, "/v1/runs/shared-1")["state"], "paused");
    let listed = get(&server, "/v1/runs");
    assert_eq!(listed["runs"][0]["state"], "paused", "{listed}");
    let view = post(&server, "/v1/runs/shared-1/resume");
    assert_eq!(view["state"], "running", "{view}");
    let resumed = u(&view["counts"]["done"]);
    wait_status(&s, "shared-1", "progress after the resume", |v| {
        u(&v["counts"]["done"]) > resumed + 2
    });
    let view = post(&server, "/v1/runs/shared-1/cancel");
    assert_eq!(
        view["state"], "interrupted",
        "answered once it stopped: {view}"
    );
    let (code, err) = finish(run, Duration::from_secs(60));
    assert_eq!(code, Some(130), "{err}");
    let pending = u(&view["counts"]["pending"]);
    assert!(pending > 0, "{view}");
    // Not executing anywhere now: pausing it is a conflict.
    let (status, body) = server.http("POST", "/v1/runs/shared-1/pause", &[], "");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("is not executing"), "{body}");
}
