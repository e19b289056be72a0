//! The engine in-process, without a child process: quick-mode runs against a
//! real `sluice-mock` server on a runtime of its own and a real SQLite store.
//! Every assertion is on counts (what the mock saw, what the run recorded),
//! never on how fast anything went.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_engine::{run_quick, Progress, QuickConfig, QuickInput, RunReport};
use sluice_limit::Backoff;
use sluice_mock::{MockConfig, MockServer};
use sluice_store::StoreLocation;

#[path = "../../../tests/support/watchdog.rs"]
mod watchdog;

/// A mock on a runtime of its own (quick mode runs its own runtime on the
/// calling thread).
struct Mock {
    server: Option<MockServer>,
    runtime: tokio::runtime::Runtime,
    /// The test's time limit (`SLUICE_TEST_TIMEOUT_SECS`): a hung run fails
    /// with the test's name.
    _watchdog: watchdog::Watchdog,
}

impl Mock {
    fn start(cfg: MockConfig) -> Mock {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the mock");
        let server = runtime
            .block_on(MockServer::start(0, cfg))
            .expect("the mock starts");
        Mock {
            server: Some(server),
            runtime,
            _watchdog: watchdog::Watchdog::start(),
        }
    }

    fn url(&self) -> String {
        let addr = self.server.as_ref().expect("running").addr();
        format!("http://{addr}/v1/chat/completions")
    }

    fn stats(&self) -> sluice_mock::MockStats {
        self.server.as_ref().expect("running").stats()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        // The server's task is aborted inside its runtime.
        let _guard = self.runtime.enter();
        self.server.take();
    }
}

fn write_input(dir: &Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("in.jsonl");
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "{{\"custom_id\":\"r{i}\",\"body\":{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"line {i}\"}}]}}}}\n"
            )
        })
        .collect();
    std::fs::write(&path, lines).expect("write the input");
    path
}

fn config(dir: &Path, input: &Path, url: String, retries: u32) -> QuickConfig {
    QuickConfig {
        input: QuickInput::Path(input.to_path_buf()),
        url,
        concurrency: 8,
        grow_to_rate: false,
        rpm: None,
        tpm: None,
        retries,
        timeout: Duration::from_secs(30),
        api_key_env: None,
        store: StoreLocation::Sqlite(dir.join("store.db")),
        fresh: false,
        skip_bad: false,
        name: None,
        // Retries wait a millisecond: the test is about how many, not when.
        backoff: Backoff {
            base_ms: 1,
            cap_ms: 1,
        },
        lease: Duration::from_secs(10),
        limit: None,
        early_stop: false,
    }
}

fn run(cfg: &QuickConfig) -> RunReport {
    run_quick(cfg, Arc::new(Progress::new(&sluice_engine::Engine::new()))).expect("the run ends")
}

#[test]
fn every_line_is_sent_once_and_a_rerun_sends_nothing_again() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start(MockConfig::default());
    let input = write_input(dir.path(), 40);
    let cfg = config(dir.path(), &input, mock.url(), 0);

    let first = run(&cfg);
    assert!(!first.resumed && !first.interrupted);
    assert_eq!((first.progress.done, first.progress.failed), (40, 0));
    let stats = mock.stats();
    assert_eq!(
        (stats.requests, stats.ok, stats.duplicate_requests),
        (40, 40, 0)
    );

    // The same input again: every line is recorded done, so nothing is sent.
    let again = run(&cfg);
    assert!(again.resumed);
    assert_eq!(again.run_id, first.run_id);
    assert_eq!(again.progress.skipped, 40);
    assert_eq!(mock.stats().requests, 40);
}

#[test]
fn server_errors_are_retried_and_each_retry_is_one_more_request() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start(MockConfig {
        fail_rate: 0.3,
        seed: 7,
        ..MockConfig::default()
    });
    let input = write_input(dir.path(), 60);
    let report = run(&config(dir.path(), &input, mock.url(), 20));
    let stats = mock.stats();
    assert_eq!((report.progress.done, report.progress.failed), (60, 0));
    assert!(stats.server_errors > 0, "the seed draws some 500s");
    // Every 500 was retried once, and nothing else was sent.
    assert_eq!(stats.ok, 60);
    assert_eq!(stats.requests, 60 + stats.server_errors);
    assert_eq!(report.progress.attempts, stats.requests);
    assert_eq!(report.progress.retries, stats.server_errors);
}

#[test]
fn an_item_past_its_retries_is_recorded_failed_with_its_code_and_the_rest_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start(MockConfig {
        fail_rate: 1.0,
        ..MockConfig::default()
    });
    let input = write_input(dir.path(), 5);
    let report = run(&config(dir.path(), &input, mock.url(), 2));
    assert_eq!((report.progress.done, report.progress.failed), (0, 5));
    // Three attempts each (the first and two retries), no more.
    assert_eq!(mock.stats().requests, 15);
    let group = report.errors.first().expect("the failures, grouped");
    assert_eq!((group.key.code.as_str(), group.count), ("server_error", 5));
}

#[test]
fn an_edited_line_alone_is_sent_again_and_lines_shifted_by_an_insert_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start(MockConfig::default());
    // More lines than one chunk of look-ups (1,024), so the skip spans chunks.
    let input = write_input(dir.path(), 1_500);
    let cfg = config(dir.path(), &input, mock.url(), 0);
    assert_eq!(run(&cfg).progress.done, 1_500);

    // A new line first (every other line moves down one) and line r7 edited.
    let text = std::fs::read_to_string(&input).unwrap();
    let edited = text.replace("\"line 7\"", "\"line seven\"");
    let new = "{\"custom_id\":\"new\",\"body\":{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"new\"}]}}\n";
    std::fs::write(&input, format!("{new}{edited}")).unwrap();
    let again = run(&cfg);
    assert!(again.resumed && !again.interrupted);
    assert_eq!(
        again.progress.skipped, 1_499,
        "the unchanged lines, moved or not"
    );
    assert_eq!(again.progress.done, 2, "the new line and the edited one");
    assert_eq!(mock.stats().requests, 1_502);
}
