//! Resilience: breakers, provider headers, fallbacks, cache, webhooks,
//! deadlines, adaptive concurrency and budgets — each against real local
//! servers, each failing if its mechanism is taken out.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::fakehost::{Behaviour, FakeHost};
use crate::util::*;

fn items(s: &Scratch, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| json!({"id": format!("x{i}"), "q": format!("question {i}")}).to_string())
        .collect();
    s.write_lines("in.jsonl", &lines);
}

const ASK: &str = r#"
[[steps]]
name = "ask"
kind = "chat"
provider = "main"
model = "m"
messages = [{ role = "user", content = "{{ item.q }}" }]
params = { max_tokens = 8 }
"#;

fn job(s: &Scratch, head: &str, steps: &str) -> std::path::PathBuf {
    let path = s.path("job.toml");
    std::fs::write(
        &path,
        format!(
            "{head}\n[input]\npath = \"in.jsonl\"\n{steps}\n[output]\npath = \"results.jsonl\"\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn the_breaker_takes_a_dead_endpoint_out_of_the_pool() {
    let healthy = Mock::start(&[]);
    let dead = Mock::start(&["--fail-rate", "1.0"]);
    let s = Scratch::new();
    items(&s, 60);
    let head = format!(
        "concurrency = 4\n[providers.main]\nurls = [\"{}\", \"{}\"]\nretries = {{ max = 10, base = \"5ms\", cap = \"20ms\" }}\ncircuit_breaker = {{ failures = 3, cooldown = \"60s\" }}",
        healthy.url("/v1"),
        dead.url("/v1")
    );
    let path = job(&s, &head, ASK);
    let out = s.sluice(&["run", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(read_jsonl(&s.path("results.jsonl")).len(), 60);
    assert_eq!(healthy.stats()["ok"], 60);
    // Three failures open the breaker; a 60 s cooldown never lets a probe through.
    let to_dead = u(&dead.stats()["requests"]);
    assert!(to_dead <= 4, "the dead endpoint got {to_dead} requests");
}

#[test]
fn rate_limit_headers_slow_the_client_before_it_is_throttled() {
    // No client limit: only the mock's x-ratelimit-* headers pace it. At
    // 240/min (a 250 ms slot) the mock's slack of half a slot forgives a
    // loaded machine's stalls, never two requests at once (see limits.rs).
    let mock = Mock::start(&["--rpm", "240", "--slack-ms", "125"]);
    let s = Scratch::new();
    // 40 requests (10 s at the limit): long enough that a stall near
    // either end moves the measured rate little (see limits.rs, RATE_MARGIN).
    let input = s.write_lines("in.jsonl", &chat_lines(40));
    let out = s
        .run(&input, &mock.chat_url(), &["--concurrency", "1", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats = mock.stats();
    assert_eq!(stats["ok"], 40);
    assert_eq!(
        stats["rate_limited"], 0,
        "headers should have paced the client: {stats}"
    );
    // The other side: paced by the headers, not slowed far below them.
    crate::limits::assert_near_limit(&mock.rates(60_000)["requests_per_minute"], 240.0);
}

#[test]
fn fallbacks_replace_a_failed_step_and_are_marked() {
    let broken = Mock::start(&["--fail-rate", "1.0"]);
    let backup = Mock::start(&[]);
    let s = Scratch::new();
    items(&s, 3);
    let head = format!(
        "[providers.main]\nbase_url = \"{}\"\nretries = {{ max = 1, base = \"5ms\" , cap = \"10ms\" }}\n[providers.backup]\nbase_url = \"{}\"",
        broken.url("/v1"),
        backup.url("/v1")
    );
    let steps = format!(
        "{ASK}fallback = {{ provider = \"backup\" }}\n{}",
        ASK.replace("name = \"ask\"", "name = \"describe\"")
            + "fallback = { value = \"unavailable\" }\n"
    );
    let path = job(&s, &head, &steps);
    let out = s.sluice(&["run", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for r in read_jsonl(&s.path("results.jsonl")) {
        assert_eq!(r["status"], "done", "{r}");
        let ask = &r["steps"]["ask"];
        // The 500s, or (once they opened main's breaker) the open circuit.
        let reason = ask["fallback"].as_str().unwrap();
        assert!(
            reason.starts_with("provider backup after: server_error")
                || reason.starts_with("provider backup after: circuit_open"),
            "{ask}"
        );
        assert!(ask["text"].as_str().unwrap().starts_with("mock reply"));
        let describe = &r["steps"]["describe"];
        assert_eq!(describe["text"], "unavailable");
        // The reason: the 500s, or (once they opened main's breaker) the open circuit.
        let reason = describe["fallback"].as_str().unwrap();
        assert!(
            reason.contains("HTTP 500") || reason.starts_with("circuit_open"),
            "{describe}"
        );
    }
    assert_eq!(backup.stats()["ok"], 3);
}

#[test]
fn cached_steps_skip_the_call_across_runs_and_are_marked() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    items(&s, 5);
    let head = format!("[providers.main]\nbase_url = \"{}\"", mock.url("/v1"));
    let path = job(&s, &head, &format!("{ASK}cache = {{ ttl = \"168h\" }}\n"));
    let first = s.sluice(&["run", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(mock.stats()["ok"], 5);
    // A new run (not a resume) of the same requests: every answer from the cache.
    let second = s
        .sluice(&["run", path.to_str().unwrap(), "--fresh"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(
        mock.stats()["requests"],
        5,
        "no call was made the second time"
    );
    for r in read_jsonl(&s.path("results.jsonl")) {
        assert_eq!(r["steps"]["ask"]["cached"], true, "{r}");
    }
    assert!(
        stderr(&second).contains("5 from cache"),
        "{}",
        stderr(&second)
    );
    // Cached answers spent no tokens: none count against the tpm shown.
    assert!(
        stderr(&second).contains("· 0 tokens/min"),
        "{}",
        stderr(&second)
    );
    // The answers themselves keep their usage.
    for r in read_jsonl(&s.path("results.jsonl")) {
        assert!(
            r["steps"]["ask"]["usage"]["prompt_tokens"].as_u64() > Some(0),
            "{r}"
        );
    }
}

#[test]
fn webhooks_are_signed_and_verify() {
    let mock = Mock::start(&[]);
    let host = FakeHost::start(Behaviour::default());
    let s = Scratch::new();
    items(&s, 3);
    let head = format!(
        "[providers.main]\nbase_url = \"{}\"\n[webhook]\nurl = \"{}\"\nsecret_env = \"HOOK_SECRET\"",
        mock.url("/v1"),
        host.url("/hook")
    );
    let path = job(&s, &head, ASK);
    let secret = "whsec-test-42";
    let out = s
        .sluice(&["run", path.to_str().unwrap()])
        .env("HOOK_SECRET", secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let hooks = host.hooks.lock().unwrap().clone();
    assert_eq!(hooks.len(), 3, "one per finished item: {}", stderr(&out));
    let mut ids = Vec::new();
    for (headers, body) in &hooks {
        let timestamp = &headers["x-sluice-timestamp"];
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(headers["x-sluice-signature"], expected);
        let event: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["event"], "item.finished");
        assert_eq!(event["status"], "done");
        ids.push(event["id"].as_str().unwrap().to_string());
    }
    ids.sort();
    assert_eq!(ids, ["x0", "x1", "x2"]);
    // The secret itself never appears anywhere.
    for (headers, body) in &hooks {
        assert!(!String::from_utf8_lossy(body).contains(secret));
        assert!(headers.values().all(|v| !v.contains(secret)));
    }
}

#[test]
fn a_unit_deadline_cuts_a_hung_unit() {
    // Calls of a minute: a run not cut by the 300 ms deadline takes at
    // least that long, far from the 30 s a loaded debug run is allowed.
    let mock = Mock::start(&["--latency-ms", "60000"]);
    let s = Scratch::new();
    items(&s, 2);
    let head = format!(
        "unit_timeout = \"300ms\"\n[providers.main]\nbase_url = \"{}\"",
        mock.url("/v1")
    );
    let path = job(&s, &head, ASK);
    let started = std::time::Instant::now();
    let out = s.sluice(&["run", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the 60 s calls were not cut"
    );
    for r in read_jsonl(&s.path("results.jsonl")) {
        assert_eq!(r["error"]["code"], "deadline", "{r}");
    }
}

#[test]
fn adaptive_concurrency_finds_the_servers_capacity() {
    // The server takes 6 at once; a fixed 64 would be throttled on most calls.
    let mock = Mock::start(&["--max-concurrency", "6", "--latency-ms", "20"]);
    let s = Scratch::new();
    items(&s, 200);
    let head = format!(
        "concurrency = 200\n[providers.main]\nbase_url = \"{}\"\nconcurrency = \"auto\"\nmax_concurrency = 64\nretries = {{ max = 20, base = \"5ms\", cap = \"50ms\" }}",
        mock.url("/v1")
    );
    let path = job(&s, &head, ASK);
    let out = s.sluice(&["run", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats = mock.stats();
    assert_eq!(stats["ok"], 200);
    let throttled = u(&stats["rate_limited"]);
    assert!(
        throttled < 40,
        "{throttled} of {} requests were throttled",
        stats["requests"]
    );
}

#[test]
fn a_budget_stops_new_calls_and_a_higher_one_resumes() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    items(&s, 20);
    // One dollar per token: every call costs ~$15-25.
    let head = format!(
        "concurrency = 1\nbudget = {{ usd = 50 }}\n[providers.main]\nbase_url = \"{}\"\nprices = {{ \"*\" = {{ input = 1000000, output = 1000000 }} }}",
        mock.url("/v1")
    );
    let path = job(&s, &head, ASK);
    let plan = s
        .sluice(&["plan", path.to_str().unwrap()])
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(plan.contains("cost       ~$"), "{plan}");
    assert!(plan.contains("budget     $50.00"), "{plan}");
    let first = s
        .sluice(&["run", path.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let summary = json_stdout(&first);
    assert_eq!(summary["this_run"]["budget_reached"], true);
    let sent = u(&mock.stats()["requests"]);
    // Each call costs ~$11 (about 3 prompt + 8 completion tokens at $1 each).
    assert!((3..=8).contains(&sent), "{sent} calls under a $50 budget");
    assert!(summary["this_run"]["spent_usd"].as_f64().unwrap() >= 50.0);
    let second = s
        .sluice(&["run", path.to_str().unwrap(), "--set", "budget.usd=100000"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(read_jsonl(&s.path("results.jsonl")).len(), 20);
    assert_eq!(
        u(&mock.stats()["requests"]),
        20,
        "the rerun sent only what was pending"
    );
    let status = s.sluice(&["status"]).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("spent      $"), "{status}");
}

#[test]
fn a_run_webhook_fires_once_with_the_totals() {
    let mock = Mock::start(&[]);
    let host = FakeHost::start(Behaviour::default());
    let s = Scratch::new();
    items(&s, 4);
    let head = format!(
        "[providers.main]\nbase_url = \"{}\"\n[webhook]\nurl = \"{}\"\non = \"run\"",
        mock.url("/v1"),
        host.url("/hook")
    );
    let path = job(&s, &head, ASK);
    let out = s.sluice(&["run", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let hooks = host.hooks.lock().unwrap().clone();
    assert_eq!(hooks.len(), 1, "one event for the run");
    let event: serde_json::Value = serde_json::from_slice(&hooks[0].1).unwrap();
    assert_eq!(event["event"], "run.finished");
    assert_eq!(event["done"], 4);
    assert_eq!(event["failed"], 0);
    assert_eq!(event["interrupted"], false);
    // Without a secret there is no signature header.
    assert!(!hooks[0].0.contains_key("x-sluice-signature"));
}

/// A pipeline against one endpoint that is down for the first `outage`.
fn outage_run(breaker: &str) -> (Option<i32>, Vec<serde_json::Value>) {
    let host = FakeHost::start(Behaviour {
        // Long against the 60 ms four quick attempts take, so a loaded
        // machine's stall cannot carry them past the outage.
        outage: Some(std::time::Duration::from_millis(3_000)),
        ..Default::default()
    });
    let s = Scratch::new();
    items(&s, 10);
    let head = format!(
        "concurrency = 10\n[providers.gpu]\nbase_url = \"{}\"\nretries = {{ max = 3, base = \"10ms\", cap = \"20ms\" }}\n{breaker}",
        host.url("")
    );
    let steps = "[[steps]]\nname = \"stage\"\nkind = \"http\"\nprovider = \"gpu\"\npath = \"/stage/a\"\njson = { q = \"{{ item.q }}\" }\n";
    let path = job(&s, &head, steps);
    let out = s.sluice(&["run", path.to_str().unwrap()]).output().unwrap();
    (out.status.code(), read_jsonl(&s.path("results.jsonl")))
}

#[test]
fn while_the_breaker_is_open_items_wait_instead_of_burning_retries() {
    // With the breaker, items wait out the outage and all succeed: only the
    // half-open probes (one per 1.5 s cooldown, at most two inside the
    // 3 s outage) spend an attempt of the item that carries them.
    let (code, results) = outage_run("circuit_breaker = { failures = 2, cooldown = \"1500ms\" }");
    assert_eq!(code, Some(0), "{results:?}");
    assert!(results.iter().all(|r| r["status"] == "done"));
    // Without it, four quick attempts all land inside the 3 s outage.
    let (code, results) = outage_run("circuit_breaker = false");
    assert_eq!(code, Some(1));
    assert!(
        results.iter().all(|r| r["status"] == "failed"),
        "{results:?}"
    );
}

#[test]
fn with_only_a_rate_the_unit_window_grows_to_reach_it() {
    // 100 calls/s at 1 s latency needs ~100 units in flight; the default is 64.
    // The window grows once a latency is measured (after the first second),
    // so the run lasts long enough after that to show it on a loaded
    // machine: 600 calls, 6 s at the rate.
    let mock = Mock::start(&["--latency-ms", "1000"]);
    let s = Scratch::new();
    items(&s, 600);
    let head = format!(
        "[providers.main]\nbase_url = \"{}\"\nrpm = 6000",
        mock.url("/v1")
    );
    let path = job(&s, &head, ASK);
    let out = s.sluice(&["run", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats = mock.stats();
    assert_eq!(stats["ok"], 600);
    let peak = u(&stats["max_in_flight"]);
    // Every call takes at least the mock's 1 s, so 64 units in flight can
    // never make more than 64 calls a second: the rate shows the growth too.
    let rate = mock.rates(1_000)["max_requests"].clone();
    assert!(
        peak > 64,
        "the window did not grow past 64: peak {peak}, at most {rate} calls in a second"
    );
}
