//! Anthropic's documented responses, read by the client.

use std::time::Duration;

use serde_json::{json, Value as Json};
use sluice_provider::dialect::chat_answer;
use sluice_provider::{Dialect, FailureKind};

use crate::{exchange, failed, ok, Reply};

/// API reference, "Messages", its example response.
#[tokio::test]
async fn the_message_object() {
    let body = r#"{
  "content": [
    {
      "text": "Hi! My name is Claude.",
      "type": "text"
    }
  ],
  "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
  "model": "claude-3-7-sonnet-20250219",
  "role": "assistant",
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "type": "message",
  "usage": {
    "input_tokens": 2095,
    "output_tokens": 503
  }
}"#;
    let s = ok(exchange(
        Dialect::Anthropic,
        Reply {
            status: "200 OK",
            headers: &[],
            body,
            stream: false,
        },
    )
    .await);
    assert_eq!(
        (s.prompt_tokens, s.completion_tokens),
        (Some(2095), Some(503))
    );
    let a = chat_answer(Dialect::Anthropic, &s.body).unwrap();
    assert_eq!(a.text, "Hi! My name is Claude.");
    // Kept in OpenAI's words, the terms steps are written in.
    assert_eq!(a.finish.as_deref(), Some("stop"));
}

/// "Streaming Messages", "Basic streaming request": its response.
#[tokio::test]
async fn a_basic_stream() {
    let body = r#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

"#;
    let s = ok(exchange(
        Dialect::Anthropic,
        Reply {
            status: "200 OK",
            headers: &[],
            body,
            stream: true,
        },
    )
    .await);
    let a = chat_answer(Dialect::Anthropic, &s.body).unwrap();
    assert_eq!(a.text, "Hello!");
    assert_eq!((a.prompt_tokens, a.completion_tokens), (Some(25), Some(15)));
    assert_eq!(a.finish.as_deref(), Some("stop"));
}

/// "Streaming Messages", "Streaming request with tool use": its response.
#[tokio::test]
async fn a_stream_with_tool_use() {
    let text_delta = |t: &str| {
        format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{t}\"}}}}\n\n")
    };
    let json_delta = |j: &str| {
        format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":\"{j}\"}}}}\n\n")
    };
    let mut body = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-opus-4-6\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n",
    );
    for t in [
        "Okay",
        ",",
        " let",
        "'s",
        " check",
        " the",
        " weather",
        " for",
        " San",
        " Francisco",
        ",",
        " CA",
        ":",
    ] {
        body.push_str(&text_delta(t));
    }
    body.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    body.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n");
    for j in [
        "",
        "{\\\"location\\\":",
        " \\\"San",
        " Francisc",
        "o,",
        " CA\\\"",
        ",",
        " \\\"unit\\\": \\\"fah",
        "renheit\\\"}",
    ] {
        body.push_str(&json_delta(j));
    }
    body.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    let s = ok(exchange(
        Dialect::Anthropic,
        Reply {
            status: "200 OK",
            headers: &[],
            body: &body,
            stream: true,
        },
    )
    .await);
    let a = chat_answer(Dialect::Anthropic, &s.body).unwrap();
    assert_eq!(
        a.text,
        "Okay, let's check the weather for San Francisco, CA:"
    );
    assert_eq!(
        (a.prompt_tokens, a.completion_tokens),
        (Some(472), Some(89))
    );
    assert_eq!(a.finish.as_deref(), Some("tool_calls"));
    let call = &a.tool_calls[0];
    assert_eq!(
        (call.id.as_str(), call.name.as_str()),
        ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    );
    let args: Json = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
}

/// "Streaming Messages", "Streaming request with extended thinking": the
/// thinking block is not part of the answer's text.
#[tokio::test]
async fn a_stream_with_thinking() {
    let body = r#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_01...", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "I need to find the GCD of 1071 and 462 using the Euclidean algorithm.\n\n1071 = 2 × 462 + 147"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: content_block_start
data: {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "The greatest common divisor of 1071 and 462 is **21**."}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 1}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}}

event: message_stop
data: {"type": "message_stop"}
"#;
    let s = ok(exchange(
        Dialect::Anthropic,
        Reply {
            status: "200 OK",
            headers: &[],
            body,
            stream: true,
        },
    )
    .await);
    let a = chat_answer(Dialect::Anthropic, &s.body).unwrap();
    assert_eq!(
        a.text,
        "The greatest common divisor of 1071 and 462 is **21**."
    );
    assert!(a.tool_calls.is_empty());
}

/// "Streaming Messages", "Error events": an `overloaded_error` mid-stream
/// (HTTP 529 outside a stream) is worth retrying.
#[tokio::test]
async fn an_error_event_mid_stream() {
    let body = "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
    let f = failed(
        exchange(
            Dialect::Anthropic,
            Reply {
                status: "200 OK",
                headers: &[],
                body,
                stream: true,
            },
        )
        .await,
    );
    assert_eq!(f.kind, FailureKind::Server);
    assert!(f.is_retryable());
    assert!(
        f.message.contains("overloaded_error: Overloaded"),
        "{}",
        f.message
    );
}

/// "Errors": the error shape and its HTTP codes — 400, 401, 403, 404 and 413
/// are final; 429, 500 and 529 are retried.
#[tokio::test]
async fn errors_by_their_documented_codes() {
    for (status, kind, retry) in [
        ("400 Bad Request", "invalid_request_error", false),
        ("401 Unauthorized", "authentication_error", false),
        ("403 Forbidden", "permission_error", false),
        ("404 Not Found", "not_found_error", false),
        ("413 Payload Too Large", "request_too_large", false),
        ("429 Too Many Requests", "rate_limit_error", true),
        ("500 Internal Server Error", "api_error", true),
        ("529 Overloaded", "overloaded_error", true),
    ] {
        let body = format!(
            r#"{{"type": "error", "error": {{"type": "{kind}", "message": "The requested resource could not be found."}}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}}"#
        );
        let f = failed(
            exchange(
                Dialect::Anthropic,
                Reply {
                    status,
                    headers: &[],
                    body: &body,
                    stream: false,
                },
            )
            .await,
        );
        assert_eq!(f.is_retryable(), retry, "{status}");
        assert!(
            f.message
                .ends_with("The requested resource could not be found."),
            "{status}: {}",
            f.message
        );
    }
}

/// "Rate limits", "Response headers": the families the page lists, with an
/// organisation's 80,000 input and 16,000 output tokens a minute (96,000
/// together), and `retry-after` on a 429.
#[tokio::test]
async fn rate_limit_headers_hold_input_and_output_apart() {
    let reset = |secs: u64| {
        // An RFC 3339 time `secs` from now, to the second as the API sends it.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + secs;
        let (days, rest) = (now / 86_400, now % 86_400);
        // Civil date from days since the epoch (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        )
    };
    let (r1, r2) = (reset(1), reset(30));
    let headers = [
        ("retry-after", "30"),
        ("anthropic-ratelimit-requests-limit", "1000"),
        ("anthropic-ratelimit-requests-remaining", "999"),
        ("anthropic-ratelimit-requests-reset", r1.as_str()),
        ("anthropic-ratelimit-tokens-limit", "96000"),
        ("anthropic-ratelimit-tokens-remaining", "80000"),
        ("anthropic-ratelimit-tokens-reset", r2.as_str()),
        ("anthropic-ratelimit-input-tokens-limit", "80000"),
        ("anthropic-ratelimit-input-tokens-remaining", "80000"),
        ("anthropic-ratelimit-input-tokens-reset", r1.as_str()),
        ("anthropic-ratelimit-output-tokens-limit", "16000"),
        ("anthropic-ratelimit-output-tokens-remaining", "0"),
        ("anthropic-ratelimit-output-tokens-reset", r2.as_str()),
    ];
    let body = r#"{"type": "error", "error": {"type": "rate_limit_error", "message": "This request would exceed your organization's rate limit of 16,000 output tokens per minute."}}"#;
    let f = failed(
        exchange(
            Dialect::Anthropic,
            Reply {
                status: "429 Too Many Requests",
                headers: &headers,
                body,
                stream: false,
            },
        )
        .await,
    );
    assert_eq!(f.kind, FailureKind::RateLimited);
    assert_eq!(f.retry_after, Some(Duration::from_secs(30)));
    let s = f.signals;
    assert_eq!(
        (s.requests.limit, s.requests.remaining),
        (Some(1000), Some(999))
    );
    assert_eq!(
        (s.input_tokens.limit, s.input_tokens.remaining),
        (Some(80_000), Some(80_000))
    );
    assert_eq!(
        (s.output_tokens.limit, s.output_tokens.remaining),
        (Some(16_000), Some(0))
    );
    let wait = s.output_tokens.reset.unwrap();
    assert!(
        wait > Duration::from_secs(28) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    // The combined figure adds nothing to the two it sums.
    assert_eq!(s.tokens.limit, None);
}
