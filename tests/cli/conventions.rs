//! OpenAI's conventions in quick mode (OPENAI_BASE_URL, OPENAI_API_KEY, the
//! endpoint a bare body's shape implies) and the `--events` stream.

use serde_json::{json, Value};

use crate::util::{stderr, Mock, Scratch};

fn mixed_lines() -> Vec<String> {
    vec![
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "custom_id": "chat"})
            .to_string(),
        json!({"model": "e", "input": "hello", "custom_id": "vec"}).to_string(),
        json!({"model": "c", "prompt": "once", "custom_id": "text"}).to_string(),
    ]
}

#[test]
fn openai_variables_fill_in_url_and_key_and_bodies_go_where_their_shape_says() {
    let mock = Mock::start_with_env(
        &["--journal", "10", "--api-key-env", "MOCK_KEY"],
        &[("MOCK_KEY", "sk-test-123")],
    );
    let s = Scratch::new();
    let input = s.write_lines("mixed.jsonl", &mixed_lines());
    let out = s
        .sluice(&["run", input.to_str().unwrap(), "--out", "r.jsonl"])
        .env_remove("SLUICE_URL")
        .env("OPENAI_BASE_URL", mock.url("/v1"))
        .env("OPENAI_API_KEY", "sk-test-123")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let start = err
        .lines()
        .find(|l| l.starts_with("sluice: url"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(start.contains("from $OPENAI_BASE_URL"), "{start}");
    assert!(start.contains("key from $OPENAI_API_KEY"), "{start}");
    assert!(
        !err.contains("sk-test-123"),
        "the key itself is never shown"
    );
    let mut paths: Vec<(String, bool)> = mock
        .journal("/v1")
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["headers"].get("authorization").is_some(),
            )
        })
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            ("/v1/chat/completions".into(), true),
            ("/v1/completions".into(), true),
            ("/v1/embeddings".into(), true),
        ]
    );
    // --no-api-key sends none: the mock that wants one refuses.
    let keyless = s
        .sluice(&[
            "run",
            input.to_str().unwrap(),
            "--fresh",
            "--no-api-key",
            "--retries",
            "0",
        ])
        .env_remove("SLUICE_URL")
        .env("OPENAI_BASE_URL", mock.url("/v1"))
        .env("OPENAI_API_KEY", "sk-test-123")
        .output()
        .unwrap();
    assert_eq!(keyless.status.code(), Some(1), "{}", stderr(&keyless));
    assert_eq!(mock.stats()["unauthorized"], 3);
}

#[test]
fn without_url_or_key_nothing_is_sent_and_the_message_says_what_to_set() {
    let s = Scratch::new();
    let input = s.write_lines("mixed.jsonl", &mixed_lines());
    let out = s
        .sluice(&["run", input.to_str().unwrap()])
        .env_remove("SLUICE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("export OPENAI_API_KEY"), "{err}");
    assert!(err.contains("--url"), "{err}");
}

#[test]
fn a_body_with_no_shape_under_a_base_url_is_refused_with_its_line() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let input = s.write_lines(
        "odd.jsonl",
        &[
            json!({"model": "m", "messages": []}).to_string(),
            json!({"model": "m", "question": "?"}).to_string(),
        ],
    );
    let out = s.run(&input, &mock.url("/v1"), &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("odd.jsonl:2:"), "{err}");
    assert!(err.contains("base URL"), "{err}");
    assert_eq!(mock.stats()["requests"], 0);
    // Under a full endpoint URL the same body is sent as it is.
    let out = s
        .run(&input, &mock.url("/v1/chat/completions"), &[])
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
    assert_eq!(mock.stats()["requests"], 2);
}

fn events(output: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn events_stream_start_each_result_and_the_summary() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let lines: Vec<String> = (0..20)
        .map(|i| json!({"model": "m", "messages": [{"role": "user", "content": format!("q{i}")}], "metadata": {"row": i}}).to_string())
        .collect();
    let input = s.write_lines("q.jsonl", &lines);
    let out = s
        .run(
            &input,
            &mock.url("/v1"),
            &["--events", "--include-item", "--out", "r.csv"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen = events(&out);
    assert_eq!(seen[0]["event"], "start", "{seen:?}");
    assert_eq!(seen[0]["run"], "q-1");
    assert_eq!(seen[0]["total"], 20);
    let results: Vec<&Value> = seen.iter().filter(|e| e["event"] == "result").collect();
    let mut rows: Vec<u64> = results
        .iter()
        .map(|e| e["result"]["metadata"]["row"].as_u64().unwrap())
        .collect();
    rows.sort();
    assert_eq!(rows, (0..20).collect::<Vec<u64>>(), "each item once");
    assert!(results
        .iter()
        .all(|e| e["result"]["response"]["status_code"] == 200));
    let end = seen.last().unwrap();
    assert_eq!(end["event"], "end");
    assert_eq!(end["recorded"]["done"], 20);
    assert_eq!(end["out"], "r.csv");
    // A rerun has nothing left to send: it opens, records nothing, ends.
    let again = s
        .run(&input, &mock.url("/v1"), &["--events"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let kinds: Vec<String> = events(&again)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .filter(|k| k != "progress")
        .collect();
    assert_eq!(kinds, ["start", "end"]);
    let json_too = s
        .run(&input, &mock.url("/v1"), &["--events", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        json_too.status.code(),
        Some(2),
        "--events and --json conflict"
    );
}
