//! A chat answer read back the same way from every dialect: its text, token
//! usage and why it stopped.

use serde_json::Value as Json;

use super::Dialect;

/// The normalised answer of one chat call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatAnswer {
    /// The answer's text (Anthropic: every text block, joined).
    pub text: String,
    /// Prompt tokens (`prompt_tokens`; Anthropic `input_tokens` plus cache reads and writes).
    pub prompt_tokens: Option<u64>,
    /// Completion tokens (`completion_tokens` / `output_tokens`).
    pub completion_tokens: Option<u64>,
    /// `finish_reason` / `stop_reason`.
    pub finish: Option<String>,
}

/// Reads a chat answer body; `Err` says what is missing.
pub fn chat_answer(dialect: Dialect, body: &[u8]) -> Result<ChatAnswer, String> {
    let value: Json = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let usage = |a: &str| value.pointer(a).and_then(Json::as_u64);
    match dialect {
        Dialect::OpenAi => {
            let choice = value.pointer("/choices/0");
            let text = choice
                .and_then(|c| c.pointer("/message/content"))
                .and_then(|c| match c {
                    Json::Null => Some(String::new()),
                    Json::String(s) => Some(s.clone()),
                    _ => None,
                })
                .ok_or("the answer has no choices[0].message.content")?;
            Ok(ChatAnswer {
                text,
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
                prompt_tokens: input,
                completion_tokens: usage("/usage/output_tokens"),
                finish: value["stop_reason"].as_str().map(str::to_string),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_read_into_the_same_answer() {
        let openai = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#;
        let anthropic = br#"{"type":"message","content":[{"type":"text","text":"hel"},{"type":"tool_use","id":"t"},{"type":"text","text":"lo"}],"stop_reason":"stop","usage":{"input_tokens":4,"cache_read_input_tokens":1,"output_tokens":2}}"#;
        let a = chat_answer(Dialect::OpenAi, openai).unwrap();
        let b = chat_answer(Dialect::Anthropic, anthropic).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.text, "hello");
        assert_eq!((a.prompt_tokens, a.completion_tokens), (Some(5), Some(2)));
    }

    #[test]
    fn missing_content_is_an_error_that_says_so() {
        let e = chat_answer(Dialect::OpenAi, br#"{"choices":[]}"#).unwrap_err();
        assert!(e.contains("choices[0].message.content"), "{e}");
        let e = chat_answer(Dialect::Anthropic, br#"{"id":"x"}"#).unwrap_err();
        assert!(e.contains("content"), "{e}");
    }
}
