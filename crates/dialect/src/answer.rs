//! A chat answer read back the same way from every dialect: its text, tool
//! calls, refusal, token usage and why it stopped — in OpenAI's terms, the
//! terms steps are written in.

use serde_json::{json, Value as Json};

use super::Dialect;

/// The normalised answer of one chat call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatAnswer {
    /// The answer's text (Anthropic: every text block, joined).
    pub text: String,
    /// Tools the model asked to call (Anthropic: its `tool_use` blocks).
    pub tool_calls: Vec<ToolCall>,
    /// OpenAI's `message.refusal`: the model declined, saying this.
    pub refusal: Option<String>,
    /// Prompt tokens (`prompt_tokens`; Anthropic `input_tokens` plus cache reads and writes).
    pub prompt_tokens: Option<u64>,
    /// Completion tokens (`completion_tokens` / `output_tokens`).
    pub completion_tokens: Option<u64>,
    /// Why it stopped, in OpenAI's words ([`finish_reason`]).
    pub finish: Option<String>,
}

/// One tool call, as OpenAI writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The call's id (the `tool_call_id` its answer must carry).
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments as JSON text (OpenAI's form; Anthropic's object, serialised).
    pub arguments: String,
}

impl ToolCall {
    /// OpenAI's `{"id", "type": "function", "function": {"name", "arguments"}}`.
    pub fn to_openai(&self) -> Json {
        json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        })
    }
}

/// A stop reason in OpenAI's vocabulary (`stop`, `length`, `tool_calls`,
/// `content_filter`): Anthropic's `end_turn` and `stop_sequence` are `stop`,
/// `max_tokens` and `model_context_window_exceeded` are `length`, `tool_use`
/// is `tool_calls`, `refusal` is `content_filter`; any other word is kept.
pub fn finish_reason(dialect: Dialect, raw: &str) -> String {
    match (dialect, raw) {
        (Dialect::Anthropic, "end_turn" | "stop_sequence") => "stop",
        (Dialect::Anthropic, "max_tokens" | "model_context_window_exceeded") => "length",
        (Dialect::Anthropic, "tool_use") => "tool_calls",
        (Dialect::Anthropic, "refusal") => "content_filter",
        _ => raw,
    }
    .to_string()
}

/// Reads a chat answer body; `Err` says what is missing.
pub fn chat_answer(dialect: Dialect, body: &[u8]) -> Result<ChatAnswer, String> {
    let value: Json = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let usage = |a: &str| value.pointer(a).and_then(Json::as_u64);
    match dialect {
        Dialect::OpenAi => {
            let choice = value.pointer("/choices/0");
            let message = choice.and_then(|c| c.get("message"));
            let text = message
                .and_then(|m| m.get("content"))
                .and_then(|c| match c {
                    Json::Null => Some(String::new()),
                    Json::String(s) => Some(s.clone()),
                    _ => None,
                })
                .ok_or("the answer has no choices[0].message.content")?;
            let tool_calls = message
                .and_then(|m| m["tool_calls"].as_array())
                .map(|calls| calls.iter().filter_map(openai_call).collect())
                .unwrap_or_default();
            Ok(ChatAnswer {
                text,
                tool_calls,
                refusal: message
                    .and_then(|m| m["refusal"].as_str())
                    .map(str::to_string),
                prompt_tokens: usage("/usage/prompt_tokens"),
                completion_tokens: usage("/usage/completion_tokens"),
                finish: choice
                    .and_then(|c| c["finish_reason"].as_str())
                    .map(str::to_string),
            })
        }
        Dialect::Anthropic => {
            let blocks = value["content"]
                .as_array()
                .ok_or("the answer has no content list")?;
            let text: Vec<&str> = blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect();
            let tool_calls = blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .map(|b| ToolCall {
                    id: b["id"].as_str().unwrap_or("").to_string(),
                    name: b["name"].as_str().unwrap_or("").to_string(),
                    arguments: b.get("input").map_or("{}".into(), Json::to_string),
                })
                .collect();
            let input = [
                "input_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
            ]
            .iter()
            .filter_map(|k| value["usage"][k].as_u64())
            .reduce(|a, b| a + b);
            Ok(ChatAnswer {
                text: text.concat(),
                tool_calls,
                refusal: None,
                prompt_tokens: input,
                completion_tokens: usage("/usage/output_tokens"),
                finish: value["stop_reason"]
                    .as_str()
                    .map(|r| finish_reason(dialect, r)),
            })
        }
    }
}

fn openai_call(call: &Json) -> Option<ToolCall> {
    let f = call.get("function")?;
    Some(ToolCall {
        id: call["id"].as_str().unwrap_or("").to_string(),
        name: f["name"].as_str()?.to_string(),
        arguments: match &f["arguments"] {
            Json::String(s) => s.clone(),
            Json::Null => String::new(),
            other => other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_read_into_the_same_answer() {
        let openai = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#;
        let anthropic = br#"{"type":"message","content":[{"type":"text","text":"hel"},{"type":"text","text":"lo"}],"stop_reason":"end_turn","usage":{"input_tokens":4,"cache_read_input_tokens":1,"output_tokens":2}}"#;
        let a = chat_answer(Dialect::OpenAi, openai).unwrap();
        let b = chat_answer(Dialect::Anthropic, anthropic).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.text, "hello");
        assert_eq!(a.finish.as_deref(), Some("stop"));
        assert_eq!((a.prompt_tokens, a.completion_tokens), (Some(5), Some(2)));
    }

    #[test]
    fn tool_calls_read_the_same_from_both_dialects() {
        let openai = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},"finish_reason":"tool_calls"}]}"#;
        let anthropic = br#"{"type":"message","content":[{"type":"tool_use","id":"t1","name":"f","input":{"x":1}}],"stop_reason":"tool_use"}"#;
        let a = chat_answer(Dialect::OpenAi, openai).unwrap();
        let b = chat_answer(Dialect::Anthropic, anthropic).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.tool_calls[0].to_openai(),
            json!({"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}})
        );
        assert_eq!(a.finish.as_deref(), Some("tool_calls"));
    }

    #[test]
    fn a_refusal_is_kept() {
        let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]}"#;
        let a = chat_answer(Dialect::OpenAi, body).unwrap();
        assert_eq!(a.refusal.as_deref(), Some("I can't help with that."));
        assert_eq!(a.text, "");
    }

    #[test]
    fn missing_content_is_an_error_that_says_so() {
        let e = chat_answer(Dialect::OpenAi, br#"{"choices":[]}"#).unwrap_err();
        assert!(e.contains("choices[0].message.content"), "{e}");
        let e = chat_answer(Dialect::Anthropic, br#"{"id":"x"}"#).unwrap_err();
        assert!(e.contains("content"), "{e}");
    }
}
