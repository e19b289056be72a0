//! A streamed chat answer: server-sent events read as they arrive, timed
//! (first token, last byte) and put back together into the body the same
//! call would have answered without streaming, so everything after the wire
//! (sorting the response, usage, outputs) is the same for both.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value as Json};

use crate::dialect::Dialect;

/// How a streamed answer arrived, measured from the moment it was sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamStats {
    /// Until the first event carrying answer text (`None`: the answer had no text).
    pub first_token: Option<Duration>,
    /// Until the stream's last byte.
    pub total: Duration,
}

impl StreamStats {
    /// Completion tokens per second of generation: `completion_tokens` over the
    /// time from the first token to the end (the whole stream when there was
    /// no text, or it all came at once).
    pub fn tokens_per_second(&self, completion_tokens: u64) -> Option<f64> {
        let generating = match self.first_token {
            Some(first) if self.total > first => self.total - first,
            _ => self.total,
        };
        (!generating.is_zero() && completion_tokens > 0)
            .then(|| completion_tokens as f64 / generating.as_secs_f64())
    }
}

/// Gathers one stream's events.
pub(crate) struct Collector {
    dialect: Dialect,
    started: Instant,
    first_token: Option<Instant>,
    /// An incomplete line carried over to the next piece.
    partial: Vec<u8>,
    /// `data:` lines of the event being read.
    data: String,
    text: String,
    /// OpenAI's `delta.refusal` pieces.
    refusal: Option<String>,
    /// Content blocks by index (Anthropic) or tool calls by index (OpenAI),
    /// each put together from its deltas.
    blocks: Vec<Block>,
    id: Option<String>,
    model: Option<String>,
    finish: Option<String>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    /// `[DONE]` (OpenAI) or `message_stop` (Anthropic) was seen.
    ended: bool,
    /// An `error` event: the provider gave up mid-stream.
    error: Option<String>,
}

/// One content block or tool call being streamed.
#[derive(Default)]
struct Block {
    index: u64,
    /// `text`, `tool_use` (Anthropic), `function` (an OpenAI tool call), …
    kind: String,
    id: String,
    name: String,
    /// Text, or a tool call's argument JSON as it arrives.
    buffer: String,
    /// An Anthropic block's start, for blocks put back as they came.
    start: Json,
}

impl Collector {
    /// A collector for a request sent at `started`.
    pub(crate) fn new(dialect: Dialect, started: Instant) -> Collector {
        Collector {
            dialect,
            started,
            first_token: None,
            partial: Vec::new(),
            data: String::new(),
            text: String::new(),
            refusal: None,
            blocks: Vec::new(),
            id: None,
            model: None,
            finish: None,
            prompt_tokens: None,
            completion_tokens: None,
            ended: false,
            error: None,
        }
    }

    /// Reads the next piece of the body.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..i]);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line(&String::from_utf8_lossy(&line));
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            let data = std::mem::take(&mut self.data);
            if !data.is_empty() {
                self.event(&data);
            }
        } else if let Some(value) = line.strip_prefix("data:") {
            if !self.data.is_empty() {
                self.data.push('\n');
            }
            self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
        // `event:`, `id:`, `retry:` and `:` comments carry nothing we need:
        // Anthropic repeats the event type inside its data.
    }

    fn event(&mut self, data: &str) {
        if data.trim() == "[DONE]" {
            self.ended = true;
            return;
        }
        let Ok(v) = serde_json::from_str::<Json>(data) else {
            return;
        };
        match self.dialect {
            Dialect::OpenAi => self.openai_event(&v),
            Dialect::Anthropic => self.anthropic_event(&v),
        }
    }

    fn openai_event(&mut self, v: &Json) {
        let text = |s: &str| Some(s.to_string());
        self.id = self.id.take().or_else(|| v["id"].as_str().and_then(text));
        self.model = self
            .model
            .take()
            .or_else(|| v["model"].as_str().and_then(text));
        if let Some(choice) = v.pointer("/choices/0") {
            let delta = &choice["delta"];
            if let Some(piece) = delta["content"].as_str() {
                self.push_text(piece);
            }
            if let Some(piece) = delta["refusal"].as_str() {
                self.mark_first(piece);
                self.refusal.get_or_insert_with(String::new).push_str(piece);
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                // Each call's pieces carry its index; the first also its id and name.
                let index = call["index"].as_u64().unwrap_or(0);
                let block = self.block(index);
                block.kind = "function".into();
                if let Some(id) = call["id"].as_str() {
                    block.id = id.to_string();
                }
                if let Some(name) = call.pointer("/function/name").and_then(Json::as_str) {
                    block.name.push_str(name);
                }
                if let Some(args) = call.pointer("/function/arguments").and_then(Json::as_str) {
                    block.buffer.push_str(args);
                    self.mark_first(args);
                }
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                self.finish = Some(f.to_string());
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.prompt_tokens = u["prompt_tokens"].as_u64();
            self.completion_tokens = u["completion_tokens"].as_u64();
        }
        // Some servers send `"error": null` on every chunk: only a real error counts.
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            self.error = Some(
                e["message"]
                    .as_str()
                    .or(e.as_str())
                    .unwrap_or("error")
                    .to_string(),
            );
        }
    }

    fn anthropic_event(&mut self, v: &Json) {
        let text = |s: &str| Some(s.to_string());
        match v["type"].as_str().unwrap_or("") {
            "message_start" => {
                let m = &v["message"];
                self.id = m["id"].as_str().and_then(text);
                self.model = m["model"].as_str().and_then(text);
                self.prompt_tokens = [
                    "input_tokens",
                    "cache_creation_input_tokens",
                    "cache_read_input_tokens",
                ]
                .iter()
                .filter_map(|k| m["usage"][k].as_u64())
                .reduce(|a, b| a + b);
                self.completion_tokens = m["usage"]["output_tokens"].as_u64();
            }
            "content_block_start" => {
                let index = v["index"].as_u64().unwrap_or(0);
                let start = v["content_block"].clone();
                let block = self.block(index);
                block.kind = start["type"].as_str().unwrap_or("text").to_string();
                block.id = start["id"].as_str().unwrap_or("").to_string();
                block.name = start["name"].as_str().unwrap_or("").to_string();
                if let Some(t) = start["text"].as_str() {
                    block.buffer.push_str(t);
                }
                block.start = start;
            }
            "content_block_delta" => {
                let index = v["index"].as_u64().unwrap_or(0);
                let delta = &v["delta"];
                let piece = match delta["type"].as_str() {
                    Some("input_json_delta") => delta["partial_json"].as_str(),
                    Some("text_delta") | None => delta["text"].as_str(),
                    // thinking, signatures, citations: not part of the answer's text.
                    _ => None,
                };
                if let Some(piece) = piece {
                    self.mark_first(piece);
                    let block = self.block(index);
                    if block.kind.is_empty() {
                        block.kind = "text".into();
                    }
                    block.buffer.push_str(piece);
                }
            }
            "message_delta" => {
                if let Some(f) = v.pointer("/delta/stop_reason").and_then(Json::as_str) {
                    self.finish = Some(f.to_string());
                }
                if let Some(n) = v.pointer("/usage/output_tokens").and_then(Json::as_u64) {
                    self.completion_tokens = Some(n);
                }
            }
            "message_stop" => self.ended = true,
            "error" => {
                let e = &v["error"];
                self.error = Some(format!(
                    "{}: {}",
                    e["type"].as_str().unwrap_or("error"),
                    e["message"].as_str().unwrap_or("")
                ));
            }
            _ => {}
        }
    }

    /// The block (or tool call) at `index`, made on its first mention.
    fn block(&mut self, index: u64) -> &mut Block {
        let at = match self.blocks.iter().position(|b| b.index == index) {
            Some(at) => at,
            None => {
                self.blocks.push(Block {
                    index,
                    ..Block::default()
                });
                self.blocks.len() - 1
            }
        };
        &mut self.blocks[at]
    }

    fn mark_first(&mut self, piece: &str) {
        if !piece.is_empty() && self.first_token.is_none() {
            self.first_token = Some(Instant::now());
        }
    }

    fn push_text(&mut self, piece: &str) {
        self.mark_first(piece);
        self.text.push_str(piece);
    }

    /// The answer as the dialect's non-streamed body, and its timing; `Err`
    /// when the provider sent an error event or the stream stopped early.
    pub(crate) fn finish(mut self) -> Result<(Bytes, StreamStats), StreamError> {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned();
            self.line(&line);
        }
        self.line("");
        let stats = StreamStats {
            first_token: self.first_token.map(|t| t - self.started),
            total: self.started.elapsed(),
        };
        if let Some(e) = self.error {
            return Err(StreamError::Provider(e));
        }
        if !self.ended && self.finish.is_none() {
            return Err(StreamError::Incomplete);
        }
        self.blocks.sort_by_key(|b| b.index);
        let body = match self.dialect {
            Dialect::OpenAi => {
                let mut message = json!({"role": "assistant", "content": self.text});
                let calls: Vec<Json> = self
                    .blocks
                    .iter()
                    .map(|b| {
                        json!({"id": b.id, "type": "function",
                               "function": {"name": b.name, "arguments": b.buffer}})
                    })
                    .collect();
                if !calls.is_empty() {
                    if self.text.is_empty() {
                        message["content"] = Json::Null;
                    }
                    message["tool_calls"] = Json::Array(calls);
                }
                if let Some(r) = self.refusal {
                    message["refusal"] = Json::String(r);
                }
                let mut b = json!({
                    "id": self.id,
                    "object": "chat.completion",
                    "model": self.model,
                    "choices": [{"index": 0, "message": message, "finish_reason": self.finish}],
                });
                if let (Some(p), Some(c)) = (self.prompt_tokens, self.completion_tokens) {
                    b["usage"] =
                        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c});
                }
                b
            }
            Dialect::Anthropic => {
                let content: Vec<Json> = self.blocks.into_iter().map(anthropic_block).collect();
                json!({
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": content,
                    "stop_reason": self.finish,
                    "usage": {"input_tokens": self.prompt_tokens, "output_tokens": self.completion_tokens},
                })
            }
        };
        Ok((Bytes::from(body.to_string()), stats))
    }
}

/// A streamed Anthropic block as the non-streamed answer holds it: a
/// tool_use's input parsed from its JSON pieces (`{}` when none came).
fn anthropic_block(b: Block) -> Json {
    match b.kind.as_str() {
        "text" => json!({"type": "text", "text": b.buffer}),
        "tool_use" | "server_tool_use" => {
            let input = if b.buffer.trim().is_empty() {
                b.start.get("input").cloned().unwrap_or_else(|| json!({}))
            } else {
                serde_json::from_str(&b.buffer).unwrap_or(Json::String(b.buffer))
            };
            json!({"type": b.kind, "id": b.id, "name": b.name, "input": input})
        }
        _ => b.start,
    }
}

/// Why a stream did not give a whole answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamError {
    /// An `error` event (e.g. Anthropic's `overloaded_error` mid-stream).
    Provider(String),
    /// The body ended before the stream's last event.
    Incomplete,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::{chat_answer, Dialect};

    fn collect(
        dialect: Dialect,
        text: &str,
        piece: usize,
    ) -> Result<(Bytes, StreamStats), StreamError> {
        let mut c = Collector::new(dialect, Instant::now());
        for chunk in text.as_bytes().chunks(piece) {
            c.feed(chunk);
        }
        c.finish()
    }

    const OPENAI: &str = "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n\
data: [DONE]\n\n";

    const ANTHROPIC: &str = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\r\n\r\n\
event: ping\r\ndata: {\"type\":\"ping\"}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\r\n\r\n\
event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\r\n\r\n\
event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n";

    #[test]
    fn both_dialects_reassemble_the_same_answer_in_any_piece_size() {
        for piece in [1, 7, 4096] {
            for (dialect, text) in [(Dialect::OpenAi, OPENAI), (Dialect::Anthropic, ANTHROPIC)] {
                let (body, stats) = collect(dialect, text, piece).unwrap();
                let answer = chat_answer(dialect, &body).unwrap();
                assert_eq!(answer.text, "Hello", "{dialect:?} {piece}");
                assert_eq!(
                    (answer.prompt_tokens, answer.completion_tokens),
                    (Some(3), Some(2))
                );
                assert!(stats.first_token.is_some());
                assert!(stats.first_token.unwrap() <= stats.total);
            }
        }
    }

    #[test]
    fn error_events_and_cut_streams_are_failures() {
        let overloaded = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert_eq!(
            collect(Dialect::Anthropic, overloaded, 100).unwrap_err(),
            StreamError::Provider("overloaded_error: Overloaded".into())
        );
        let cut = &OPENAI[..OPENAI.find("\"lo\"").unwrap()];
        assert_eq!(
            collect(Dialect::OpenAi, cut, 100).unwrap_err(),
            StreamError::Incomplete
        );
    }

    #[test]
    fn streamed_tool_calls_and_refusals_are_kept_in_both_dialects() {
        // OpenAI: a call's first piece carries id and name, later ones only
        // the index and more argument text.
        let openai = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]}}]}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"error\":null}\n\n\
data: [DONE]\n\n";
        let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"Paris\\\"}\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":12}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        for piece in [1, 13, 4096] {
            for (dialect, text) in [(Dialect::OpenAi, openai), (Dialect::Anthropic, anthropic)] {
                let (body, _) = collect(dialect, text, piece).expect("a whole answer");
                let answer = chat_answer(dialect, &body).unwrap();
                assert_eq!(answer.tool_calls.len(), 1, "{dialect:?}");
                let call = &answer.tool_calls[0];
                assert_eq!(
                    (call.id.as_str(), call.name.as_str()),
                    ("call_1", "get_weather")
                );
                let args: Json = serde_json::from_str(&call.arguments).unwrap();
                assert_eq!(args, json!({"city": "Paris"}), "{dialect:?}");
                assert_eq!(answer.finish.as_deref(), Some("tool_calls"));
            }
        }
        let refusal = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"refusal\":\"I can't \"}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"help.\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let (body, _) = collect(Dialect::OpenAi, refusal, 5).unwrap();
        let answer = chat_answer(Dialect::OpenAi, &body).unwrap();
        assert_eq!(answer.refusal.as_deref(), Some("I can't help."));
    }

    #[test]
    fn an_error_field_that_is_null_is_no_error() {
        let text = OPENAI.replace("\"usage\":", "\"error\":null,\"usage\":");
        assert!(text.contains("\"error\":null"));
        assert!(collect(Dialect::OpenAi, &text, 64).is_ok());
        let failed = "data: {\"error\":{\"message\":\"boom\"}}\n\n";
        assert_eq!(
            collect(Dialect::OpenAi, failed, 64).unwrap_err(),
            StreamError::Provider("boom".into())
        );
    }

    #[test]
    fn tokens_per_second_counts_from_the_first_token() {
        let stats = StreamStats {
            first_token: Some(Duration::from_millis(500)),
            total: Duration::from_millis(1500),
        };
        assert_eq!(stats.tokens_per_second(20), Some(20.0));
        assert_eq!(stats.tokens_per_second(0), None);
        let at_once = StreamStats {
            first_token: Some(Duration::from_millis(10)),
            total: Duration::from_millis(10),
        };
        assert_eq!(at_once.tokens_per_second(5), Some(500.0));
    }
}
