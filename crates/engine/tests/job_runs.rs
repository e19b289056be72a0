//! Job runs in-process against a real `sluice-mock` and a real SQLite store:
//! a rerun reuses every step recorded done, and a changed step is the only
//! one sent again. Assertions are on counts, never on speed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_engine::{run_job, JobConfig, Progress, RunReport};
use sluice_mock::{MockConfig, MockServer};
use sluice_store::StoreLocation;

/// A mock on a runtime of its own (a job runs its own runtime on the
/// calling thread).
struct Mock {
    server: Option<MockServer>,
    runtime: tokio::runtime::Runtime,
}

impl Mock {
    fn start() -> Mock {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the mock");
        let server = runtime
            .block_on(MockServer::start(0, MockConfig::default()))
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
    run_job(&job, &cfg, Arc::new(Progress::default())).expect("the run ends")
}

#[test]
fn a_rerun_reuses_recorded_steps_and_a_changed_step_alone_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let items: String = (0..6)
        .map(|i| format!("{{\"q\":\"question {i}\"}}\n"))
        .collect();
    std::fs::write(dir.path().join("items.jsonl"), items).unwrap();
    let mock = Mock::start();

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
