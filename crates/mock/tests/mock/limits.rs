//! Requests/minute, tokens/minute and the concurrency cap, as a client meets them.

use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;
use sluice_limit::estimate_text_tokens;
use sluice_mock::MockConfig;

use crate::{chat_body, Mock};

#[tokio::test]
async fn rpm_refuses_a_burst_and_admits_after_retry_after() {
    // One request per 3 s: the second request surely arrives within the
    // slot even if this process stalls for seconds, and the wait it is told
    // is checked against the gap measured here, not a guess.
    let mock = Mock::start(MockConfig {
        rpm: Some(20),
        ..MockConfig::default()
    })
    .await;
    let sent = Instant::now();
    let first = mock.chat("a").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.number("x-ratelimit-limit-requests"), 20);
    assert_eq!(first.number("x-ratelimit-remaining-requests"), 0);
    assert!(
        first.header("x-ratelimit-reset-requests") == "3s",
        "{first:?}"
    );
    assert_eq!(first.header("x-ratelimit-limit-tokens"), "");

    let refused = mock.chat("b").await;
    let gap = sent.elapsed().as_millis() as u64;
    assert_eq!(refused.status, 429);
    let wait_ms = refused.number("retry-after-ms");
    // The slot less the time between the two arrivals (at most `gap`).
    assert!(
        (3_000 - gap.min(3_000)..=3_000).contains(&wait_ms),
        "retry-after-ms {wait_ms} after {gap} ms"
    );
    assert_eq!(refused.number("retry-after"), wait_ms.div_ceil(1_000));
    let error = &refused.json()["error"];
    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("requests"), &json!("rate_limit_exceeded"))
    );
    let message = error["message"].as_str().expect("message");
    assert!(
        message.starts_with("Rate limit reached for requests"),
        "{message}"
    );
    assert!(
        message.ends_with(&format!("Please try again in {wait_ms}ms.")),
        "{message}"
    );

    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    assert_eq!(mock.chat("b").await.status, 200);
    let stats = mock.server.stats();
    assert_eq!(
        (stats.ok, stats.rate_limited, stats.max_requests_per_minute),
        (2, 1, 2)
    );
    // The refused request was not charged.
    assert_eq!(stats.tokens_charged, 2 * (1 + 16));
}

#[tokio::test]
async fn tpm_refuses_by_tokens_and_never_admits_a_too_large_request() {
    // 600 tokens/min: 100 ms per token. Each chat below costs 4 + 16 = 20
    // tokens, a 2 s slot: wide enough that a stalled process still sends
    // the second request inside it; the wait is checked against the gap
    // measured here.
    let mock = Mock::start(MockConfig {
        tpm: Some(600),
        ..MockConfig::default()
    })
    .await;
    let prompt = "0123456789abcdef";
    assert_eq!(estimate_text_tokens(prompt), 4);
    let sent = Instant::now();
    let first = mock.chat(prompt).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.number("x-ratelimit-limit-tokens"), 600);
    assert_eq!(first.number("x-ratelimit-remaining-tokens"), 0);

    let refused = mock.chat(prompt).await;
    let gap = sent.elapsed().as_millis() as u64;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"]["type"], "tokens");
    let wait_ms = refused.number("retry-after-ms");
    assert!(
        (2_000 - gap.min(2_000)..=2_000).contains(&wait_ms),
        "retry-after-ms {wait_ms} after {gap} ms"
    );
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    let admitted = mock.chat(prompt).await;
    assert_eq!(admitted.status, 200);

    // 2,400 characters of prompt alone exceed the whole limit: refused with
    // no retry-after, since waiting would not help.
    let huge = mock.chat(&"x".repeat(2_400)).await;
    assert_eq!(huge.status, 429);
    assert_eq!(huge.header("retry-after"), "");
    let message = huge.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("Request too large"), "{message}");
    // ...and it did not use up the budget either: once the admitted
    // request's slot has passed, the next one is admitted.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let idle = mock.chat(prompt).await;
    assert_eq!(idle.status, 200);
    let stats = mock.server.stats();
    assert_eq!(
        (stats.ok, stats.rate_limited, stats.tokens_charged),
        (3, 2, 60)
    );
    assert_eq!(stats.max_tokens_per_minute, 60);
}

#[tokio::test]
async fn concurrency_cap_answers_429_at_once() {
    // A latency of 3 s, so "at once" is far from "after the latency" even
    // when a loaded machine delays this process by a second or more. The
    // third request is sent once the mock holds the first two.
    let cfg = MockConfig {
        latency_ms: 3_000,
        max_concurrency: Some(2),
        ..MockConfig::default()
    };
    let mock = Mock::start(cfg).await;
    let timed = |content: &'static str, after_both_arrived: bool| {
        let mock = &mock;
        async move {
            if after_both_arrived {
                // Until the mock holds both (an event, not a guess at how
                // long two requests take to arrive on a loaded machine).
                let deadline = Instant::now() + Duration::from_secs(30);
                while mock.server.stats().in_flight < 2 {
                    assert!(Instant::now() < deadline, "the first two never arrived");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let sent = Instant::now();
            let res = mock.chat(content).await;
            (res, sent.elapsed())
        }
    };
    // Two fill the cap; a third, sent while they wait, is refused without latency.
    let (x, y, z) = tokio::join!(timed("x", false), timed("y", false), timed("z", true));
    assert_eq!((x.0.status, y.0.status), (200, 200));
    assert!(
        x.1 >= Duration::from_millis(3_000),
        "latency applies: {:?}",
        x.1
    );
    assert_eq!(z.0.status, 429);
    assert!(z.1 < Duration::from_millis(1_500), "429 at once: {:?}", z.1);
    assert_eq!(z.0.number("retry-after-ms"), 3_000);
    assert_eq!(z.0.number("retry-after"), 3);
    // Finished requests free their places.
    assert_eq!(timed("w", false).await.0.status, 200);
    let stats = mock.server.stats();
    assert_eq!(
        (stats.ok, stats.rate_limited, stats.max_in_flight),
        (3, 1, 2)
    );
}

#[tokio::test]
async fn resetting_the_mock_resets_its_limiters() {
    let mock = Mock::start(MockConfig {
        rpm: Some(1),
        ..MockConfig::default()
    })
    .await;
    assert_eq!(mock.chat("a").await.status, 200);
    let refused = mock.chat("b").await;
    assert_eq!(refused.status, 429);
    assert!(refused.number("retry-after") >= 59, "{refused:?}");
    assert_eq!(
        refused.header("x-ratelimit-reset-requests").chars().last(),
        Some('s')
    );
    let reset = mock
        .send(Method::POST, "/_mock/reset", "", None)
        .await
        .expect("reset");
    assert_eq!(reset.status, 204);
    let again = mock.post("/v1/chat/completions", &chat_body("b")).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.number("x-ratelimit-remaining-requests"), 0);
}
