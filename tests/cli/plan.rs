//! Catching mistakes before paying: `plan` (and `run`, before it sends)
//! renders every unit against the real data; suggestions for unknown keys
//! and request parameters; quick-mode plan; `--limit`, `--show`, `--probe`;
//! the derived unit window and the time estimate.

use std::path::Path;

use serde_json::json;

use crate::util::*;

/// The items of the issue: a CSV whose columns are id, prompt, topic.
fn csv_items(s: &Scratch) {
    std::fs::write(
        s.path("items.csv"),
        "id,prompt,topic\n1,What is 2+2?,math\n2,Name a colour,art\n3,Capital of France?,geo\n",
    )
    .unwrap();
}

fn jsonl_items(s: &Scratch, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            json!({"id": format!("q{i}"), "prompt": format!("question {i}"), "topic": "t"})
                .to_string()
        })
        .collect();
    s.write_lines("items.jsonl", &lines);
}

fn job_text(input: &str, steps: &str) -> String {
    format!(
        "name = \"eval\"\n\n[input]\npath = \"{input}\"\n\n[providers.mock]\n\
         base_url = \"{{MOCK}}\"\nconcurrency = 8\n\n{steps}"
    )
}

fn chat(name: &str, content: &str, extra: &str) -> String {
    format!(
        "[[steps]]\nname = \"{name}\"\nkind = \"chat\"\nprovider = \"mock\"\nmodel = \"m\"\n\
         messages = [{{ role = \"user\", content = \"{content}\" }}]\nparams = {{ max_tokens = 8 }}\n{extra}\n"
    )
}

/// Line and column (1-based) of `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let (i, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the job"));
    (
        i + 1,
        line[..line.find(needle).unwrap()].chars().count() + 1,
    )
}

/// `plan` and `run` both refuse with exit 2, say `fragments`, and nothing
/// reaches the mock.
fn refused(s: &Scratch, mock: &Mock, job: &Path, fragments: &[&str]) -> String {
    let mut text = String::new();
    for verb in ["plan", "run"] {
        let out = s.sluice(&[verb, job.to_str().unwrap()]).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{verb}: {err}");
        for f in fragments {
            assert!(err.contains(f), "{verb}: {f:?} not in:\n{err}");
        }
        text = err;
    }
    assert_eq!(mock.stats()["requests"], 0, "nothing was sent");
    text
}

#[test]
fn a_field_the_csv_does_not_have_is_named_with_the_columns_there_are() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    csv_items(&s);
    let text = job_text("items.csv", &chat("answer", "Q: {{ item.question }}", ""));
    let job = s.job(&text, Some(&mock), None);
    let (line, column) = position(&text, "question }}");
    let err = refused(
        &s,
        &mock,
        &job,
        &[
            &format!("job.toml:{line}:{column}: steps.answer.messages[0].content"),
            "item has no field `question` (3 of 3 items)",
            "item has: id, prompt, topic",
            "nothing was sent",
        ],
    );
    assert_eq!(err.matches("no field `question`").count(), 1, "once: {err}");
}

#[test]
fn a_typo_in_a_jsonl_field_gets_a_suggestion() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    jsonl_items(&s, 4);
    let text = job_text(
        "items.jsonl",
        &chat("answer", "{{ item.subject }} / {{ item.topc }}", ""),
    );
    let job = s.job(&text, Some(&mock), None);
    refused(
        &s,
        &mock,
        &job,
        &[
            "item has no field `subject` (4 of 4 items); item has: id, prompt, topic",
            "item has no field `topc`; did you mean `topic`? (4 of 4 items)",
        ],
    );
}

#[test]
fn a_grader_after_a_conversation_is_checked_before_any_turn_is_paid_for() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    jsonl_items(&s, 2);
    let steps = "[[steps]]\nname = \"ask\"\nkind = \"conversation\"\nprovider = \"mock\"\n\
                 model = \"m\"\nturns = [\"{{ item.prompt }}\", \"And then?\", \"Sum up {{ answers[0] }}\"]\n\n"
        .to_string()
        + &chat(
            "grade",
            "Grade {{ steps.ask.text }} on {{ item.rubric }} ({{ steps.ask.status }})",
            "response_format = { type = \"json_object\" }",
        );
    let job = s.job(&job_text("items.jsonl", &steps), Some(&mock), None);
    refused(
        &s,
        &mock,
        &job,
        &[
            "steps.grade.messages[0].content: item has no field `rubric` (2 of 2 items)",
            "steps.ask has no field `status`",
            "steps.ask has: json, text, turns, usage",
        ],
    );
}

#[test]
fn an_unknown_filter_is_reported_at_its_position_with_a_suggestion() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    jsonl_items(&s, 2);
    let text = job_text(
        "items.jsonl",
        &chat(
            "answer",
            "{{ item.prompt | shout }} {{ item.topic | uper }}",
            "",
        ),
    );
    let job = s.job(&text, Some(&mock), None);
    let (line, column) = position(&text, "shout");
    refused(
        &s,
        &mock,
        &job,
        &[
            &format!("job.toml:{line}:{column}: steps.answer.messages[0].content: unknown filter `shout`"),
            "filters: abs, ",
        ],
    );
    let text = job_text(
        "items.jsonl",
        &chat("answer", "{{ item.topic | uper }}", ""),
    );
    let job = s.job(&text, Some(&mock), None);
    refused(
        &s,
        &mock,
        &job,
        &["unknown filter `uper`; did you mean `upper`?"],
    );
}

#[test]
fn a_misspelt_key_gets_a_suggestion_and_only_its_kinds_keys() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    jsonl_items(&s, 2);
    let text = job_text(
        "items.jsonl",
        &chat(
            "grade",
            "{{ item.prompt }}",
            "respone_format = { type = \"json_object\" }",
        ),
    );
    let job = s.job(&text, Some(&mock), None);
    let (line, _) = position(&text, "respone_format");
    let err = refused(
        &s,
        &mock,
        &job,
        &[
            &format!("job.toml:{line}:1: step \"grade\": unknown key `respone_format`; did you mean `response_format`?"),
            "chat steps take: name, kind,",
        ],
    );
    for other in ["turns", "command", "upload", "TOML"] {
        assert!(
            !err.contains(other),
            "only the chat keys, not {other:?}: {err}"
        );
    }
}

#[test]
fn a_near_miss_in_params_is_a_warning_with_a_suggestion() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    jsonl_items(&s, 1);
    let text = job_text("items.jsonl", &chat("answer", "{{ item.prompt }}", ""))
        .replace("params = { max_tokens = 8 }", "params = { max_token = 60 }");
    let job = s.job(&text, Some(&mock), None);
    let out = s.sluice(&["plan", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let (line, _) = position(&text, "max_token");
    assert!(
        err.contains(&format!("job.toml:{line}:"))
            && err.contains("warning: step \"answer\": params.max_token"),
        "{err}"
    );
    assert!(err.contains("did you mean `max_tokens`?"), "{err}");
}

#[test]
fn quick_mode_plans_a_jsonl_file_and_names_its_one_bad_line() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let mut lines = chat_lines(500);
    let input = s.write_lines("batch_input.jsonl", &lines);
    let out = s
        .sluice(&[
            "plan",
            input.to_str().unwrap(),
            "--url",
            &mock.chat_url(),
            "--rpm",
            "600",
            "--prices",
            "2.5,10",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("requests   500"), "{text}");
    assert!(text.contains("tokens     ~"), "{text}");
    assert!(text.contains("cost       ~$"), "{text}");
    assert!(
        text.contains("time       ~50.00s (--rpm (600) binds)"),
        "{text}"
    );
    assert!(text.contains("faster"), "{text}");
    // One malformed line: one clear error, not one per line.
    lines[41] = "{\"custom_id\": \"broken\"".into();
    let input = s.write_lines("batch_input.jsonl", &lines);
    let out = s
        .sluice(&["plan", input.to_str().unwrap(), "--url", &mock.chat_url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("batch_input.jsonl:42:"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Without --url: how to plan it, not a TOML error per line.
    let out = s
        .sluice(&["plan", input.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--url"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("TOML"), "{}", stderr(&out));
    assert_eq!(mock.stats()["requests"], 0);
}

#[test]
fn limit_runs_the_first_units_as_a_run_of_their_own() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    jsonl_items(&s, 5);
    let steps = chat("a", "{{ item.prompt }}", "") + &chat("b", "{{ steps.a.text }}", "");
    let text = job_text("items.jsonl", &steps) + "\n[output]\npath = \"results.jsonl\"\n";
    let job = s.job(&text, Some(&mock), None);
    let plan = s
        .sluice(&["plan", job.to_str().unwrap(), "--limit", "2"])
        .output()
        .unwrap();
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan_text.contains("units      2  (the first 2"),
        "{plan_text}"
    );
    assert!(plan_text.contains("as run eval-first2"), "{plan_text}");
    let out = s
        .sluice(&["run", job.to_str().unwrap(), "--limit", "2", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_stdout(&out)["run"], "eval-first2-1");
    assert_eq!(mock.stats()["requests"], 2 * 2, "2 units × 2 steps");
    assert!(
        !s.path("results.jsonl").exists(),
        "a trial never writes [output] path"
    );
    // The full run still sends every unit, the trial's two included.
    let out = s
        .sluice(&["run", job.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_stdout(&out)["run"], "eval-1");
    assert_eq!(mock.stats()["requests"], 4 + 5 * 2);
    assert_eq!(read_jsonl(&s.path("results.jsonl")).len(), 5);
    // Quick mode: the first N lines, in a run named after the file.
    let input = s.write_lines("req.jsonl", &chat_lines(6));
    let out = s
        .run(
            &input,
            &mock.chat_url(),
            &["--limit", "3", "--json", "--out", "trial.jsonl"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_stdout(&out)["run"], "req-first3-1");
    assert_eq!(read_jsonl(&s.path("trial.jsonl")).len(), 3);
    let out = s
        .run(&input, &mock.chat_url(), &["--json", "--out", "all.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(read_jsonl(&s.path("all.jsonl")).len(), 6);
    assert_eq!(mock.stats()["requests"], 14 + 3 + 6);
}

#[test]
fn show_prints_the_first_requests_as_sent_with_secrets_masked() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    jsonl_items(&s, 3);
    let text = job_text(
        "items.jsonl",
        &(chat("a", "Q: {{ item.prompt }}", "") + &chat("b", "Grade {{ steps.a.text }}", "")),
    )
    .replace(
        "concurrency = 8",
        "concurrency = 8\napi_key_env = \"PLAN_TEST_KEY\"",
    );
    let job = s.job(&text, Some(&mock), None);
    let out = s
        .sluice(&["plan", job.to_str().unwrap(), "--show", "2"])
        .env("PLAN_TEST_KEY", "sk-very-secret-123")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("POST {}/chat/completions", mock.url("/v1"))),
        "{text}"
    );
    assert!(text.contains("Authorization: Bearer ****"), "{text}");
    assert!(!text.contains("sk-very-secret"), "{text}");
    assert!(text.contains("\"content\": \"Q: question 0\""), "{text}");
    assert!(text.contains("\"content\": \"Q: question 1\""), "{text}");
    assert!(!text.contains("question 2"), "two units only: {text}");
    assert!(text.contains("Grade ⟨steps.a.text⟩"), "{text}");
    assert_eq!(text.matches("── ").count(), 4, "2 units × 2 steps: {text}");
    assert_eq!(mock.stats()["requests"], 0);
    // Quick mode shows its lines' requests too.
    let input = s.write_lines("req.jsonl", &chat_lines(3));
    let out = s
        .sluice(&[
            "plan",
            input.to_str().unwrap(),
            "--url",
            &mock.chat_url(),
            "--show",
            "1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("── r-00000 · request"), "{text}");
    assert!(text.contains("question number 0"), "{text}");
    assert!(!text.contains("question number 1"), "{text}");
}

#[test]
fn plan_names_the_derived_window_and_what_binds_with_a_time_estimate() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    jsonl_items(&s, 40);
    let steps: String = (0..4)
        .map(|k| chat(&format!("s{k}"), "{{ item.prompt }}", "concurrency = 5"))
        .collect();
    let text = job_text("items.jsonl", &steps).replace(
        "concurrency = 8",
        "concurrency = 200\nassume_latency = \"50ms\"",
    );
    let job = s.job(&text, Some(&mock), None);
    let out = s.sluice(&["plan", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("window     20 units at once (derived: 20 (provider mock: its steps' caps)"),
        "{text}"
    );
    // 40 calls × 50 ms ÷ 5 per step = 0.4 s, plus 3 × 50 ms to fill the pipeline.
    assert!(text.contains("time       ~0.55s (step s"), "{text}");
    assert!(
        text.contains("concurrency (5) binds) · one after another ~8.00s · 14.5× faster"),
        "{text}"
    );
    assert!(
        text.contains("latency    0.05s per call for every step (assume_latency of provider mock)"),
        "{text}"
    );
    // A set concurrency is the window, and says so.
    let out = s
        .sluice(&[
            "plan",
            job.to_str().unwrap(),
            "--set",
            "concurrency=2",
            "--json",
        ])
        .output()
        .unwrap();
    let plan = json_stdout(&out);
    assert_eq!(plan["window"]["units"], 2);
    assert_eq!(plan["window"]["derived"], false);
    assert!(
        plan["estimate"]["binding"]
            .as_str()
            .unwrap()
            .starts_with("unit window (2 units)"),
        "{plan}"
    );
}

#[test]
fn a_url_input_is_planned_from_its_first_page_and_says_so() {
    let s = Scratch::new();
    let cms = s.path("cms");
    std::fs::create_dir_all(&cms).unwrap();
    let prompts: Vec<_> = (0..25)
        .map(|i| json!({"id": i, "prompt": format!("p{i}")}))
        .collect();
    std::fs::write(
        cms.join("prompts.json"),
        json!({"data": prompts}).to_string(),
    )
    .unwrap();
    let mock = Mock::start(&["--cms", cms.to_str().unwrap()]);
    let text = format!(
        "[input]\nurl = \"{}\"\npointer = \"/data\"\npage_size = 10\n\n[providers.mock]\nbase_url = \"{}\"\n\n{}",
        mock.url("/items/prompts"),
        mock.url("/v1"),
        chat("answer", "{{ item.prompt }}", "")
    );
    let job = s.path("job.toml");
    std::fs::write(&job, text).unwrap();
    let out = s.sluice(&["plan", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("items      10  (the url input's first page only"),
        "{text}"
    );
    assert!(text.contains("10 calls"), "{text}");
    let stats = mock.stats();
    assert_eq!(
        stats["routes"]["/items/prompts"]["statuses"]["200"], 1,
        "one page: {stats}"
    );
}

#[test]
fn probe_measures_latency_with_a_few_real_calls() {
    let mock = Mock::start(&["--latency-ms", "200"]);
    let s = Scratch::new();
    jsonl_items(&s, 10);
    let steps = chat("a", "{{ item.prompt }}", "") + &chat("b", "{{ steps.a.text }}", "");
    let job = s.job(&job_text("items.jsonl", &steps), Some(&mock), None);
    let out = s
        .sluice(&["plan", job.to_str().unwrap(), "--probe", "2", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan = json_stdout(&out);
    let latencies = plan["estimate"]["latencies"].as_array().unwrap();
    assert_eq!(latencies[0]["source"], "probe (2 calls)", "{plan}");
    assert_eq!(
        latencies[1]["source"], "probe (2 calls)",
        "b borrows a's provider: {plan}"
    );
    let measured = latencies[0]["seconds"].as_f64().unwrap();
    assert!(measured >= 0.2, "at least the mock's latency: {measured}");
    assert_eq!(
        mock.stats()["requests"],
        2,
        "only step a is sendable without an answer"
    );
}

/// The whole text of a plan, as a snapshot: what a person reads.
#[test]
fn plan_text_snapshot() {
    let s = Scratch::new();
    jsonl_items(&s, 40);
    let steps = chat("answer", "Answer: {{ item.prompt }}", "concurrency = 10")
        + &chat(
            "grade",
            "Grade: {{ steps.answer.text }}",
            "concurrency = 10",
        );
    let text = job_text("items.jsonl", &steps)
        .replace("{MOCK}", "http://127.0.0.1:9/v1")
        .replace(
            "concurrency = 8",
            "rpm = 120\nassume_latency = \"1s\"\nprices = { \"*\" = { input = 1.0, output = 4.0 } }",
        );
    std::fs::write(s.path("job.toml"), text).unwrap();
    let out = s.sluice(&["plan", "job.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected = "\
job        eval (job.toml)
items      40
units      40  (items × combinations)
window     20 units at once (derived: 20 (provider mock: its steps' caps); grows at run time to what a provider's rate needs; set concurrency to fix it)
steps
  answer           chat          mock         40 calls · ~760 tokens
  grade            chat          mock         40 calls · ≥ 320 tokens
cost       ~$0.0030 (completions at their max_tokens; a ceiling)
providers  (lower bound on wall time from each provider's limits)
  mock             80 calls · 1,080 tokens · ~$0.0030 → ≥ 40.00s (rpm binds)
time       ~41.00s (provider mock rpm (120) binds) · one after another ~1m20s · 2.0× faster
latency    1.00s per call for every step (assume_latency of provider mock)
limits     provider mock rpm (120) 40.00s · step answer concurrency (10) 4.00s · step grade concurrency (10) 4.00s · unit window (20 units) 4.00s
";
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}
