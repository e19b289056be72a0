//! Responses in OpenAI's shapes: successes, JSON errors and rate-limit headers.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use serde::{Serialize, Serializer};

use crate::limits::{go_duration, LimitState, RateSnapshot};
use crate::reply;
use crate::request::{Api, Parsed, ParsedBody};

/// The body type of every response.
pub(crate) type Body = Full<Bytes>;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const REQUESTS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
const TOKENS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// A response with `body` as JSON.
pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, JSON);
    res
}

/// A response with `body` of `content_type`.
pub(crate) fn bytes(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// An OpenAI-style error: `{"error":{"message","type","code"}}`.
pub(crate) fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> Response<Body> {
    #[derive(Serialize)]
    struct Envelope<'a> {
        error: Detail<'a>,
    }
    #[derive(Serialize)]
    struct Detail<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        code: Option<&'a str>,
    }
    let body = Envelope {
        error: Detail {
            message,
            kind,
            code,
        },
    };
    json(status, to_json(&body))
}

/// A 400 for a request the client should not have sent.
pub(crate) fn bad_request(message: &str) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        None,
    )
}

/// Serializes `value`, which cannot fail for the plain structs of this module.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| br#"{"error":{"message":"internal"}}"#.to_vec())
}

/// Adds the `x-ratelimit-*` headers of the limits that are set.
pub(crate) fn add_rate_headers(headers: &mut HeaderMap, rates: &RateSnapshot) {
    for (names, state) in [(&REQUESTS, rates.requests), (&TOKENS, rates.tokens)] {
        let Some(LimitState {
            limit,
            remaining,
            reset_nanos,
        }) = state
        else {
            continue;
        };
        let [limit_name, remaining_name, reset_name] = names.clone();
        headers.insert(limit_name, HeaderValue::from(limit));
        headers.insert(remaining_name, HeaderValue::from(remaining));
        if let Ok(reset) = HeaderValue::try_from(go_duration(reset_nanos)) {
            headers.insert(reset_name, reset);
        }
    }
}

/// Adds `retry-after` (whole seconds, rounded up, at least 1) and
/// `retry-after-ms` (rounded up, at least 1).
pub(crate) fn add_retry_after(headers: &mut HeaderMap, wait_nanos: u64) {
    let ms = wait_nanos.div_ceil(1_000_000).max(1);
    headers.insert(RETRY_AFTER, HeaderValue::from(ms.div_ceil(1_000)));
    headers.insert(RETRY_AFTER_MS, HeaderValue::from(ms));
}

/// The 200 body answering `parsed`: reply text chosen by `reply_seed`, `id` the
/// server's count of answered requests, `created` in Unix seconds.
pub(crate) fn success(
    api: Api,
    parsed: &Parsed<'_>,
    id: u64,
    created: u64,
    reply_seed: u64,
    invalid_json: bool,
) -> Vec<u8> {
    let model = &*parsed.model;
    match &parsed.body {
        ParsedBody::Completion {
            completion_tokens,
            cut_short,
        } => {
            let text = crate::json_reply::chat(
                parsed.json.as_ref(),
                reply_seed,
                *completion_tokens,
                invalid_json,
            );
            let completion_tokens = &crate::json_reply::answer_tokens(
                parsed.json.as_ref(),
                &text,
                *completion_tokens,
                crate::count::Counter::for_model(&parsed.model),
            );
            let finish_reason = if *cut_short { "length" } else { "stop" };
            let usage = Usage {
                prompt_tokens: parsed.prompt_tokens,
                completion_tokens: *completion_tokens,
                total_tokens: parsed.prompt_tokens.saturating_add(*completion_tokens),
            };
            if api == Api::Chat {
                to_json(&Completion {
                    id: Id("chatcmpl-", id),
                    object: "chat.completion",
                    created,
                    model,
                    choices: [ChatChoice {
                        index: 0,
                        message: Message {
                            role: "assistant",
                            content: &text,
                        },
                        finish_reason,
                    }],
                    usage,
                })
            } else {
                to_json(&Completion {
                    id: Id("cmpl-", id),
                    object: "text_completion",
                    created,
                    model,
                    choices: [TextChoice {
                        index: 0,
                        text: &text,
                        logprobs: None,
                        finish_reason,
                    }],
                    usage,
                })
            }
        }
        ParsedBody::Embeddings {
            inputs,
            dims,
            base64,
        } => {
            let data = inputs
                .iter()
                .enumerate()
                .map(|(index, input)| {
                    let v = reply::embedding(input, *dims);
                    Embedding {
                        object: "embedding",
                        index,
                        embedding: if *base64 {
                            Vector::Base64(reply::base64_f32(&v))
                        } else {
                            Vector::Floats(v)
                        },
                    }
                })
                .collect();
            to_json(&EmbeddingList {
                object: "list",
                data,
                model,
                usage: EmbeddingUsage {
                    prompt_tokens: parsed.prompt_tokens,
                    total_tokens: parsed.prompt_tokens,
                },
            })
        }
    }
}

/// `chatcmpl-7`, written without an intermediate string.
struct Id(&'static str, u64);

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}{}", self.0, self.1))
    }
}

#[derive(Serialize)]
struct Completion<'a, C> {
    id: Id,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [C; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: Message<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    index: u32,
    text: &'a str,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}
