//! examples/eval-sequences: CMS prompts × a model matrix × runs, as
//! three-turn conversations under a provider limit of 8 in flight.

use serde_json::{json, Value};

use super::{summary, Example};
use crate::util::*;

#[test]
fn eval_sequences_hold_their_history_turn_by_turn_under_8_in_flight() {
    let ex = Example::copy("eval-sequences");
    let cms = ex.path("cms");
    // The job's own settings against a fast, flaky model API that answers
    // 429 beyond 8 calls in flight, as the provider would.
    let mock = Mock::start(&[
        "--cms",
        cms.to_str().unwrap(),
        "--latency-ms",
        "20",
        "--jitter-ms",
        "20",
        "--completion-tokens",
        "24",
        "--max-concurrency",
        "8",
        "--fail-rate",
        "0.05",
        "--seed",
        "11",
        "--journal",
        "1000",
    ]);
    ex.point(9100, &mock);
    let out = ex.run(&[
        "--set",
        "matrix.model=a,b",
        "--set",
        "matrix.run=1,2,3",
        "--json",
    ]);
    let run = summary(&out, 0);
    assert_eq!(
        run["recorded"]["done"], 30,
        "5 sequences × 2 models × 3 runs"
    );

    let prompts: Value =
        serde_json::from_str(&std::fs::read_to_string(cms.join("prompts.json")).unwrap()).unwrap();
    let prompts = prompts["data"].as_array().unwrap();
    let results = ex.results();
    assert_eq!(results.len(), 30);
    let chats = mock.journal("/v1/chat/completions");
    let answered: Vec<Value> = chats
        .iter()
        .filter(|r| r["status"] == 200)
        .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(
        answered.len(),
        90,
        "3 turns × 30 conversations, each answered once"
    );
    let mut k = 0;
    for (sequence, item) in prompts.iter().enumerate() {
        for model in ["a", "b"] {
            for run in 1..=3 {
                let r = &results[k];
                k += 1;
                let slug = item["slug"].as_str().unwrap();
                assert_eq!(
                    r["id"],
                    format!("{slug}#model={model},run={run}"),
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
                // What the model received for turn 3: system, the two earlier
                // exchanges with the answers it gave, then the third prompt.
                let expected = json!([
                    {"role": "system", "content": "You are being evaluated. Answer in at most three sentences."},
                    {"role": "user", "content": turns[0]["prompt"]},
                    {"role": "assistant", "content": turns[0]["answer"]},
                    {"role": "user", "content": turns[1]["prompt"]},
                    {"role": "assistant", "content": turns[1]["answer"]},
                    {"role": "user", "content": turns[2]["prompt"]},
                ]);
                let third: Vec<&Value> = answered
                    .iter()
                    .filter(|b| {
                        b["model"] == model && b["seed"] == run && b["messages"] == expected
                    })
                    .collect();
                assert_eq!(
                    third.len(),
                    1,
                    "{slug} model {model} run {run}: turn 3 as sent"
                );
                let _ = sequence;
            }
        }
    }
    let stats = mock.stats();
    assert_eq!(stats["ok"], 90, "{stats}");
    assert!(
        u(&stats["server_errors"]) > 0,
        "the seeded faults happened: {stats}"
    );
    assert_eq!(
        stats["rate_limited"], 0,
        "never more than 8 in flight: {stats}"
    );
    assert!(u(&stats["max_in_flight"]) <= 8, "{stats}");
    assert_eq!(
        stats["duplicate_requests"], 0,
        "no answer was paid for twice: {stats}"
    );
    assert_eq!(
        u(&run["this_run"]["retries"]),
        u(&stats["server_errors"]),
        "each 500 was retried once"
    );
    // Two prompts a page: 2 + 2 + 1.
    assert_eq!(
        stats["routes"]["/items/prompts"]["statuses"]["200"], 3,
        "{stats}"
    );
}
