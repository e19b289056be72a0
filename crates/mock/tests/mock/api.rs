//! Response shapes, token accounting, auth, bad requests and the stats routes.

use http::Method;
use serde_json::json;
use sluice_limit::estimate_text_tokens;
use sluice_mock::{MockConfig, MockStats};

use crate::{chat_body, Mock};

#[tokio::test]
async fn chat_answers_in_openai_shape_with_exact_usage() {
    let mock = Mock::start(MockConfig::default()).await;
    let body = json!({"model": "gpt-x", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [
            {"type": "text", "text": "Describe this picture"},
            {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}},
        ]},
    ]});
    let res = mock.post("/v1/chat/completions", &body).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), "application/json");
    let v = res.json();
    // The image by URL counts as the tile rule's answer for 1024 × 1024.
    let prompt = estimate_text_tokens("You are terse.")
        + estimate_text_tokens("Describe this picture")
        + 765;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-x");
    assert!(
        v["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-")),
        "{v}"
    );
    assert!(v["created"].as_u64().is_some_and(|t| t > 1_600_000_000));
    let choice = &v["choices"][0];
    assert_eq!(
        (&choice["index"], &choice["finish_reason"]),
        (&json!(0), &json!("stop"))
    );
    assert_eq!(choice["message"]["role"], "assistant");
    let reply = choice["message"]["content"].as_str().expect("content");
    assert_eq!(estimate_text_tokens(reply), 16, "{reply}");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": prompt, "completion_tokens": 16, "total_tokens": prompt + 16})
    );

    // max_tokens below the default cuts the reply and says so.
    let mut short = chat_body("hi");
    short["max_tokens"] = json!(5);
    let v = mock.post("/v1/chat/completions", &short).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let reply = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert_eq!(
        (
            estimate_text_tokens(reply),
            &v["usage"]["completion_tokens"]
        ),
        (5, &json!(5))
    );
}

#[tokio::test]
async fn completions_and_embeddings_answer_in_shape() {
    let mock = Mock::start(MockConfig {
        completion_tokens: 40,
        ..MockConfig::default()
    })
    .await;
    let v = mock
        .post(
            "/v1/completions",
            &json!({"model": "m", "prompt": ["one two", "three"]}),
        )
        .await
        .json();
    assert_eq!(
        (&v["object"], &v["model"]),
        (&json!("text_completion"), &json!("m"))
    );
    assert!(
        v["id"].as_str().is_some_and(|id| id.starts_with("cmpl-")),
        "{v}"
    );
    let text = v["choices"][0]["text"].as_str().expect("text");
    assert_eq!(estimate_text_tokens(text), 40);
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 40, "total_tokens": 44})
    );

    let body = json!({"model": "emb", "input": ["alpha", "beta gamma", "alpha"], "dimensions": 5});
    let v = mock.post("/v1/embeddings", &body).await.json();
    assert_eq!((&v["object"], &v["model"]), (&json!("list"), &json!("emb")));
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 2 + 3 + 2, "total_tokens": 7})
    );
    let data = v["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(
            (&item["object"], &item["index"]),
            (&json!("embedding"), &json!(i))
        );
        let vector: Vec<f64> = serde_json::from_value(item["embedding"].clone()).expect("floats");
        assert_eq!(vector.len(), 5);
        let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    assert_eq!(data[0]["embedding"], data[2]["embedding"]);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    let v = mock
        .post("/v1/embeddings", &json!({"model": "e", "input": "x"}))
        .await
        .json();
    assert_eq!(v["data"][0]["embedding"].as_array().map(Vec::len), Some(8));
}

#[tokio::test]
async fn a_wrong_or_missing_key_gets_401() {
    let mock = Mock::start(MockConfig {
        api_key: Some("sk-test".into()),
        ..MockConfig::default()
    })
    .await;
    let body = chat_body("hi").to_string();
    let path = "/v1/chat/completions";
    for key in [None, Some("sk-wrong")] {
        let res = mock
            .send(Method::POST, path, &body, key)
            .await
            .expect("reply");
        assert_eq!(res.status, 401);
        assert_eq!(res.json()["error"]["code"], "invalid_api_key");
    }
    let res = mock
        .send(Method::POST, path, &body, Some("sk-test"))
        .await
        .expect("reply");
    assert_eq!(res.status, 200);
    // The mock's own routes need no key.
    assert_eq!(mock.get("/healthz").await.status, 200);
    let stats = mock.server.stats();
    assert_eq!((stats.requests, stats.unauthorized, stats.ok), (3, 2, 1));
}

#[tokio::test]
async fn malformed_requests_get_400_and_unknown_paths_404() {
    let mock = Mock::start(MockConfig::default()).await;
    let path = "/v1/chat/completions";
    for body in [
        "{not json",
        r#"{"messages":[{"role":"user","content":"x"}]}"#,
        r#"{"model":"m"}"#,
    ] {
        let res = mock
            .send(Method::POST, path, body, None)
            .await
            .expect("reply");
        assert_eq!(res.status, 400, "{body}");
        let error = &res.json()["error"];
        assert_eq!(
            (&error["type"], &error["code"]),
            (&json!("invalid_request_error"), &json!(null))
        );
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let res = mock.post("/v1/nope", &json!({})).await;
    assert_eq!(res.status, 404);
    assert_eq!(res.json()["error"]["code"], "unknown_url");
    assert_eq!(mock.get(path).await.status, 405);
    let stats = mock.server.stats();
    assert_eq!((stats.requests, stats.bad_requests, stats.ok), (4, 4, 0));
}

#[tokio::test]
async fn stats_are_served_and_reset_over_http() {
    let mock = Mock::start(MockConfig::default()).await;
    let health = mock.get("/healthz").await;
    assert_eq!((health.status, &health.body[..]), (200, &b"ok"[..]));
    mock.chat("same body").await;
    mock.chat("same body").await;
    mock.chat("another body").await;
    let bad = mock
        .send(Method::POST, "/v1/completions", "[]", None)
        .await
        .expect("reply");
    assert_eq!(bad.status, 400);

    let served: MockStats =
        serde_json::from_slice(&mock.get("/_mock/stats").await.body).expect("stats");
    assert_eq!(served, mock.server.stats());
    assert_eq!((served.requests, served.ok, served.bad_requests), (4, 3, 1));
    assert_eq!(served.duplicate_requests, 1);
    // Each chat: 3 prompt tokens ("same body"/"another body") + 16 completion.
    let charged =
        2 * (estimate_text_tokens("same body") + 16) + estimate_text_tokens("another body") + 16;
    assert_eq!(served.tokens_charged, charged);
    assert_eq!(
        (served.max_requests_per_minute, served.max_tokens_per_minute),
        (3, charged)
    );
    assert_eq!(served.max_in_flight, 1);
    let (first, last) = (
        served.first_ok_unix_ms.expect("first"),
        served.last_ok_unix_ms.expect("last"),
    );
    assert!(first <= last && first > 1_600_000_000_000);

    let reset = mock
        .send(Method::POST, "/_mock/reset", "", None)
        .await
        .expect("reset");
    assert_eq!(reset.status, 204);
    assert_eq!(mock.server.stats(), MockStats::default());
    mock.chat("same body").await;
    let after = mock.server.stats();
    assert_eq!(
        (after.requests, after.ok, after.duplicate_requests),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn serve_answers_on_a_given_listener_until_dropped() {
    // No `Mock` here (the listener is the test's own): its own time limit.
    let _limit = crate::watchdog::Watchdog::start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let inode = crate::listener_inode(addr.port());
    let task = tokio::spawn(sluice_mock::serve(listener, MockConfig::default()));
    // A second: the response takes microseconds, but a loaded machine may
    // not run this process for a while.
    let raw = crate::raw_exchange(
        addr,
        &chat_body("x").to_string(),
        std::time::Duration::from_secs(1),
    )
    .await;
    // Keep-alive: the response arrives and the connection stays open.
    assert!(raw.bytes.starts_with(b"HTTP/1.1 200 OK\r\n"), "{raw:?}");
    assert!(raw.end.is_none(), "{raw:?}");
    task.abort();
    let _ = task.await;
    assert_listener_closed(addr, inode).await;
}

/// The listener that had `inode` (or, where /proc cannot say, the port) no
/// longer accepts.
async fn assert_listener_closed(addr: std::net::SocketAddr, inode: Option<u64>) {
    match inode {
        Some(inode) => assert!(!crate::still_listening(inode), "still accepting"),
        None => assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still accepting"
        ),
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_open_connections() {
    let mock = Mock::start(MockConfig::default()).await;
    assert_eq!(mock.chat("x").await.status, 200);
    let addr = mock.addr();
    let Mock { server, .. } = mock;
    let inode = crate::listener_inode(addr.port());
    let mut open = tokio::net::TcpStream::connect(addr).await.expect("connect");
    server.shutdown();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut open, &mut buf),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "open connection not closed: {read:?}"
    );
    assert_listener_closed(addr, inode).await;
}
