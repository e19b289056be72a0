//! Provider dialects and batch offload: one job file run through
//! openai-live, anthropic-live, openai-batch and anthropic-batch against
//! `sluice mock` gives the same results and exports; a kill -9 between batch
//! submission and completion submits nothing twice; expired batch requests
//! are retried; `auto` follows the deadline; streamed answers are timed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const KEY: &str = "sk-dialects-secret";

/// One chat step and a two-turn conversation on one provider; `{MOCK}` is
/// the mock's `/v1` base URL. `--set providers.llm.api=…/mode=…` picks the path.
const JOB: &str = r#"
name = "paths"

[input]
path = "items.jsonl"

[providers.llm]
base_url = "{MOCK}"
api_key_env = "LLM_KEY"
concurrency = 4
batch = { size = 4, window = "200ms", poll = "100ms" }

[[steps]]
name = "ask"
kind = "chat"
provider = "llm"
model = "m"
messages = [
  { role = "system", content = "Answer briefly." },
  { role = "user", content = "{{ item.q }}" },
]

[[steps]]
name = "talk"
kind = "conversation"
provider = "llm"
model = "m"
system = "You are a tutor."
turns = ["{{ item.q }}", "And then? You said: {{ answers[0] }}"]
params = { max_tokens = 8 }

[output]
path = "results.jsonl"
"#;

impl Mock {
    /// What the mock's batch APIs saw.
    fn batches(&self) -> Value {
        self.get_json("/_mock/batches")
    }
}

fn start_mock(args: &[&str]) -> Mock {
    let mut all = vec!["--api-key-env", "LLM_KEY"];
    all.extend_from_slice(args);
    Mock::start_with_env(&all, &[("LLM_KEY", KEY)])
}

fn items(s: &Scratch, n: usize) {
    let lines: Vec<String> = (1..=n)
        .map(|i| {
            serde_json::json!({"id": format!("i{i}"), "q": format!("What is {i} times {i}?")})
                .to_string()
        })
        .collect();
    s.write_lines("items.jsonl", &lines);
}

/// `sluice ARGS` with the key set; its output.
fn run(s: &Scratch, args: &[&str]) -> std::process::Output {
    s.sluice(args).env("LLM_KEY", KEY).output().unwrap()
}

fn run_path(
    s: &Scratch,
    job: &Path,
    api: &str,
    mode: &str,
    extra: &[&str],
) -> std::process::Output {
    let (api, mode) = (
        format!("providers.llm.api={api}"),
        format!("providers.llm.mode={mode}"),
    );
    let mut args = vec![
        "run",
        job.to_str().unwrap(),
        "--fresh",
        "--set",
        &api,
        "--set",
        &mode,
    ];
    args.extend_from_slice(extra);
    run(s, &args)
}

#[test]
fn one_job_gives_the_same_results_and_exports_on_every_path() {
    let mut exports: Vec<(String, String, String)> = Vec::new();
    for (api, mode) in [
        ("openai", "live"),
        ("anthropic", "live"),
        ("openai", "batch"),
        ("anthropic", "batch"),
    ] {
        let mock = start_mock(&["--batch-delay-ms", "150"]);
        let s = Scratch::new();
        items(&s, 6);
        let job = s.job(JOB, Some(&mock), None);
        let output = run_path(&s, &job, api, mode, &[]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{api}-{mode}: {}",
            stderr(&output)
        );
        let results = read_jsonl(&s.path("results.jsonl"));
        assert_eq!(results.len(), 6);
        for r in &results {
            assert_eq!(r["status"], "done", "{api}-{mode}: {r}");
            assert_eq!(r["steps"]["talk"]["turns"].as_array().unwrap().len(), 2);
        }
        let live = u(&mock.stats()["requests"]);
        let batches = mock.batches();
        if mode == "live" {
            assert_eq!(live, 18, "{api}: 6 asks + 12 turns, live");
            assert_eq!(batches["batches_created"], 0);
        } else {
            assert_eq!(live, 0, "{api}: nothing live in batch mode");
            // 6 asks, then each of the two turns: 18 requests in batches of
            // at most 4. The 200 ms window gathers the units that reach a
            // step together: the asks go as 4 + 2, and each group's turns
            // follow it, so 6 batches — or 5 when a loaded machine delays
            // the group of 4 until the other's requests join it (never more:
            // a group only splits at the size, never at the window).
            assert_eq!(batches["largest_batch"], 4, "{batches}");
            let created = u(&batches["batches_created"]);
            assert!((5..=6).contains(&created), "{batches}");
            assert_eq!(batches["requests"], 18);
            assert_eq!(batches["repeated"], 0);
            let stderr = stderr(&output);
            assert!(stderr.contains("through the batch API"), "{stderr}");
        }
        let csv = s.path("results.csv");
        let exported = run(&s, &["export", "paths-1", "--out", csv.to_str().unwrap()]);
        assert_eq!(exported.status.code(), Some(0), "{}", stderr(&exported));
        // The key reached the mock (it requires it) but is stored nowhere.
        let db = std::fs::read(s.store()).unwrap();
        assert!(!db.windows(KEY.len()).any(|w| w == KEY.as_bytes()));
        exports.push((
            format!("{api}-{mode}"),
            without_latency_jsonl(&std::fs::read_to_string(s.path("results.jsonl")).unwrap()),
            without_latency_csv(&std::fs::read_to_string(&csv).unwrap()),
        ));
    }
    let (first, jsonl, csv) = &exports[0];
    for (path, other_jsonl, other_csv) in &exports[1..] {
        assert_eq!(other_jsonl, jsonl, "{path} differs from {first}");
        assert_eq!(other_csv, csv, "{path} CSV differs from {first}");
    }
    let header = csv.lines().next().unwrap();
    assert_eq!(
        header,
        "id,item_id,status,error,\
         ask.text,ask.json,ask.file,ask.status,ask.prompt_tokens,ask.completion_tokens,\
         talk.text,talk.json,talk.file,talk.status,talk.prompt_tokens,talk.completion_tokens"
    );
}

/// Results with the unit's and each step's times taken out (`latency_ms`,
/// `started_at`, `finished_at`, `duration_ms`): the fields that differ by
/// path (and by run).
fn without_latency_jsonl(text: &str) -> String {
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let timed = ["latency_ms", "started_at", "finished_at", "duration_ms"];
            if let Some(unit) = v.as_object_mut() {
                for key in &timed[1..] {
                    unit.remove(*key);
                }
            }
            if let Some(steps) = v["steps"].as_object_mut() {
                for out in steps.values_mut() {
                    if let Some(out) = out.as_object_mut() {
                        for key in timed {
                            out.remove(key);
                        }
                    }
                }
            }
            v.to_string() + "\n"
        })
        .collect()
}

/// A CSV export without its time columns (`<step>.latency_ms`, and the
/// unit's and steps' `started_at`, `finished_at`, `duration_ms`).
fn without_latency_csv(text: &str) -> String {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| {
            let h = &header[i];
            let field = h.rsplit('.').next().unwrap_or(h);
            !["latency_ms", "started_at", "finished_at", "duration_ms"].contains(&field)
        })
        .collect();
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(keep.iter().map(|&i| &header[i])).unwrap();
    for record in reader.records() {
        let record = record.unwrap();
        out.write_record(keep.iter().map(|&i| &record[i])).unwrap();
    }
    String::from_utf8(out.into_inner().unwrap()).unwrap()
}

/// One chat step, all units in one batch.
const ONE_BATCH: &str = r#"
[input]
path = "items.jsonl"

[providers.llm]
base_url = "{MOCK}"
api_key_env = "LLM_KEY"
mode = "batch"
batch = { size = 100, window = "100ms", poll = "100ms" }

[[steps]]
name = "ask"
kind = "chat"
provider = "llm"
model = "m"
messages = [{ role = "user", content = "{{ item.q }}" }]
"#;

fn status_json(s: &Scratch) -> Value {
    let output = run(s, &["status", "--json"]);
    json_stdout(&output)
}

#[test]
fn a_kill_9_between_submission_and_completion_submits_nothing_twice() {
    // Generous on a loaded machine: the 8 units' requests reach the batcher
    // within its 1 s window (one batch), and the 6 s batch outlasts polling
    // the store with `sluice status` until the batch is in it, then the kill.
    let one_batch = ONE_BATCH.replace("window = \"100ms\"", "window = \"1s\"");
    for api in ["openai", "anthropic"] {
        let mock = start_mock(&["--batch-delay-ms", "6000"]);
        let s = Scratch::new();
        items(&s, 8);
        let job = s.job(&one_batch, Some(&mock), None);
        let set = format!("providers.llm.api={api}");
        let args = ["run", job.to_str().unwrap(), "--set", &set];
        let mut child = Command::new(bin())
            .current_dir(s.dir.path())
            .args(args)
            .env("SLUICE_STORE", s.store())
            .env("SLUICE_PROGRESS_INTERVAL", "0")
            .env("LLM_KEY", KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill once the batch is at the provider and its id is stored.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "{api}: the batch was never stored"
            );
            if s.store().exists() {
                let st = status_json(&s);
                if st["batches"][0]["id"].is_string() {
                    assert_eq!(st["batches"][0]["requests"], 8);
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let before = mock.batches();
        assert_eq!(before["batches_created"], 1, "{api}: {before}");
        assert_eq!(
            before["succeeded"], 0,
            "{api}: killed before the batch ended"
        );

        let output = run(&s, &args);
        assert_eq!(output.status.code(), Some(0), "{api}: {}", stderr(&output));
        let after = mock.batches();
        assert_eq!(
            after["batches_created"], 1,
            "{api}: submitted again: {after}"
        );
        assert_eq!(
            (&after["requests"], &after["repeated"]),
            (&8.into(), &0.into())
        );
        let st = status_json(&s);
        assert_eq!(st["counts"]["done"], 8, "{st}");
        let batch = &st["batches"][0];
        assert!(
            matches!(batch["state"].as_str(), Some("completed" | "ended")),
            "{batch}"
        );
        assert_eq!(
            (&batch["succeeded"], &batch["collected"]),
            (&8.into(), &true.into())
        );
        let text = run(&s, &["status"]);
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains("8 requests · 8 succeeded · 0 errored · 0 expired"),
            "{text}"
        );
    }
}

#[test]
fn expired_batch_requests_are_retried_in_a_new_batch_or_live() {
    for api in ["openai", "anthropic"] {
        let mock = start_mock(&[
            "--batch-delay-ms",
            "50",
            "--batch-expire-rate",
            "0.4",
            "--seed",
            "4",
        ]);
        let s = Scratch::new();
        items(&s, 12);
        let job = s.job(ONE_BATCH, Some(&mock), None);
        let set = format!("providers.llm.api={api}");
        let output = run(&s, &["run", job.to_str().unwrap(), "--set", &set]);
        assert_eq!(output.status.code(), Some(0), "{api}: {}", stderr(&output));
        let b = mock.batches();
        let expired = u(&b["expired"]);
        assert!(expired > 0, "{api}: nothing expired: {b}");
        assert!(u(&b["batches_created"]) > 1, "{b}");
        // Every expired request went into a later batch, none answered twice.
        assert_eq!(u(&b["repeated"]), expired, "{b}");
        assert_eq!(
            (u(&b["succeeded"]), u(&b["answered_twice"])),
            (12, 0),
            "{b}"
        );
        assert_eq!(u(&mock.stats()["requests"]), 0);
        let st = status_json(&s);
        assert_eq!(st["counts"]["done"], 12);

        // With retry = "live" they are sent as live calls instead.
        let mock = start_mock(&[
            "--batch-delay-ms",
            "50",
            "--batch-expire-rate",
            "0.4",
            "--seed",
            "4",
        ]);
        let s = Scratch::new();
        items(&s, 12);
        let text = ONE_BATCH.replace("poll = \"100ms\"", "poll = \"100ms\", retry = \"live\"");
        let job = s.job(&text, Some(&mock), None);
        let output = run(&s, &["run", job.to_str().unwrap(), "--set", &set]);
        assert_eq!(output.status.code(), Some(0), "{api}: {}", stderr(&output));
        let b = mock.batches();
        assert_eq!(b["batches_created"], 1, "{b}");
        assert_eq!(
            u(&mock.stats()["ok"]),
            u(&b["expired"]),
            "one live call per expiry"
        );
    }
}

#[test]
fn auto_batches_when_the_deadline_allows_and_goes_live_when_not() {
    let mock = start_mock(&["--batch-delay-ms", "50"]);
    let s = Scratch::new();
    items(&s, 4);
    let text = ONE_BATCH.replace("mode = \"batch\"", "mode = \"auto\"\ndeadline = \"48h\"");
    let job = s.job(&text, Some(&mock), None);
    let plan = |sets: &[&str]| {
        let mut args = vec!["plan", job.to_str().unwrap(), "--json"];
        for set in sets {
            args.extend(["--set", set]);
        }
        json_stdout(&run(&s, &args))["providers"][0]["offload"].clone()
    };
    let batch = plan(&[]);
    assert_eq!(
        (&batch["mode"], &batch["configured"]),
        (&"batch".into(), &"auto".into())
    );
    assert!(
        batch["reason"]
            .as_str()
            .unwrap()
            .contains("48h deadline leaves"),
        "{batch}"
    );
    let live = plan(&["providers.llm.deadline=1h"]);
    assert_eq!(live["mode"], "live", "{live}");
    // Live would take 4 days at 1 a day: the batch API is faster anyway.
    let slow = plan(&["providers.llm.deadline=1h", "providers.llm.rpd=1"]);
    assert_eq!(slow["mode"], "batch", "{slow}");
    assert!(
        slow["reason"]
            .as_str()
            .unwrap()
            .contains("longer than the batch API"),
        "{slow}"
    );

    let output = run(&s, &["run", job.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("auto chose batch: the 48h deadline"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        (
            mock.batches()["requests"].clone(),
            u(&mock.stats()["requests"])
        ),
        (4.into(), 0)
    );
    let st = status_json(&s);
    assert_eq!(st["run"]["settings"]["offload"]["llm"]["mode"], "batch");

    let output = run(
        &s,
        &[
            "run",
            job.to_str().unwrap(),
            "--fresh",
            "--set",
            "providers.llm.deadline=1h",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("auto chose live"),
        "{}",
        stderr(&output)
    );
    assert_eq!(u(&mock.stats()["requests"]), 4, "live this time");
    assert_eq!(mock.batches()["requests"], 4, "no new batch");
}

#[test]
fn streamed_answers_record_time_to_first_token_and_tokens_per_second() {
    let mut texts = Vec::new();
    for api in ["openai", "anthropic"] {
        let mock = start_mock(&["--latency-ms", "30", "--stream-interval-ms", "2"]);
        let s = Scratch::new();
        items(&s, 3);
        let text = JOB
            .replace(
                "name = \"ask\"\nkind = \"chat\"",
                "name = \"ask\"\nkind = \"chat\"\nstream = true",
            )
            .replace(
                "kind = \"conversation\"",
                "kind = \"conversation\"\nstream = true",
            );
        let job = s.job(&text, Some(&mock), None);
        let output = run_path(&s, &job, api, "live", &[]);
        assert_eq!(output.status.code(), Some(0), "{api}: {}", stderr(&output));
        let results = read_jsonl(&s.path("results.jsonl"));
        for r in &results {
            let ask = &r["steps"]["ask"];
            // The mock waits 30 ms before its first event.
            assert!(u(&ask["ttft_ms"]) >= 30, "{api}: {ask}");
            assert!(
                ask["tokens_per_s"].as_f64().is_some_and(|t| t > 0.0),
                "{ask}"
            );
            assert_eq!(ask["usage"]["completion_tokens"], 16);
            let talk = &r["steps"]["talk"];
            assert!(u(&talk["ttft_ms"]) >= 30, "{talk}");
            for turn in talk["turns"].as_array().unwrap() {
                assert!(u(&turn["ttft_ms"]) >= 30, "{turn}");
            }
        }
        texts.push(
            results
                .iter()
                .map(|r| r["steps"]["ask"]["text"].clone())
                .collect::<Vec<_>>(),
        );
        let csv = s.path("r.csv");
        let exported = run(&s, &["export", "paths-1", "--out", csv.to_str().unwrap()]);
        assert_eq!(exported.status.code(), Some(0));
        let csv = std::fs::read_to_string(csv).unwrap();
        assert!(
            csv.lines()
                .next()
                .unwrap()
                .contains("ask.status,ask.ttft_ms,ask.tokens_per_s,ask.prompt_tokens,ask.completion_tokens,ask.latency_ms,ask.started_at,ask.finished_at,ask.duration_ms,talk.text"),
            "{csv}"
        );
    }
    // Streamed, the answers are the same in both dialects.
    assert_eq!(texts[0], texts[1]);
}

#[test]
fn anthropic_overloads_and_rate_limits_are_retried() {
    let mock = start_mock(&["--fail-rate", "0.3", "--seed", "2"]);
    let s = Scratch::new();
    items(&s, 10);
    let job = s.job(JOB, Some(&mock), None);
    let output = run_path(&s, &job, "anthropic", "live", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stats = mock.stats();
    assert!(u(&stats["server_errors"]) > 0, "{stats}");
    assert_eq!(u(&stats["ok"]), 30);
    assert_eq!(status_json(&s)["counts"]["done"], 10);
}

#[test]
fn dialect_and_mode_rules_are_checked_before_anything_is_sent() {
    let mock = start_mock(&[]);
    let s = Scratch::new();
    items(&s, 2);
    let embed = ONE_BATCH
        .replace("mode = \"batch\"", "api = \"anthropic\"")
        .replace(
            "kind = \"chat\"\nprovider = \"llm\"\nmodel = \"m\"\nmessages = [{ role = \"user\", content = \"{{ item.q }}\" }]",
            "kind = \"embed\"\nprovider = \"llm\"\nmodel = \"m\"\ninput = \"{{ item.q }}\"",
        );
    let job = s.job(&embed, Some(&mock), None);
    let output = run(&s, &["run", job.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains(
            "job.toml:14:12: step \"ask\": embed steps need an OpenAI-compatible provider"
        ),
        "{err}"
    );
    let streamed = ONE_BATCH.replace("model = \"m\"", "model = \"m\"\nstream = true");
    let job = s.job(&streamed, Some(&mock), None);
    let output = run(&s, &["plan", job.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("stream = true reads a live answer"),
        "{}",
        stderr(&output)
    );
    assert_eq!(u(&mock.stats()["requests"]), 0);
}

#[test]
fn embeddings_go_through_the_openai_batch_api_with_the_live_vectors() {
    let text = ONE_BATCH.replace(
        "kind = \"chat\"\nprovider = \"llm\"\nmodel = \"m\"\nmessages = [{ role = \"user\", content = \"{{ item.q }}\" }]",
        "kind = \"embed\"\nprovider = \"llm\"\nmodel = \"e\"\ninput = [\"{{ item.q }}\", \"{{ item.id }}\"]\nparams = { dimensions = 4 }",
    );
    let mut vectors = Vec::new();
    for mode in ["batch", "live"] {
        let mock = start_mock(&["--batch-delay-ms", "50"]);
        let s = Scratch::new();
        items(&s, 5);
        let job = s.job(&text, Some(&mock), None);
        let set = format!("providers.llm.mode={mode}");
        let out = s.path("out.jsonl");
        let output = run(
            &s,
            &[
                "run",
                job.to_str().unwrap(),
                "--set",
                &set,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(output.status.code(), Some(0), "{mode}: {}", stderr(&output));
        let batches = mock.batches();
        assert_eq!(
            batches["requests"],
            if mode == "batch" { 5 } else { 0 },
            "{batches}"
        );
        let results = read_jsonl(&out);
        for r in &results {
            let json = &r["steps"]["ask"]["json"];
            assert_eq!(json.as_array().map(Vec::len), Some(2), "{r}");
            assert_eq!(json[0].as_array().map(Vec::len), Some(4), "{r}");
        }
        vectors.push(without_latency_jsonl(
            &std::fs::read_to_string(&out).unwrap(),
        ));
    }
    assert_eq!(vectors[0], vectors[1]);
}

#[test]
fn plan_counts_the_max_tokens_an_anthropic_call_is_sent_with() {
    let s = Scratch::new();
    items(&s, 4);
    let job = s.job(&JOB.replace("{MOCK}", "http://127.0.0.1:9/v1"), None, None);
    let steps = |api: &str| {
        let set = format!("providers.llm.api={api}");
        let args = ["plan", job.to_str().unwrap(), "--json", "--set", &set];
        let plan = json_stdout(&run(&s, &args));
        let tokens = |i: usize| u(&plan["steps"][i]["tokens"]);
        (tokens(0), tokens(1))
    };
    let (openai_ask, openai_talk) = steps("openai");
    let (anthropic_ask, anthropic_talk) = steps("anthropic");
    // "ask" sets no max_tokens: Anthropic requires one, sluice sends 1024 where
    // the OpenAI estimate reserves 256 — 768 more for each of the 4 calls.
    assert_eq!(anthropic_ask, openai_ask + 4 * 768);
    // "talk" sets max_tokens = 8: the same on both.
    assert_eq!(anthropic_talk, openai_talk);
}

#[test]
fn the_progress_line_counts_requests_waiting_in_a_batch() {
    let mock = start_mock(&["--batch-delay-ms", "1500"]);
    let s = Scratch::new();
    items(&s, 3);
    let job = s.job(ONE_BATCH, Some(&mock), None);
    let output = s
        .sluice(&["run", job.to_str().unwrap()])
        .env("LLM_KEY", KEY)
        .env("SLUICE_PROGRESS_INTERVAL", "0.1")
        .output()
        .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    // While the batch is processed at the provider, the 3 requests wait in it.
    assert!(
        err.contains("0 done · 0 failed · 0 in flight · 3 in batch"),
        "{err}"
    );
    // An answered request leaves the count before its unit counts as done.
    let both = |l: &&str| l.contains("3 done") && l.contains("in batch");
    assert!(!err.lines().any(|l| both(&l)), "{err}");
}
