//! examples/vision-rpm: a tight rpm with concurrency derived from it, resume
//! after an interruption, and a week-long cache that makes later runs free.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{most_in_window, summary, Example, STALLED};
use crate::serve::Serve;
use crate::util::*;

/// Posters the test runs (the example has 500; the rate is raised to match).
const POSTERS: usize = 40;

#[test]
fn vision_rpm_holds_the_rate_resumes_exactly_once_and_caches_for_a_week() {
    let ex = Example::copy("vision-rpm");
    let csv = std::fs::read_to_string(ex.path("posters.csv")).unwrap();
    let kept: Vec<&str> = csv.lines().take(POSTERS + 1).collect();
    std::fs::write(ex.path("posters.csv"), kept.join("\n") + "\n").unwrap();
    // 150-250 ms a call: at 20 calls/s a client with one call in flight
    // could not keep up.
    let mock = Mock::start(&[
        "--latency-ms",
        "150",
        "--jitter-ms",
        "100",
        "--journal",
        "200",
    ]);
    ex.point(9400, &mock);
    let rate = ["--set", "providers.vision.rpm=1200"];

    // Interrupted a third of the way through (Ctrl-C)...
    let child = Command::new(bin())
        .current_dir(ex.s.dir.path())
        .args(["run", ex.job.to_str().unwrap(), rate[0], rate[1], "--json"])
        .env("SLUICE_STORE", ex.s.store())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while u(&mock.stats()["ok"]) < (POSTERS / 3) as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    let first = summary(&child.wait_with_output().unwrap(), 130);
    let before = u(&first["recorded"]["done"]);
    assert!(before > 0 && before < POSTERS as u64, "{first}");

    // ... then run again: it sends only what is left, each poster once.
    let second = summary(&ex.run(&[rate[0], rate[1], "--json"]), 0);
    assert_eq!(u(&second["this_run"]["skipped"]), before);
    let results = ex.results();
    assert_eq!(results.len(), POSTERS);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            r["id"],
            format!("poster-{:04}", i + 1),
            "each poster once, in order"
        );
        assert_eq!(r["status"], "done");
        assert!(r["steps"]["analyse"]["text"]
            .as_str()
            .unwrap()
            .starts_with("mock reply"));
    }
    let stats = mock.stats();
    assert_eq!(
        u(&stats["ok"]),
        POSTERS as u64,
        "every poster analysed exactly once: {stats}"
    );
    assert_eq!(stats["duplicate_requests"], 0, "{stats}");
    // Every call carried its poster's image, which the mock decoded as a PNG.
    assert_eq!(stats["requests_with_images"], stats["requests"], "{stats}");
    assert_eq!(stats["images"], stats["requests"], "{stats}");
    assert!(
        u(&stats["image_bytes"]) >= 139 * u(&stats["requests"]),
        "{stats}"
    );
    let sent = mock.journal("/v1/");
    let body: Value = serde_json::from_str(sent[0]["body"].as_str().unwrap()).unwrap();
    let url = body["messages"][1]["content"][1]["image_url"]["url"]
        .as_str()
        .unwrap();
    assert!(url.starts_with("data:image/png;base64,"), "{url}");
    // The rate held — 1,200/min is 20 in any second, plus the one request
    // of burst, plus what a stall bunches — with several calls in flight,
    // though the job sets no concurrency (unpaced, they would all go at once).
    let most = most_in_window(&mock.journal("/v1/"), 1_000);
    assert!(most <= 21 + STALLED, "{most} requests within one second");
    assert!(u(&stats["max_in_flight"]) >= 2, "{stats}");

    // A second run of the same job: nothing left to do, no call made.
    let third = summary(&ex.run(&[rate[0], rate[1], "--json"]), 0);
    assert_eq!(u(&third["this_run"]["skipped"]), POSTERS as u64);
    // Even a fresh run (a new run id) makes no call: the week-long cache.
    let fresh = summary(&ex.run(&[rate[0], rate[1], "--fresh", "--json"]), 0);
    assert_eq!(
        u(&fresh["this_run"]["cache_hits"]),
        POSTERS as u64,
        "{fresh}"
    );
    assert_ne!(fresh["run"], second["run"]);
    assert_eq!(
        mock.stats()["requests"],
        stats["requests"],
        "no call after the first two runs"
    );
    for r in ex.results() {
        assert_eq!(r["steps"]["analyse"]["cached"], true, "{r}");
    }
}

/// The dashboard's view of an rpm-bound run started from the CLI: `sluice
/// serve` on the same store names the rpm limit as what holds the run back.
#[test]
fn vision_rpm_dashboard_names_the_rpm_limit_as_the_bottleneck() {
    let ex = Example::copy("vision-rpm");
    let mock = Mock::start(&["--latency-ms", "150", "--jitter-ms", "100"]);
    ex.point(9400, &mock);
    let server = Serve::start(&ex.s, &[], &[]);
    // 600/min is 10 calls a second: 500 posters would take 50 s; the check
    // needs a few seconds of it, and the run is killed on the way out,
    // whatever happens (its resume is tested above).
    let _run = Killed(
        Command::new(bin())
            .current_dir(ex.s.dir.path())
            .args(["run", ex.job.to_str().unwrap()])
            .args(["--set", "providers.vision.rpm=600"])
            .env("SLUICE_STORE", ex.s.store())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let view = loop {
        let (status, body) = server.http("GET", "/v1/runs/vision-rpm-1", &[], "");
        if status == 200 {
            let view: Value = serde_json::from_str(&body).unwrap();
            let binding = view["recommendations"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["level"] == "limit");
            if binding {
                break view;
            }
            assert_ne!(view["state"], "finished", "never binding: {view}");
        }
        assert!(Instant::now() < deadline, "no advice in 60 s: {body}");
        std::thread::sleep(Duration::from_millis(200));
    };

    let advice = &view["recommendations"][0];
    assert_eq!(advice["level"], "limit", "{view}");
    let message = advice["message"].as_str().unwrap();
    assert!(
        message.starts_with("requests/min limit of vision is binding"),
        "{message}"
    );
    assert!(message.contains("latency is not"), "{message}");
    assert!(
        message.contains("more concurrency will not make it faster"),
        "{message}"
    );
    // The same numbers the dashboard draws, from the CLI run's heartbeat.
    let live = &view["live"];
    assert_eq!(live["source"], "worker", "{view}");
    let provider = &live["stats"]["providers"][0];
    assert_eq!(provider["name"], "vision");
    assert_eq!(provider["limits"]["rpm"], 600, "{provider}");
    let used = provider["used_rpm"].as_f64().unwrap();
    assert!(
        (540.0..=660.0).contains(&used),
        "{used} of 600/min: {provider}"
    );
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
