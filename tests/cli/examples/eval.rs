//! examples/eval-sequences: CMS prompts × a model matrix × runs, as
//! three-turn conversations, each model at its own provider (two
//! OpenAI-compatible, one Anthropic) under that provider's own limit.

use serde_json::{json, Value};

use super::{summary, Example};
use crate::util::*;

const SYSTEM: &str = "You are being evaluated. Answer in at most three sentences.";

/// One of the example's providers: its mock, the port the job file names,
/// the model it serves, the route its dialect calls and its `concurrency`.
struct Provider {
    mock: Mock,
    port: u16,
    model: &'static str,
    route: &'static str,
    cap: u64,
}

/// A fast, flaky model API that answers 429 beyond `cap` calls in flight,
/// as the provider would.
fn model_api(extra: &[&str], cap: u64, seed: &str) -> Mock {
    let cap = cap.to_string();
    let mut args = vec![
        "--latency-ms",
        "20",
        "--jitter-ms",
        "20",
        "--completion-tokens",
        "24",
        "--max-concurrency",
        &cap,
        "--fail-rate",
        "0.05",
        "--seed",
        seed,
        "--journal",
        "1000",
    ];
    args.extend_from_slice(extra);
    Mock::start(&args)
}

#[test]
fn eval_sequences_span_three_providers_each_within_its_limit() {
    let ex = Example::copy("eval-sequences");
    let cms = ex.path("cms");
    let providers = [
        Provider {
            mock: model_api(&["--cms", cms.to_str().unwrap()], 16, "11"),
            port: 9100,
            model: "gpt-4o",
            route: "/v1/chat/completions",
            cap: 16,
        },
        Provider {
            mock: model_api(&[], 12, "12"),
            port: 9101,
            model: "claude-sonnet-4-5",
            route: "/v1/messages",
            cap: 12,
        },
        Provider {
            mock: model_api(&[], 8, "13"),
            port: 9102,
            model: "qwen-72b",
            route: "/v1/chat/completions",
            cap: 8,
        },
    ];
    for p in &providers {
        ex.point(p.port, &p.mock);
    }
    let out = ex.run(&["--json"]);
    let run = summary(&out, 0);
    assert_eq!(
        run["recorded"]["done"], 45,
        "5 sequences × 3 models × 3 runs"
    );

    let prompts: Value =
        serde_json::from_str(&std::fs::read_to_string(cms.join("prompts.json")).unwrap()).unwrap();
    let prompts = prompts["data"].as_array().unwrap();
    let results = ex.results();
    assert_eq!(results.len(), 45);

    // Each provider got its model's share, in its own dialect, and nothing
    // of the other models.
    let answered: Vec<Vec<Value>> = providers
        .iter()
        .map(|p| {
            let sent = p.mock.journal("/v1/");
            assert!(
                sent.iter().all(|r| r["path"] == p.route),
                "{}: only its dialect's route",
                p.model
            );
            sent.iter()
                .filter(|r| r["status"] == 200)
                .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
                .collect()
        })
        .collect();
    for (p, bodies) in providers.iter().zip(&answered) {
        assert_eq!(
            bodies.len(),
            45,
            "{}: 3 turns × 15 conversations, each answered once",
            p.model
        );
        assert!(bodies.iter().all(|b| b["model"] == p.model), "{}", p.model);
    }
    // Anthropic's API takes no seed: it is left out of its requests (with a
    // warning), and kept for the two that take one.
    assert!(answered[1].iter().all(|b| b.get("seed").is_none()));
    assert!(answered[0].iter().all(|b| b["seed"].is_u64()));

    let mut k = 0;
    for item in prompts {
        let slug = item["slug"].as_str().unwrap();
        for (p, bodies) in providers.iter().zip(&answered) {
            for run in 1..=3 {
                let r = &results[k];
                k += 1;
                assert_eq!(
                    r["id"],
                    format!("{slug}#model={},run={run}", p.model),
                    "input order"
                );
                assert_eq!(r["status"], "done", "{r}");
                let turns = r["steps"]["dialogue"]["turns"].as_array().unwrap();
                assert_eq!(turns.len(), 3, "{r}");
                // The turns are the sequence's prompts, in order.
                for (t, turn) in turns.iter().enumerate() {
                    assert_eq!(
                        turn["prompt"],
                        item[format!("prompt_{}", t + 1)],
                        "{slug} turn {t}"
                    );
                }
                // Each turn's request holds the whole history, so it grows.
                let tokens: Vec<u64> = turns
                    .iter()
                    .map(|t| u(&t["usage"]["prompt_tokens"]))
                    .collect();
                assert!(
                    tokens[0] < tokens[1] && tokens[1] < tokens[2],
                    "{slug}: {tokens:?}"
                );
                // What the model received for turn 3: the system prompt, the
                // two earlier exchanges with the answers it gave, then the
                // third prompt.
                let exchanges = json!([
                    {"role": "user", "content": turns[0]["prompt"]},
                    {"role": "assistant", "content": turns[0]["answer"]},
                    {"role": "user", "content": turns[1]["prompt"]},
                    {"role": "assistant", "content": turns[1]["answer"]},
                    {"role": "user", "content": turns[2]["prompt"]},
                ]);
                let third = if p.route == "/v1/messages" {
                    // Anthropic-shaped: the system prompt is its own field.
                    // Without a seed the three runs send the same request,
                    // so the mock sees this one once per run.
                    let n = bodies
                        .iter()
                        .filter(|b| b["system"] == SYSTEM && b["messages"] == exchanges)
                        .count();
                    assert_eq!(n, 3, "{slug} {} run {run}: turn 3 as sent", p.model);
                    continue;
                } else {
                    let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
                    messages.extend(exchanges.as_array().unwrap().iter().cloned());
                    bodies
                        .iter()
                        .filter(|b| b["seed"] == run && b["messages"] == json!(messages))
                        .count()
                };
                assert_eq!(third, 1, "{slug} {} run {run}: turn 3 as sent", p.model);
            }
        }
    }

    let mut server_errors = 0;
    for p in &providers {
        let stats = p.mock.stats();
        assert_eq!(stats["ok"], 45, "{}: {stats}", p.model);
        assert_eq!(
            stats["rate_limited"], 0,
            "{}: never more than {} in flight: {stats}",
            p.model, p.cap
        );
        assert!(u(&stats["max_in_flight"]) <= p.cap, "{}: {stats}", p.model);
        // No answer was paid for twice; Anthropic's three runs of a
        // conversation are one request sent three times (no seed), so 2 of
        // each 3 are the same body again.
        let again = if p.route == "/v1/messages" { 30 } else { 0 };
        assert_eq!(stats["duplicate_requests"], again, "{}: {stats}", p.model);
        server_errors += u(&stats["server_errors"]);
    }
    assert!(server_errors > 0, "the seeded faults happened");
    assert_eq!(
        u(&run["this_run"]["retries"]),
        server_errors,
        "each 500 was retried once"
    );
    // Two prompts a page: 2 + 2 + 1, from the CMS alone.
    let cms_stats = providers[0].mock.stats();
    assert_eq!(
        cms_stats["routes"]["/items/prompts"]["statuses"]["200"], 3,
        "{cms_stats}"
    );
}
