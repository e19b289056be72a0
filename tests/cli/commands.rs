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
    for place in [
        "results.jsonl",
        "transcripts.json",
        "sluice status audio-pipeline-1",
    ] {
        assert!(err.contains(place), "{place}: {err}");
    }
    // The store it points at answers.
    let store = dir.join(".sluice/sluice.db");
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
fn help_lists_the_commands() {
    let s = Scratch::new();
    let help = s.sluice(&["--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for verb in ["run", "status", "runs", "export", "mock", "demo"] {
        assert!(text.contains(verb), "{text}");
    }
}
