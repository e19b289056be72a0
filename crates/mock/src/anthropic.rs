//! Anthropic's Messages API: `POST /v1/messages` (streamed with `stream:
//! true`), under the same limits, faults, latency and counters as the OpenAI
//! routes. Differences a client must handle: the key in `x-api-key`, a
//! required `anthropic-version` header, `system` as its own field (a
//! `system` role in `messages` is refused), a required `max_tokens`,
//! `usage.input_tokens`/`output_tokens`, `anthropic-ratelimit-*` headers with
//! RFC 3339 resets, `retry-after` in whole seconds, and injected server
//! errors answered as 529 `overloaded_error`. As the API reference's
//! Messages schema has it, a field it does not list (an OpenAI-only one such
//! as `reasoning_effort` or `n`), a `temperature` outside 0–1, a tool
//! without `name` and `input_schema` or a `tool_choice` of another type is a
//! 400 `invalid_request_error`, so a translation that lets one through fails
//! against the mock as it would against the API.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::count::Counter;
use crate::faults::Fault;
use crate::handler::ConnectionReset;
use crate::limits::{LimitState, RateSnapshot, Throttle};
use crate::request::{completion, Content, Parsed, ParsedBody};
use crate::response::{self, Body};
use crate::state::{unix_ms, Shared, Verdict};
use crate::stats::Outcome;

/// Largest request body read.
const MAX_BODY_BYTES: usize = 32 << 20;
/// How long a hung request waits before it is answered after all.
const HANG: Duration = Duration::from_secs(3_600);

/// An Anthropic error: `{"type":"error","error":{"type","message"}}`.
pub(crate) fn error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    response::json(status, body.to_string().into_bytes())
}

/// Whether `headers` carry the key (`x-api-key`), when one is required.
pub(crate) fn authorized(key: Option<&str>, headers: &HeaderMap) -> bool {
    key.is_none_or(|k| {
        headers
            .get("x-api-key")
            .is_some_and(|v| v.as_bytes() == k.as_bytes())
    })
}

/// The Messages request (API reference, "Messages"): every top-level field
/// it documents; any other is refused. Fields the mock does not use are
/// listed only so that they are accepted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawMessages<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    messages: Vec<Message<'a>>,
    max_tokens: Option<u64>,
    #[serde(borrow, default)]
    system: Option<Content<'a>>,
    stream: Option<bool>,
    temperature: Option<f64>,
    #[serde(default)]
    tools: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    tool_choice: Option<serde_json::Value>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    stop_sequences: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    top_k: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    top_p: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    thinking: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    service_tier: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    container: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    mcp_servers: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    context_management: Option<serde::de::IgnoredAny>,
}

/// What the schema refuses beyond unknown fields, as the API words it.
fn check_fields(raw: &RawMessages<'_>) -> Result<(), String> {
    if let Some(t) = raw.temperature.filter(|t| !(0.0..=1.0).contains(t)) {
        return Err(format!(
            "temperature: Input should be less than or equal to 1 (got {t})"
        ));
    }
    for (i, tool) in raw.tools.iter().flatten().enumerate() {
        // Server tools carry a dated type: `web_search_20250305`.
        let server_tool = tool["type"].as_str().is_some_and(|t| {
            t.rsplit_once('_')
                .is_some_and(|(_, d)| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
        });
        let custom = tool["name"].is_string() && tool["input_schema"].is_object();
        if !server_tool && !custom {
            return Err(format!(
                "tools.{i}: a tool needs name and input_schema (got keys {:?})",
                tool.as_object().map(|o| o.keys().collect::<Vec<_>>())
            ));
        }
    }
    if let Some(choice) = &raw.tool_choice {
        match choice["type"].as_str() {
            Some("auto" | "any" | "none") => {}
            Some("tool") if choice["name"].is_string() => {}
            _ => return Err(format!("tool_choice: Input tag {choice} does not match any of the expected tags: 'auto', 'any', 'tool', 'none'")),
        }
    }
    if let Some(key) = raw
        .metadata
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .find(|k| *k != "user_id")
    {
        return Err(format!("metadata.{key}: Extra inputs are not permitted"));
    }
    Ok(())
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: Content<'a>,
}

/// Parses a Messages body; `Err` is the 400's message.
pub(crate) fn parse(body: &[u8], default_completion: u64) -> Result<Parsed<'_>, String> {
    let raw: RawMessages<'_> =
        serde_json::from_slice(body).map_err(|e| format!("Invalid request body: {e}."))?;
    check_fields(&raw)?;
    let Some(max_tokens) = raw.max_tokens else {
        return Err("max_tokens: Field required".into());
    };
    if raw.messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    if let Some(m) = raw
        .messages
        .iter()
        .find(|m| m.role != "user" && m.role != "assistant")
    {
        return Err(format!(
            "messages: Unexpected role {:?}. The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role.",
            m.role
        ));
    }
    let counter = Counter::for_model(&raw.model);
    // A `system` with no text and no image is no system prompt.
    let system = raw
        .system
        .as_ref()
        .filter(|s| s.texts.iter().any(|t| !t.is_empty()) || s.image_tokens > 0);
    let conversation = crate::convo::hash(
        &raw.model,
        system
            .map(|s| ("system", s.hash()))
            .into_iter()
            .chain(raw.messages.iter().map(|m| (&*m.role, m.content.hash()))),
    );
    let prompt_tokens = system.map_or(0, |s| s.tokens(counter))
        + raw
            .messages
            .iter()
            .map(|m| m.content.tokens(counter))
            .sum::<u64>();
    Ok(Parsed {
        model: raw.model,
        prompt_tokens,
        body: completion(Some(max_tokens), default_completion),
        conversation: Some(conversation),
        stream: raw.stream.unwrap_or(false).then_some(true),
        json: None,
        images: raw
            .messages
            .iter()
            .fold(Default::default(), |a, m| a.plus(m.content.images)),
    })
}

/// The message answering `parsed`, with reply seed `seed`.
pub(crate) fn reply(parsed: &Parsed<'_>, id: u64, seed: u64) -> serde_json::Value {
    let (tokens, cut_short) = match parsed.body {
        ParsedBody::Completion {
            completion_tokens,
            cut_short,
        } => (completion_tokens, cut_short),
        ParsedBody::Embeddings { .. } => (0, false),
    };
    json!({
        "id": format!("msg_{id}"),
        "type": "message",
        "role": "assistant",
        "model": &*parsed.model,
        "content": [{"type": "text", "text": crate::reply::text(seed, tokens)}],
        "stop_reason": if cut_short { "max_tokens" } else { "end_turn" },
        "stop_sequence": null,
        "usage": {"input_tokens": parsed.prompt_tokens, "output_tokens": tokens},
    })
}

/// Answers `POST /v1/messages`.
pub(crate) async fn messages(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Body>, ConnectionReset> {
    let arrived = Instant::now();
    let (parts, body) = req.into_parts();
    if !authorized(shared.cfg.api_key.as_deref(), &parts.headers) {
        let rates = shared.refuse(Outcome::Unauthorized);
        let res = error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
        return Ok(with_rates(res, &rates));
    }
    if !parts.headers.contains_key("anthropic-version") {
        let rates = shared.refuse(Outcome::BadRequest);
        let res = error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
        return Ok(with_rates(res, &rates));
    }
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let rates = shared.refuse(Outcome::BadRequest);
            let res = error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &e.to_string(),
            );
            return Ok(with_rates(res, &rates));
        }
    };
    // Journaled like the OpenAI routes, so a test can see what was sent.
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let seq = shared.journal.arrive(
        shared.elapsed_ms(),
        parts.method.as_str(),
        target,
        &parts.headers,
        &body,
    );
    let result = respond(shared, arrived, body).await;
    if let Ok(res) = &result {
        shared.journal.answer(seq, res.status().as_u16());
    }
    result
}

/// Answers a Messages request whose body was read.
async fn respond(
    shared: &Shared,
    arrived: Instant,
    body: Bytes,
) -> Result<Response<Body>, ConnectionReset> {
    let parsed = match parse(&body, shared.cfg.default_completion_tokens()) {
        Ok(p) => {
            shared.count_images(p.images);
            p
        }
        Err(message) => {
            let rates = shared.refuse(Outcome::BadRequest);
            let res = error(StatusCode::BAD_REQUEST, "invalid_request_error", &message);
            return Ok(with_rates(res, &rates));
        }
    };
    let place = shared.enter();
    let hash = xxhash_rust::xxh3::xxh3_64_with_seed(&body, shared.cfg.seed);
    let tokens = parsed.prompt_tokens + parsed_completion(&parsed);
    let decision = shared.decide(place.is_some(), tokens, hash, arrived);
    let delay = Duration::from_millis(shared.cfg.latency_ms.saturating_add(decision.jitter_ms));
    let pause = || async {
        if !delay.is_zero() {
            crate::timer::sleep_until(arrived + delay).await;
        }
    };
    let res = match decision.verdict {
        Verdict::Busy => {
            let mut res = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "Too many concurrent requests.",
            );
            res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(1));
            res
        }
        Verdict::Fault(Fault::Hang) => {
            tokio::time::sleep(HANG).await;
            overloaded()
        }
        Verdict::Fault(Fault::Reset) => {
            pause().await;
            return Err(ConnectionReset);
        }
        Verdict::Fault(Fault::ServerError) => {
            pause().await;
            overloaded()
        }
        Verdict::Throttled(throttle) => {
            pause().await;
            throttled(throttle)
        }
        Verdict::Accept { id, truncate } => {
            pause().await;
            let conversation = parsed.conversation.unwrap_or(hash);
            let seed = crate::convo::reply_seed(shared.cfg.seed, conversation);
            let res = if parsed.stream.is_some() {
                let (n, cut) = match parsed.body {
                    ParsedBody::Completion {
                        completion_tokens,
                        cut_short,
                    } => (completion_tokens, cut_short),
                    ParsedBody::Embeddings { .. } => (0, false),
                };
                let mut body = crate::sse::anthropic_message(
                    &parsed.model,
                    id,
                    parsed.prompt_tokens,
                    n,
                    cut,
                    seed,
                );
                if truncate {
                    body.truncate(body.len() / 2);
                }
                crate::sse::response(body)
            } else {
                let mut body = reply(&parsed, id, seed).to_string().into_bytes();
                if truncate {
                    body.truncate(body.len() / 2);
                }
                response::json(StatusCode::OK, body)
            };
            shared.sent_ok();
            res
        }
    };
    drop(place);
    Ok(with_rates(res, &decision.rates))
}

fn parsed_completion(parsed: &Parsed<'_>) -> u64 {
    match parsed.body {
        ParsedBody::Completion {
            completion_tokens, ..
        } => completion_tokens,
        ParsedBody::Embeddings { .. } => 0,
    }
}

fn overloaded() -> Response<Body> {
    let status = StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    error(status, "overloaded_error", "Overloaded (injected fault)")
}

/// The 429 for a request a limit refused; `retry-after` in whole seconds.
fn throttled(throttle: Throttle) -> Response<Body> {
    let (message, wait) = match throttle {
        Throttle::Wait {
            kind,
            limit,
            wait_nanos,
            ..
        } => (
            format!(
                "This request would exceed the rate limit for your organization of {limit} {} per minute.",
                kind.name()
            ),
            Some(wait_nanos),
        ),
        Throttle::TooLarge { limit, cost } => (
            format!("Request of {cost} tokens is larger than the limit of {limit} tokens per minute."),
            None,
        ),
    };
    let mut res = error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", &message);
    if let Some(nanos) = wait {
        let secs = nanos.div_ceil(1_000_000_000).max(1);
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

/// Adds `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`.
fn with_rates(mut res: Response<Body>, rates: &RateSnapshot) -> Response<Body> {
    let now = unix_ms();
    for (kind, state) in [("requests", rates.requests), ("tokens", rates.tokens)] {
        let Some(LimitState {
            limit,
            remaining,
            reset_nanos,
        }) = state
        else {
            continue;
        };
        let h = res.headers_mut();
        let name = |s: &str| HeaderName::try_from(format!("anthropic-ratelimit-{kind}-{s}"));
        let reset = rfc3339(now + reset_nanos.div_ceil(1_000_000));
        for (n, v) in [
            ("limit", limit.to_string()),
            ("remaining", remaining.to_string()),
            ("reset", reset),
        ] {
            if let (Ok(n), Ok(v)) = (name(n), HeaderValue::try_from(v)) {
                h.insert(n, v);
            }
        }
    }
    res
}

/// Unix milliseconds as RFC 3339 (UTC, milliseconds).
pub(crate) fn rfc3339(unix_ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// A body as bytes for the batch processor (which reuses [`parse`] and [`reply`]).
pub(crate) fn answer(
    params: &serde_json::Value,
    default_completion: u64,
    seed: u64,
    id: u64,
) -> Result<serde_json::Value, String> {
    let bytes = Bytes::from(params.to_string());
    let parsed = parse(&bytes, default_completion)?;
    let conversation = parsed.conversation.unwrap_or(0);
    Ok(reply(
        &parsed,
        id,
        crate::convo::reply_seed(seed, conversation),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_the_schema_does_not_list_are_refused() {
        let ok = br#"{"model":"m","max_tokens":5,"temperature":1,"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"any"},"messages":[{"role":"user","content":"hi"}]}"#;
        assert!(parse(ok, 16).is_ok());
        for (body, fragment) in [
            (&br#"{"model":"m","max_tokens":5,"reasoning_effort":"high","messages":[{"role":"user","content":"hi"}]}"#[..], "reasoning_effort"),
            (br#"{"model":"m","max_tokens":5,"temperature":1.5,"messages":[{"role":"user","content":"hi"}]}"#, "temperature"),
            (br#"{"model":"m","max_tokens":5,"tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"hi"}]}"#, "tools.0"),
            (br#"{"model":"m","max_tokens":5,"tool_choice":"auto","messages":[{"role":"user","content":"hi"}]}"#, "tool_choice"),
            (br#"{"model":"m","max_tokens":5,"metadata":{"run":"1"},"messages":[{"role":"user","content":"hi"}]}"#, "metadata.run"),
        ] {
            let Err(e) = parse(body, 16) else {
                panic!("accepted: {}", String::from_utf8_lossy(body));
            };
            assert!(e.contains(fragment), "{e}");
        }
    }

    #[test]
    fn system_is_its_own_field_and_max_tokens_is_required() {
        let ok = br#"{"model":"c","max_tokens":5,"system":"Be brief.","messages":[{"role":"user","content":"abcdefgh"}]}"#;
        let p = parse(ok, 16).unwrap();
        // 3 + 2 tokens; the reply is cut to max_tokens.
        assert_eq!(p.prompt_tokens, 5);
        assert!(matches!(
            p.body,
            ParsedBody::Completion {
                completion_tokens: 5,
                cut_short: true
            }
        ));
        let r = reply(&p, 1, 9);
        assert_eq!(r["stop_reason"], "max_tokens");
        assert_eq!(r["usage"]["output_tokens"], 5);
        let e = parse(
            br#"{"model":"c","messages":[{"role":"user","content":"x"}]}"#,
            16,
        )
        .unwrap_err();
        assert!(e.contains("max_tokens"), "{e}");
        let e = parse(br#"{"model":"c","max_tokens":1,"messages":[{"role":"system","content":"x"},{"role":"user","content":"y"}]}"#, 16)
            .unwrap_err();
        assert!(e.contains("top-level `system`"), "{e}");
    }

    #[test]
    fn the_same_conversation_hashes_alike_in_both_shapes() {
        let openai = br#"{"model":"c","messages":[{"role":"system","content":"S"},{"role":"user","content":"Q"}]}"#;
        let anthropic = br#"{"model":"c","max_tokens":16,"system":"S","messages":[{"role":"user","content":[{"type":"text","text":"Q"}]}]}"#;
        let a = crate::request::parse(crate::request::Api::Chat, openai, 16).unwrap();
        let b = parse(anthropic, 16).unwrap();
        assert_eq!(a.conversation, b.conversation);
        assert_eq!(a.prompt_tokens, b.prompt_tokens);
    }

    #[test]
    fn rfc3339_is_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_445_401_250), "2026-11-23T14:50:01.250Z");
    }
}
