//! Limits held together: the mock enforces them like a provider and reports
//! what it saw; a client within its limits never sees a 429.

use serde_json::json;

use crate::util::*;

#[test]
fn concurrency_is_never_exceeded() {
    let mock = Mock::start(&["--latency-ms", "30", "--max-concurrency", "8"]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(80));
    let output = s
        .run(&input, &mock.chat_url(), &["--concurrency", "8", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stats = mock.stats();
    assert_eq!(stats["rate_limited"], 0, "{stats}");
    assert_eq!(stats["ok"], 80);
    let peak = u(&stats["max_in_flight"]);
    assert!((2..=8).contains(&peak), "peak in flight {peak}");
}

#[test]
fn rpm_limit_paces_requests_so_the_provider_never_throttles() {
    // 240/min = one request per 250 ms, enforced by the mock with no burst.
    // Its slack of half a slot forgives a loaded machine's stalls (a process
    // descheduled for ~100 ms delays one request and bunches it with the
    // next) but still refuses two requests at once or any faster rate.
    let mock = Mock::start(&["--rpm", "240", "--slack-ms", "125"]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(40));
    let output = s
        .run(&input, &mock.chat_url(), &["--rpm", "240", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stats = mock.stats();
    assert_eq!(stats["rate_limited"], 0, "{stats}");
    assert_eq!(stats["ok"], 40);
    assert!(u(&stats["max_requests_per_minute"]) <= 240);
    // Both sides, as the mock's referee measured them: never faster than
    // the limit, and not much slower either (a limiter at 10% of its limit
    // would pass "no 429"). See RATE_MARGIN for the bounds.
    assert_near_limit(&mock.rates(60_000)["requests_per_minute"], 240.0);
}

/// How far from its limit a paced run may land, as the mock's referee
/// measures it from the first admission to the last. Measured here (2
/// cores, three other builds running): with 16 requests 237.9 and 242.6 of
/// 240/min, 15,989 and 16,019 of 16,000 tokens/min; but under two more CPU
/// hogs (benches/under-load.sh) 16 requests once came to 14,976 tokens/min
/// (-6.4%): the first request also opens the connection, and a stall near
/// either end of a 4 s run moves that end. With 40 requests (10 s) under the
/// hogs: 237.5 and 239.3 of 240, 15,555 and 15,978 of 16,000 — within 2.8%,
/// so 5% holds with room. (Faster than the limit over any window is what the
/// referee's 429s catch: none were sent.)
const RATE_MARGIN: f64 = 0.05;

pub(crate) fn assert_near_limit(achieved: &serde_json::Value, limit: f64) {
    let achieved = achieved.as_f64().expect("a rate");
    eprintln!("achieved {achieved:.1} of {limit}");
    assert!(
        (achieved - limit).abs() <= limit * RATE_MARGIN,
        "achieved {achieved:.1} per minute against a limit of {limit}"
    );
}

#[test]
fn without_a_client_limit_429s_are_retried_after_retry_after() {
    let mock = Mock::start(&["--rpm", "1200"]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(15));
    let output = s
        .run(&input, &mock.chat_url(), &["--retries", "20", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stats = mock.stats();
    assert!(
        u(&stats["rate_limited"]) > 0,
        "the mock should have throttled a burst: {stats}"
    );
    assert_eq!(stats["ok"], 15);
    let summary = json_stdout(&output);
    assert_eq!(summary["this_run"]["throttled"], stats["rate_limited"]);
    assert_eq!(summary["recorded"]["throttled"], stats["rate_limited"]);
}

#[test]
fn tpm_limit_is_held_with_estimates_corrected_by_usage() {
    // 16,000 tokens/min = 1 token per 3.75 ms. Each request: ~50 prompt
    // tokens, max_tokens 50 reserved, 16 completion tokens actually used:
    // ~66 tokens, a 250 ms slot, and the mock's slack is half of that (see
    // the rpm test above).
    let mock = Mock::start(&["--tpm", "16000", "--slack-ms", "120"]);
    let s = Scratch::new();
    let prompt = "word ".repeat(40);
    let lines: Vec<String> = (0..40)
        .map(|i| chat_line(&format!("t{i}"), &format!("{prompt}{i:03}"), i))
        .collect();
    let lines: Vec<String> = lines
        .into_iter()
        .map(|l| l.replace("\"max_tokens\":20", "\"max_tokens\":50"))
        .collect();
    let input = s.write_lines("in.jsonl", &lines);
    let output = s
        .run(&input, &mock.chat_url(), &["--tpm", "16000", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stats = mock.stats();
    assert_eq!(stats["rate_limited"], 0, "{stats}");
    assert_eq!(stats["ok"], 40);
    let summary = json_stdout(&output);
    let used =
        u(&summary["recorded"]["prompt_tokens"]) + u(&summary["recorded"]["completion_tokens"]);
    assert_eq!(used, u(&stats["tokens_charged"]));
    // Paced by actual usage (~66 tokens each), not by the 100-token
    // reservation: at the limit both ways, as the referee measured it.
    assert_near_limit(&mock.rates(60_000)["tokens_per_minute"], 16_000.0);
}

#[test]
fn tpm_on_an_openai_model_counts_with_its_tokenizer_and_never_stalls_into_429s() {
    // gpt-4o-mini is counted with o200k on both sides: the client's exact
    // estimate (under --tpm) and the mock's charge. The tables are built
    // before dispatch, on a thread of their own; built by the first
    // estimate on the dispatcher they stalled it 0.4-0.8 s in a debug build,
    // and the calls due meanwhile then went out bunched. Same pacing as the
    // test above: ~66 tokens a call, 16,000/min, half a slot of slack.
    let mock = Mock::start(&["--tpm", "16000", "--slack-ms", "120"]);
    let s = Scratch::new();
    let prompt = "word ".repeat(40);
    let lines: Vec<String> = (0..40)
        .map(|i| {
            chat_line(&format!("t{i}"), &format!("{prompt}{i:03}"), i)
                .replace("\"model\":\"m\"", "\"model\":\"gpt-4o-mini\"")
                .replace("\"max_tokens\":20", "\"max_tokens\":50")
        })
        .collect();
    assert!(lines[0].contains("gpt-4o-mini"), "{}", lines[0]);
    let input = s.write_lines("in.jsonl", &lines);
    let output = s
        .run(&input, &mock.chat_url(), &["--tpm", "16000", "--json"])
        .env("SLUICE_LOG", "sluice_engine::tokens=debug")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stats = mock.stats();
    assert_eq!(stats["rate_limited"], 0, "{stats}");
    assert_eq!(stats["ok"], 40);
    // The tables were ready before the first call went out.
    assert!(
        stderr(&output).contains("tokenizer tables ready"),
        "{}",
        stderr(&output)
    );
    let summary = json_stdout(&output);
    let used =
        u(&summary["recorded"]["prompt_tokens"]) + u(&summary["recorded"]["completion_tokens"]);
    assert_eq!(used, u(&stats["tokens_charged"]));
    // Measured (debug build, 2 cores, other builds running): 16,001.0,
    // 16,001.3 and 15,990.7 of 16,000; under two CPU hogs (benches/
    // under-load.sh, 4 runs) 15,949-15,991 and no 429. RATE_MARGIN's 5%
    // holds with ten times that spread. Before the mock built its tables
    // at start, one loaded run in three drew a 429 and runs came to
    // 15,626-15,842 (its one thread read the heads queued behind the build
    // together).
    assert_near_limit(&mock.rates(60_000)["tokens_per_minute"], 16_000.0);
}

#[test]
fn a_request_larger_than_the_tpm_limit_fails_clearly_and_is_not_sent() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let big = json!({"custom_id": "big", "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}}).to_string();
    let small = chat_line("small", "hi", 0);
    let input = s.write_lines("in.jsonl", &[big, small]);
    let out = s.path("out.jsonl");
    let output = s
        .run(&input, &mock.chat_url(), &["--tpm", "1000"])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let results = read_jsonl(&out);
    assert_eq!(results[0]["error"]["code"], "token_limit");
    assert!(results[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("raise --tpm"));
    assert_eq!(results[1]["response"]["status_code"], 200);
    assert_eq!(mock.stats()["requests"], 1);
}

#[test]
fn with_only_a_rate_the_workers_grow_to_what_the_latency_needs() {
    // 100 requests/s at 1 s latency needs ~100 in flight, more than the 64
    // default. The mock holds the rate with 200 ms of slack: a loaded
    // machine's stalls bunch requests paced 10 ms apart (up to 20 forgiven),
    // while a window of 64 sent at once would still draw 40-odd 429s.
    let mock = Mock::start(&["--latency-ms", "1000", "--rpm", "6000", "--slack-ms", "200"]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(300));
    let out = s
        .run(&input, &mock.chat_url(), &["--rpm", "6000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats = mock.stats();
    assert_eq!(stats["ok"], 300);
    // A stall longer than the slack may still draw a stray 429 (retried).
    assert!(u(&stats["rate_limited"]) <= 15, "{stats}");
    let peak = u(&stats["max_in_flight"]);
    assert!(
        peak > 64,
        "workers did not grow past the default 64: peak {peak}"
    );
    // Given --concurrency, it stays the cap.
    let mock = Mock::start(&["--latency-ms", "300"]);
    let small = s.write_lines("small.jsonl", &chat_lines(40));
    let out = s
        .run(
            &small,
            &mock.chat_url(),
            &["--rpm", "6000", "--concurrency", "8"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(u(&mock.stats()["max_in_flight"]) <= 8);
}
