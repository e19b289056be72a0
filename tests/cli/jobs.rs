//! Job files: step kinds, inputs, fan-out, conversations, matrix, validation,
//! per-step resume — against `sluice mock` and a fake GPU host / CMS.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::fakehost::{Behaviour, FakeHost};
use crate::util::*;

impl Scratch {
    /// Writes `job.toml` with `{{MOCK}}` and `{{HOST}}` replaced.
    pub(crate) fn job(&self, text: &str, mock: Option<&Mock>, host: Option<&FakeHost>) -> PathBuf {
        let mut text = text.to_string();
        if let Some(m) = mock {
            text = text.replace("{MOCK}", &m.url("/v1"));
        }
        if let Some(h) = host {
            text = text.replace("{HOST}", &h.url(""));
        }
        let path = self.path("job.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn units(s: &Scratch, out: &str) -> Vec<Value> {
    read_jsonl(&s.path(out))
}

const EVAL: &str = r#"
name = "evalseq"

[input]
path = "prompts.jsonl"

[matrix]
model = ["small", "large"]
run = [1, 2]

[providers.local]
base_url = "{MOCK}"
concurrency = 8

[[steps]]
name = "ask"
kind = "conversation"
provider = "local"
model = "{{ matrix.model }}"
system = "You answer briefly."
turns = ["{{ item.q1 }}", "{{ item.q2 }}", "Considering {{ answers[0] }}: {{ item.q3 }}"]
params = { max_tokens = 12 }

[[steps]]
name = "judge"
kind = "chat"
provider = "local"
model = "judge"
messages = [{ role = "user", content = "Rate this answer from 1 to 5: {{ steps.ask.text }}" }]
params = { max_tokens = 5 }

[output]
path = "results.jsonl"
"#;

fn eval_inputs(s: &Scratch) {
    let lines: Vec<String> = (1..=2)
        .map(|i| {
            json!({"id": format!("seq{i}"), "q1": format!("What is {i} + {i}?"), "q2": "And doubled?", "q3": "Explain briefly."}).to_string()
        })
        .collect();
    s.write_lines("prompts.jsonl", &lines);
}

#[test]
fn conversations_keep_their_history_across_a_model_matrix() {
    let mock = Mock::start(&["--max-concurrency", "8"]);
    let s = Scratch::new();
    eval_inputs(&s);
    let job = s.job(EVAL, Some(&mock), None);
    let output = s
        .sluice(&["run", job.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let results = units(&s, "results.jsonl");
    assert_eq!(results.len(), 8, "2 items × 2 models × 2 runs");
    let ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids[0], "seq1#model=small,run=1");
    assert_eq!(ids[3], "seq1#model=large,run=2");
    assert_eq!(ids[4], "seq2#model=small,run=1");
    for r in &results {
        assert_eq!(r["status"], "done", "{r}");
        let turns = r["steps"]["ask"]["turns"].as_array().unwrap();
        assert_eq!(turns.len(), 3);
        // The third prompt quotes the first answer.
        let first_answer = turns[0]["answer"].as_str().unwrap();
        assert!(turns[2]["prompt"].as_str().unwrap().contains(first_answer));
        // Each turn's request carries the whole history, so its prompt grows.
        let prompt_tokens: Vec<u64> = turns
            .iter()
            .map(|t| u(&t["usage"]["prompt_tokens"]))
            .collect();
        assert!(
            prompt_tokens[0] < prompt_tokens[1] && prompt_tokens[1] < prompt_tokens[2],
            "{prompt_tokens:?}"
        );
        assert!(r["steps"]["judge"]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty()));
        assert_eq!(
            r["matrix"]["model"],
            r["id"]
                .as_str()
                .unwrap()
                .split("model=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
        );
    }
    let stats = mock.stats();
    assert_eq!(stats["ok"], 8 * 4, "3 turns + 1 judge call per unit");
    assert_eq!(
        stats["rate_limited"], 0,
        "provider concurrency 8 held: {stats}"
    );
}

#[test]
fn set_overrides_the_matrix_and_plan_counts_units_and_calls() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    eval_inputs(&s);
    let job = s.job(EVAL, Some(&mock), None);
    let plan = s
        .sluice(&[
            "plan",
            job.to_str().unwrap(),
            "--set",
            "matrix.model=a,b,c",
            "--set",
            "matrix.run=1",
        ])
        .output()
        .unwrap();
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("units      6 "), "{text}");
    assert!(text.contains("18 calls"), "3 turns × 6 units: {text}");
    assert_eq!(mock.stats()["requests"], 0, "plan sends nothing");
    let output = s
        .sluice(&[
            "run",
            job.to_str().unwrap(),
            "--set",
            "matrix.model=a,b,c",
            "--set",
            "matrix.run=1",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let results = units(&s, "results.jsonl");
    assert_eq!(results.len(), 6);
    assert_eq!(results[2]["id"], "seq1#model=c,run=1");
}

#[test]
fn validation_errors_name_file_line_and_column_and_send_nothing() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    eval_inputs(&s);
    let broken = EVAL.replace("{{ steps.ask.text }}", "{{ steps.later.text }}");
    let job = s.job(&broken, Some(&mock), None);
    let output = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    let line = broken
        .lines()
        .position(|l| l.contains("steps.later"))
        .unwrap()
        + 1;
    assert!(err.contains(&format!("job.toml:{line}:")), "{err}");
    assert!(err.contains("later"), "{err}");
    assert_eq!(mock.stats()["requests"], 0);
}

#[test]
fn bad_toml_exits_2_naming_the_place_and_sends_nothing() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    eval_inputs(&s);
    // Not a template problem but TOML itself: an unclosed string, a key
    // given twice, a table where a value belongs.
    let broken = [
        EVAL.replacen("model = \"", "model = \"unclosed\n#", 1),
        EVAL.replacen(
            "[[steps]]",
            "concurrency = 1\nconcurrency = 2\n[[steps]]",
            1,
        ),
        format!("{EVAL}\n[[steps]]\nname = {{ = }}\n"),
    ];
    for text in &broken {
        let job = s.job(text, Some(&mock), None);
        for cmd in ["run", "plan"] {
            let output = s.sluice(&[cmd, job.to_str().unwrap()]).output().unwrap();
            let err = stderr(&output);
            assert_eq!(output.status.code(), Some(2), "{cmd}: {err}");
            let line = err
                .split("job.toml:")
                .nth(1)
                .and_then(|rest| rest.split(':').next())
                .and_then(|n| n.parse::<usize>().ok());
            assert!(
                line.is_some_and(|n| n >= 1 && n <= text.lines().count() + 1),
                "{cmd}: no file:line in {err}"
            );
        }
    }
    assert_eq!(mock.stats()["requests"], 0, "nothing was sent");
}

const PIPELINE: &str = r#"
name = "audio"

[input]
glob = "audio/*.wav"

[providers.gpu]
base_url = "{HOST}"
concurrency = 4

[[steps]]
name = "upload"
kind = "http"
provider = "gpu"
path = "/upload"
upload = { file = "{{ item.path }}", fields = { lang = "en" } }

[[steps]]
name = "denoise"
kind = "http"
provider = "gpu"
path = "/stage/denoise"
json = { file = "{{ item.name }}", bytes = "{{ steps.upload.json.bytes }}" }

[[steps]]
name = "scenes"
kind = "command"
command = ["sh", "-c", "printf '[\"a\",\"b\",\"c\"]'"]

[[steps]]
name = "images"
kind = "http"
method = "GET"
url = "{HOST}/image/{{ item.stem }}-{{ each }}"
for_each = "{{ steps.scenes.json }}"
concurrency = 2
save = "file"

[output]
path = "results.jsonl"
dir = "files"
"#;

#[test]
fn a_pipeline_uploads_calls_stages_runs_commands_and_fans_out_in_order() {
    let host = FakeHost::start(Behaviour::default());
    let s = Scratch::new();
    std::fs::create_dir(s.path("audio")).unwrap();
    for (name, size) in [("b.wav", 300), ("a.wav", 100), ("c.wav", 200)] {
        std::fs::write(s.path("audio").join(name), vec![7u8; size]).unwrap();
    }
    let job = s.job(PIPELINE, None, Some(&host));
    let output = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let results = units(&s, "results.jsonl");
    assert_eq!(results.len(), 3);
    // Glob items are sorted by path.
    let names: Vec<&str> = results
        .iter()
        .map(|r| {
            r["steps"]["denoise"]["json"]["input"]["file"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["a.wav", "b.wav", "c.wav"]);
    for (r, size) in results.iter().zip([100, 300, 200]) {
        assert_eq!(r["steps"]["upload"]["json"]["bytes"], size, "{r}");
        assert_eq!(
            r["steps"]["upload"]["json"]["filename"],
            r["steps"]["denoise"]["json"]["input"]["file"]
        );
        // A string that is exactly one `{{ expr }}` keeps the value's type.
        assert_eq!(r["steps"]["denoise"]["json"]["input"]["bytes"], size);
        let images = r["steps"]["images"].as_array().unwrap();
        assert_eq!(images.len(), 3);
        for (k, image) in images.iter().enumerate() {
            let file = PathBuf::from(image["file"].as_str().unwrap());
            let bytes = std::fs::read(&file).unwrap();
            assert!(bytes.starts_with(b"\x89PNG"));
            // Fan-out results keep the list's order.
            let stem = r["steps"]["denoise"]["json"]["input"]["file"]
                .as_str()
                .unwrap()
                .trim_end_matches(".wav");
            assert!(
                bytes.ends_with(format!("{stem}-{}", ["a", "b", "c"][k]).as_bytes()),
                "{file:?}"
            );
            assert!(file.starts_with(s.path("files")), "{file:?}");
        }
    }
    assert_eq!(host.count("/upload"), 3);
    assert_eq!(host.count("/image/"), 9);
}

/// The `name` of each run in the store, sorted.
fn run_names(s: &Scratch) -> Vec<String> {
    let runs = s.sluice(&["runs", "--json"]).output().unwrap();
    assert_eq!(runs.status.code(), Some(0), "{}", stderr(&runs));
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    runs.as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"]["name"].as_str().unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn name_names_a_job_files_new_run_and_a_resume_keeps_its_name() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    eval_inputs(&s);
    let job = s.job(EVAL, Some(&mock), None);
    let job = job.to_str().unwrap();
    let output = s
        .sluice(&["run", job, "--name", "trial-7"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(run_names(&s), ["trial-7"]);
    let sent = u(&mock.stats()["requests"]);
    assert!(sent > 0);
    // The same job again resumes its run, which keeps the name it has.
    let output = s.sluice(&["run", job, "--name", "other"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(run_names(&s), ["trial-7"]);
    assert_eq!(u(&mock.stats()["requests"]), sent);
    // A name that cannot be a path is refused before anything is sent.
    let output = s
        .sluice(&["run", job, "--name", "../x", "--fresh"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--name \"../x\""),
        "{}",
        stderr(&output)
    );
    assert_eq!(u(&mock.stats()["requests"]), sent);
    // A new run takes the name given.
    let output = s
        .sluice(&["run", job, "--name", "second", "--fresh"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(run_names(&s), ["second", "trial-7"]);
}

#[test]
fn a_concurrency_past_the_flags_bound_exits_2_naming_its_place() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    eval_inputs(&s);
    let text = EVAL.replace("concurrency = 8", "concurrency = 1000000");
    let line = text
        .lines()
        .position(|l| l.contains("concurrency = 1000000"))
        .unwrap()
        + 1;
    let job = s.job(&text, Some(&mock), None);
    let job = job.to_str().unwrap();
    let output = s.sluice(&["run", job]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains(&format!("job.toml:{line}:15")), "{err}");
    assert!(
        err.contains("concurrency 1000000 is above") && err.contains("1 to 100000"),
        "{err}"
    );
    // Through --set too.
    let job = s.job(EVAL, Some(&mock), None);
    let output = s
        .sluice(&[
            "run",
            job.to_str().unwrap(),
            "--set",
            "steps.ask.concurrency=1000000",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("1 to 100000"),
        "{}",
        stderr(&output)
    );
    assert_eq!(mock.stats()["requests"], 0);
}
