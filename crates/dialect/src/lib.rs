//! API dialects: one chat request and answer, in the shape each provider
//! family speaks. Steps are written once, in OpenAI's terms; an Anthropic
//! provider gets them translated here — completely, or refused up front with
//! the parameter and the reason ([`params`]) — and every answer (live,
//! streamed or from a batch) is read back into the same [`ChatAnswer`].
//!
//! Pure JSON, no I/O: the job file's checks (`sluice-spec`), the HTTP client
//! (`sluice-provider`) and the engine all use the same rules.

mod answer;
mod anthropic;
pub mod media;
pub mod params;

pub use answer::{chat_answer, finish_reason, ChatAnswer, ToolCall};
pub use anthropic::{to_anthropic, Refusal, Translated, ANTHROPIC_VERSION, DEFAULT_MAX_TOKENS};

/// Which family of API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// OpenAI-compatible: `/chat/completions`, bearer token, `x-ratelimit-*`.
    #[default]
    OpenAi,
    /// Anthropic Messages: `/messages`, `x-api-key`, `anthropic-ratelimit-*`.
    Anthropic,
}

impl Dialect {
    /// The `api = "..."` spelling in a job file.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }

    /// The dialect a job file's `api = "..."` names.
    pub fn parse(text: &str) -> Option<Dialect> {
        match text {
            "openai" => Some(Dialect::OpenAi),
            "anthropic" => Some(Dialect::Anthropic),
            _ => None,
        }
    }

    /// The chat path under a provider's base URL: the step's own, except that
    /// OpenAI's default means `/messages` to Anthropic.
    pub fn chat_path(self, step_path: &str) -> &str {
        match self {
            Dialect::Anthropic if step_path == "/chat/completions" => "/messages",
            _ => step_path,
        }
    }

    /// Marks a request body (already in this dialect's shape) as streamed:
    /// OpenAI also needs `stream_options.include_usage` for the final usage chunk.
    pub fn set_streaming(self, body: &mut serde_json::Value) {
        let Some(map) = body.as_object_mut() else {
            return;
        };
        map.insert("stream".into(), serde_json::Value::Bool(true));
        if self == Dialect::OpenAi {
            map.insert(
                "stream_options".into(),
                serde_json::json!({"include_usage": true}),
            );
        }
    }
}
