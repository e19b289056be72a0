//! The dashboard in real headless Chromium: `sluice serve` (with the token it
//! generates) and runs against `sluice mock`, the page opened through the
//! URL the server printed. While a run progresses: the token moves into a
//! cookie, the page without it is 401, its counters and a chart update.
//! Once a run with failures has finished: its summary and charts after a
//! reload, a failure found in the failures table and retried from the page,
//! no sideways scrolling at 390 × 844. Screenshots are kept under
//! target/tmp/ and target/dashboard-shots/.
//!
//! Needs Debian's `chromium` and `npm ci` in tests/browser (playwright-core
//! drives the browser). Skipped with a message when they are missing,
//! unless SLUICE_REQUIRE_BROWSER=1 (CI), which makes that a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::serve::Serve;
use crate::util::{Mock, Scratch};

fn missing() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    if !Path::new(&chromium).exists() {
        return Some(format!("{chromium} is missing (apt-get install chromium)"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is missing".into());
    }
    if !driver.exists() {
        return Some(
            "tests/browser/node_modules is missing (npm ci --prefix tests/browser)".into(),
        );
    }
    None
}

#[test]
fn the_dashboard_shows_a_run_progressing_live() {
    if let Some(why) = missing() {
        assert!(
            std::env::var("SLUICE_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "SLUICE_REQUIRE_BROWSER=1 but {why}"
        );
        eprintln!("skipping the browser test: {why}");
        return;
    }
    let s = Scratch::new();
    let mock = Mock::start(&["--latency-ms", "30"]);
    // SLUICE_TOKEN empty: the server generates its token and prints the URL.
    let server = Serve::start(&s, &[], &[("SLUICE_TOKEN", "")]);
    assert!(server.dashboard.contains("?token="), "{}", server.dashboard);
    // 3,000 items at 3,000 requests/minute: a minute at least, however fast
    // the machine, so the page (and a slow browser start) sees it run; it is
    // cancelled once the page was checked.
    let job = json!({
        "name": "browser",
        "items": (0..3000).map(|i| json!({"q": format!("question {i}")})).collect::<Vec<_>>(),
        "provider": {"base_url": mock.url("/v1"), "concurrency": 4, "rpm": 3000},
        "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "{{ item.q }}"}]},
    });
    let (status, body) = server.http(
        "POST",
        "/v1/runs",
        &["Content-Type: application/json"],
        &job.to_string(),
    );
    assert_eq!(status, 202, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    let run_id = run["id"].as_str().unwrap();
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs"))
        .args(["live", &server.dashboard, run_id, shot.to_str().unwrap()])
        .env("CHROMIUM_PROFILE", profile.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (status, _) = server.http("POST", &format!("/v1/runs/{run_id}/cancel"), &[], "");
    assert_eq!(status, 200);
    assert!(
        out.status.success(),
        "dashboard check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok done"), "{stdout}");
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "screenshot at {}",
        shot.display()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
}

#[test]
fn the_dashboard_opens_a_finished_run_with_its_story_and_retries_a_failure() {
    if let Some(why) = missing() {
        assert!(
            std::env::var("SLUICE_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "SLUICE_REQUIRE_BROWSER=1 but {why}"
        );
        eprintln!("skipping the browser test: {why}");
        return;
    }
    let s = Scratch::new();
    // 500s (retryable) and 422s (never cured), no retries: failures remain.
    let mock = Mock::start(&[
        "--latency-ms",
        "20",
        "--fail-rate",
        "0.25",
        "--reject-rate",
        "0.1",
        "--seed",
        "5",
    ]);
    let server = Serve::start(&s, &[], &[("SLUICE_TOKEN", "")]);
    // 150 items at 3,000 requests/minute: about three seconds, so the
    // history has a few points to draw.
    let job = json!({
        "name": "story",
        "items": (0..150).map(|i| json!({"id": format!("q{i:03}"), "q": format!("question {i}")})).collect::<Vec<_>>(),
        "id": "{{ item.id }}",
        "provider": {"base_url": mock.url("/v1"), "concurrency": 4, "rpm": 3000,
                     "retries": {"max": 0}, "circuit_breaker": false},
        "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "{{ item.q }}"}]},
    });
    let (status, body) = server.http(
        "POST",
        "/v1/runs",
        &["Content-Type: application/json"],
        &job.to_string(),
    );
    assert_eq!(status, 202, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    let run_id = run["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let view = loop {
        let (_, body) = server.http("GET", &format!("/v1/runs/{run_id}"), &[], "");
        let view: Value = serde_json::from_str(&body).unwrap();
        if view["state"] == "finished" && view["executed_here"] == false {
            break view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never finished: {view}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(view["counts"]["failed"].as_u64() > Some(0), "{view}");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard-shots");
    std::fs::create_dir_all(&shots).unwrap();
    for name in ["desktop", "phone", "failures", "phone-dark", "desktop-dark"] {
        let _ = std::fs::remove_file(shots.join(format!("{name}.png")));
    }
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs"))
        .args([
            "finished",
            &server.dashboard,
            &run_id,
            shots.to_str().unwrap(),
        ])
        .env("CHROMIUM_PROFILE", profile.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dashboard check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok summary"), "{stdout}");
    eprintln!("{stdout}");
    // The page's retry reached the server: the run has fewer failures.
    let (_, body) = server.http("GET", &format!("/v1/runs/{run_id}"), &[], "");
    let after: Value = serde_json::from_str(&body).unwrap();
    assert!(
        after["counts"]["failed"].as_u64() < view["counts"]["failed"].as_u64(),
        "{after}"
    );
    for name in ["desktop", "phone", "failures"] {
        let shot = shots.join(format!("{name}.png"));
        assert!(
            std::fs::metadata(&shot)
                .map(|m| m.len() > 10_000)
                .unwrap_or(false),
            "screenshot at {}",
            shot.display()
        );
    }
    eprintln!("dashboard screenshots: {}", shots.display());
}
