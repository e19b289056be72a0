//! Unhappy providers: 500s, resets, hangs, truncated JSON, 4xx, no server.

use serde_json::json;

use crate::util::*;

/// Runs 60 chat lines against a mock with `mock_args`; returns (exit code, results, mock stats).
fn run_against(
    mock_args: &[&str],
    run_args: &[&str],
) -> (
    Option<i32>,
    Vec<serde_json::Value>,
    serde_json::Value,
    String,
) {
    let mock = Mock::start(mock_args);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(60));
    let out = s.path("out.jsonl");
    let output = s
        .run(&input, &mock.chat_url(), &["--backoff-base", "10ms"])
        .args(["--backoff-cap", "100ms", "--out", out.to_str().unwrap()])
        .args(run_args)
        .output()
        .unwrap();
    (
        output.status.code(),
        read_jsonl(&out),
        mock.stats(),
        stderr(&output),
    )
}

fn all_done(results: &[serde_json::Value]) {
    assert_eq!(results.len(), 60);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["custom_id"], format!("r-{i:05}"));
        assert_eq!(r["response"]["status_code"], 200, "{r}");
    }
}

#[test]
fn injected_500s_are_retried_until_done() {
    let (code, results, stats, err) = run_against(
        &["--fail-rate", "0.3", "--seed", "11"],
        &["--retries", "20"],
    );
    assert_eq!(code, Some(0), "{err}");
    all_done(&results);
    assert!(u(&stats["server_errors"]) > 5, "{stats}");
    assert_eq!(stats["ok"], 60);
}

#[test]
fn connection_resets_are_retried_until_done() {
    let (code, results, stats, err) = run_against(
        &["--reset-rate", "0.3", "--seed", "5"],
        &["--retries", "20"],
    );
    assert_eq!(code, Some(0), "{err}");
    all_done(&results);
    assert!(u(&stats["resets"]) > 5, "{stats}");
}

#[test]
fn truncated_json_is_retried_until_done() {
    let (code, results, stats, err) = run_against(
        &["--truncate-rate", "0.3", "--seed", "9"],
        &["--retries", "20"],
    );
    assert_eq!(code, Some(0), "{err}");
    all_done(&results);
    assert!(u(&stats["truncated"]) > 5, "{stats}");
}

#[test]
fn hung_requests_time_out_and_are_retried() {
    let (code, results, stats, err) = run_against(
        &["--hang-rate", "0.2", "--seed", "2"],
        &["--retries", "20", "--timeout", "300ms"],
    );
    assert_eq!(code, Some(0), "{err}");
    all_done(&results);
    assert!(u(&stats["hangs"]) > 3, "{stats}");
}

#[test]
fn persistent_500s_fail_with_the_reason_after_every_retry() {
    let (code, results, stats, _) = run_against(&["--fail-rate", "1.0"], &["--retries", "2"]);
    assert_eq!(code, Some(1));
    assert_eq!(results.len(), 60);
    for r in &results {
        assert_eq!(r["error"]["code"], "server_error");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("HTTP 500") && message.contains("after 3 attempts"),
            "{message}"
        );
        assert_eq!(r["response"]["status_code"], 500);
    }
    assert_eq!(stats["server_errors"], 180);
}

#[test]
fn a_4xx_fails_at_once_without_retrying() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let lines = vec![
        json!({"custom_id": "bad", "body": {"messages": [{"role": "user", "content": "no model"}]}}).to_string(),
        chat_line("good", "fine", 1),
    ];
    let input = s.write_lines("in.jsonl", &lines);
    let out = s.path("out.jsonl");
    let output = s
        .run(&input, &mock.chat_url(), &["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let results = read_jsonl(&out);
    assert_eq!(results[0]["error"]["code"], "request_error");
    assert!(results[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("after 1 attempt"));
    assert_eq!(results[0]["response"]["status_code"], 400);
    assert_eq!(results[1]["response"]["status_code"], 200);
    let stats = mock.stats();
    assert_eq!(stats["bad_requests"], 1);
    assert_eq!(stats["requests"], 2);
}

#[test]
fn an_unreachable_url_is_one_clear_sentence_and_exit_2() {
    // A port held by a socket that never listens: connecting is refused,
    // and no other test can be handed the port meanwhile (a listener bound
    // and dropped frees it for the next bind).
    let (port, _held) = refusing_port();
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(3));
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let output = s.run(&input, &url, &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains(&format!("cannot reach 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("Nothing was sent"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
