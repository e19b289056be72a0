//! Where a run is kept and what it leaves: the same file is the same run from
//! any directory (the store lives next to it, found like git finds `.git`),
//! every start says which run and store, `--out` is written only by a run that
//! reached its end, and exports follow the current input (pending lines say
//! so, deleted lines are gone).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::executors::wait_for_requests;
use crate::util::*;

/// `sluice ARGS` in `dir` with no store given: the default store is used.
fn in_dir(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = assert_cmd::Command::new(bin());
    cmd.current_dir(dir)
        .args(args)
        .env_remove("SLUICE_STORE")
        .env("SLUICE_PROGRESS_INTERVAL", "0")
        .timeout(std::time::Duration::from_secs(120));
    cmd.output().unwrap()
}

fn first_line(output: &std::process::Output) -> String {
    stderr(output)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_same_file_is_the_same_run_from_any_directory() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let project = s.path("project");
    std::fs::create_dir_all(project.join("eval/notes")).unwrap();
    let mut lines = chat_lines(10);
    std::fs::write(project.join("eval/in.jsonl"), lines.join("\n") + "\n").unwrap();
    let url = mock.chat_url();

    let first = in_dir(&project.join("eval"), &["run", "in.jsonl", "--url", &url]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(
        first_line(&first),
        "sluice: new run in-1 · store .sluice/sluice.db"
    );

    // From the parent directory: the same run, found next to the file.
    let again = in_dir(&project, &["run", "eval/in.jsonl", "--url", &url]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        first_line(&again),
        "sluice: resuming in-1: 10 done, 0 to send · store eval/.sluice/sluice.db"
    );
    assert_eq!(u(&mock.stats()["requests"]), 10);

    // Three lines edited: the start line says what is left.
    for (i, line) in lines.iter_mut().enumerate().take(3) {
        *line = chat_line(&format!("r-{i:05}"), "changed", i);
    }
    std::fs::write(project.join("eval/in.jsonl"), lines.join("\n") + "\n").unwrap();
    let out = s.path("elsewhere/out.jsonl");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let edited = in_dir(
        &s.path("elsewhere"),
        &[
            "run",
            "../project/eval/in.jsonl",
            "--url",
            &url,
            "--out",
            "out.jsonl",
        ],
    );
    assert_eq!(edited.status.code(), Some(0), "{}", stderr(&edited));
    let line = first_line(&edited);
    assert!(
        line.starts_with("sluice: resuming in-1: 7 done, 3 to send · store "),
        "{line}"
    );
    assert!(line.ends_with("project/eval/.sluice/sluice.db"), "{line}");
    assert_eq!(u(&mock.stats()["requests"]), 13);
    assert_eq!(read_jsonl(&out).len(), 10);

    // Commands naming a run find the store above the current directory...
    let status = in_dir(&project.join("eval/notes"), &["status", "in-1", "--json"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    assert_eq!(json_stdout(&status)["counts"]["done"], 10);
    // ...and say where to look when there is none.
    let lost = in_dir(&project, &["status"]);
    assert_eq!(lost.status.code(), Some(2));
    assert!(stderr(&lost).contains("--store"), "{}", stderr(&lost));
    assert!(!project.join(".sluice").exists(), "status created no store");
}

#[test]
fn a_job_file_finds_its_run_from_the_parent_directory() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("eval")).unwrap();
    let items: Vec<String> = (0..6)
        .map(|i| {
            serde_json::json!({"id": format!("q{i}"), "q": format!("question {i}")}).to_string()
        })
        .collect();
    std::fs::write(s.path("eval/items.jsonl"), items.join("\n")).unwrap();
    std::fs::write(
        s.path("eval/eval.toml"),
        format!(
            r#"name = "eval"
[input]
path = "items.jsonl"
[providers.mock]
base_url = "{}"
[[steps]]
name = "ask"
kind = "chat"
provider = "mock"
model = "m"
messages = [{{ role = "user", content = "{{{{ item.q }}}}" }}]
[output]
path = "results.jsonl"
"#,
            mock.url("/v1")
        ),
    )
    .unwrap();
    let first = in_dir(&s.path("eval"), &["run", "eval.toml"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(
        first_line(&first),
        "sluice: new run eval-1 · store .sluice/sluice.db"
    );
    let again = in_dir(s.dir.path(), &["run", "eval/eval.toml"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        first_line(&again),
        "sluice: resuming eval-1: 6 done, 0 to send · store eval/.sluice/sluice.db"
    );
    assert_eq!(u(&mock.stats()["requests"]), 6, "nothing paid twice");
    assert_eq!(read_jsonl(&s.path("eval/results.jsonl")).len(), 6);
}

/// Starts `sluice run` on `input` and interrupts it (SIGINT) once the mock
/// has seen `after` requests; returns its output.
fn interrupted(
    s: &Scratch,
    mock: &Mock,
    input: &Path,
    extra: &[&str],
    after: u64,
) -> std::process::Output {
    let url = mock.chat_url();
    let child = Command::new(bin())
        .current_dir(s.dir.path())
        .args(["run", input.to_str().unwrap(), "--url", &url])
        .args(extra)
        .env("SLUICE_STORE", s.store())
        .env("SLUICE_PROGRESS_INTERVAL", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_requests(mock, after);
    Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    output
}

#[test]
fn an_interrupted_run_leaves_the_results_file_as_it_was_and_says_how_to_export() {
    let mock = Mock::start(&["--latency-ms", "100"]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(40));
    let out = s.path("results.jsonl");
    s.run(
        &input,
        &mock.chat_url(),
        &["--out", out.to_str().unwrap(), "--concurrency", "40"],
    )
    .assert()
    .success();
    let before = std::fs::read(&out).unwrap();
    assert_eq!(read_jsonl(&out).len(), 40);

    // A fresh run of the same file, stopped early: the finished results stay.
    let stopped = interrupted(
        &s,
        &mock,
        &input,
        &[
            "--fresh",
            "--concurrency",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        42,
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "results replaced by less"
    );
    let err = stderr(&stopped);
    assert!(err.contains("results.jsonl is left as it was"), "{err}");
    assert!(err.contains("sluice export in-2 --out"), "{err}");
    assert!(!s.path(".results.jsonl.partial").exists());

    // Without --out an interrupted run prints no partial results either.
    let quiet = interrupted(
        &s,
        &mock,
        &input,
        &["--concurrency", "1"],
        u(&mock.stats()["requests"]) + 2,
    );
    assert!(
        quiet.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stdout)
    );
    assert!(
        stderr(&quiet).contains("results are not printed"),
        "{}",
        stderr(&quiet)
    );
}

#[test]
fn an_export_says_pending_for_items_not_done_never_an_earlier_error() {
    let mock = Mock::start_with_env(
        &["--api-key-env", "MOCK_KEY", "--latency-ms", "100"],
        &[("MOCK_KEY", "right")],
    );
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(30));
    // A wrong key: every item fails with 401.
    let wrong = s
        .run(
            &input,
            &mock.chat_url(),
            &["--api-key-env", "MY_KEY", "--concurrency", "30"],
        )
        .env("MY_KEY", "wrong")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));
    // Fixed, rerun, interrupted after a few: those are done, the rest pending.
    let url = mock.chat_url();
    let child = Command::new(bin())
        .current_dir(s.dir.path())
        .args([
            "run",
            input.to_str().unwrap(),
            "--url",
            &url,
            "--concurrency",
            "1",
        ])
        .args(["--api-key-env", "MY_KEY"])
        .env("MY_KEY", "right")
        .env("SLUICE_STORE", s.store())
        .env("SLUICE_PROGRESS_INTERVAL", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_requests(&mock, 34);
    Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let exported = s.sluice(&["export", "in"]).output().unwrap();
    assert!(exported.status.success(), "{}", stderr(&exported));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&exported.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 30, "one line per input line");
    let code = |l: &serde_json::Value| l["error"]["code"].as_str().map(str::to_string);
    let done = lines.iter().filter(|l| l["error"].is_null()).count();
    let pending = lines
        .iter()
        .filter(|l| code(l).as_deref() == Some("pending"))
        .count();
    assert!(done >= 4, "{done} done");
    assert_eq!(done + pending, 30, "no earlier 401 is exported: {lines:?}");
    let status = json_stdout(&s.sluice(&["status", "in", "--json"]).output().unwrap());
    assert_eq!(u(&status["counts"]["failed"]), 0);
    assert_eq!(u(&status["counts"]["done"]), done as u64);
}

#[test]
fn deleting_a_line_drops_it_from_the_results_and_the_counts() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let mut lines = chat_lines(14);
    let input = s.write_lines("in.jsonl", &lines);
    let out = s.path("out.jsonl");
    let out_arg = out.to_str().unwrap();
    s.run(&input, &mock.chat_url(), &["--out", out_arg])
        .assert()
        .success();
    assert_eq!(read_jsonl(&out).len(), 14);
    lines.remove(4);
    s.write_lines("in.jsonl", &lines);
    s.run(&input, &mock.chat_url(), &["--out", out_arg])
        .assert()
        .success();
    let results = read_jsonl(&out);
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["custom_id"].as_str().unwrap())
        .collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(ids.len(), 13, "{ids:?}");
    assert_eq!(unique.len(), 13, "no id twice: {ids:?}");
    assert!(!ids.contains(&"r-00004"), "the deleted line is gone");
    assert_eq!(u(&mock.stats()["requests"]), 14, "nothing sent again");
    let text =
        String::from_utf8_lossy(&s.sluice(&["status", "in"]).output().unwrap().stdout).into_owned();
    assert!(
        text.contains("13 total · 13 done · 0 failed · 0 pending"),
        "{text}"
    );
}
