//! Sorting a response into success, retryable failure or final failure.
//!
//! Retryable: 408, 409 (lock contention at some providers), 429, every 5xx,
//! time-outs, connection errors, and a 2xx whose body is not the JSON it should
//! be (a truncated body is a transport fault, not an answer) — unless the
//! response says otherwise with `x-should-retry: true|false`, which wins over
//! the status, as in openai-python and anthropic-sdk-python.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::signals::{retry_after, should_retry, RateSignals};

/// One call's result.
#[derive(Debug)]
pub enum Attempt {
    /// A 2xx with a JSON body.
    Ok(Success),
    /// Anything else; `kind.is_retryable()` says whether to try again.
    Failed(Failure),
}

/// A successful response.
#[derive(Debug)]
pub struct Success {
    /// HTTP status (2xx).
    pub status: u16,
    /// The body, known to be valid JSON.
    pub body: Bytes,
    /// `usage.prompt_tokens` / `input_tokens`, if reported.
    pub prompt_tokens: Option<u64>,
    /// `usage.completion_tokens` / `output_tokens`, if reported.
    pub completion_tokens: Option<u64>,
    /// Time from sending to the last body byte.
    pub latency: Duration,
    /// Rate-limit headers.
    pub signals: RateSignals,
    /// The response's `Content-Type`, if sent (picks a saved file's extension).
    pub content_type: Option<String>,
    /// Timing of a streamed answer ([`crate::Client::send_stream`]).
    pub stream: Option<crate::StreamStats>,
}

/// What kind of failure, which decides retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// 429: the provider's limit.
    RateLimited,
    /// 5xx, 408 or 409.
    Server,
    /// No complete response in time.
    Timeout,
    /// Could not open a connection.
    Connect,
    /// The connection broke mid-exchange (reset, closed early).
    Connection,
    /// A 2xx whose body is not valid JSON (truncated or wrong content).
    BadBody,
    /// Any other 4xx: the request itself is wrong; retrying cannot help.
    Client,
}

impl FailureKind {
    /// Whether trying again may succeed.
    pub fn is_retryable(self) -> bool {
        !matches!(self, FailureKind::Client)
    }
}

/// A failed call.
#[derive(Debug)]
pub struct Failure {
    /// Why.
    pub kind: FailureKind,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// One line for the user: what happened.
    pub message: String,
    /// The response body, when there was one (kept for the record of a final failure).
    pub body: Option<Bytes>,
    /// The provider's requested wait (`retry-after-ms` / `retry-after`).
    pub retry_after: Option<Duration>,
    /// Time from sending until the failure was known.
    pub latency: Duration,
    /// Rate-limit headers, when a response arrived.
    pub signals: RateSignals,
    /// `x-should-retry`: the provider's word, which overrides the kind's rule.
    pub should_retry: Option<bool>,
}

impl Failure {
    /// Whether trying again may succeed: the provider's `x-should-retry` if it
    /// sent one, else what the kind of failure says.
    pub fn is_retryable(&self) -> bool {
        self.should_retry.unwrap_or(self.kind.is_retryable())
    }
}

/// Sorts a complete HTTP response. With `expect_json`, a 2xx whose body is not
/// JSON is a retryable `BadBody` (a truncated answer); without it any 2xx is a
/// success and usage is read only if the body happens to be JSON.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    latency: Duration,
    expect_json: bool,
) -> Attempt {
    let signals = RateSignals::from_headers(headers);
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if status.is_success() {
        // Parsed once: the usage, and whether the body is JSON at all.
        let usage = match serde_json::from_slice::<UsageView>(&body) {
            Ok(view) => view.usage.unwrap_or_default(),
            Err(_) if !expect_json => Usage::default(),
            Err(e) => {
                return Attempt::Failed(Failure {
                    kind: FailureKind::BadBody,
                    status: Some(status.as_u16()),
                    message: format!(
                        "HTTP {} with a body that is not valid JSON ({e}); it starts: {}",
                        status.as_u16(),
                        preview(&body)
                    ),
                    body: None,
                    retry_after: None,
                    latency,
                    signals,
                    should_retry: None,
                })
            }
        };
        return Attempt::Ok(Success {
            status: status.as_u16(),
            prompt_tokens: usage.prompt_tokens.or(usage.input_tokens),
            completion_tokens: usage.completion_tokens.or(usage.output_tokens),
            body,
            latency,
            signals,
            content_type,
            stream: None,
        });
    }
    let code = status.as_u16();
    let kind = match code {
        429 => FailureKind::RateLimited,
        408 | 409 | 500..=599 => FailureKind::Server,
        _ => FailureKind::Client,
    };
    Attempt::Failed(Failure {
        kind,
        status: Some(code),
        message: format!("HTTP {code}: {}", error_message(&body)),
        retry_after: retry_after(headers),
        should_retry: should_retry(headers),
        body: Some(body),
        latency,
        signals,
    })
}

/// The provider's own error message (`{"error":{"message"}}`), else the body's start.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Inner {
        Object { message: String },
        Text(String),
    }
    match serde_json::from_slice::<Outer>(body) {
        Ok(Outer {
            error: Inner::Object { message } | Inner::Text(message),
        }) => message,
        Err(_) => preview(body),
    }
}

/// The first 120 characters of a body, for error messages.
fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(480)]);
    let mut short: String = text.chars().take(120).collect();
    if short.len() < text.len() || body.len() > 480 {
        short.push('…');
    }
    if short.is_empty() {
        "(empty)".to_string()
    } else {
        format!("{short:?}")
    }
}

#[derive(serde::Deserialize)]
struct UsageView {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(serde::Deserialize, Default)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: u16, headers: &[(&str, &str)], body: &str) -> Attempt {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        classify(
            StatusCode::from_u16(code).unwrap(),
            &map,
            Bytes::from(body.to_string()),
            Duration::from_millis(5),
            true,
        )
    }

    #[test]
    fn success_reads_usage() {
        let Attempt::Ok(s) = run(
            200,
            &[("content-type", "application/json")],
            r#"{"usage":{"prompt_tokens":7,"completion_tokens":3}}"#,
        ) else {
            panic!("expected success")
        };
        assert_eq!((s.prompt_tokens, s.completion_tokens), (Some(7), Some(3)));
        assert_eq!(s.content_type.as_deref(), Some("application/json"));
    }

    #[test]
    fn truncated_json_is_a_retryable_bad_body_showing_its_start() {
        let Attempt::Failed(f) = run(200, &[], r#"{"id":"x","choi"#) else {
            panic!("expected failure")
        };
        assert_eq!(f.kind, FailureKind::BadBody);
        assert!(f.kind.is_retryable());
        assert!(
            f.message.contains(r#"{\"id\":\"x\",\"choi"#),
            "{}",
            f.message
        );
    }

    #[test]
    fn rate_limit_carries_retry_after_and_provider_message() {
        let Attempt::Failed(f) = run(
            429,
            &[("retry-after-ms", "250")],
            r#"{"error":{"message":"Rate limit reached"}}"#,
        ) else {
            panic!("expected failure")
        };
        assert_eq!(f.kind, FailureKind::RateLimited);
        assert_eq!(f.retry_after, Some(Duration::from_millis(250)));
        assert_eq!(f.message, "HTTP 429: Rate limit reached");
    }

    #[test]
    fn a_binary_2xx_is_a_success_when_json_is_not_expected() {
        let Attempt::Ok(s) = classify(
            StatusCode::OK,
            &HeaderMap::new(),
            Bytes::from_static(b"\x89PNG..."),
            Duration::ZERO,
            false,
        ) else {
            panic!("expected success")
        };
        assert_eq!(&s.body[..4], b"\x89PNG");
        assert_eq!(s.prompt_tokens, None);
    }

    #[test]
    fn x_should_retry_overrides_the_status_rule() {
        let Attempt::Failed(f) = run(400, &[("x-should-retry", "true")], "busy") else {
            panic!()
        };
        assert!(!f.kind.is_retryable());
        assert!(f.is_retryable());
        let Attempt::Failed(f) = run(503, &[("x-should-retry", "false")], "") else {
            panic!()
        };
        assert!(!f.is_retryable());
        let Attempt::Failed(f) = run(503, &[], "") else {
            panic!()
        };
        assert!(f.is_retryable());
    }

    #[test]
    fn client_errors_are_final_server_errors_are_not() {
        let Attempt::Failed(f) = run(400, &[], "nope") else {
            panic!()
        };
        assert!(!f.kind.is_retryable());
        assert_eq!(f.message, "HTTP 400: \"nope\"");
        let Attempt::Failed(f) = run(503, &[], "") else {
            panic!()
        };
        assert!(f.kind.is_retryable());
        let Attempt::Failed(f) = run(408, &[], "") else {
            panic!()
        };
        assert!(f.kind.is_retryable());
    }
}
