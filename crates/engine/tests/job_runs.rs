//! Job runs in-process against a real `sluice-mock` and a real SQLite store:
//! a rerun reuses every step recorded done, and a changed step is the only
//! one sent again. Assertions are on counts, never on speed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_engine::{
    run_job, run_job_with, Engine, JobConfig, Progress, RunControl, RunHooks, RunReport,
};
use sluice_mock::{MockConfig, MockServer};
use sluice_store::StoreLocation;

/// A mock on a runtime of its own (a job runs its own runtime on the
/// calling thread).
struct Mock {
    server: Option<MockServer>,
    runtime: tokio::runtime::Runtime,
}

impl Mock {
    /// A mock answering after `latency_ms`.
    fn start(latency_ms: u64) -> Mock {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the mock");
        let server = runtime
            .block_on(MockServer::start(
                0,
                MockConfig {
                    latency_ms,
                    ..MockConfig::default()
                },
            ))
            .expect("the mock starts");
        Mock {
            server: Some(server),
            runtime,
        }
    }

    fn base(&self) -> String {
        format!(
            "http://{}/v1",
            self.server.as_ref().expect("running").addr()
        )
    }

    fn requests(&self) -> u64 {
        self.server.as_ref().expect("running").stats().requests
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _guard = self.runtime.enter();
        self.server.take();
    }
}

fn job_text(base: &str, judge_prompt: &str) -> String {
    format!(
        r#"
name = "twostep"

[input]
path = "items.jsonl"

[providers.local]
base_url = "{base}"
concurrency = 4

[[steps]]
name = "answer"
kind = "chat"
provider = "local"
model = "m"
messages = [{{ role = "user", content = "{{{{ item.q }}}}" }}]

[[steps]]
name = "judge"
kind = "chat"
provider = "local"
model = "m"
messages = [{{ role = "user", content = "{judge_prompt} {{{{ steps.answer.text }}}}" }}]
"#
    )
}

fn run(dir: &Path, text: &str) -> RunReport {
    run_hooked(dir, text, RunHooks::default())
}

fn run_hooked(dir: &Path, text: &str, hooks: RunHooks) -> RunReport {
    run_in(&Engine::new(), dir, text, hooks)
}

/// Runs the job `text` in `dir` as a run of `engine`.
fn run_in(engine: &Engine, dir: &Path, text: &str, hooks: RunHooks) -> RunReport {
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    let job = sluice_spec::load(&path, &[]).expect("the job loads");
    let cfg = JobConfig {
        store: StoreLocation::Sqlite(dir.join("store.db")),
        fresh: false,
        skip_bad: false,
        sets: Vec::new(),
        lease: Duration::from_secs(10),
        queue_only: false,
        limit: None,
        early_stop: false,
    };
    if hooks.control.is_none() {
        return run_job(&job, &cfg, Arc::new(Progress::new(engine))).expect("the run ends");
    }
    run_job_with(&job, &cfg, Arc::new(Progress::new(engine)), hooks).expect("the run ends")
}

#[test]
fn a_rerun_reuses_recorded_steps_and_a_changed_step_alone_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let items: String = (0..6)
        .map(|i| format!("{{\"q\":\"question {i}\"}}\n"))
        .collect();
    std::fs::write(dir.path().join("items.jsonl"), items).unwrap();
    let mock = Mock::start(0);

    let first = run(dir.path(), &job_text(&mock.base(), "Rate:"));
    assert_eq!((first.progress.done, first.progress.failed), (6, 0));
    assert_eq!(mock.requests(), 12, "two steps for each of 6 units");

    // Unchanged: every unit is done, nothing is sent.
    let again = run(dir.path(), &job_text(&mock.base(), "Rate:"));
    assert!(again.resumed);
    assert_eq!(mock.requests(), 12);

    // The judge's prompt changed: its 6 calls go again, the answers are reused.
    let changed = run(dir.path(), &job_text(&mock.base(), "Score:"));
    assert!(changed.resumed);
    assert_eq!(changed.progress.done, 6);
    assert_eq!(mock.requests(), 18);
}

#[test]
fn a_cancel_mid_run_leaves_the_rest_pending_and_a_rerun_sends_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let items: String = (0..200)
        .map(|i| format!("{{\"q\":\"question {i}\"}}\n"))
        .collect();
    std::fs::write(dir.path().join("items.jsonl"), items).unwrap();
    // Answers take 20 ms, so the run (4 calls at once) lasts seconds and
    // the cancel lands in the middle whatever the machine's load.
    let mock = Mock::start(20);
    let text = job_text(&mock.base(), "Rate:");
    // Cancelled from outside once the first outcomes are committed: an
    // event, not a sleep.
    let control = RunControl::new();
    let on_commit = {
        let control = control.clone();
        Arc::new(move |_: &[sluice_store::ItemRecord]| control.cancel())
    };
    let hooks = RunHooks {
        control: Some(control),
        on_commit: Some(on_commit),
        ..RunHooks::default()
    };
    let first = run_hooked(dir.path(), &text, hooks);
    assert!(first.interrupted);
    let done = first.progress.done;
    assert!(
        done > 0 && done < 200,
        "{done} units done before the cancel took"
    );

    let again = run(dir.path(), &text);
    assert!(again.resumed && !again.interrupted);
    assert_eq!(again.progress.done + again.progress.skipped, 200);
    // Nothing answered was asked again: the units done stay done.
    assert_eq!(again.progress.skipped, done);
}

/// At a run's opening: the providers one engine holds, and how many the other does.
type Seen = (Vec<String>, usize);

/// All attempts an engine counted, over its providers and steps.
fn attempts(engine: &Engine) -> u64 {
    engine
        .process_calls()
        .iter()
        .map(|(_, _, c)| c.attempts)
        .sum()
}

#[test]
fn two_engines_in_one_process_share_neither_providers_nor_totals() {
    let mock = Mock::start(0);
    let text = job_text(&mock.base(), "Rate:");
    let (one, two) = (Engine::new(), Engine::new());
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for dir in &dirs {
        let items: String = (0..3).map(|i| format!("{{\"q\":\"q{i}\"}}\n")).collect();
        std::fs::write(dir.path().join("items.jsonl"), items).unwrap();
    }
    // Once a run of `one` is open (its providers set up, nothing sent yet),
    // `one` holds its provider and `two` none.
    let seen: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
    let on_open = {
        let (one, two, seen) = (one.clone(), two.clone(), seen.clone());
        Box::new(move |_: &sluice_store::RunMeta| {
            let names = one
                .process_providers()
                .into_iter()
                .map(|p| p.name)
                .collect();
            let lock = seen.lock();
            lock.unwrap_or_else(|e| e.into_inner())
                .push((names, two.process_providers().len()));
        })
    };
    let hooks = RunHooks {
        control: Some(RunControl::new()),
        on_open: Some(on_open),
        ..RunHooks::default()
    };
    let first = run_in(&one, dirs[0].path(), &text, hooks);
    assert_eq!(first.progress.done, 3);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (names, others) = &seen[0];
    assert!(names.iter().any(|n| n == "local"), "{names:?}");
    assert_eq!(*others, 0);
    // Totals: two steps for each of 3 units, counted by `one` alone.
    assert_eq!((attempts(&one), attempts(&two)), (6, 0));
    let second = run_in(&two, dirs[1].path(), &text, RunHooks::default());
    assert_eq!(second.progress.done, 3);
    assert_eq!((attempts(&one), attempts(&two)), (6, 6));
    assert_eq!(mock.requests(), 12);
}
