//! Batches that survive their provider, against `sluice mock` with the
//! failures the references describe injected: a batch failed for the
//! enqueued-token limit waits and goes again (and a given limit is never
//! passed); lines refused at validation fail alone while the rest go into a
//! new batch; a create whose answer is lost is found instead of made twice;
//! `completion_window` other than 24h is refused by `plan` where it is written.

use serde_json::Value;

use crate::util::*;

const KEY: &str = "sk-batches-secret";

/// One chat step through the batch API; every prompt is 40 characters, 10
/// tokens by both the mock's and sluice's estimate (chars ÷ 4, model "m").
const JOB: &str = r#"
[input]
path = "items.jsonl"

[providers.llm]
base_url = "{MOCK}"
api_key_env = "LLM_KEY"
mode = "batch"
timeout = "2s"
batch = { size = 4, window = "100ms", poll = "100ms" BATCH_EXTRA }

[[steps]]
name = "ask"
kind = "chat"
provider = "llm"
model = "m"
messages = [{ role = "user", content = "{{ item.q }}" }]
"#;

fn job(s: &Scratch, mock: &Mock, api: &str, batch_extra: &str) -> std::path::PathBuf {
    let text = JOB.replace("BATCH_EXTRA", batch_extra).replace(
        "mode = \"batch\"",
        &format!("mode = \"batch\"\napi = \"{api}\""),
    );
    s.job(&text, Some(mock), None)
}

fn items(s: &Scratch, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            serde_json::json!({"id": format!("i{i}"), "q": format!("{i:03} {}", "x".repeat(36))})
                .to_string()
        })
        .collect();
    s.write_lines("items.jsonl", &lines);
}

fn mock(args: &[&str]) -> Mock {
    let mut all = vec!["--api-key-env", "LLM_KEY"];
    all.extend_from_slice(args);
    Mock::start_with_env(&all, &[("LLM_KEY", KEY)])
}

fn run(s: &Scratch, args: &[&str]) -> std::process::Output {
    s.sluice(args).env("LLM_KEY", KEY).output().unwrap()
}

fn batches(mock: &Mock) -> Value {
    mock.get_json("/_mock/batches")
}

fn status(s: &Scratch) -> Value {
    json_stdout(&run(s, &["status", "--json"]))
}

#[test]
fn a_batch_failed_for_the_enqueued_token_limit_waits_and_goes_again() {
    // Three batches of 4 × 10 tokens at once; the limit holds two. The third
    // fails with `token_limit_exceeded`, sluice learns the limit from the
    // message and creates it again once one of the first two finished.
    let m = mock(&["--batch-delay-ms", "600", "--batch-enqueued-limit", "100"]);
    let s = Scratch::new();
    items(&s, 12);
    let path = job(&s, &m, "openai", "");
    let out = run(&s, &["run", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let b = batches(&m);
    assert!(u(&b["token_limit_failures"]) >= 1, "{b}");
    assert_eq!(b["succeeded"], 12, "{b}");
    assert_eq!(b["answered_twice"], 0, "{b}");
    let st = status(&s);
    assert_eq!(st["counts"]["done"], 12, "{st}");
}

#[test]
fn a_given_enqueued_token_limit_is_never_passed() {
    // batch.max_enqueued_tokens = 80: two batches at a time, so the
    // provider's limit of 100 is never reached.
    let m = mock(&["--batch-delay-ms", "300", "--batch-enqueued-limit", "100"]);
    let s = Scratch::new();
    items(&s, 12);
    let path = job(&s, &m, "openai", ", max_enqueued_tokens = 80");
    let plan = run(&s, &["plan", path.to_str().unwrap()]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("at most 80 enqueued tokens"), "{text}");
    let out = run(&s, &["run", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let b = batches(&m);
    assert_eq!(b["token_limit_failures"], 0, "{b}");
    assert_eq!(
        (u(&b["batches_created"]), u(&b["succeeded"])),
        (3, 12),
        "{b}"
    );
}

#[test]
fn lines_refused_at_validation_fail_alone_and_the_rest_go_into_a_new_batch() {
    let m = mock(&[
        "--batch-delay-ms",
        "100",
        "--batch-invalid-rate",
        "0.3",
        "--seed",
        "5",
    ]);
    let s = Scratch::new();
    items(&s, 20);
    let path = job(&s, &m, "openai", "").to_str().unwrap().to_string();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("size = 4", "size = 20");
    std::fs::write(&path, text).unwrap();
    let out = run(&s, &["run", &path]);
    let b = batches(&m);
    let refused = u(&b["refused_lines"]);
    assert!((1..20).contains(&refused), "{b}");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The refused lines' requests failed; all others were answered in the
    // batch that followed, each once.
    assert_eq!(u(&b["succeeded"]), 20 - refused, "{b}");
    assert_eq!(b["answered_twice"], 0, "{b}");
    let st = status(&s);
    assert_eq!(u(&st["counts"]["failed"]), refused, "{st}");
    let run_id = st["run"]["id"].as_str().unwrap().to_string();
    let export = run(&s, &["export", &run_id]);
    let lines = String::from_utf8_lossy(&export.stdout).to_string();
    let failed: Vec<&str> = lines
        .lines()
        .filter(|l| l.contains("invalid_request"))
        .collect();
    assert_eq!(failed.len() as u64, refused, "{lines}");
    assert!(failed[0].contains("(line "), "{}", failed[0]);
}

#[test]
fn a_create_whose_answer_is_lost_is_found_instead_of_made_twice() {
    for api in ["openai", "anthropic"] {
        // The first create makes the batch and never answers; sluice times
        // out after 2s, looks the batch up and polls it.
        let m = mock(&["--batch-delay-ms", "100", "--batch-create-hangs", "1"]);
        let s = Scratch::new();
        items(&s, 4);
        let path = job(&s, &m, api, "");
        let out = run(&s, &["run", path.to_str().unwrap()]);
        assert!(out.status.success(), "{api}: {}", stderr(&out));
        let b = batches(&m);
        assert_eq!(b["create_hangs"], 1, "{api}: {b}");
        assert_eq!(b["batches_created"], 1, "{api}: one batch, not two: {b}");
        assert!(u(&b["list_calls"]) >= 1, "{api}: {b}");
        assert_eq!(
            (u(&b["succeeded"]), u(&b["repeated"])),
            (4, 0),
            "{api}: {b}"
        );
    }
}

#[test]
fn a_result_file_larger_than_any_answer_is_read_from_disk() {
    // Three answers of 90 MB each: a 270 MB output file, past the 256 MiB
    // an answer read whole may have (it used to fail on every rerun).
    let m = mock(&[
        "--batch-delay-ms",
        "100",
        "--batch-result-pad-bytes",
        "90000000",
    ]);
    let s = Scratch::new();
    items(&s, 3);
    let path = job(&s, &m, "openai", "");
    let out = run(&s, &["run", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(batches(&m)["succeeded"], 3);
    assert_eq!(status(&s)["counts"]["done"], 3);
    // The downloaded file was removed once read.
    let left: Vec<_> = walk(&s.path("output"));
    assert!(left.is_empty(), "{left:?}");
}

/// Files under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p)
            } else {
                vec![p]
            }
        })
        .collect()
}

#[test]
fn a_completion_window_other_than_24h_is_refused_by_plan_where_it_is_written() {
    let m = mock(&[]);
    let s = Scratch::new();
    items(&s, 1);
    let path = job(&s, &m, "openai", ", completion_window = \"48h\"");
    let out = run(&s, &["plan", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("job.toml:11:"), "{err}");
    assert!(
        err.contains("completion_window \"48h\" is not offered"),
        "{err}"
    );
    assert_eq!(batches(&m)["batches_created"], 0);
}
