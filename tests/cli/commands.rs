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
fn demo_runs_the_bundled_example_and_summarises() {
    let s = Scratch::new();
    let output = s.sluice(&["demo", "--items", "60"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("60 total · 60 done · 0 failed"), "{err}");
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
    assert_eq!(first["custom_id"], "q-00000");
}

#[test]
fn help_lists_the_commands() {
    let s = Scratch::new();
    let help = s.sluice(&["--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for verb in ["run", "status", "runs", "export", "mock", "demo"] {
        assert!(text.contains(verb), "{text}");
    }
}
