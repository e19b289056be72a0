//! The dashboard in real headless Chromium: `sluice serve` (with the token it
//! generates) and a run against `sluice mock`, the page opened through the
//! URL the server printed while the run progresses; the token moves into a
//! cookie, the page without it is 401, its counters and a chart update, and
//! a screenshot is kept under target/tmp/.
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
        .args([&server.dashboard, run_id, shot.to_str().unwrap()])
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
