//! Provider conformance end to end: a step written in OpenAI's terms —
//! tools, tool choice, parameters — run against `sluice mock`'s Anthropic
//! route, which refuses what Anthropic's schema refuses; parameters without
//! an Anthropic equivalent refused by `plan` and `run` before anything is
//! sent, with their position; a templated value refused once rendered,
//! before its call.

use serde_json::Value;

use crate::util::*;

const JOB: &str = r#"
name = "tools"

[input]
path = "items.jsonl"

[providers.llm]
base_url = "{MOCK}"
api = "anthropic"

[[steps]]
name = "ask"
kind = "chat"
provider = "llm"
model = "m"
messages = [{ role = "system", content = "Use the tool." }, { role = "user", content = "Weather in {{ item.city }}?" }]
params = { temperature = {TEMP}, tool_choice = "required", parallel_tool_calls = false, seed = 7, tools = [{ type = "function", function = { name = "get_weather", description = "Weather in a city", parameters = { type = "object", properties = { city = { type = "string" } }, required = ["city"] } } }] }

[output]
path = "results.jsonl"
"#;

fn setup(s: &Scratch, mock: &Mock, temp: &str, items: &[&str]) -> std::path::PathBuf {
    let lines: Vec<String> = items.iter().map(|l| l.to_string()).collect();
    s.write_lines("items.jsonl", &lines);
    s.job(&JOB.replace("{TEMP}", temp), Some(mock), None)
}

#[test]
fn tools_and_tool_choice_reach_anthropic_in_its_shapes() {
    let mock = Mock::start(&["--journal", "100"]);
    let s = Scratch::new();
    let job = setup(&s, &mock, "0.5", &[r#"{"id":"a","city":"Paris"}"#]);
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The dropped parameter is said once, by name.
    assert!(stderr(&out).contains("seed"), "{}", stderr(&out));
    let sent = mock.journal("/v1/messages");
    assert_eq!(sent.len(), 1);
    let body: Value = serde_json::from_str(sent[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["system"], "Use the tool.");
    assert_eq!(body["tools"][0]["name"], "get_weather");
    assert_eq!(body["tools"][0]["input_schema"]["required"][0], "city");
    assert_eq!(
        body["tool_choice"],
        serde_json::json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert!(body.get("seed").is_none() && body.get("parallel_tool_calls").is_none());
    // The answer keeps why it stopped, in OpenAI's words.
    let results = read_jsonl(&s.path("results.jsonl"));
    assert_eq!(results[0]["steps"]["ask"]["finish_reason"], "stop");
}

#[test]
fn a_parameter_without_an_equivalent_is_refused_before_anything_is_sent() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let job = setup(&s, &mock, "1.4", &[r#"{"id":"a","city":"Paris"}"#]);
    for verb in ["plan", "run"] {
        let out = s.sluice(&[verb, job.to_str().unwrap()]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{verb}: {}", stderr(&out));
        let err = stderr(&out);
        // file:line:column, the step, the parameter and why.
        assert!(err.contains("job.toml:17:"), "{verb}: {err}");
        assert!(
            err.contains("params.temperature") && err.contains("0–1"),
            "{verb}: {err}"
        );
    }
    assert_eq!(u(&mock.stats()["requests"]), 0);
}

#[test]
fn a_templated_value_out_of_range_fails_its_item_unsent() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let job = setup(
        &s,
        &mock,
        "\"{{ item.t }}\"",
        &[
            r#"{"id":"hot","city":"Paris","t":1.5}"#,
            r#"{"id":"ok","city":"Rome","t":0.3}"#,
        ],
    );
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results = read_jsonl(&s.path("results.jsonl"));
    let by_id = |id: &str| results.iter().find(|r| r["id"] == id).unwrap().clone();
    let hot = by_id("hot").to_string();
    assert!(
        hot.contains("temperature") && hot.contains("nothing was sent"),
        "{hot}"
    );
    assert_eq!(by_id("ok")["status"], "done", "{}", by_id("ok"));
    // Only the item in range reached the provider.
    assert_eq!(u(&mock.stats()["requests"]), 1);
}

#[test]
fn a_tool_round_trip_written_in_openai_terms_reaches_anthropic_as_blocks() {
    let mock = Mock::start(&["--journal", "100"]);
    let s = Scratch::new();
    s.write_lines("items.jsonl", &[r#"{"id":"a","city":"Paris"}"#.to_string()]);
    let job = s.job(
        r#"
[input]
path = "items.jsonl"

[providers.llm]
base_url = "{MOCK}"
api = "anthropic"

[[steps]]
name = "answer"
kind = "chat"
provider = "llm"
model = "m"
params = { tools = [{ type = "function", function = { name = "get_weather", parameters = { type = "object", properties = { city = { type = "string" } } } } }] }
messages = [
  { role = "user", content = "Weather in {{ item.city }}?" },
  { role = "assistant", content = "", tool_calls = [{ id = "call_1", type = "function", function = { name = "get_weather", arguments = "{\"city\":\"{{ item.city }}\"}" } }] },
  { role = "tool", tool_call_id = "call_1", content = "Sunny, 21C" },
]

[output]
path = "results.jsonl"
"#,
        Some(&mock),
        None,
    );
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sent = mock.journal("/v1/messages");
    let body: Value = serde_json::from_str(sent[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["messages"][1]["content"][0],
        serde_json::json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}})
    );
    assert_eq!(
        body["messages"][2],
        serde_json::json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny, 21C"}]})
    );
}

#[test]
fn status_states_an_announced_limit_with_its_window() {
    let mock = Mock::start(&["--rpm", "1200", "--allowance"]);
    let s = Scratch::new();
    s.write_lines("items.jsonl", &[r#"{"id":"a","city":"Paris"}"#.to_string()]);
    let job = s.job(
        r#"
[input]
path = "items.jsonl"

[providers.llm]
base_url = "{MOCK}"

[[steps]]
name = "ask"
kind = "chat"
provider = "llm"
model = "m"
messages = [{ role = "user", content = "Weather in {{ item.city }}?" }]
"#,
        Some(&mock),
        None,
    );
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = s.sluice(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    // The mock's headers: 1,200 a minute, a full minute's allowance at once.
    assert!(
        text.contains("limits     llm: 1,200 requests/minute (burst 1,200) (announced)"),
        "{text}"
    );
}
