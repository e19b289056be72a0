//! Bad input: clear errors naming file and line, nothing sent, or recorded with --skip-bad.

use serde_json::json;

use crate::util::*;

fn with_bad_line_3() -> Vec<String> {
    let mut lines = chat_lines(5);
    lines[2] = r#"{"custom_id": "r-00002", "body": {"model": "m", "messages": [}"#.to_string();
    lines
}

#[test]
fn a_malformed_line_exits_2_naming_file_and_line_and_sends_nothing() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let input = s.write_lines("broken.jsonl", &with_bad_line_3());
    let output = s.run(&input, &mock.chat_url(), &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("broken.jsonl:3: invalid JSON"), "{err}");
    assert!(err.contains("--skip-bad"), "{err}");
    assert_eq!(mock.stats()["requests"], 0);
}

#[test]
fn skip_bad_records_the_line_as_failed_and_runs_the_rest() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let input = s.write_lines("broken.jsonl", &with_bad_line_3());
    let out = s.path("out.jsonl");
    let output = s
        .run(&input, &mock.chat_url(), &["--skip-bad"])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let results = read_jsonl(&out);
    assert_eq!(results.len(), 5);
    assert_eq!(results[2]["error"]["code"], "invalid_input");
    assert!(results[2]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("line 3"));
    assert_eq!(results[3]["response"]["status_code"], 200);
    assert_eq!(mock.stats()["requests"], 4);
}

#[test]
fn repeated_custom_ids_are_refused_with_both_lines() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let mut lines = chat_lines(4);
    lines.push(chat_line("r-00001", "again", 9));
    let input = s.write_lines("dups.jsonl", &lines);
    let output = s.run(&input, &mock.chat_url(), &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("dups.jsonl:5:") && err.contains("repeats line 2"),
        "{err}"
    );
    assert_eq!(mock.stats()["requests"], 0);
}

#[test]
fn bad_flags_and_missing_key_are_one_sentence_exit_2() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(2));
    let path = input.to_str().unwrap();
    let unknown = s
        .sluice(&["run", path, "--url", &mock.chat_url(), "--concurency", "3"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("--concurency"));
    let no_url = s
        .sluice(&["run", path])
        .env_remove("SLUICE_URL")
        .output()
        .unwrap();
    assert_eq!(no_url.status.code(), Some(2));
    // No --url, no OPENAI_BASE_URL and no key: the OpenAI API would refuse.
    assert!(stderr(&no_url).contains("no --url"), "{}", stderr(&no_url));
    let no_key = s
        .sluice(&[
            "run",
            path,
            "--url",
            &mock.chat_url(),
            "--api-key-env",
            "SLUICE_TEST_NO_SUCH_VAR",
        ])
        .env_remove("SLUICE_TEST_NO_SUCH_VAR")
        .output()
        .unwrap();
    assert_eq!(no_key.status.code(), Some(2));
    let err = stderr(&no_key);
    assert!(
        err.contains("SLUICE_TEST_NO_SUCH_VAR") && err.contains("not set"),
        "{err}"
    );
    let bad_url = s
        .sluice(&["run", path, "--url", "ftp://x/y"])
        .output()
        .unwrap();
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(stderr(&bad_url).contains("http or https"));
    let missing = s
        .sluice(&["run", "nope.jsonl", "--url", &mock.chat_url()])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("cannot read nope.jsonl"));
    assert_eq!(mock.stats()["requests"], 0);
}

#[test]
fn the_api_key_is_sent_but_never_stored_logged_or_exported() {
    let secret = "sk-test-0123456789-very-secret";
    let mock = Mock::start_with_env(&["--api-key-env", "MOCK_KEY"], &[("MOCK_KEY", secret)]);
    let s = Scratch::new();
    let mut lines = chat_lines(10);
    lines.push(json!({"custom_id": "bad", "body": {"messages": []}}).to_string());
    let input = s.write_lines("in.jsonl", &lines);
    let out = s.path("out.jsonl");
    let output = s
        .run(&input, &mock.chat_url(), &["--api-key-env", "MY_KEY"])
        .args(["--out", out.to_str().unwrap()])
        .env("MY_KEY", secret)
        .env("SLUICE_LOG", "debug")
        .output()
        .unwrap();
    // The key was sent: the mock answered 200 (it answers 401 without it).
    let stats = mock.stats();
    assert_eq!(stats["ok"], 10, "{stats}");
    assert_eq!(stats["unauthorized"], 0);
    assert_eq!(output.status.code(), Some(1));
    let mut haystacks = vec![
        output.stdout.clone(),
        output.stderr.clone(),
        std::fs::read(&out).unwrap(),
    ];
    for entry in std::fs::read_dir(s.path("store")).unwrap() {
        haystacks.push(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let status = s.sluice(&["status", "--json"]).output().unwrap();
    haystacks.push(status.stdout);
    for hay in haystacks {
        assert!(
            !String::from_utf8_lossy(&hay).contains(secret),
            "the key leaked"
        );
    }

    // A run killed mid-way leaves SQLite's write-ahead log beside the
    // database: its pages are store too.
    let slow = Mock::start_with_env(
        &["--api-key-env", "MOCK_KEY", "--latency-ms", "200"],
        &[("MOCK_KEY", secret)],
    );
    let many = s.write_lines("many.jsonl", &chat_lines(200));
    let mut child = std::process::Command::new(bin())
        .current_dir(s.dir.path())
        .args(["run", many.to_str().unwrap(), "--url", &slow.chat_url()])
        .args(["--api-key-env", "MY_KEY", "--concurrency", "2"])
        .env("SLUICE_STORE", s.store())
        .env("MY_KEY", secret)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while u(&slow.stats()["ok"]) < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no checkpoint, the -wal stays
    child.wait().unwrap();
    let mut wal = false;
    for entry in std::fs::read_dir(s.path("store")).unwrap() {
        let path = entry.unwrap().path();
        wal |= path.to_string_lossy().ends_with("-wal");
        let hay = std::fs::read(&path).unwrap();
        assert!(
            !String::from_utf8_lossy(&hay).contains(secret),
            "the key leaked into {}",
            path.display()
        );
    }
    assert!(wal, "no -wal file was left to scan");
}
