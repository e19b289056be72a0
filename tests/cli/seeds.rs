//! What the seed workloads needed most (issue 19): durations per unit and
//! per step in results, CSV, Parquet and the API; images in messages;
//! batched embeddings — each against the real binary and `sluice mock`.

use serde_json::{json, Value};

use crate::serve::Serve;
use crate::util::*;

/// Unix milliseconds of an RFC 3339 stamp as results write them
/// (`2026-12-07T03:40:00.123Z`).
fn ms(stamp: &Value) -> i64 {
    let t = stamp
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {stamp}"));
    assert_eq!(t.len(), 24, "UTC with milliseconds: {t}");
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    let (y, mo, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400_000 + n(11..13) * 3_600_000 + n(14..16) * 60_000 + n(17..19) * 1000 + n(20..23)
}

/// A duration that matches its own span.
fn check_span(v: &Value, what: &str) -> (i64, i64) {
    let (s, f) = (ms(&v["started_at"]), ms(&v["finished_at"]));
    assert!(s <= f, "{what}: {v}");
    assert_eq!(v["duration_ms"].as_i64(), Some(f - s), "{what}: {v}");
    (s, f)
}

const TIMED: &str = r#"
name = "timed"

[input]
path = "items.jsonl"

[providers.local]
base_url = "{MOCK}"
concurrency = 8

[[steps]]
name = "ask"
kind = "chat"
provider = "local"
model = "m"
messages = [{ role = "user", content = "{{ item.q }}" }]

[[steps]]
name = "parts"
kind = "chat"
provider = "local"
model = "m"
for_each = "{{ item.parts }}"
concurrency = 1
messages = [{ role = "user", content = "{{ each }}" }]

[[steps]]
name = "talk"
kind = "conversation"
provider = "local"
model = "m"
turns = ["{{ item.q }}", "and then?"]

[output]
path = "results.jsonl"
"#;

#[test]
fn units_and_steps_carry_their_start_end_and_duration_everywhere() {
    let mock = Mock::start(&["--latency-ms", "20"]);
    let s = Scratch::new();
    let items: Vec<String> = (0..3)
        .map(|i| {
            json!({"id": format!("i{i}"), "q": format!("q{i}"), "parts": ["a", "b", "c"]})
                .to_string()
        })
        .collect();
    s.write_lines("items.jsonl", &items);
    let job = s.job(TIMED, Some(&mock), None);
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = read_jsonl(&s.path("results.jsonl"));
    assert_eq!(lines.len(), 3);
    for line in &lines {
        let (us, uf) = check_span(line, "unit");
        let mut last_end = us;
        for step in ["ask", "talk"] {
            let o = &line["steps"][step];
            let (s0, f0) = check_span(o, step);
            assert!(us <= s0 && f0 <= uf, "{step} within its unit: {line}");
            // Steps run in order: each starts once the one before ended.
            assert!(s0 >= last_end || step == "talk", "{line}");
            // The step's time holds its call's.
            assert!(o["duration_ms"].as_i64() >= o["latency_ms"].as_i64(), "{o}");
            last_end = f0;
        }
        // A fan-out's elements each carry theirs; with concurrency 1 they
        // do not overlap.
        let elements = line["steps"]["parts"].as_array().unwrap();
        let spans: Vec<(i64, i64)> = elements.iter().map(|e| check_span(e, "element")).collect();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "in order, one at a time: {spans:?}");
        }
        // A conversation's span covers its turns' calls.
        assert!(
            line["steps"]["talk"]["duration_ms"].as_i64().unwrap()
                >= line["steps"]["talk"]["latency_ms"].as_i64().unwrap(),
            "{line}"
        );
    }

    // CSV: the unit's three columns, and three per step; a fan-out step's
    // are the span of its elements.
    let csv = s
        .sluice(&["export", "timed-1", "--format", "csv"])
        .output()
        .unwrap();
    assert!(csv.status.success(), "{}", stderr(&csv));
    let mut reader = csv::Reader::from_reader(&csv.stdout[..]);
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        &header[..7],
        [
            "id",
            "item_id",
            "status",
            "error",
            "started_at",
            "finished_at",
            "duration_ms"
        ]
    );
    for step in ["ask", "parts", "talk"] {
        for f in ["started_at", "finished_at", "duration_ms"] {
            assert!(
                header.contains(&format!("{step}.{f}")),
                "{step}.{f} in {header:?}"
            );
        }
    }
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for (row, line) in reader.records().map(Result::unwrap).zip(&lines) {
        assert_eq!(
            &row[col("started_at")],
            line["started_at"].as_str().unwrap()
        );
        assert_eq!(&row[col("duration_ms")], line["duration_ms"].to_string());
        assert_eq!(
            &row[col("ask.finished_at")],
            line["steps"]["ask"]["finished_at"].as_str().unwrap()
        );
        let elements = line["steps"]["parts"].as_array().unwrap();
        assert_eq!(
            &row[col("parts.started_at")],
            elements[0]["started_at"].as_str().unwrap()
        );
        assert_eq!(
            &row[col("parts.finished_at")],
            elements[2]["finished_at"].as_str().unwrap()
        );
        let span = ms(&elements[2]["finished_at"]) - ms(&elements[0]["started_at"]);
        assert_eq!(row[col("parts.duration_ms")].parse::<i64>().unwrap(), span);
    }

    // The API shows the same lines.
    let server = Serve::start(&s, &[], &[]);
    let (status, body) = server.http("GET", "/v1/runs/timed-1/results", &[], "");
    assert_eq!(status, 200, "{body}");
    let api: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(api, lines);
    let (status, body) = server.http("GET", "/v1/runs/timed-1/items/i0", &[], "");
    assert_eq!(status, 200, "{body}");
    let item: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(item["result"]["started_at"], lines[0]["started_at"]);
}

#[test]
fn a_retried_unit_keeps_the_times_of_the_steps_it_does_not_redo() {
    // The first mock serves model m only: the conversation (model "other")
    // fails; the retry finds, at the same address, a mock serving every
    // model. The address is a relay the test holds throughout, so no port is
    // freed and bound again.
    let mock = Mock::start(&["--models", "m"]);
    let relay = Relay::start(mock.port);
    let s = Scratch::new();
    s.write_lines(
        "items.jsonl",
        &[json!({"id": "i0", "q": "q", "parts": ["a"]}).to_string()],
    );
    let text = TIMED.replace("model = \"m\"\nturns", "model = \"other\"\nturns");
    assert_ne!(text, TIMED);
    let job = s.path("job.toml");
    std::fs::write(&job, text.replace("{MOCK}", &relay.url("/v1"))).unwrap();
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let first = read_jsonl(&s.path("results.jsonl"));
    assert_eq!(first[0]["status"], "failed", "{first:?}");
    drop(mock);
    let again = Mock::start(&[]);
    relay.point_to(again.port);
    let out = s.sluice(&["retry", "timed-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let exported = s.sluice(&["export", "timed-1"]).output().unwrap();
    let again: Value = serde_json::from_slice(&exported.stdout).unwrap();
    assert_eq!(again["status"], "done", "{again}");
    assert_eq!(
        again["steps"]["ask"], first[0]["steps"]["ask"],
        "kept as it was"
    );
    check_span(&again, "unit");
    let (talk_start, _) = check_span(&again["steps"]["talk"], "talk");
    assert!(
        talk_start >= ms(&first[0]["finished_at"]),
        "redone after the first run ended: {again}"
    );
    assert!(
        ms(&again["started_at"]) >= ms(&first[0]["finished_at"]),
        "{again}"
    );
}

/// A real 2 × 3 PNG (73 bytes).
const PNG_2X3: &str = "89504e470d0a1a0a0000000d4948445200000002000000030802000000368849d6000000104944415478da6338212707440c281400440d0619fc27ceec0000000049454e44ae426082";

const VISION: &str = r#"
name = "vision"

[input]
path = "posters.jsonl"

[providers.p]
base_url = "{MOCK}"
API

[[steps]]
name = "describe"
kind = "chat"
provider = "p"
model = "m"
messages = [
  { role = "system", content = "You describe posters." },
  { role = "user", content = [
      { type = "text", text = "Describe poster {{ item.id }}." },
      { type = "image_url", image_url = { url = "{{ data_url(item.poster) }}", detail = "low" } },
  ] },
]
params = { max_tokens = 20 }

[output]
path = "results.jsonl"
"#;

/// Three posters under `posters/` and their items (`missing` names one
/// that is not there instead of the second).
fn posters(s: &Scratch, missing: bool) {
    std::fs::create_dir_all(s.path("posters")).unwrap();
    let png = hex::decode(PNG_2X3).unwrap();
    let mut lines = Vec::new();
    for i in 1..=3 {
        std::fs::write(s.path(&format!("posters/p{i}.png")), &png).unwrap();
        let file = if missing && i == 2 {
            "posters/nope.png".to_owned()
        } else {
            format!("posters/p{i}.png")
        };
        lines.push(json!({"id": format!("p{i}"), "poster": file}).to_string());
    }
    s.write_lines("posters.jsonl", &lines);
}

#[test]
fn posters_reach_openai_and_anthropic_as_images_the_mock_checks_and_counts() {
    for (api, route) in [
        ("", "/v1/chat/completions"),
        ("api = \"anthropic\"", "/v1/messages"),
    ] {
        let mock = Mock::start(&["--journal", "10"]);
        let s = Scratch::new();
        posters(&s, false);
        let job = s.job(&VISION.replace("API", api), Some(&mock), None);
        let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{api}: {}", stderr(&out));
        let stats = mock.stats();
        assert_eq!(u(&stats["ok"]), 3, "{stats}");
        assert_eq!(u(&stats["images"]), 3, "an image in every call: {stats}");
        assert_eq!(u(&stats["requests_with_images"]), 3, "{stats}");
        assert_eq!(u(&stats["image_bytes"]), 3 * 73, "{stats}");
        let sent = mock.journal(route);
        let body: Value = serde_json::from_str(sent[0]["body"].as_str().unwrap()).unwrap();
        let image = &body["messages"][body["messages"].as_array().unwrap().len() - 1]["content"][1];
        if api.is_empty() {
            let url = image["image_url"]["url"].as_str().unwrap();
            assert!(
                url.starts_with("data:image/png;base64,iVBORw0KGgo"),
                "{image}"
            );
            assert_eq!(image["image_url"]["detail"], "low");
        } else {
            assert_eq!(image["type"], "image", "{body}");
            assert_eq!(image["source"]["media_type"], "image/png");
            assert_eq!(image["source"]["type"], "base64");
        }
        let results = read_jsonl(&s.path("results.jsonl"));
        assert!(results.iter().all(|r| r["status"] == "done"), "{results:?}");
    }
}

#[test]
fn a_missing_image_file_is_named_by_plan_and_fails_only_its_unit_in_a_run() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    posters(&s, true);
    let job = s.job(&VISION.replace("API", ""), Some(&mock), None);
    let plan = s.sluice(&["plan", job.to_str().unwrap()]).output().unwrap();
    let err = stderr(&plan);
    assert_eq!(plan.status.code(), Some(2), "{err}");
    assert!(err.contains("nope.png"), "{err}");
    assert!(err.contains("job.toml:20:"), "at the part's line: {err}");
    assert_eq!(u(&mock.stats()["requests"]), 0);
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    let err = stderr(&out);
    let results = read_jsonl(&s.path("results.jsonl"));
    match out.status.code() {
        // The check before the run found it: nothing was sent.
        Some(2) => {
            assert!(err.contains("nope.png"), "{err}");
            assert_eq!(u(&mock.stats()["requests"]), 0);
        }
        // Or the unit whose file is missing failed, naming it, and no other.
        _ => {
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert_eq!(results[1]["status"], "failed");
            let message = results[1]["error"]["message"].as_str().unwrap();
            assert!(message.contains("nope.png"), "{message}");
            assert_eq!(u(&mock.stats()["images"]), 2);
        }
    }
}

#[test]
fn content_parts_are_checked_at_their_position_before_anything_is_sent() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    posters(&s, false);
    let bad = VISION
        .replace("API", "")
        .replace(
            r#"{ role = "system", content = "You describe posters." },"#,
            r#"{ role = "system", content = [{ type = "image_url", image_url = { url = "x" } }] },"#,
        )
        .replace(r#"{ type = "text", text = "Describe"#, r#"{ type = "txt", text = "Describe"#)
        .replace(r#", detail = "low" }"#, r#", detail = "tiny" }"#);
    let job = s.job(&bad, Some(&mock), None);
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("job.toml:17:33: steps.describe.messages[0].content[0]: an image_url part belongs in a role = \"user\" message"),
        "{err}"
    );
    assert!(
        err.contains("job.toml:19:16: steps.describe.messages[1].content[0].type \"txt\" is not a content part type; did you mean `text`?"),
        "{err}"
    );
    assert!(
        err.contains("job.toml:20:89: steps.describe.messages[1].content[1].image_url.detail \"tiny\" is not one of: auto, low, high"),
        "{err}"
    );
    assert!(err.contains("3 errors in the job"), "{err}");
    assert_eq!(u(&mock.stats()["requests"]), 0);
}

#[test]
fn an_image_past_anthropics_limit_fails_its_unit_before_it_is_sent() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    posters(&s, false);
    // A 6 MB PNG: under OpenAI's 20 MB, over Anthropic's 5 MB.
    let mut big = hex::decode(PNG_2X3).unwrap();
    big.resize(6 << 20, 0);
    std::fs::write(s.path("posters/p2.png"), &big).unwrap();
    let job = s.job(
        &VISION.replace("API", "api = \"anthropic\""),
        Some(&mock),
        None,
    );
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results = read_jsonl(&s.path("results.jsonl"));
    assert_eq!(results[1]["status"], "failed");
    let message = results[1]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Anthropic takes at most 5 MB per image"),
        "{message}"
    );
    assert!(message.contains("nothing was sent"), "{message}");
    assert_eq!(u(&mock.stats()["requests"]), 2, "only the two small ones");
}

#[test]
fn a_submitted_job_reads_files_only_where_the_server_allows() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    posters(&s, false);
    let allowed = s.path("posters");
    let job = |path: &str| {
        json!({
            "name": "confined",
            "items": [{"poster": path}],
            "provider": {"base_url": mock.url("/v1")},
            "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "{{ data_url(item.poster) }}"}},
            ]}]},
        })
        .to_string()
    };
    let server = Serve::start(&s, &["--allow-dir", allowed.to_str().unwrap()], &[]);
    let json = "Content-Type: application/json";
    let outside = s.path("secret.png");
    std::fs::write(&outside, hex::decode(PNG_2X3).unwrap()).unwrap();
    let (status, body) = server.http(
        "POST",
        "/v1/runs?wait=all",
        &[json],
        &job(outside.to_str().unwrap()),
    );
    // Found by the check before the run: a 400 naming the template's place.
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("image_url.url"), "{body}");
    assert!(
        body.contains("outside the directories this run may read"),
        "{body}"
    );
    assert_eq!(u(&mock.stats()["requests"]), 0, "nothing sent: {body}");
    // The same job naming a file in an --allow-dir directory sends it.
    let inside = allowed.join("p1.png");
    let (status, body) = server.http(
        "POST",
        "/v1/runs?wait=all",
        &[json],
        &job(inside.to_str().unwrap()),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(u(&mock.stats()["images"]), 1, "{body}");
}

const EMBED: &str = r#"
name = "vectors"
concurrency = 100

[input]
path = "texts.jsonl"

[providers.local]
base_url = "{MOCK}"

[[steps]]
name = "vec"
kind = "embed"
provider = "local"
model = "e"
input = "{{ item.text }}"
BATCH

[output]
path = "results.jsonl"
"#;

fn texts(s: &Scratch, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            json!({"id": format!("t{i}"), "text": format!("text number {i} about rivers")})
                .to_string()
        })
        .collect();
    s.write_lines("texts.jsonl", &lines);
}

/// Inputs of each embeddings request the mock journaled.
fn inputs_per_request(mock: &Mock) -> Vec<Vec<String>> {
    mock.journal("/v1/embeddings")
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            match &body["input"] {
                Value::Array(list) => list
                    .iter()
                    .map(|t| t.as_str().unwrap().to_owned())
                    .collect(),
                one => vec![one.as_str().unwrap().to_owned()],
            }
        })
        .collect()
}

#[test]
fn batched_embeddings_send_many_units_a_request_and_give_each_its_own_vector() {
    const N: usize = 250;
    // The same job one text a request, for the vectors to compare with.
    let single_mock = Mock::start(&[]);
    let single = Scratch::new();
    texts(&single, N);
    let job = single.job(&EMBED.replace("BATCH", ""), Some(&single_mock), None);
    let out = single
        .sluice(&["run", job.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(u(&single_mock.stats()["ok"]), N as u64);
    let alone = read_jsonl(&single.path("results.jsonl"));

    let mock = Mock::start(&["--journal", "1000", "--latency-ms", "20"]);
    let s = Scratch::new();
    texts(&s, N);
    let job = s.job(&EMBED.replace("BATCH", "batch = 100"), Some(&mock), None);
    let plan = s
        .sluice(&["plan", job.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let planned = json_stdout(&plan);
    assert_eq!(
        planned["steps"][0]["calls"], 3,
        "250 units by 100: {planned}"
    );
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let requests = inputs_per_request(&mock);
    assert!(
        requests.iter().all(|r| r.len() <= 100),
        "at most batch a request"
    );
    assert!(
        requests.len() <= N / 10,
        "{} requests for {N} texts",
        requests.len()
    );
    let mut sent: Vec<String> = requests.concat();
    sent.sort();
    let mut expected: Vec<String> = (0..N)
        .map(|i| format!("text number {i} about rivers"))
        .collect();
    expected.sort();
    assert_eq!(sent, expected, "every text once");
    let batched = read_jsonl(&s.path("results.jsonl"));
    assert_eq!(batched.len(), N);
    let mut tokens = 0;
    for (b, a) in batched.iter().zip(&alone) {
        assert_eq!(b["id"], a["id"]);
        assert_eq!(b["status"], "done");
        assert_eq!(
            b["steps"]["vec"]["json"], a["steps"]["vec"]["json"],
            "its own vector"
        );
        tokens += u(&b["steps"]["vec"]["usage"]["prompt_tokens"]);
    }
    // The tokens the API reported for each request, shared out whole.
    assert_eq!(tokens, u(&mock.stats()["tokens_charged"]));
}

#[test]
fn an_interrupted_batched_run_resumes_with_each_unit_recorded_on_its_own() {
    const N: usize = 200;
    let mock = Mock::start(&["--journal", "1000", "--latency-ms", "300"]);
    let s = Scratch::new();
    texts(&s, N);
    let text = EMBED
        .replace("concurrency = 100", "concurrency = 40")
        .replace("BATCH", "batch = 20");
    let job = s.job(&text, Some(&mock), None);
    let child = std::process::Command::new(bin())
        .current_dir(s.dir.path())
        .args(["run", job.to_str().unwrap(), "--json"])
        .env("SLUICE_STORE", s.store())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while u(&mock.stats()["ok"]) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let first = child.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(130), "{}", stderr(&first));
    let done = u(&json_stdout(&first)["recorded"]["done"]);
    assert!(done > 0 && done < N as u64, "{}", json_stdout(&first));
    let before = inputs_per_request(&mock).concat().len();

    let again = s
        .sluice(&["run", job.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        u(&json_stdout(&again)["this_run"]["skipped"]),
        done,
        "each unit kept"
    );
    let after = inputs_per_request(&mock).concat().len();
    assert_eq!(
        after - before,
        N - done as usize,
        "only the units not recorded were sent again"
    );
    let results = read_jsonl(&s.path("results.jsonl"));
    assert!(results
        .iter()
        .all(|r| r["status"] == "done" && r["steps"]["vec"]["json"].is_array()));
}

#[test]
fn a_bad_batch_is_an_error_at_its_position_before_anything_is_sent() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    texts(&s, 3);
    for (batch, says) in [
        (
            "batch = 0",
            "job.toml:17:9: step \"vec\": batch = 0: give 1 to 2048 units per request",
        ),
        ("batch = 5000", "batch = 5000: give 1 to 2048"),
        (
            "batch = 10\nfor_each = \"{{ [1, 2] }}\"",
            "batch and for_each do not go together",
        ),
    ] {
        let job = s.job(&EMBED.replace("BATCH", batch), Some(&mock), None);
        let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{batch}: {err}");
        assert!(err.contains(says), "{batch}: {err}");
    }
    let on_chat = r#"
[input]
path = "texts.jsonl"
[providers.local]
base_url = "{MOCK}"
[[steps]]
name = "ask"
kind = "chat"
provider = "local"
model = "m"
messages = [{ role = "user", content = "{{ item.text }}" }]
batch = 10
"#;
    let job = s.job(on_chat, Some(&mock), None);
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("job.toml:12:1") && err.contains("batch"),
        "{err}"
    );
    assert_eq!(u(&mock.stats()["requests"]), 0);
}

#[test]
fn plan_counts_images_by_the_tile_rule_and_says_which_sizes_it_does_not_know() {
    let s = Scratch::new();
    posters(&s, false);
    let mut lines: Vec<String> = std::fs::read_to_string(s.path("posters.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines[2] = json!({"id": "p3", "poster": "https://images.example.com/p3.png"}).to_string();
    s.write_lines("posters.jsonl", &lines);
    let job = s.job(
        &VISION.replace("API", "").replace(", detail = \"low\"", ""),
        None,
        None,
    );
    let job_text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("{MOCK}", "http://127.0.0.1:9/v1");
    std::fs::write(&job, job_text).unwrap();
    let out = s.sluice(&["plan", job.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("3 images: 2 by OpenAI's tile rule from their size; 1 of a size not known before sending (URLs)"),
        "{text}"
    );
    let json = s
        .sluice(&["plan", job.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let plan = json_stdout(&json);
    assert_eq!(plan["steps"][0]["images"], 3, "{plan}");
    assert_eq!(plan["steps"][0]["images_unsized"], 1, "{plan}");
}

#[test]
fn a_conversation_turn_may_carry_an_image_kept_in_its_history() {
    for api in ["", "api = \"anthropic\""] {
        let mock = Mock::start(&[]);
        let s = Scratch::new();
        posters(&s, false);
        let job = format!(
            r#"
[input]
path = "posters.jsonl"

[providers.p]
base_url = "{{MOCK}}"
{api}

[[steps]]
name = "talk"
kind = "conversation"
provider = "p"
model = "m"
turns = [
  [{{ type = "text", text = "What is on poster {{{{ item.id }}}}?" }},
   {{ type = "image_url", image_url = {{ url = "{{{{ data_url(item.poster) }}}}" }} }}],
  "And its colours?",
]
params = {{ max_tokens = 10 }}

[output]
path = "results.jsonl"
"#
        );
        let job = s.job(&job, Some(&mock), None);
        let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{api}: {}", stderr(&out));
        let stats = mock.stats();
        // Both turns of each of the 3 posters carry the image (the second in
        // the history).
        assert_eq!(u(&stats["ok"]), 6, "{stats}");
        assert_eq!(u(&stats["images"]), 6, "{stats}");
        let results = read_jsonl(&s.path("results.jsonl"));
        let turns = &results[0]["steps"]["talk"]["turns"];
        assert_eq!(turns[0]["prompt"], "What is on poster p1?", "{turns}");
        assert_eq!(turns[1]["prompt"], "And its colours?");
    }
}

const EPISODES: &str = r#"
name = "episodes"
concurrency = 1
max_in_flight = 5

[input]
path = "episodes.jsonl"

[providers.gen]
base_url = "{MOCK}"

[[steps]]
name = "script"
kind = "chat"
provider = "gen"
model = "script"
messages = [{ role = "user", content = "Script for {{ item.id }}" }]

[[steps]]
name = "voice"
kind = "chat"
needs = ["script"]
provider = "gen"
model = "voice"
messages = [{ role = "user", content = "Voice {{ item.id }}: {{ steps.script.text }}" }]

[[steps]]
name = "scenes"
kind = "chat"
needs = ["script"]
for_each = "{{ item.scenes }}"
concurrency = 6
provider = "gen"
model = "scene"
messages = [{ role = "user", content = "Scene {{ each }} of {{ item.id }}" }]

[[steps]]
name = "broll"
kind = "chat"
needs = ["script"]
provider = "gen"
model = "broll"
messages = [{ role = "user", content = "B-roll for {{ item.id }}" }]

[[steps]]
name = "assemble"
kind = "chat"
needs = ["voice", "scenes", "broll"]
provider = "gen"
model = "assemble"
messages = [{ role = "user", content = "{{ steps.voice.text }} {{ steps.broll.text }} {{ steps.scenes | length }}" }]

[output]
path = "results.jsonl"
"#;

#[test]
fn steps_whose_needs_are_met_run_at_once_under_the_units_max_in_flight() {
    // 300 ms a call: the eight calls that become ready together when the
    // script is done are all waiting long before the first ends.
    let mock = Mock::start(&["--latency-ms", "300"]);
    let s = Scratch::new();
    let lines: Vec<String> = (1..=2)
        .map(|i| json!({"id": format!("ep{i}"), "scenes": [1, 2, 3, 4, 5, 6]}).to_string())
        .collect();
    s.write_lines("episodes.jsonl", &lines);
    let job = s.job(EPISODES, Some(&mock), None);
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats = mock.stats();
    assert_eq!(u(&stats["ok"]), 2 * (1 + 1 + 6 + 1 + 1), "{stats}");
    // One episode at a time (concurrency = 1): the mock's peak is one
    // unit's, held at max_in_flight, and above what steps in a row allow.
    let peak = u(&stats["max_in_flight"]);
    assert!((3..=5).contains(&peak), "{peak} in flight: {stats}");
    for r in read_jsonl(&s.path("results.jsonl")) {
        assert_eq!(r["status"], "done", "{r}");
        let steps = &r["steps"];
        let end = |v: &Value| ms(&v["finished_at"]);
        let start = |v: &Value| ms(&v["started_at"]);
        let script_end = end(&steps["script"]);
        let mut last = 0;
        for v in [&steps["voice"], &steps["broll"]]
            .into_iter()
            .chain(steps["scenes"].as_array().unwrap())
        {
            assert!(start(v) >= script_end, "after what it needs: {r}");
            last = last.max(end(v));
        }
        // voice, b-roll and the scenes overlapped ...
        assert!(start(&steps["broll"]) < end(&steps["voice"]), "{r}");
        // ... and assemble waited for all three.
        assert!(start(&steps["assemble"]) >= last, "{r}");
        assert_eq!(steps["assemble"]["status"], Value::Null);
    }
}

#[test]
fn needs_are_checked_at_their_position_and_templates_read_only_what_a_step_needs() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    s.write_lines(
        "episodes.jsonl",
        &[json!({"id": "ep1", "scenes": [1]}).to_string()],
    );
    for (edit, says) in [
        (
            ("needs = [\"script\"]\nprovider = \"gen\"\nmodel = \"voice\"", "needs = [\"scrpt\"]\nprovider = \"gen\"\nmodel = \"voice\""),
            "job.toml:22:10: needs \"scrpt\": there is no such step; did you mean `script`?; steps above it: script",
        ),
        (
            ("needs = [\"script\"]\nprovider = \"gen\"\nmodel = \"voice\"", "needs = [\"broll\"]\nprovider = \"gen\"\nmodel = \"voice\""),
            "needs \"broll\", which comes later in the file; a step may need only steps above it",
        ),
        (
            ("needs = [\"voice\", \"scenes\", \"broll\"]", "needs = [\"voice\", \"scenes\"]"),
            "steps.assemble.messages[0].content: step \"broll\" is not among the steps this one needs",
        ),
    ] {
        let text = EPISODES.replacen(edit.0, edit.1, 1);
        assert_ne!(text, EPISODES);
        let job = s.job(&text, Some(&mock), None);
        let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{says}\n{err}");
    }
    assert_eq!(u(&mock.stats()["requests"]), 0);
}

const AFFINITY: &str = r#"
name = "stages"
concurrency = 8

[input]
path = "files.jsonl"

[providers.gpu]
urls = [URLS]
retries = { max = 2, base = "10ms", cap = "50ms" }
circuit_breaker = { failures = 1, cooldown = "300ms" }

[[steps]]
name = "upload"
kind = "http"
provider = "gpu"
path = "/stages/upload"
json = { file = "{{ item.path }}" }
affinity = "{{ item.path }}"
FAILOVER

[[steps]]
name = "denoise"
kind = "http"
provider = "gpu"
path = "/stages/denoise"
json = { file = "{{ item.path }}" }
affinity = "{{ item.path }}"
FAILOVER

[[steps]]
name = "transcribe"
kind = "http"
provider = "gpu"
path = "/stages/transcribe"
json = { file = "{{ item.path }}" }
affinity = "{{ item.path }}"
FAILOVER

[output]
path = "results.jsonl"
"#;

fn files(s: &Scratch, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| json!({"id": format!("f{i}"), "path": format!("audio/f{i}.wav")}).to_string())
        .collect();
    s.write_lines("files.jsonl", &lines);
}

/// The host each stage of a result line went to.
fn hosts(line: &Value) -> Vec<String> {
    ["upload", "denoise", "transcribe"]
        .iter()
        .map(|s| {
            line["steps"][*s]["json"]["host"]
                .as_str()
                .unwrap_or("-")
                .to_owned()
        })
        .collect()
}

#[test]
fn calls_with_the_same_affinity_key_stay_on_one_host_of_the_pool() {
    let pool: Vec<Mock> = (0..3)
        .map(|_| Mock::start(&["--latency-ms", "20"]))
        .collect();
    let urls: Vec<String> = pool.iter().map(|m| format!("\"{}\"", m.url(""))).collect();
    let s = Scratch::new();
    files(&s, 24);
    let job = s.job(
        &AFFINITY
            .replace("URLS", &urls.join(", "))
            .replace("FAILOVER", ""),
        None,
        None,
    );
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let results = read_jsonl(&s.path("results.jsonl"));
    let mut homes = std::collections::BTreeSet::new();
    for r in &results {
        let h = hosts(r);
        assert!(
            h.iter().all(|x| *x == h[0]),
            "every stage of a file on one host: {h:?}"
        );
        homes.insert(h[0].clone());
    }
    assert_eq!(homes.len(), 3, "the files spread over the pool: {homes:?}");
    // A second run (new run, same keys): the same homes.
    let again = s
        .sluice(&["run", job.to_str().unwrap(), "--fresh"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let second = read_jsonl(&s.path("results.jsonl"));
    for (a, b) in results.iter().zip(&second) {
        assert_eq!(hosts(a), hosts(b), "{}", a["id"]);
    }
}

#[test]
fn while_its_host_is_down_a_keyed_call_waits_for_it_or_fails_over_as_the_step_says() {
    let live: Vec<Mock> = (0..2).map(|_| Mock::start(&[])).collect();
    // A host that refuses every connection: a port held by a socket that
    // never listens, so no other test can be handed it meanwhile.
    let (dead, _held) = refusing_port();
    let urls = [
        format!("\"http://127.0.0.1:{dead}\""),
        format!("\"{}\"", live[0].url("")),
        format!("\"{}\"", live[1].url("")),
    ];
    let s = Scratch::new();
    files(&s, 24);
    // Waiting for its own host: the files homed on the dead one fail, the
    // others are done, and no call of theirs went to another host.
    let job = s.job(
        &AFFINITY
            .replace("URLS", &urls.join(", "))
            .replace("FAILOVER", ""),
        None,
        None,
    );
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let waited = read_jsonl(&s.path("results.jsonl"));
    let failed: Vec<&Value> = waited.iter().filter(|r| r["status"] == "failed").collect();
    assert!(
        !failed.is_empty() && failed.len() < 24,
        "some homed on the dead host"
    );
    for r in &failed {
        assert!(
            r["steps"].get("upload").is_none(),
            "nothing went elsewhere: {r}"
        );
    }
    let sent: u64 = live.iter().map(|m| u(&m.stats()["requests"])).sum();
    assert_eq!(
        sent,
        3 * (24 - failed.len() as u64),
        "only the others' three stages"
    );
    // With affinity_failover, they go to the next host in their order, all
    // three stages on that same one.
    let job = s.job(
        &AFFINITY
            .replace("URLS", &urls.join(", "))
            .replace("FAILOVER", "affinity_failover = true"),
        None,
        None,
    );
    let out = s
        .sluice(&["run", job.to_str().unwrap(), "--fresh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for r in read_jsonl(&s.path("results.jsonl")) {
        let h = hosts(&r);
        assert!(h.iter().all(|x| *x == h[0]), "{h:?}");
    }
}

#[test]
fn affinity_without_a_pool_to_choose_in_is_an_error_at_its_position() {
    let s = Scratch::new();
    files(&s, 1);
    let job = r#"
[input]
path = "files.jsonl"

[[steps]]
name = "up"
kind = "http"
url = "http://127.0.0.1:9/x"
affinity = "{{ item.path }}"

[[steps]]
name = "down"
kind = "http"
url = "http://127.0.0.1:9/y"
affinity_failover = true
"#;
    std::fs::write(s.path("job.toml"), job).unwrap();
    let out = s.sluice(&["run", "job.toml"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("job.toml:9:12: step \"up\": affinity keeps calls on one endpoint of a provider's pool (urls); the step has no provider"), "{err}");
    assert!(
        err.contains("job.toml:15:21: step \"down\": affinity_failover goes with affinity"),
        "{err}"
    );
}

const SPANNING: &str = r#"
name = "span"
concurrency = 30

[input]
path = "items.jsonl"

[matrix]
provider = ["gpt", "claude", "qwen"]

[providers.gpt]
base_url = "{A}"

[providers.claude]
base_url = "{B}"
api = "anthropic"

[providers.qwen]
base_url = "{C}"
concurrency = 2

[[steps]]
name = "ask"
kind = "chat"
provider = "{{ matrix.provider }}"
model = "m-{{ matrix.provider }}"
messages = [{ role = "user", content = "{{ item.q }}" }]
params = { max_tokens = 8 }

[output]
path = "results.jsonl"
"#;

#[test]
fn a_matrix_value_picks_each_units_provider_with_its_own_limits_and_dialect() {
    let mocks: Vec<Mock> = (0..3)
        .map(|_| Mock::start(&["--latency-ms", "50", "--journal", "100"]))
        .collect();
    let s = Scratch::new();
    let items: Vec<String> = (0..10)
        .map(|i| json!({"id": format!("q{i}"), "q": format!("question {i}")}).to_string())
        .collect();
    s.write_lines("items.jsonl", &items);
    let text = SPANNING
        .replace("{A}", &mocks[0].url("/v1"))
        .replace("{B}", &mocks[1].url("/v1"))
        .replace("{C}", &mocks[2].url("/v1"));
    std::fs::write(s.path("job.toml"), text).unwrap();
    // plan: each provider's share, under its own limits.
    let plan = s.sluice(&["plan", "job.toml", "--json"]).output().unwrap();
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let plan = json_stdout(&plan);
    for p in plan["providers"].as_array().unwrap() {
        assert_eq!(p["calls"], 10, "{p}");
        assert!(u(&p["tokens"]) > 0, "{p}");
    }
    assert_eq!(plan["steps"][0]["provider"], "{{ matrix.provider }}");
    let out = s.sluice(&["run", "job.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (mock, route, model) in [
        (&mocks[0], "/v1/chat/completions", "m-gpt"),
        (&mocks[1], "/v1/messages", "m-claude"),
        (&mocks[2], "/v1/chat/completions", "m-qwen"),
    ] {
        let sent = mock.journal("/v1/");
        assert_eq!(sent.len(), 10, "each provider its own units");
        for r in &sent {
            assert_eq!(r["path"], route, "its dialect: {r}");
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["model"], model);
        }
    }
    assert!(u(&mocks[2].stats()["max_in_flight"]) <= 2, "qwen's own cap");
    assert!(u(&mocks[0].stats()["max_in_flight"]) > 2, "gpt has none");
    let results = read_jsonl(&s.path("results.jsonl"));
    assert_eq!(results.len(), 30);
    assert!(results.iter().all(|r| r["status"] == "done"));
}

#[test]
fn a_templated_provider_naming_no_provider_is_an_error_before_anything_is_sent() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    s.write_lines("items.jsonl", &[json!({"id": "q", "q": "x"}).to_string()]);
    let url = mock.url("/v1");
    let base = SPANNING
        .replace("{A}", &url)
        .replace("{B}", &url)
        .replace("{C}", &url);
    for (from, to, says) in [
        (
            r#"provider = ["gpt", "claude", "qwen"]"#,
            r#"provider = ["gpt", "claud"]"#,
            "job.toml:25:12: step \"ask\": provider renders \"claud\" for matrix {\"provider\":\"claud\"}, which is not a defined provider; did you mean `claude`?",
        ),
        (
            r#"provider = "{{ matrix.provider }}""#,
            r#"provider = "{{ item.q }}""#,
            "provider renders \"x\", which is not a defined provider",
        ),
    ] {
        let text = base.replace(from, to);
        assert_ne!(text, base);
        std::fs::write(s.path("job.toml"), text).unwrap();
        let out = s.sluice(&["run", "job.toml"]).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{says}\n{err}");
    }
    assert_eq!(u(&mock.stats()["requests"]), 0);
}

const BY_VENDOR: &str = r#"
name = "vendors"
concurrency = 30

[input]
path = "items.jsonl"

[providers.gpt]
base_url = "{A}"

[providers.claude]
base_url = "{B}"
api = "anthropic"
concurrency = 2

[[steps]]
name = "ask"
kind = "chat"
provider = "{{ item.vendor }}"
model = "m-{{ item.vendor }}"
messages = [{ role = "user", content = "{{ item.q }}" }]
params = { max_tokens = 8 }

[output]
path = "results.jsonl"
"#;

/// `n` items, every third one for claude, the others for gpt.
fn vendor_items(s: &Scratch, n: usize, odd: Option<&str>) -> Vec<(String, String)> {
    let items: Vec<(String, String)> = (0..n)
        .map(|i| {
            let vendor = match (i % 3, odd) {
                (0, _) => "claude",
                (1, Some(v)) => v,
                _ => "gpt",
            };
            (format!("question {i}"), vendor.to_string())
        })
        .collect();
    let lines: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, (q, v))| json!({"id": format!("q{i}"), "q": q, "vendor": v}).to_string())
        .collect();
    s.write_lines("items.jsonl", &lines);
    items
}

#[test]
fn an_items_value_picks_its_provider_with_its_own_limits_and_dialect() {
    let mocks: Vec<Mock> = (0..2)
        .map(|_| Mock::start(&["--latency-ms", "50", "--journal", "100"]))
        .collect();
    let s = Scratch::new();
    let items = vendor_items(&s, 12, None);
    let text = BY_VENDOR
        .replace("{A}", &mocks[0].url("/v1"))
        .replace("{B}", &mocks[1].url("/v1"));
    std::fs::write(s.path("job.toml"), text).unwrap();
    // plan: each provider's share counted item by item.
    let plan = s.sluice(&["plan", "job.toml", "--json"]).output().unwrap();
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let plan = json_stdout(&plan);
    let share = |name: &str| {
        plan["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {plan}"))
            .clone()
    };
    assert_eq!(share("gpt")["calls"], 8, "{plan}");
    assert_eq!(share("claude")["calls"], 4, "{plan}");
    assert!(u(&share("claude")["tokens"]) > 0, "{plan}");
    assert_eq!(plan["steps"][0]["provider"], "{{ item.vendor }}");
    let out = s.sluice(&["run", "job.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (mock, vendor, route) in [
        (&mocks[0], "gpt", "/v1/chat/completions"),
        (&mocks[1], "claude", "/v1/messages"),
    ] {
        let mut want: Vec<&str> = items
            .iter()
            .filter(|(_, v)| v == vendor)
            .map(|(q, _)| q.as_str())
            .collect();
        let sent = mock.journal("/v1/");
        let mut got: Vec<String> = Vec::new();
        for r in &sent {
            assert_eq!(r["path"], route, "its dialect: {r}");
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["model"], format!("m-{vendor}"));
            got.push(
                body["messages"][0]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        got.sort();
        want.sort();
        assert_eq!(got, want, "{vendor} gets exactly its items");
    }
    assert!(
        u(&mocks[1].stats()["max_in_flight"]) <= 2,
        "claude's own cap"
    );
    let results = read_jsonl(&s.path("results.jsonl"));
    assert_eq!(results.len(), 12);
    assert!(results.iter().all(|r| r["status"] == "done"));
}

#[test]
fn an_items_provider_naming_no_provider_is_an_error_with_its_item_count_before_anything_is_sent() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    // Every item has the same shape: run's quick check renders one item per
    // shape, but a provider is checked for every item.
    vendor_items(&s, 9, Some("claud"));
    let url = mock.url("/v1");
    let text = BY_VENDOR.replace("{A}", &url).replace("{B}", &url);
    std::fs::write(s.path("job.toml"), &text).unwrap();
    let says = "job.toml:19:12: steps.ask.provider: provider renders \"claud\", which is not a defined provider; did you mean `claude`? (3 of 9 items); defined: gpt, claude";
    for command in ["plan", "run"] {
        let out = s.sluice(&[command, "job.toml"]).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(err.contains(says), "{command}:\n{says}\n{err}");
    }
    // A template reading what is known only during the run is refused at load.
    let steps = text.replace(
        r#"provider = "{{ item.vendor }}""#,
        r#"provider = "{{ steps.ask.text }}""#,
    );
    std::fs::write(s.path("job.toml"), steps).unwrap();
    let out = s.sluice(&["run", "job.toml"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("job.toml:19:12: step \"ask\": a templated provider may read only item, index and matrix values, so that each can be checked before the run; it reads `steps`"),
        "{err}"
    );
    // A submitted job: the same check, before the run, as a 400.
    let server = Serve::start(&s, &[], &[]);
    let body = json!({
        "name": "vendors",
        "items": [{"q": "a", "vendor": "gpt"}, {"q": "b", "vendor": "claud"}],
        "providers": {"gpt": {"base_url": url}, "claude": {"base_url": url, "api": "anthropic"}},
        "steps": [{"name": "ask", "kind": "chat", "provider": "{{ item.vendor }}", "model": "m",
            "messages": [{"role": "user", "content": "{{ item.q }}"}], "params": {"max_tokens": 8}}],
    })
    .to_string();
    let (status, answer) = server.http(
        "POST",
        "/v1/runs?wait=all",
        &["Content-Type: application/json"],
        &body,
    );
    assert_eq!(status, 400, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("steps.ask.provider: provider renders \"claud\", which is not a defined provider; did you mean `claude`? (1 of 2 items)"),
        "{message}"
    );
    assert!(message.contains("nothing was sent"), "{message}");
    assert_eq!(u(&mock.stats()["requests"]), 0, "nothing sent");
}

#[test]
fn an_item_choosing_a_provider_that_cannot_take_the_step_is_an_error_before_anything_is_sent() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    vendor_items(&s, 6, None);
    let url = mock.url("/v1");
    let job = format!(
        r#"
[input]
path = "items.jsonl"

[providers.gpt]
base_url = "{url}"

[providers.claude]
base_url = "{url}"
api = "anthropic"

[[steps]]
name = "vec"
kind = "embed"
provider = "{{{{ item.vendor }}}}"
model = "e"
input = "{{{{ item.q }}}}"
"#
    );
    std::fs::write(s.path("job.toml"), job).unwrap();
    let out = s.sluice(&["run", "job.toml"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("job.toml:15:12: steps.vec.provider: embed steps need an OpenAI-compatible provider; provider \"claude\" has api = \"anthropic\", which has no embeddings API (2 of 6 items)"),
        "{err}"
    );
    assert_eq!(u(&mock.stats()["requests"]), 0, "nothing sent");
}

/// An upload to the least busy host, then a stage at the host its answer
/// names: `url` built from an earlier step's output.
const PINNED: &str = r#"
name = "pinned"
concurrency = 12

[input]
path = "files.jsonl"

[providers.gpu]
urls = [URLS]
url_concurrency = 1

[[steps]]
name = "upload"
kind = "http"
provider = "gpu"
path = "/stages/upload"
json = { file = "{{ item.path }}" }

[[steps]]
name = "denoise"
kind = "http"
provider = "gpu"
url = "http://{{ steps.upload.json.host }}/stages/denoise"
json = { file = "{{ steps.upload.json.id }}" }

[output]
path = "results.jsonl"
"#;

#[test]
fn a_url_naming_a_host_of_the_pool_goes_to_that_host_under_its_limit() {
    let pool: Vec<Mock> = (0..3)
        .map(|_| Mock::start(&["--latency-ms", "20"]))
        .collect();
    let urls: Vec<String> = pool.iter().map(|m| format!("\"{}\"", m.url(""))).collect();
    let s = Scratch::new();
    files(&s, 12);
    std::fs::write(s.path("job.toml"), PINNED.replace("URLS", &urls.join(", "))).unwrap();
    let out = s.sluice(&["run", "job.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut homes = std::collections::BTreeMap::<String, u64>::new();
    for r in read_jsonl(&s.path("results.jsonl")) {
        let upload = r["steps"]["upload"]["json"]["host"].as_str().unwrap();
        let denoise = r["steps"]["denoise"]["json"]["host"].as_str().unwrap();
        assert_eq!(
            upload, denoise,
            "the stage at the host that took the upload"
        );
        *homes.entry(upload.to_owned()).or_default() += 1;
    }
    assert!(homes.len() >= 2, "the uploads spread: {homes:?}");
    for m in &pool {
        let stats = m.stats();
        let host = m.url("").trim_start_matches("http://").to_owned();
        assert_eq!(
            stats["routes"]["/stages/denoise"]["statuses"]["200"]
                .as_u64()
                .unwrap_or(0),
            homes.get(&host).copied().unwrap_or(0),
            "{host}: {stats}"
        );
        // The pinned calls count against the host's url_concurrency, like
        // the pool's own: never two at once on a host.
        assert_eq!(stats["max_in_flight"], 1, "{host}: {stats}");
    }
}
