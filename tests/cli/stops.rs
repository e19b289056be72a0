//! Runs that must stop on their own, counted against the mock's requests:
//! a store that cannot record (on a full filesystem) stops sending at once
//! and keeps what it recorded; the first answers all failing the same way
//! (401, 404, 400) stop a run or a job step with the rest pending; a pause
//! holds calls waiting for a rate slot too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::shared::finish;
use crate::util::*;

/// A tmpfs of a given size mounted on a scratch directory (unmounted on
/// drop), or `None` after saying the test skips: mounting needs root.
/// `SLUICE_REQUIRE_TMPFS=1` (CI) makes that a failure.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        let failed = match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failed {
            if std::env::var("SLUICE_REQUIRE_TMPFS").as_deref() == Ok("1") {
                panic!("mounting a tmpfs is required (SLUICE_REQUIRE_TMPFS=1) but failed: {why}");
            }
            eprintln!("skipping: cannot mount a tmpfs ({why}; needs root); set SLUICE_REQUIRE_TMPFS=1 to fail instead");
            return None;
        }
        Some(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// Gives the filesystem room again.
    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount {}", self.dir.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// The number before `what` in `text` (e.g. "16 answers").
fn number_before(text: &str, what: &str) -> u64 {
    let at = text
        .find(what)
        .unwrap_or_else(|| panic!("{what:?} in {text}"));
    text[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("a number before {what:?} in {text}"))
}

fn status_json(s: &Scratch, store: &Path, run: &str) -> Value {
    let out = s
        .sluice(&["status", run, "--json"])
        .env("SLUICE_STORE", store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    json_stdout(&out)
}

#[test]
fn a_full_store_stops_sending_at_once_and_keeps_what_it_recorded() {
    let s = Scratch::new();
    let Some(fs) = Tmpfs::mount(&s.path("small"), "1m") else {
        return;
    };
    // Large answers fill the store after a few dozen results (1 MB: the
    // input list of 3,000 lines, written before anything is sent, fits).
    let mock = Mock::start(&["--latency-ms", "20", "--completion-tokens", "400"]);
    let n = 3_000;
    let concurrency = 8;
    let input = s.write_lines("in.jsonl", &chat_lines(n));
    let store = fs.dir.join("sluice.db");
    let url = mock.chat_url();
    let c = concurrency.to_string();
    let args = ["--concurrency", c.as_str(), "--out", "out.jsonl"];
    let out = s
        .run(&input, &url, &args)
        .env("SLUICE_STORE", &store)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("database or disk is full") && err.contains("sending stopped at once"),
        "the store's own error: {err}"
    );
    assert_eq!(err.matches("database or disk is full").count(), 1, "{err}");
    let lost = if err.contains("could not be recorded") {
        number_before(&err, "answer")
    } else {
        0
    };
    let sent = u(&mock.stats()["requests"]);
    let status = status_json(&s, &store, "in");
    let recorded = u(&status["counts"]["done"]) + u(&status["counts"]["failed"]);
    assert!(recorded > 0, "some results were recorded first: {status}");
    // Every request the mock saw was recorded, lost in the failed commit
    // (answers already received), or on the wire when it failed.
    assert!(
        sent <= recorded + lost + concurrency,
        "sent {sent}, recorded {recorded}, lost {lost}, concurrency {concurrency}"
    );
    assert!(sent < n as u64 / 2, "it kept sending: {sent}");
    // The store could not record the end either: the run shows as such.
    assert_eq!(status["state"], "interrupted (process gone)", "{status}");

    // With room again, the same command sends only what was not recorded.
    fs.grow("64m");
    let out = s
        .run(&input, &url, &args)
        .env("SLUICE_STORE", &store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = read_jsonl(&s.path("out.jsonl"));
    assert_eq!(rows.len(), n);
    let stats = mock.stats();
    assert_eq!(u(&stats["requests"]), sent + n as u64 - recorded, "{stats}");
}

#[test]
fn a_full_store_stops_a_job_run_at_once_too() {
    let s = Scratch::new();
    let Some(fs) = Tmpfs::mount(&s.path("small"), "1m") else {
        return;
    };
    let mock = Mock::start(&["--latency-ms", "20", "--completion-tokens", "400"]);
    let n = 2_000;
    let job = crate::shared::job(&s, &mock, n, "concurrency = 8");
    let store = fs.dir.join("sluice.db");
    let out = s
        .sluice(&["run", job.to_str().unwrap()])
        .env("SLUICE_STORE", &store)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("database or disk is full") && err.contains("sending stopped at once"),
        "{err}"
    );
    let lost = if err.contains("could not be recorded") {
        number_before(&err, "answer")
    } else {
        0
    };
    let sent = u(&mock.stats()["requests"]);
    let status = status_json(&s, &store, "shared");
    let recorded = u(&status["counts"]["done"]) + u(&status["counts"]["failed"]);
    assert!(recorded > 0, "{status}");
    assert!(
        sent <= recorded + lost + 8,
        "sent {sent}, recorded {recorded}, lost {lost}"
    );
    assert!(sent < n as u64 / 2, "it kept sending: {sent}");
}

/// `n` chat lines asking `model`; `broken` drops `messages` (a 400).
fn lines_for(n: usize, model: &str, broken: bool) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut body =
                json!({"model": model, "messages": [{"role": "user", "content": format!("q{i}")}]});
            if broken {
                body["messages"] = json!([]);
            }
            json!({"custom_id": format!("r{i:04}"), "body": body}).to_string()
        })
        .collect()
}

/// Runs `lines` against a mock started with `mock_args`; checks the run
/// stopped early with `expected` in its message, having sent no more than
/// the window and what was on the wire, every answer recorded, the rest
/// pending.
fn stops_early(mock_args: &[&str], lines: Vec<String>, expected: &[&str]) {
    let mock = Mock::start_with_env(mock_args, &[("STOPS_KEY", "right")]);
    let s = Scratch::new();
    let n = lines.len() as u64;
    let input = s.write_lines("in.jsonl", &lines);
    let out = s
        .run(&input, &mock.chat_url(), &["--concurrency", "4"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stopped early"), "{err}");
    for text in expected {
        assert!(err.contains(text), "{text:?} in {err}");
    }
    let sent = u(&mock.stats()["requests"]);
    assert!(
        (20..=24).contains(&sent),
        "20 answers + 4 on the wire at most: {sent}"
    );
    assert_eq!(number_before(&err, "calls were sent"), sent, "{err}");
    let status = status_json(&s, &s.store(), "in");
    assert_eq!(status["run"]["state"], "interrupted", "{status}");
    assert_eq!(
        u(&status["counts"]["failed"]),
        sent,
        "every answer recorded"
    );
    assert_eq!(u(&status["pending"]), n - sent, "the rest pending");
    assert!(
        err.contains(&format!("{} items stay pending", n - sent)),
        "{err}"
    );

    // --no-early-stop sends every item.
    let out = s
        .run(
            &input,
            &mock.chat_url(),
            &["--concurrency", "4", "--no-early-stop"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(u(&mock.stats()["requests"]), sent + n, "every item, again");
}

#[test]
fn a_wrong_key_stops_the_run_after_the_first_answers() {
    stops_early(
        &["--api-key-env", "STOPS_KEY"],
        lines_for(300, "m", false),
        &["HTTP 401", "check the API key"],
    );
}

#[test]
fn a_wrong_model_stops_the_run_after_the_first_answers() {
    stops_early(
        &["--models", "gpt-real"],
        lines_for(300, "gpt-typo", false),
        &["HTTP 404", "gpt-typo", "model name"],
    );
}

#[test]
fn a_malformed_request_stops_the_run_after_the_first_answers() {
    stops_early(
        &[],
        lines_for(300, "m", true),
        &[
            "HTTP 400",
            "`messages` must contain at least one message",
            "request body",
        ],
    );
}

#[test]
fn refusals_mixed_with_answers_never_stop_a_run() {
    // Half the requests are refused for their content, every time.
    let mock = Mock::start(&["--reject-rate", "0.5", "--seed", "3"]);
    let s = Scratch::new();
    let n = 200;
    let input = s.write_lines("in.jsonl", &chat_lines(n));
    let out = s
        .run(&input, &mock.chat_url(), &["--concurrency", "4"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("stopped early"), "{err}");
    let stats = mock.stats();
    assert_eq!(u(&stats["requests"]), n as u64, "every item sent once");
    assert!(u(&stats["rejected"]) > 20, "{stats}");
}

/// A job whose second step asks a model the mock does not serve.
fn two_step_job(s: &Scratch, mock: &Mock, n: usize) -> PathBuf {
    let items: Vec<String> = (0..n)
        .map(|i| json!({"id": format!("q{i:04}"), "q": format!("question {i}")}).to_string())
        .collect();
    s.write_lines("items.jsonl", &items);
    let path = s.path("job.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "judged"
concurrency = 4
[input]
path = "items.jsonl"
[providers.mock]
base_url = "{}"
[[steps]]
name = "ask"
kind = "chat"
provider = "mock"
model = "m"
messages = [{{ role = "user", content = "{{{{ item.q }}}}" }}]
[[steps]]
name = "judge"
kind = "chat"
provider = "mock"
model = "judge-typo"
messages = [{{ role = "user", content = "judge {{{{ steps.ask.text }}}}" }}]
"#,
            mock.url("/v1")
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_job_step_whose_first_answers_all_fail_alike_stops_the_job() {
    let mock = Mock::start(&["--models", "m"]);
    let s = Scratch::new();
    let n = 200;
    let job = two_step_job(&s, &mock, n);
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stopped early")
            && err.contains("answers of step judge")
            && err.contains("HTTP 404"),
        "{err}"
    );
    let stats = mock.stats();
    let refused = u(&stats["not_found"]);
    assert!((20..=24).contains(&refused), "{stats}");
    // Each unit asks `ask` before `judge`: at most the units in flight more.
    assert!(u(&stats["ok"]) <= refused + 4, "{stats}");
    let status = status_json(&s, &s.store(), "judged");
    assert_eq!(status["run"]["state"], "interrupted", "{status}");
    assert_eq!(u(&status["counts"]["failed"]), refused, "{status}");
    assert_eq!(u(&status["pending"]), n as u64 - refused, "{status}");
}

#[test]
fn a_shared_run_stopped_early_is_held_for_its_workers() {
    let Some(pg) = crate::pg::PgSchema::create() else {
        return;
    };
    let mock = Mock::start(&["--models", "m"]);
    let s = Scratch::new();
    let job = two_step_job(&s, &mock, 200);
    let job = job.to_str().unwrap();
    let queued = s
        .sluice(&["run", job, "--queue-only"])
        .env("SLUICE_STORE", &pg.url)
        .output()
        .unwrap();
    assert_eq!(queued.status.code(), Some(0), "{}", stderr(&queued));
    // A worker finds the step's answers all alike: it stops and holds the run.
    let worker = s
        .sluice(&["worker", "--exit-when-idle"])
        .env("SLUICE_STORE", &pg.url)
        .output()
        .unwrap();
    let err = stderr(&worker);
    assert!(
        err.contains("stopped early") && err.contains("answers of step judge"),
        "{err}"
    );
    let refused = u(&mock.stats()["not_found"]);
    assert!((20..=24).contains(&refused), "{refused}");
    let status = status_json(&s, Path::new(&pg.url), "judged");
    assert_eq!(status["control"]["state"], "cancel", "{status}");
    assert!(
        status["control"]["by"]
            .as_str()
            .unwrap()
            .starts_with("early stop"),
        "{status}"
    );
    // Another worker does not join it, and nothing more is sent.
    let again = s
        .sluice(&["worker", "--exit-when-idle"])
        .env("SLUICE_STORE", &pg.url)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(!stderr(&again).contains("joined"), "{}", stderr(&again));
    assert_eq!(u(&mock.stats()["not_found"]), refused);
}

/// `sluice ARGS` in the scratch directory, in the background.
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

/// Live processes executing the run, from `sluice status --json`.
fn executing(status: &Value) -> Vec<&Value> {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "running")
        .collect()
}

#[test]
fn a_pause_holds_calls_waiting_for_a_rate_slot() {
    let mock = Mock::start(&["--latency-ms", "100"]);
    let s = Scratch::new();
    let n = 200;
    let input = s.write_lines("in.jsonl", &chat_lines(n));
    let url = mock.chat_url();
    // 64 calls at once under 600/min: most of them wait for a rate slot
    // (before the fix they went out after the pause, for 6 s).
    let args = [
        "run",
        input.to_str().unwrap(),
        "--url",
        url.as_str(),
        "--rpm",
        "600",
        "--concurrency",
        "64",
    ];
    let run = spawn(&s, &args);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = |what: &str| loop {
        let out = s.sluice(&["status", "in", "--json"]).output().unwrap();
        if out.status.success() {
            return json_stdout(&out);
        }
        assert!(Instant::now() < deadline, "no status for {what}");
        std::thread::sleep(Duration::from_millis(50));
    };
    while u(&status("progress")["counts"]["done"]) < 5 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    let paused = s.sluice(&["pause", "in"]).output().unwrap();
    assert!(paused.status.success(), "{}", stderr(&paused));
    // `paused` is shown only once every process executing it applied it
    // (a beat saying so comes after the pause took effect there); until
    // then it is `pausing`.
    let held = loop {
        let v = status("the pause");
        let live = executing(&v);
        let applied = !live.is_empty() && live.iter().all(|w| w["live"]["control"] == "pause");
        match v["state"].as_str().unwrap() {
            "paused" => {
                assert!(applied, "paused before it was applied: {v}");
                break v;
            }
            "pausing" => {}
            other => panic!("unexpected state {other}: {v}"),
        }
        assert!(Instant::now() < deadline, "the pause never held");
        std::thread::sleep(Duration::from_millis(50));
    };
    let before = u(&mock.stats()["requests"]);
    assert!(before < n as u64, "the run finished before the pause");
    // The clock of a paused run stands still: no ETA.
    let live = executing(&held)[0];
    assert!(live["live"]["eta_secs"].is_null(), "{held}");
    assert_eq!(live["live"]["counters"]["paused"], true, "{held}");
    std::thread::sleep(Duration::from_millis(2_500));
    let after = u(&mock.stats()["requests"]);
    // Only calls on the wire when it was applied may still arrive.
    let on_the_wire = u(&live["in_flight"]);
    assert!(
        after <= before + on_the_wire,
        "calls went out while paused: {before} then {after} ({on_the_wire} on the wire)"
    );
    let resumed = s.sluice(&["resume", "in"]).output().unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let (code, err) = finish(run, Duration::from_secs(120));
    assert_eq!(code, Some(0), "{err}");
    let stats = mock.stats();
    assert_eq!(u(&stats["requests"]), n as u64, "{stats}");
    assert_eq!(stats["rate_limited"], 0, "{stats}");
}
