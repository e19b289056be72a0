//! status, runs, export, demo and help.

use crate::util::*;

#[test]
fn status_runs_and_export_describe_a_run() {
    let mock = Mock::start(&["--fail-rate", "1.0"]);
    let s = Scratch::new();
    let mut lines = chat_lines(4);
    lines[1] = lines[1].replace("\"model\":\"m\"", "\"model\":\"m\",\"temperature\":0");
    let input = s.write_lines("batch.jsonl", &lines);
    let output = s
        .run(
            &input,
            &mock.chat_url(),
            &["--retries", "1", "--backoff-base", "1ms", "--json"],
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));

    let status = s.sluice(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("batch-1 (finished)"), "{text}");
    assert!(
        text.contains("4 total · 0 done · 4 failed · 0 pending"),
        "{text}"
    );
    assert!(text.contains("4 × server_error: HTTP 500"), "{text}");

    let runs = String::from_utf8_lossy(&s.sluice(&["runs"]).output().unwrap().stdout).into_owned();
    assert!(
        runs.lines().nth(1).unwrap().starts_with("batch-1"),
        "{runs}"
    );

    let csv = s
        .sluice(&["export", "batch-1", "--format", "csv"])
        .output()
        .unwrap();
    assert!(csv.status.success());
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("custom_id,status,status_code,attempts"));
    assert_eq!(rows.len(), 5);
    assert!(rows[1].starts_with("r-00000,failed,500,2,"), "{}", rows[1]);

    let missing = s.sluice(&["export", "nope"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("sluice runs"));
}

#[test]
fn demo_runs_the_audio_pipeline_example_and_says_where_to_look() {
    let s = Scratch::new();
    let dir = s.path("demo");
    let output = s
        .sluice(&["demo", "--items", "24", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let err = stderr(&output);
    // Every sixth recording is too long for the GPU hosts: 4 of 24 fail.
    assert!(err.contains("24 total · 20 done · 4 failed"), "{err}");
    assert!(
        err.contains("24 received · 24 with a valid signature"),
        "{err}"
    );
    assert!(err.contains("20 transcripts recorded"), "{err}");
    let results = read_jsonl(&dir.join("results.jsonl"));
    assert_eq!(results.len(), 24);
    let done: Vec<&str> = results
        .iter()
        .filter(|r| r["status"] == "done")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("transcripts.json")).unwrap())
            .unwrap();
    let mut recorded: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    recorded.sort_unstable();
    assert_eq!(
        recorded, done,
        "a record for each success, none for a failure"
    );
    let store = dir.join(".sluice/sluice.db");
    for place in [
        "results.jsonl",
        "transcripts.json",
        "sluice status audio-pipeline-1",
        // The dashboard: the exact command and page for this store and run.
        &format!("sluice serve --store {}", store.display()),
        "#run=audio-pipeline-1",
    ] {
        assert!(err.contains(place), "{place}: {err}");
    }
    // The store it points at answers.
    let status = s
        .sluice(&[
            "status",
            "audio-pipeline-1",
            "--json",
            "--store",
            store.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        json_stdout(&status)["counts"]["done"],
        20,
        "{}",
        stderr(&status)
    );
}

#[test]
fn demo_with_serve_opens_the_dashboard_on_its_store_until_stopped() {
    use std::io::{BufRead, BufReader};
    let s = Scratch::new();
    let dir = s.path("demo");
    let mut child = std::process::Command::new(bin())
        .args(["demo", "--items", "12", "--serve", "--dir"])
        .arg(&dir)
        .env("SLUICE_PROGRESS_INTERVAL", "0")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its stderr read on a thread of its own (and drained to the end), so
    // waiting for the line has a deadline even if the demo hangs silent.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let url = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the demo ended, or printed no dashboard line in 120 s");
        if let Some(rest) = line.trim().strip_prefix("the dashboard   http://") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let (addr, page) = url.split_once('/').unwrap();
    let (query, fragment) = page.split_once('#').unwrap();
    assert_eq!(fragment, "run=audio-pipeline-1");
    let token = query
        .strip_prefix("?token=")
        .expect("the URL carries the token");
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(crate::serve::http(port, "GET", "/", &[], "").0, 401);
    let (status, head, _) = crate::serve::exchange(port, "GET", &format!("/{query}"), &[], b"");
    assert_eq!(status, 303, "{head}");
    let auth = format!("Authorization: Bearer {token}");
    let (status, html) = crate::serve::http(port, "GET", "/", &[&auth], "");
    assert_eq!(status, 200);
    assert!(html.contains("<html"), "the dashboard page");
    let (status, body) = crate::serve::http(port, "GET", "/v1/runs/audio-pipeline-1", &[&auth], "");
    assert_eq!(status, 200, "{body}");
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["state"], "finished", "{run}");
    assert_eq!(run["counts"]["done"], 10, "{run}");
    // It serves until stopped, then ends cleanly.
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn help_lists_the_commands() {
    let s = Scratch::new();
    let help = s.sluice(&["--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for verb in [
        "run", "status", "runs", "export", "mock", "demo", "pause", "resume", "cancel",
    ] {
        let listed = text.lines().any(|l| l.starts_with(&format!("  {verb} ")));
        assert!(listed, "{verb} is not listed: {text}");
    }
}

#[test]
fn status_lists_the_worker_live_while_running_and_stopped_after() {
    let mock = Mock::start(&["--latency-ms", "200"]);
    let s = Scratch::new();
    let input = s.write_lines("slow.jsonl", &chat_lines(30));
    let mut child = std::process::Command::new(bin())
        .current_dir(s.dir.path())
        .args(["run", input.to_str().unwrap(), "--url", &mock.chat_url()])
        .args(["--concurrency", "2", "--out", "out.jsonl"])
        .env("SLUICE_STORE", s.store())
        .env("SLUICE_PROGRESS_INTERVAL", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // 30 calls, 2 at a time, 200 ms each: about 3 s, beating every second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let live = loop {
        assert!(std::time::Instant::now() < deadline, "no running beat seen");
        let out = s.sluice(&["status", "--json"]).output().unwrap();
        if out.status.success() {
            let v = json_stdout(&out);
            if let Some(w) = v["workers"].as_array().and_then(|w| w.first()) {
                if w["state"] == "running" && u(&w["live"]["counters"]["done"]) > 0 {
                    break w.clone();
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(u(&live["pid"]), u64::from(pid));
    assert!(u(&live["in_flight"]) <= 2, "{live}");
    assert!(
        live["live"]["rates"]["calls_per_sec"].as_f64().unwrap() > 0.0,
        "{live}"
    );
    assert!(child.wait().unwrap().success());

    let v = json_stdout(&s.sluice(&["status", "--json"]).output().unwrap());
    let workers = v["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{v}");
    assert_eq!(workers[0]["state"], "stopped");
    assert_eq!(u(&workers[0]["live"]["counters"]["done"]), 30);
    assert_eq!(u(&workers[0]["in_flight"]), 0);
    let text =
        String::from_utf8_lossy(&s.sluice(&["status"]).output().unwrap().stdout).into_owned();
    assert!(text.contains(&format!("pid {pid}")), "{text}");
}

#[test]
fn a_broken_cms_collection_stops_the_mock_before_it_listens() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("cms")).unwrap();
    std::fs::write(s.path("cms/prompts.json"), "[{\"id\": 1},").unwrap();
    let out = s
        .sluice(&["mock", "--port", "0", "--cms", "cms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--cms") && err.contains("prompts.json") && err.contains("not JSON"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "it never said it was listening");
}
