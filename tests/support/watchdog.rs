//! A per-test time limit, shared by the test crates (the CLI tests, the
//! mock's, the server's, the store's, the engine's runs, the provider's
//! contract tests and the property tests, each including this file with
//! `#[path]`: there is no test-support crate). A test still running
//! `SLUICE_TEST_TIMEOUT_SECS` (default 300) after it started its watchdog
//! fails the run with its own name, instead of hanging until CI's timeout
//! names nothing. The harness runs tests as threads of one process, so the
//! only way to stop a hung one is to end the process: its message says
//! which test, and the processes it started are killed first.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The time limit of the test that started it; dropping it (the test's end)
/// stops it.
pub(crate) struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    /// Starts the limit for the test running on this thread (the harness
    /// names the thread after the test).
    pub(crate) fn start() -> Watchdog {
        let secs: u64 = std::env::var("SLUICE_TEST_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let done = Arc::new(AtomicBool::new(false));
        let name = std::thread::current()
            .name()
            .unwrap_or("a test")
            .to_string();
        let flag = Arc::clone(&done);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < deadline {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if !flag.load(Ordering::Relaxed) {
                // Straight to the stream: the harness captures `eprintln!`
                // and would lose it when the process exits.
                let _ = writeln!(
                    std::io::stderr(),
                    "\nTIMEOUT: test {name} still running after {secs} s \
                     (SLUICE_TEST_TIMEOUT_SECS); failing the run"
                );
                kill_children();
                std::process::exit(124);
            }
        });
        Watchdog(done)
    }
}

thread_local! {
    /// The limit of the test running on this thread, once started.
    static THIS_TEST: std::cell::OnceCell<Watchdog> = const { std::cell::OnceCell::new() };
}

/// Starts the time limit of the test running on this thread, once however
/// often it is called: for property tests, whose setup (`config()`) runs at
/// the start of each test. It stops when the thread ends, and the harness
/// ends the thread with the test.
#[allow(dead_code)] // only the property-test crates call it
pub(crate) fn once_per_test() {
    THIS_TEST.with(|limit| {
        limit.get_or_init(Watchdog::start);
    });
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Kills this process's children (mocks, runs, servers the tests started),
/// which would otherwise outlive an exit that skips their guards.
fn kill_children() {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let children: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `pid (comm) state ppid ...`: the command may hold spaces.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok())
                    == Some(me)
            })
        })
        .map(|pid| pid.to_string())
        .collect();
    if !children.is_empty() {
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .args(&children)
            .status();
    }
}
