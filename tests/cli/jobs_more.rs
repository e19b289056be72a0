//! Job files, continued: input kinds, failures that stay with their unit,
//! retry of one step, and per-step resume after kill -9.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fakehost::{Behaviour, FakeHost};
use crate::util::*;

/// A job that prints one field of each item through a command step.
fn echo_job(input: &str) -> String {
    format!(
        r#"
{input}

[[steps]]
name = "show"
kind = "command"
command = ["printf", "%s|%s", "{{{{ index }}}}", "{{{{ item.name }}}}"]

[output]
path = "results.jsonl"
"#
    )
}

fn shown(s: &Scratch) -> Vec<String> {
    read_jsonl(&s.path("results.jsonl"))
        .iter()
        .map(|r| {
            r["steps"]["show"]["text"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[test]
fn csv_json_stdin_and_paged_url_inputs_stream_in_order() {
    let s = Scratch::new();
    std::fs::write(s.path("in.csv"), "name,note\n\"Smith, Ann\",x\nBo,y\n").unwrap();
    let job = s.job(&echo_job("[input]\npath = \"in.csv\""), None, None);
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(shown(&s), ["0|Smith, Ann", "1|Bo"]);

    let s = Scratch::new();
    std::fs::write(
        s.path("in.json"),
        r#"[{"name": "a"}, {"name": "b"}, {"name": "c"}]"#,
    )
    .unwrap();
    let job = s.job(&echo_job("[input]\npath = \"in.json\""), None, None);
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(shown(&s), ["0|a", "1|b", "2|c"]);

    let s = Scratch::new();
    let job = s.job(&echo_job("[input]\npath = \"-\""), None, None);
    let out = s
        .sluice(&["run", job.to_str().unwrap()])
        .write_stdin("{\"name\":\"x\"}\n{\"name\":\"y\"}\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(shown(&s), ["0|x", "1|y"]);

    // A CMS: pages of 2 behind a bearer token read from the environment.
    let items: Vec<_> = (0..5)
        .map(|i| json!({"id": i, "name": format!("p{i}")}))
        .collect();
    let host = FakeHost::start(Behaviour {
        items,
        token: Some("cms-secret".into()),
        ..Default::default()
    });
    let s = Scratch::new();
    let input = format!(
        "env = [\"CMS_TOKEN\"]\n[input]\nurl = \"{}\"\npointer = \"/data\"\npage_size = 2\nheaders = {{ Authorization = \"Bearer {{{{ env.CMS_TOKEN }}}}\" }}",
        host.url("/items")
    );
    let job = s.job(&echo_job(&input), None, None);
    let out = s
        .sluice(&["run", job.to_str().unwrap()])
        .env("CMS_TOKEN", "cms-secret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(shown(&s), ["0|p0", "1|p1", "2|p2", "3|p3", "4|p4"]);
    assert_eq!(host.count("/items"), 3, "pages of 2, 2 and 1");
}

const STAGES: &str = r#"
[input]
path = "in.jsonl"

[providers.gpu]
base_url = "{HOST}"
retries = { max = 0 }

[[steps]]
name = "prepare"
kind = "http"
provider = "gpu"
path = "/stage/prepare"
json = { name = "{{ item.name }}" }

[[steps]]
name = "transcribe"
kind = "http"
provider = "gpu"
path = "/stage/transcribe"
json = { from = "{{ steps.prepare.json.input.name }}", note = "{{ item.note }}" }

[output]
path = "results.jsonl"
"#;

#[test]
fn a_failed_step_fails_only_its_unit_and_retry_reruns_only_that_step() {
    // Every 4th /stage request fails with a 500; retries are off.
    let host = FakeHost::start(Behaviour {
        fail_every: 4,
        ..Default::default()
    });
    let s = Scratch::new();
    let mut lines: Vec<String> = (0..10)
        .map(|i| json!({"id": format!("u{i}"), "name": format!("n{i}"), "note": "ok"}).to_string())
        .collect();
    // One item lacks `note`: its second step cannot render, which is found
    // before anything is sent.
    lines[9] = json!({"id": "u9", "name": "n9"}).to_string();
    s.write_lines("in.jsonl", &lines);
    let job = s.job(
        &STAGES.replace("\n[input]", "concurrency = 1\n[input]"),
        None,
        Some(&host),
    );
    let refused = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("item has no field `note` (1 of 10 items)"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(host.count("/stage"), 0, "nothing was sent");
    lines[9] = json!({"id": "u9", "name": "n9", "note": "ok"}).to_string();
    s.write_lines("in.jsonl", &lines);
    let first = s
        .sluice(&["run", job.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let results = read_jsonl(&s.path("results.jsonl"));
    assert_eq!(results.len(), 10);
    let failed: Vec<&serde_json::Value> =
        results.iter().filter(|r| r["status"] == "failed").collect();
    assert!(failed.len() >= 2, "{failed:?}");
    for r in &failed {
        let message = r["error"]["message"].as_str().unwrap();
        let code = r["error"]["code"].as_str().unwrap();
        assert_eq!(code, "server_error", "{r}");
        assert!(
            message.starts_with("step ") && message.contains("HTTP 500"),
            "{message}"
        );
    }
    let done = results.iter().filter(|r| r["status"] == "done").count();
    assert_eq!(done + failed.len(), 10, "every unit ends done or failed");
    let prepared_before = host.count("/stage/prepare");

    // Retry only transcribe's failures: prepare is not sent again for them.
    let run = json_stdout(&first)["run"].as_str().unwrap().to_string();
    let retry = s
        .sluice(&["retry", &run, "--step", "transcribe", "--json"])
        .output()
        .unwrap();
    let after = read_jsonl(&s.path("results.jsonl"));
    let still_failed: Vec<_> = after
        .iter()
        .filter(|r| r["status"] == "failed")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert!(retry.status.code() == Some(1) || retry.status.code() == Some(0));
    assert!(still_failed.len() < failed.len(), "{still_failed:?}");
    assert_eq!(
        host.count("/stage/prepare"),
        prepared_before,
        "prepare outputs were reused"
    );
}

/// The units of a run recorded in the SQLite store at `db`: those with
/// `step` done, and those finished. `None` while the store is not there yet.
fn recorded(db: &Path, step: &str) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    // Never creates the file under the run; only reads (and may recover the
    // WAL a killed run left, which reading needs).
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(db, flags).ok()?;
    conn.busy_timeout(Duration::from_secs(10)).ok()?;
    let ids = |sql: &str, arg: &[&dyn rusqlite::ToSql]| -> Option<BTreeSet<String>> {
        let mut stmt = conn.prepare(sql).ok()?;
        let rows = stmt.query_map(arg, |r| r.get::<_, String>(0)).ok()?;
        rows.collect::<Result<_, _>>().ok()
    };
    let stepped = ids(
        "SELECT unit_id FROM steps WHERE step = ?1 AND status = 'done'",
        &[&step],
    )?;
    let finished = ids("SELECT item_id FROM items WHERE status = 'done'", &[])?;
    Some((stepped, finished))
}

#[test]
fn kill_9_mid_pipeline_then_rerun_resumes_each_unit_at_its_next_step() {
    // 1 s a summary: the units killed between their steps stay there long
    // enough to be seen, whatever the machine's load.
    let mock = Mock::start(&["--latency-ms", "1000"]);
    let host = FakeHost::start(Behaviour::default());
    let s = Scratch::new();
    let n = 60;
    let lines: Vec<String> = (0..n)
        .map(|i| json!({"id": format!("k{i}"), "name": format!("n{i}")}).to_string())
        .collect();
    s.write_lines("in.jsonl", &lines);
    let text = r#"
concurrency = 20
[input]
path = "in.jsonl"

[providers.gpu]
base_url = "{HOST}"

[providers.llm]
base_url = "{MOCK}"

[[steps]]
name = "prepare"
kind = "http"
provider = "gpu"
path = "/stage/prepare"
json = { name = "{{ item.name }}" }

[[steps]]
name = "summarise"
kind = "chat"
provider = "llm"
model = "m"
messages = [{ role = "user", content = "Summarise {{ steps.prepare.json.input.name }}" }]

[output]
path = "results.jsonl"
"#;
    let job = s.job(text, Some(&mock), Some(&host));
    let mut child = Command::new(bin())
        .current_dir(s.dir.path())
        .args(["run", job.to_str().unwrap()])
        .env("SLUICE_STORE", s.store())
        .env("SLUICE_PROGRESS_INTERVAL", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once some units are finished and others are recorded between
    // their steps (prepare stored, summarise not): what a resume must
    // continue from. Waiting on the store, not on time.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "no unit was ever seen between its steps after others had finished"
        );
        if let Some((prepared, finished)) = recorded(&s.store(), "prepare") {
            if finished.len() >= 10 && prepared.difference(&finished).count() >= 5 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (prepared, finished) = recorded(&s.store(), "prepare").unwrap();
    let between: Vec<&String> = prepared.difference(&finished).collect();
    assert!(
        !between.is_empty() && finished.len() < n,
        "the kill came after the units between steps finished: {} of {n} done",
        finished.len()
    );

    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let results = read_jsonl(&s.path("results.jsonl"));
    assert_eq!(results.len(), n);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["id"], format!("k{i}"));
        assert_eq!(r["status"], "done");
    }
    // A unit whose first step was recorded before the kill never repeated
    // it; only those in flight (or answered but not yet committed) at the
    // kill were sent again, once.
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for (_, path, body) in host.seen.lock().unwrap().iter() {
        if path.starts_with("/stage/prepare") {
            let body: serde_json::Value = serde_json::from_slice(body).unwrap();
            let unit = body["name"].as_str().unwrap().replacen('n', "k", 1);
            *sent.entry(unit).or_default() += 1;
        }
    }
    for i in 0..n {
        let unit = format!("k{i}");
        let times = sent.get(&unit).copied().unwrap_or(0);
        if prepared.contains(&unit) {
            assert_eq!(times, 1, "{unit} was prepared before the kill");
        } else {
            assert!((1..=2).contains(&times), "{unit} prepared {times} times");
        }
    }
}

#[test]
fn embed_steps_return_vectors_and_csv_export_flattens_steps() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    s.write_lines(
        "in.jsonl",
        &[json!({"id": "d1", "title": "Rivers", "body": "Water flows."}).to_string()],
    );
    let text = r#"
[input]
path = "in.jsonl"

[providers.local]
base_url = "{MOCK}"

[[steps]]
name = "one"
kind = "embed"
provider = "local"
model = "e"
input = "{{ item.title }}"

[[steps]]
name = "both"
kind = "embed"
provider = "local"
model = "e"
input = ["{{ item.title }}", "{{ item.body }}"]
params = { dimensions = 4 }
"#;
    let job = s.job(text, Some(&mock), None);
    let out = s
        .sluice(&["run", job.to_str().unwrap(), "--out", "r.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = &read_jsonl(&s.path("r.jsonl"))[0];
    let one = r["steps"]["one"]["json"].as_array().unwrap();
    assert_eq!(
        one.len(),
        8,
        "a single input gives one vector (mock default 8 dims)"
    );
    assert!(one[0].is_number());
    let both = r["steps"]["both"]["json"].as_array().unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(both[1].as_array().unwrap().len(), 4);
    assert!(u(&r["steps"]["both"]["usage"]["prompt_tokens"]) > 0);

    let run = s.sluice(&["runs", "--json"]).output().unwrap();
    let run_id = json_stdout(&run)[0]["run"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let csv = s
        .sluice(&["export", &run_id, "--format", "csv"])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    let header = csv.lines().next().unwrap();
    assert_eq!(
        header,
        "id,item_id,status,error,started_at,finished_at,duration_ms,\
         one.embedding,one.prompt_tokens,one.latency_ms,one.started_at,one.finished_at,one.duration_ms,\
         both.embedding,both.prompt_tokens,both.latency_ms,both.started_at,both.finished_at,both.duration_ms"
    );
    assert!(
        csv.lines().nth(1).unwrap().starts_with("d1,d1,done,,"),
        "{csv}"
    );
}

#[test]
fn concurrency_one_runs_units_and_fan_out_strictly_in_order() {
    let host = FakeHost::start(Behaviour::default());
    let s = Scratch::new();
    let lines: Vec<String> = (0..3)
        .map(|i| json!({"id": format!("e{i}")}).to_string())
        .collect();
    s.write_lines("in.jsonl", &lines);
    let text = r#"
concurrency = 4
[input]
path = "in.jsonl"

[[steps]]
name = "shots"
kind = "http"
url = "{HOST}/stage/shot"
json = { episode = "{{ item.id }}", shot = "{{ each }}" }
for_each = "{{ [1, 2, 3, 4] }}"
concurrency = 4
"#;
    let job = s.job(text, None, Some(&host));
    let out = s
        .sluice(&[
            "run",
            job.to_str().unwrap(),
            "--set",
            "concurrency=1",
            "--set",
            "steps.shots.concurrency=1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let order: Vec<(String, i64)> = host
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, body)| {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            (
                v["episode"].as_str().unwrap().to_string(),
                v["shot"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, i64)> = (0..3)
        .flat_map(|e| (1..=4).map(move |k| (format!("e{e}"), k)))
        .collect();
    assert_eq!(order, expected, "workers = 1 means strictly sequential");
}

/// A grader asking for JSON by schema, against the mock: every answer is a
/// value of that schema; with `--json-invalid-rate 1` none is JSON and every
/// unit fails naming what it asked for.
#[test]
fn the_mock_answers_a_json_schema_with_a_value_that_fits_it() {
    let job_text = |url: &str| {
        format!(
            r#"
[input]
path = "items.jsonl"
[providers.mock]
base_url = "{url}"
[[steps]]
name = "grade"
kind = "chat"
provider = "mock"
model = "judge"
messages = [{{ role = "user", content = "Grade {{{{ item.q }}}}" }}]
response_format = {{ type = "json_schema", json_schema = {{ name = "grade", schema = {{ type = "object", required = ["grade", "why"], properties = {{ grade = {{ type = "integer", minimum = 1, maximum = 5 }}, why = {{ type = "string" }} }} }} }} }}
[output]
path = "out.jsonl"
"#
        )
    };
    let s = Scratch::new();
    let items: Vec<String> = (0..6)
        .map(|i| json!({"id": i, "q": format!("q{i}")}).to_string())
        .collect();
    s.write_lines("items.jsonl", &items);
    let mock = Mock::start(&[]);
    std::fs::write(s.path("job.toml"), job_text(&mock.url("/v1"))).unwrap();
    let out = s.sluice(&["run", "job.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for unit in read_jsonl(&s.path("out.jsonl")) {
        let grade = &unit["steps"]["grade"]["json"];
        let n = grade["grade"].as_i64().unwrap_or_else(|| panic!("{unit}"));
        assert!((1..=5).contains(&n), "{unit}");
        assert!(grade["why"].is_string(), "{unit}");
    }
    let broken = Mock::start(&["--json-invalid-rate", "1"]);
    std::fs::write(s.path("job.toml"), job_text(&broken.url("/v1"))).unwrap();
    let out = s.sluice(&["run", "job.toml", "--fresh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for unit in read_jsonl(&s.path("out.jsonl")) {
        assert_eq!(unit["status"], "failed", "{unit}");
        let error = unit["error"].to_string();
        assert!(error.contains("not the JSON"), "{unit}");
    }
    // Six answers, six texts, one cause: grouped in the summary and status.
    let cause = "6 × grade · bad_response: the answer is not the JSON the step's response_format asks for; it starts: \"…\"";
    assert!(stderr(&out).contains(cause), "{}", stderr(&out));
    let status = s.sluice(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(cause), "{text}");
    assert_eq!(text.matches(" × grade").count(), 1, "one group: {text}");
    assert!(text.contains("e.g. "), "{text}");
    let status = s.sluice(&["status", "--json"]).output().unwrap();
    let groups = &json_stdout(&status)["error_groups"];
    assert_eq!(groups.as_array().unwrap().len(), 1, "{groups}");
    assert_eq!(groups[0]["count"], 6);
    assert_eq!(groups[0]["step"], "grade");
    assert_eq!(groups[0]["code"], "bad_response");
    assert!(
        groups[0]["example"]["message"]
            .as_str()
            .unwrap()
            .contains("it starts:"),
        "{groups}"
    );
}
