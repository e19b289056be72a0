//! What a step leaves for later steps and for the results: `steps.<name>`.

use serde::{Deserialize, Serialize};

/// One step's (or fan-out element's, or turn's) output, as templates see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepOutput {
    /// The answer's text: chat content, command stdout, an http body that is text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    /// Parsed JSON: a chat answer with `response_format`, an http JSON body,
    /// embedding vectors, a command's JSON stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) json: Option<serde_json::Value>,
    /// A saved file's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<String>,
    /// HTTP status or exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<i64>,
    /// Tokens reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<Usage>,
    /// A chat answer's tool calls, in OpenAI's shape (`[{id, type, function:
    /// {name, arguments}}]`), whichever dialect answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tool_calls: Option<Vec<serde_json::Value>>,
    /// The model declined: OpenAI's `message.refusal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refusal: Option<String>,
    /// Why a chat answer stopped, in OpenAI's words (`stop`, `length`,
    /// `tool_calls`, `content_filter`; Anthropic's `stop_reason` translated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) finish_reason: Option<String>,
    /// A conversation's turns: `[{prompt, answer}]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) turns: Option<Vec<Turn>>,
    /// Set when this output is the step's fallback: why the step failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fallback: Option<String>,
    /// Set when this output came from the cache instead of a call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cached: Option<bool>,
    /// Milliseconds the call that produced this output took (its last
    /// attempt; a conversation: the sum over its turns). None for a
    /// fallback value, which no call produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) latency_ms: Option<u64>,
    /// A streamed answer (`stream = true`): milliseconds from sending to its
    /// first token (a conversation: the mean over its turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ttft_ms: Option<u64>,
    /// A streamed answer: completion tokens per second after the first token
    /// (a conversation: all its completion tokens over all its generation time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tokens_per_s: Option<f64>,
    /// When the unit entered this step (RFC 3339, UTC, milliseconds); see
    /// `timing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) started_at: Option<String>,
    /// When this output was ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) finished_at: Option<String>,
    /// Milliseconds from `started_at` to `finished_at`: waits, retries and
    /// backoff included (`latency_ms` is the call alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) duration_ms: Option<u64>,
}

/// Token usage of one call (or the sum over a conversation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
}

/// One exchange of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Turn {
    pub(crate) prompt: String,
    pub(crate) answer: String,
    /// This turn's tokens: its prompt holds the whole history so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<Usage>,
    /// A streamed turn: milliseconds to its first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ttft_ms: Option<u64>,
    /// A streamed turn: completion tokens per second after the first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tokens_per_s: Option<f64>,
}

impl StepOutput {
    /// As JSON for templates and results.
    pub(crate) fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Parses `text` as JSON when it looks like an object or array (possibly in a
/// ```json fence, as models often answer).
pub(crate) fn parse_json_text(text: &str) -> Option<serde_json::Value> {
    let trimmed = text.trim();
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.trim_end().strip_suffix("```"))
        .map(str::trim)
        .unwrap_or(trimmed);
    if unfenced.starts_with('{') || unfenced.starts_with('[') {
        serde_json::from_str(unfenced).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_are_found_in_fences() {
        assert_eq!(
            parse_json_text("```json\n{\"a\":1}\n```"),
            Some(serde_json::json!({"a":1}))
        );
        assert_eq!(parse_json_text(" [1,2] "), Some(serde_json::json!([1, 2])));
        assert_eq!(parse_json_text("hello"), None);
        assert_eq!(parse_json_text("{broken"), None);
    }

    #[test]
    fn empty_fields_are_left_out() {
        let out = StepOutput {
            text: Some("hi".into()),
            ..Default::default()
        };
        assert_eq!(out.to_value(), serde_json::json!({"text": "hi"}));
    }
}
