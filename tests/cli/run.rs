//! The happy path: every line answered once, in input order, in Batch API shape.

use serde_json::json;

use crate::util::*;

#[test]
fn every_line_gets_one_result_in_input_order_with_metadata() {
    let mock = Mock::start(&["--latency-ms", "5", "--jitter-ms", "10", "--seed", "3"]);
    let s = Scratch::new();
    let input = s.write_lines("requests.jsonl", &chat_lines(300));
    let out = s.path("results.jsonl");
    let output = s
        .run(&input, &mock.chat_url(), &["--concurrency", "16"])
        .args(["--out", out.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let results = read_jsonl(&out);
    assert_eq!(results.len(), 300);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["custom_id"], format!("r-{i:05}"));
        assert_eq!(r["metadata"]["i"], i);
        assert_eq!(r["response"]["status_code"], 200);
        assert!(r["error"].is_null());
        let usage = &r["response"]["body"]["usage"];
        assert!(u(&usage["prompt_tokens"]) > 0);
        assert_eq!(u(&usage["completion_tokens"]), 16);
    }
    let summary = json_stdout(&output);
    assert_eq!(summary["this_run"]["done"], 300);
    assert_eq!(summary["recorded"]["done"], 300);
    let stats = mock.stats();
    assert_eq!(stats["ok"], 300);
    assert_eq!(stats["duplicate_requests"], 0);
    assert!(u(&stats["max_in_flight"]) <= 16);
}

#[test]
fn bare_bodies_and_batch_lines_route_to_their_endpoints() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let lines = vec![
        json!({"model": "m", "messages": [{"role": "user", "content": "hello there"}], "metadata": {"row": 1}}).to_string(),
        json!({"custom_id": "emb", "method": "POST", "url": "/v1/embeddings", "body": {"model": "e", "input": ["a", "b"]}}).to_string(),
        json!({"custom_id": "cmp", "url": "/v1/completions", "body": {"model": "c", "prompt": "once upon", "max_tokens": 4}}).to_string(),
    ];
    let input = s.write_lines("mixed.jsonl", &lines);
    let output = s.run(&input, &mock.chat_url(), &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // Without --out, results go to stdout.
    let results: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["custom_id"], "line-1");
    assert_eq!(results[0]["metadata"]["row"], 1);
    assert_eq!(results[0]["response"]["body"]["object"], "chat.completion");
    assert_eq!(results[1]["response"]["body"]["object"], "list");
    assert_eq!(
        results[1]["response"]["body"]["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(results[2]["response"]["body"]["object"], "text_completion");
    assert_eq!(
        results[2]["response"]["body"]["usage"]["completion_tokens"],
        4
    );
}

#[test]
fn stdin_input_runs_and_resumes_when_piped_again() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let data = chat_lines(20).join("\n") + "\n";
    let run = |s: &Scratch| {
        s.sluice(&["run", "-", "--url", &mock.chat_url(), "--json"])
            .write_stdin(data.clone())
            .output()
            .unwrap()
    };
    let first = run(&s);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(json_stdout(&first)["this_run"]["done"], 20);
    let second = run(&s);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(json_stdout(&second)["this_run"]["skipped"], 20);
    assert_eq!(mock.stats()["requests"], 20);
}
