//! Flags and input checked before anything is sent, every attempt on the
//! wire counted and limited, memory independent of --concurrency, and a
//! closed stdout that ends a command quietly.

use std::process::{Command, Stdio};

use crate::executors::wait_for_requests;
use crate::util::*;

/// Runs `sluice run in.jsonl --url MOCK EXTRA`, expecting exit 2 with a
/// message containing `says`, and nothing sent.
fn refused(s: &Scratch, mock: &Mock, input: &std::path::Path, extra: &[&str], says: &str) {
    let out = s.run(input, &mock.chat_url(), extra).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
    assert!(err.contains(says), "{extra:?}: {err}");
    assert_eq!(u(&mock.stats()["requests"]), 0, "{extra:?} sent requests");
}

#[test]
fn flags_that_cannot_work_are_refused_before_anything_is_sent() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(3));
    refused(&s, &mock, &input, &["--concurrency", "0"], "--concurrency");
    refused(
        &s,
        &mock,
        &input,
        &["--concurrency", "100001"],
        "from 1 to 100000",
    );
    refused(
        &s,
        &mock,
        &input,
        &["--concurrency", "999999999999"],
        "--concurrency",
    );
    refused(&s, &mock, &input, &["--rpm", "0"], "--rpm");
    refused(&s, &mock, &input, &["--tpm", "0"], "--tpm");
    refused(&s, &mock, &input, &["--timeout", "0s"], "--timeout");
    refused(&s, &mock, &input, &["--lease", "1s"], "--lease");
    refused(
        &s,
        &mock,
        &input,
        &["--backoff-base", "2s", "--backoff-cap", "1s"],
        "--backoff-base 2s is above --backoff-cap 1s",
    );
}

#[test]
fn a_results_file_that_would_lose_data_is_refused_before_anything_is_sent() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(3));
    let before = std::fs::read(&input).unwrap();
    refused(&s, &mock, &input, &["--out", "./in.jsonl"], "is the input");
    refused(
        &s,
        &mock,
        &input,
        &["--out", input.to_str().unwrap()],
        "is the input",
    );
    std::fs::create_dir(s.path("results")).unwrap();
    refused(&s, &mock, &input, &["--out", "results"], "is a directory");
    refused(&s, &mock, &input, &["--out", "new-dir/"], "is a directory");
    refused(
        &s,
        &mock,
        &input,
        &["--out", "x.json"],
        ".json names no results format",
    );
    refused(&s, &mock, &input, &["--out", "results.txt"], ".txt");
    refused(
        &s,
        &mock,
        &input,
        &["--out", "results-file"],
        "without an extension",
    );
    assert_eq!(
        std::fs::read(&input).unwrap(),
        before,
        "the input is untouched"
    );
    // The known ones work.
    s.run(&input, &mock.chat_url(), &["--out", "r.jsonl"])
        .assert()
        .success();
    assert_eq!(read_jsonl(&s.path("r.jsonl")).len(), 3);
    // `sluice export` checks the same (an explicit --format allows any name).
    let export = s
        .sluice(&["export", "in", "--out", "x.txt"])
        .output()
        .unwrap();
    assert_eq!(export.status.code(), Some(2), "{}", stderr(&export));
    let export = s
        .sluice(&["export", "in", "--out", "x.txt", "--format", "csv"])
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", stderr(&export));
}

#[test]
fn a_byte_order_mark_is_ignored_and_invalid_utf8_names_its_line() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let lines = chat_lines(4);
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice((lines.join("\n") + "\n").as_bytes());
    let bom = s.path("bom.jsonl");
    std::fs::write(&bom, &bytes).unwrap();
    s.run(&bom, &mock.chat_url(), &[]).assert().success();
    assert_eq!(u(&mock.stats()["requests"]), 4);

    let mut bytes = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if i == 2 {
            bytes.extend_from_slice(&line.as_bytes()[..20]);
            bytes.extend_from_slice(b"\xff\xfe");
            bytes.extend_from_slice(&line.as_bytes()[20..]);
        } else {
            bytes.extend_from_slice(line.as_bytes());
        }
        bytes.push(b'\n');
    }
    let bad = s.path("bad.jsonl");
    std::fs::write(&bad, &bytes).unwrap();
    let strict = s.run(&bad, &mock.chat_url(), &[]).output().unwrap();
    let err = stderr(&strict);
    assert_eq!(strict.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.jsonl:3: not valid UTF-8"), "{err}");
    assert_eq!(u(&mock.stats()["requests"]), 4, "nothing more sent");
    let skipped = s
        .run(
            &bad,
            &mock.chat_url(),
            &["--skip-bad", "--out", "bad-out.jsonl"],
        )
        .output()
        .unwrap();
    assert_eq!(skipped.status.code(), Some(1), "{}", stderr(&skipped));
    let results = read_jsonl(&s.path("bad-out.jsonl"));
    assert_eq!(results.len(), 4);
    assert_eq!(results[2]["error"]["code"], "invalid_input");
    assert!(results[2]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("UTF-8"));
    assert_eq!(u(&mock.stats()["requests"]), 7);
}

#[test]
fn an_empty_input_warns_and_a_batch_line_without_a_body_is_invalid() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let empty = s.path("empty.jsonl");
    std::fs::write(&empty, "\n\n").unwrap();
    let out = s.run(&empty, &mock.chat_url(), &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds no items"), "{}", stderr(&out));

    let no_body = s.write_lines(
        "nobody.jsonl",
        &[
            chat_line("a", "first", 0),
            r#"{"custom_id":"b","method":"POST","url":"/v1/chat/completions"}"#.into(),
        ],
    );
    let out = s.run(&no_body, &mock.chat_url(), &[]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("nobody.jsonl:2: a Batch API line"), "{err}");
    assert_eq!(u(&mock.stats()["requests"]), 0);
}

#[test]
fn every_attempt_on_the_wire_is_counted_and_limited_by_retries() {
    // 20% of connections dropped: the server's count is sluice's count.
    let mock = Mock::start(&["--reset-rate", "0.2", "--seed", "11"]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(200));
    let out = s
        .run(
            &input,
            &mock.chat_url(),
            &["--retries", "20", "--json", "--concurrency", "16"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = json_stdout(&out);
    let stats = mock.stats();
    assert!(u(&stats["resets"]) > 20, "{stats}");
    assert_eq!(
        u(&stats["requests"]),
        u(&summary["this_run"]["attempts"]),
        "{stats}"
    );

    // Every connection dropped: each item gets 1 + --retries requests, no more.
    let mock = Mock::start(&["--reset-rate", "1.0"]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(10));
    let out = s
        .run(
            &input,
            &mock.chat_url(),
            &["--retries", "2", "--backoff-base", "10ms", "--json"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(u(&mock.stats()["requests"]), 30);
    assert_eq!(u(&json_stdout(&out)["this_run"]["attempts"]), 30);
}

#[test]
fn memory_does_not_grow_with_the_concurrency_flag() {
    let mock = Mock::start(&["--latency-ms", "3000"]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(2));
    let child = Command::new(bin())
        .current_dir(s.dir.path())
        .args(["run", input.to_str().unwrap(), "--url", &mock.chat_url()])
        .args(["--concurrency", "100000"])
        .env("SLUICE_STORE", s.store())
        .env("SLUICE_PROGRESS_INTERVAL", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Both calls are on the wire: every worker the run will have exists.
    wait_for_requests(&mock, 2);
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    // About 25 MB whatever the flag (it was 387 MB with 100,000 workers).
    assert!(peak_kb < 100_000, "peak resident memory {peak_kb} kB");
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(2_000));
    s.run(&input, &mock.chat_url(), &["--out", "out.jsonl"])
        .assert()
        .success();
    for command in [
        "export in",
        "export in --format csv",
        "status in --json",
        "runs",
    ] {
        let script = format!(
            "'{}' {command} | head -c 10 > /dev/null; echo \"exit ${{PIPESTATUS[0]:-0}}\"",
            bin().display()
        );
        let out = Command::new("bash")
            .current_dir(s.dir.path())
            .args(["-c", &script])
            .env("SLUICE_STORE", s.store())
            .output()
            .unwrap();
        assert_eq!(stderr(&out), "", "{command}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "exit 0",
            "{command}"
        );
    }
}
