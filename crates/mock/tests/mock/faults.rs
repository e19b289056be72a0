//! Injected faults, latency and their determinism under a seed.

use std::time::{Duration, Instant};

use http::Method;
use sluice_mock::MockConfig;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{chat_body, raw_exchange, Mock};

#[tokio::test]
async fn fail_rate_one_answers_500() {
    let mock = Mock::start(MockConfig {
        fail_rate: 1.0,
        rpm: Some(60),
        ..MockConfig::default()
    })
    .await;
    for _ in 0..3 {
        let res = mock.chat("x").await;
        assert_eq!(res.status, 500);
        assert_eq!(res.json()["error"]["type"], "server_error");
        // Faulted requests are not charged: the 1/min limit is untouched.
        assert_eq!(res.number("x-ratelimit-remaining-requests"), 1);
    }
    let stats = mock.server.stats();
    assert_eq!(
        (stats.requests, stats.server_errors, stats.tokens_charged),
        (3, 3, 0)
    );
}

#[tokio::test]
async fn reset_rate_one_closes_the_connection_without_a_response() {
    let mock = Mock::start(MockConfig {
        reset_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let err = mock
        .send(
            Method::POST,
            "/v1/chat/completions",
            &chat_body("x").to_string(),
            None,
        )
        .await
        .expect_err("a reset is a connection error");
    assert!(!err.is_empty());
    // On the wire: the connection ends with not one byte of response.
    let raw = raw_exchange(
        mock.addr(),
        &chat_body("y").to_string(),
        Duration::from_secs(2),
    )
    .await;
    assert!(
        raw.bytes.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&raw.bytes)
    );
    assert!(raw.end.is_some(), "the connection stayed open");
    let stats = mock.server.stats();
    assert_eq!((stats.requests, stats.resets, stats.ok), (2, 2, 0));
}

#[tokio::test]
async fn truncate_rate_one_cuts_the_body_in_half() {
    let mock = Mock::start(MockConfig {
        truncate_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let res = mock.chat("x").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.number("content-length"), res.body.len() as u64);
    assert!(res.body.len() > 40, "{:?}", res.body);
    assert!(serde_json::from_slice::<serde_json::Value>(&res.body).is_err());
    let stats = mock.server.stats();
    assert_eq!(
        (
            stats.requests,
            stats.truncated,
            stats.ok,
            stats.tokens_charged
        ),
        (1, 1, 0, 17)
    );
}

#[tokio::test]
async fn a_hung_request_frees_its_place_when_the_client_gives_up() {
    let cfg = MockConfig {
        hang_rate: 1.0,
        max_concurrency: Some(1),
        ..MockConfig::default()
    };
    let mock = Mock::start(cfg).await;
    let body = chat_body("x").to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    // Until the mock's count of requests in flight is `n` (events, not a
    // guess at how fast a loaded machine gets there).
    let in_flight = |n: u64, what: &'static str| {
        let mock = &mock;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while mock.server.stats().in_flight != n {
                assert!(Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    for _ in 0..2 {
        // The client gives up by dropping the connection; the second request
        // taking the one place (it hangs rather than getting 429) shows the
        // first left.
        let mut stream = tokio::net::TcpStream::connect(mock.addr())
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        in_flight(1, "the request never took its place").await;
        let mut byte = [0u8; 1];
        let answer = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut byte)).await;
        assert!(answer.is_err(), "expected no response: {answer:?}");
        drop(stream);
        in_flight(0, "the place was never freed").await;
    }
    let stats = mock.server.stats();
    assert_eq!((stats.requests, stats.hangs, stats.rate_limited), (2, 2, 0));
    assert_eq!(stats.max_in_flight, 1);
}

#[tokio::test]
async fn latency_and_jitter_delay_every_response() {
    let cfg = MockConfig {
        latency_ms: 100,
        jitter_ms: 50,
        fail_rate: 0.5,
        ..MockConfig::default()
    };
    let mock = Mock::start(cfg).await;
    let mut best = Duration::MAX;
    for _ in 0..8 {
        let sent = Instant::now();
        let res = mock.chat("x").await;
        let took = sent.elapsed();
        assert!([200, 500].contains(&res.status));
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        best = best.min(took);
    }
    // 100-150 ms each; a loaded machine only adds to some of them. Not
    // the latency twice (200 ms at least).
    assert!(best < Duration::from_millis(200), "at best {best:?}");
}

#[tokio::test]
async fn the_same_seed_gives_the_same_outcomes() {
    let cfg = |seed| MockConfig {
        fail_rate: 0.5,
        seed,
        ..MockConfig::default()
    };
    let (a, b, c) = tokio::join!(
        Mock::start(cfg(7)),
        Mock::start(cfg(7)),
        Mock::start(cfg(8))
    );
    let mut outcomes = Vec::new();
    for mock in [&a, &b, &c] {
        let mut statuses = Vec::new();
        for i in 0..32 {
            statuses.push(mock.chat(&format!("request {i}")).await.status);
        }
        outcomes.push(statuses);
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert_ne!(outcomes[0], outcomes[2]);
    let failures = outcomes[0].iter().filter(|&&s| s == 500).count();
    assert!((4..=28).contains(&failures), "{failures} of 32 at rate 0.5");
    // Replies too depend only on the seed and the request.
    let (ra, rb) = (a.chat("same").await, b.chat("same").await);
    assert_eq!(ra.status, rb.status);
    if ra.status == 200 && rb.status == 200 {
        assert_eq!(ra.json()["choices"], rb.json()["choices"]);
    }
}
