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
    // fails; the retry finds a mock on the same port serving every model.
    let mock = Mock::start(&["--models", "m"]);
    let port = mock.port.to_string();
    let s = Scratch::new();
    s.write_lines(
        "items.jsonl",
        &[json!({"id": "i0", "q": "q", "parts": ["a"]}).to_string()],
    );
    let text = TIMED.replace("model = \"m\"\nturns", "model = \"other\"\nturns");
    assert_ne!(text, TIMED);
    let job = s.job(&text, Some(&mock), None);
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let first = read_jsonl(&s.path("results.jsonl"));
    assert_eq!(first[0]["status"], "failed", "{first:?}");
    drop(mock);
    let _again = Mock::start(&["--port", &port]);
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
