//! Streamed answers: the server-sent events of an OpenAI chat completion
//! (`stream: true`, a final usage chunk with `stream_options.include_usage`)
//! and of an Anthropic message, one event per token; and the body that sends
//! such events `stream_interval_ms` apart.

use std::collections::VecDeque;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use serde_json::json;

use crate::reply;
use crate::request::{Parsed, ParsedBody};
use crate::response::Body;

/// The media type of a stream of server-sent events.
pub(crate) const EVENT_STREAM: &str = "text/event-stream";

/// The reply of `tokens` tokens, cut into one piece per token (4 characters).
fn pieces(seed: u64, tokens: u64) -> Vec<String> {
    split(&reply::text(seed, tokens))
}

/// `text` in pieces of 4 characters (one token each).
fn split(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(4).map(|c| c.iter().collect()).collect()
}

fn completion(parsed: &Parsed<'_>) -> (u64, bool) {
    match parsed.body {
        ParsedBody::Completion {
            completion_tokens,
            cut_short,
        } => (completion_tokens, cut_short),
        ParsedBody::Embeddings { .. } => (0, false),
    }
}

/// An OpenAI chat completion as `chat.completion.chunk` events, then `[DONE]`.
pub(crate) fn openai_chat(
    parsed: &Parsed<'_>,
    id: u64,
    created: u64,
    seed: u64,
    include_usage: bool,
    invalid_json: bool,
) -> Vec<u8> {
    let (asked, cut_short) = completion(parsed);
    let text = crate::json_reply::chat(parsed.json.as_ref(), seed, asked, invalid_json);
    let tokens = crate::json_reply::answer_tokens(
        parsed.json.as_ref(),
        &text,
        asked,
        crate::count::Counter::for_model(&parsed.model),
    );
    let id = format!("chatcmpl-{id}");
    let chunk = |choices: serde_json::Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created,
               "model": &*parsed.model, "choices": choices})
    };
    let mut out = String::new();
    let mut event = |v: serde_json::Value| {
        out.push_str("data: ");
        out.push_str(&v.to_string());
        out.push_str("\n\n");
    };
    event(chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
    ));
    for piece in split(&text) {
        event(chunk(
            json!([{"index": 0, "delta": {"content": piece}, "finish_reason": null}]),
        ));
    }
    let finish = if cut_short { "length" } else { "stop" };
    event(chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
    ));
    if include_usage {
        let mut usage = chunk(json!([]));
        usage["usage"] = json!({"prompt_tokens": parsed.prompt_tokens, "completion_tokens": tokens,
                                "total_tokens": parsed.prompt_tokens + tokens});
        event(usage);
    }
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

/// An Anthropic message as its event sequence: `message_start`, a text
/// block's deltas, `message_delta` (stop reason, output tokens), `message_stop`.
pub(crate) fn anthropic_message(
    model: &str,
    id: u64,
    prompt_tokens: u64,
    tokens: u64,
    cut_short: bool,
    seed: u64,
) -> Vec<u8> {
    let mut out = String::new();
    let mut event = |name: &str, v: serde_json::Value| {
        out.push_str(&format!("event: {name}\ndata: {v}\n\n"));
    };
    event(
        "message_start",
        json!({"type": "message_start", "message": {"id": format!("msg_{id}"), "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": 1}}}),
    );
    event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    event("ping", json!({"type": "ping"}));
    for piece in pieces(seed, tokens) {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        );
    }
    event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    let stop = if cut_short { "max_tokens" } else { "end_turn" };
    event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
               "usage": {"output_tokens": tokens}}),
    );
    event("message_stop", json!({"type": "message_stop"}));
    out.into_bytes()
}

/// A 200 carrying events.
pub(crate) fn response(body: Vec<u8>) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = StatusCode::OK;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    res
}

/// A response body as the server sends it: whole, or — events, with a gap
/// configured — one event at a time.
pub(crate) enum Paced {
    Whole(Full<Bytes>),
    Events {
        events: VecDeque<Bytes>,
        gap: Duration,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    },
}

/// Sends an event stream one event per `gap` (`gap` zero: all at once).
pub(crate) fn pace(res: Response<Body>, gap: Duration) -> Response<Paced> {
    let events = res
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(EVENT_STREAM.as_bytes()));
    if !events || gap.is_zero() {
        return res.map(Paced::Whole);
    }
    let (mut parts, body) = res.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let whole = body_bytes(body);
    let mut queue = VecDeque::new();
    let mut rest = &whole[..];
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(rest.len(), |i| i + 2);
        queue.push_back(Bytes::copy_from_slice(&rest[..end]));
        rest = &rest[end..];
    }
    Response::from_parts(
        parts,
        Paced::Events {
            events: queue,
            gap,
            sleep: None,
        },
    )
}

/// The bytes of a `Full` body (it is ready at once).
fn body_bytes(mut body: Full<Bytes>) -> Bytes {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    match Pin::new(&mut body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

impl HttpBody for Paced {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Paced::Whole(full) => Pin::new(full).poll_frame(cx),
            Paced::Events { events, gap, sleep } => {
                if let Some(s) = sleep.as_mut() {
                    if s.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                match events.pop_front() {
                    Some(event) => {
                        *sleep = (!events.is_empty()).then(|| Box::pin(tokio::time::sleep(*gap)));
                        Poll::Ready(Some(Ok(Frame::data(event))))
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Paced::Whole(full) => full.is_end_stream(),
            Paced::Events { events, .. } => events.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Paced::Whole(full) => full.size_hint(),
            Paced::Events { .. } => SizeHint::default(),
        }
    }
}
