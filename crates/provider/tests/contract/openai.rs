//! OpenAI's documented responses, read by the client.

use std::time::Duration;

use serde_json::{json, Value as Json};
use sluice_provider::dialect::chat_answer;
use sluice_provider::{Budget, Dialect, FailureKind};

use crate::{exchange, failed, ok, Reply};

/// API reference, "The chat completion object" (its example, verbatim).
const CHAT_COMPLETION: &str = r#"{
  "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "gpt-4o-2024-08-06",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "The image shows a wooden boardwalk path running through a lush green field or meadow. The sky is bright blue with some scattered clouds, giving the scene a serene and peaceful atmosphere. Trees and shrubs are visible in the background.",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 1117,
    "completion_tokens": 46,
    "total_tokens": 1163,
    "prompt_tokens_details": {
      "cached_tokens": 0,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}"#;

#[tokio::test]
async fn the_chat_completion_object() {
    let s = ok(exchange(
        Dialect::OpenAi,
        Reply {
            status: "200 OK",
            headers: &[],
            body: CHAT_COMPLETION,
            stream: false,
        },
    )
    .await);
    assert_eq!(
        (s.prompt_tokens, s.completion_tokens),
        (Some(1117), Some(46))
    );
    let a = chat_answer(Dialect::OpenAi, &s.body).unwrap();
    assert!(a.text.starts_with("The image shows a wooden boardwalk"));
    assert_eq!(a.finish.as_deref(), Some("stop"));
    assert_eq!(a.refusal, None);
    assert!(a.tool_calls.is_empty());
}

/// API reference, "Create chat completion", the "Functions" example response.
#[tokio::test]
async fn a_completion_that_calls_a_function() {
    let body = r#"{
  "id": "chatcmpl-abc123",
  "object": "chat.completion",
  "created": 1699896916,
  "model": "gpt-4o-mini",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": null,
        "tool_calls": [
          {
            "id": "call_abc123",
            "type": "function",
            "function": {
              "name": "get_current_weather",
              "arguments": "{\n\"location\": \"Boston, MA\"\n}"
            }
          }
        ]
      },
      "logprobs": null,
      "finish_reason": "tool_calls"
    }
  ],
  "usage": {
    "prompt_tokens": 82,
    "completion_tokens": 17,
    "total_tokens": 99,
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  }
}"#;
    let s = ok(exchange(
        Dialect::OpenAi,
        Reply {
            status: "200 OK",
            headers: &[],
            body,
            stream: false,
        },
    )
    .await);
    let a = chat_answer(Dialect::OpenAi, &s.body).unwrap();
    assert_eq!(a.text, "");
    assert_eq!(a.finish.as_deref(), Some("tool_calls"));
    let call = &a.tool_calls[0];
    assert_eq!(
        (call.id.as_str(), call.name.as_str()),
        ("call_abc123", "get_current_weather")
    );
    let args: Json = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(args, json!({"location": "Boston, MA"}));
}

/// API reference, "Create chat completion", the "Streaming" example response
/// (each chunk on a `data:` line, as the streaming section describes, then
/// `data: [DONE]`).
#[tokio::test]
async fn streamed_chunks() {
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\", \"system_fingerprint\": \"fp_44709d6fcb\", \"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let body = [
        chunk(r#"{"role":"assistant","content":""}"#, "null"),
        chunk(r#"{"content":"Hello"}"#, "null"),
        chunk(r#"{}"#, "\"stop\""),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    let s = ok(exchange(
        Dialect::OpenAi,
        Reply {
            status: "200 OK",
            headers: &[],
            body: &body,
            stream: true,
        },
    )
    .await);
    let a = chat_answer(Dialect::OpenAi, &s.body).unwrap();
    assert_eq!(a.text, "Hello");
    assert_eq!(a.finish.as_deref(), Some("stop"));
    assert!(s.stream.is_some());
}

/// Guide "Function calling", "Streaming": the `delta.tool_calls` pieces of
/// its example (later pieces carry `"id": null`, `"name": null`).
#[tokio::test]
async fn streamed_function_call_pieces() {
    let pieces = [
        r#"[{"index": 0, "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "function": {"arguments": "", "name": "get_weather"}, "type": "function"}]"#,
        r#"[{"index": 0, "id": null, "function": {"arguments": "{\"", "name": null}, "type": null}]"#,
        r#"[{"index": 0, "id": null, "function": {"arguments": "location", "name": null}, "type": null}]"#,
        r#"[{"index": 0, "id": null, "function": {"arguments": "\":\"", "name": null}, "type": null}]"#,
        r#"[{"index": 0, "id": null, "function": {"arguments": "Paris", "name": null}, "type": null}]"#,
        r#"[{"index": 0, "id": null, "function": {"arguments": ",", "name": null}, "type": null}]"#,
        r#"[{"index": 0, "id": null, "function": {"arguments": " France", "name": null}, "type": null}]"#,
        r#"[{"index": 0, "id": null, "function": {"arguments": "\"}", "name": null}, "type": null}]"#,
    ];
    let mut body = String::new();
    for p in pieces {
        body.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":{p}}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    body.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n");
    let s = ok(exchange(
        Dialect::OpenAi,
        Reply {
            status: "200 OK",
            headers: &[],
            body: &body,
            stream: true,
        },
    )
    .await);
    let a = chat_answer(Dialect::OpenAi, &s.body).unwrap();
    assert_eq!(a.tool_calls.len(), 1);
    assert_eq!(a.tool_calls[0].name, "get_weather");
    assert_eq!(a.tool_calls[0].id, "call_DdmO9pD3xa9XTPNJ32zg2hcA");
    assert_eq!(a.tool_calls[0].arguments, r#"{"location":"Paris, France"}"#);
}

/// API reference, "Create embeddings", its example response (the vector
/// shortened, as the page itself does).
#[tokio::test]
async fn embeddings() {
    let body = r#"{
  "object": "list",
  "data": [
    {
      "object": "embedding",
      "embedding": [
        0.0023064255,
        -0.009327292,
        -0.0028842222
      ],
      "index": 0
    }
  ],
  "model": "text-embedding-ada-002",
  "usage": {
    "prompt_tokens": 8,
    "total_tokens": 8
  }
}"#;
    let s = ok(exchange(
        Dialect::OpenAi,
        Reply {
            status: "200 OK",
            headers: &[],
            body,
            stream: false,
        },
    )
    .await);
    assert_eq!((s.prompt_tokens, s.completion_tokens), (Some(8), None));
    let v: Json = serde_json::from_slice(&s.body).unwrap();
    assert_eq!(v["data"][0]["embedding"][1], json!(-0.009327292));
}

/// Guide "Rate limits", "Rate limits in headers": its example values.
const RATE_HEADERS: [(&str, &str); 6] = [
    ("x-ratelimit-limit-requests", "60"),
    ("x-ratelimit-limit-tokens", "150000"),
    ("x-ratelimit-remaining-requests", "59"),
    ("x-ratelimit-remaining-tokens", "149984"),
    ("x-ratelimit-reset-requests", "1s"),
    ("x-ratelimit-reset-tokens", "6m0s"),
];

#[tokio::test]
async fn rate_limit_headers() {
    let s = ok(exchange(
        Dialect::OpenAi,
        Reply {
            status: "200 OK",
            headers: &RATE_HEADERS,
            body: CHAT_COMPLETION,
            stream: false,
        },
    )
    .await);
    assert_eq!(
        s.signals.requests,
        Budget {
            limit: Some(60),
            remaining: Some(59),
            reset: Some(Duration::from_secs(1))
        }
    );
    assert_eq!(
        s.signals.tokens,
        Budget {
            limit: Some(150_000),
            remaining: Some(149_984),
            reset: Some(Duration::from_secs(360))
        }
    );
    // As held: 60 requests a minute, all but one still there (1 s to refill
    // one at 60/min). The page's token reset (6 minutes to refill 16 of
    // 150,000 tokens) fits no per-minute bucket: it is held as a quota of
    // what remains until that reset, renewed by the next answer.
    use sluice_limit::{Learned, Refill, Span};
    let requests = Learned::infer(60, Some(59), Some(1_000_000_000));
    assert_eq!(
        (requests.span, requests.capacity, requests.refill),
        (Span::Minute, 60, Refill::Continuous)
    );
    let tokens = Learned::infer(150_000, Some(149_984), Some(360_000_000_000));
    assert_eq!(tokens.refill, Refill::AtReset);
}

/// Guide "Error codes": 401 "Invalid Authentication" / "Incorrect API key
/// provided", in the error object the API reference documents.
#[tokio::test]
async fn an_invalid_key_is_final() {
    let body = r#"{"error": {"message": "Incorrect API key provided: sk-abc***. You can find your API key at https://platform.openai.com/account/api-keys.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}"#;
    let f = failed(
        exchange(
            Dialect::OpenAi,
            Reply {
                status: "401 Unauthorized",
                headers: &[],
                body,
                stream: false,
            },
        )
        .await,
    );
    assert_eq!(f.kind, FailureKind::Client);
    assert!(!f.is_retryable());
    assert!(
        f.message
            .starts_with("HTTP 401: Incorrect API key provided"),
        "{}",
        f.message
    );
}

/// Guide "Error codes": 429 "Rate limit reached for requests", with the
/// guide's headers and `retry-after` as the SDKs read it.
#[tokio::test]
async fn a_rate_limit_is_retried_after_the_wait_it_asks_for() {
    let body = r#"{"error": {"message": "Rate limit reached for gpt-4o-mini in organization org-abc on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 1s.", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}"#;
    let mut headers = RATE_HEADERS.to_vec();
    headers[2] = ("x-ratelimit-remaining-requests", "0");
    headers.push(("retry-after", "1"));
    let f = failed(
        exchange(
            Dialect::OpenAi,
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
    assert!(f.is_retryable());
    assert_eq!(f.retry_after, Some(Duration::from_secs(1)));
    assert_eq!(f.signals.requests.remaining, Some(0));
    // openai-python: `x-should-retry: false` wins over the status.
    headers.push(("x-should-retry", "false"));
    let f = failed(
        exchange(
            Dialect::OpenAi,
            Reply {
                status: "429 Too Many Requests",
                headers: &headers,
                body,
                stream: false,
            },
        )
        .await,
    );
    assert!(!f.is_retryable());
}
