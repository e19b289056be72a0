//! An OpenAI chat completion body → an Anthropic Messages body, completely
//! or not at all.
//!
//! Messages: `system`/`developer` → the top-level `system`; assistant
//! `tool_calls` → `tool_use` blocks; `tool` messages → `tool_result` blocks
//! in a user turn; consecutive messages of one role merged (Anthropic wants
//! the roles to alternate). Parameters follow [`crate::params::anthropic`]:
//! translated (`max_completion_tokens`, `stop`, `user`, `tools`,
//! `tool_choice`, `parallel_tool_calls`), sent as written, dropped with a
//! warning, or refused — a refusal names the parameter and why, and nothing
//! is sent. `max_tokens` is required, so it defaults to [`DEFAULT_MAX_TOKENS`].

use serde_json::{json, Map, Value as Json};

use crate::params::{self, Verdict};

mod messages;
mod tools;

/// `max_tokens` sent when the step sets none: Anthropic requires one.
pub const DEFAULT_MAX_TOKENS: u64 = 1024;

/// The `anthropic-version` header sent unless the provider's headers set one.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A body translated for Anthropic.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The Messages body.
    pub body: Json,
    /// Parameters left out, each `name: why`.
    pub warnings: Vec<String>,
}

/// Why a body cannot be sent to Anthropic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Where in the body: `reasoning_effort`, `messages[2].content[1]`, `tools[0]`.
    pub at: String,
    /// Why, and what to do.
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.reason)
    }
}

impl Refusal {
    pub(crate) fn new(at: impl Into<String>, reason: impl Into<String>) -> Refusal {
        Refusal {
            at: at.into(),
            reason: reason.into(),
        }
    }
}

/// Translates an OpenAI-shaped chat body (`model`, `messages`, parameters).
pub fn to_anthropic(body: &Json) -> Result<Translated, Refusal> {
    let Some(fields) = body.as_object() else {
        return Err(Refusal::new("body", "a chat body must be a JSON object"));
    };
    let mut out = Map::new();
    let mut warnings = Vec::new();
    let translated = messages::translate(fields.get("messages"))?;
    let mut metadata: Option<Map<String, Json>> = None;
    let mut user_id = |value: &Json, at: &str| -> Result<(), Refusal> {
        let meta = metadata.get_or_insert_with(Map::new);
        match value {
            Json::String(_) => {
                meta.insert("user_id".into(), value.clone());
                Ok(())
            }
            Json::Null => Ok(()),
            _ => Err(Refusal::new(at, "must be a string")),
        }
    };
    for (key, value) in fields {
        match params::anthropic(key, Some(value)) {
            Verdict::Refuse(reason) => return Err(Refusal::new(key.clone(), reason)),
            Verdict::Drop(why) => {
                warnings.push(format!("{key}: {why}"));
                continue;
            }
            Verdict::Unknown => {
                warnings.push(format!(
                    "{key}: not a parameter this translation knows; sent as written"
                ));
            }
            Verdict::Send => {}
        }
        match key.as_str() {
            "messages" | "parallel_tool_calls" => {}
            "max_completion_tokens" => {
                out.insert("max_tokens".into(), value.clone());
            }
            // max_completion_tokens replaces the deprecated max_tokens.
            "max_tokens" => {
                if !fields.contains_key("max_completion_tokens") {
                    out.insert("max_tokens".into(), value.clone());
                }
            }
            "stop" => {
                let list = match value {
                    Json::String(s) => json!([s]),
                    Json::Null => continue,
                    other => other.clone(),
                };
                out.insert("stop_sequences".into(), list);
            }
            "user" | "safety_identifier" => user_id(value, key)?,
            "metadata" => {
                if let Some(id) = value.get("user_id") {
                    user_id(id, "metadata.user_id")?;
                }
            }
            "tools" => {
                out.insert("tools".into(), tools::tools(value)?);
            }
            "tool_choice" => {}
            "system" if !translated.system.is_empty() => {
                return Err(Refusal::new(
                    "system",
                    "params.system and system messages both set the system prompt; keep one",
                ))
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if let Some(choice) =
        tools::tool_choice(fields.get("tool_choice"), fields.get("parallel_tool_calls"))?
    {
        out.insert("tool_choice".into(), choice);
    }
    if let Some(meta) = metadata.filter(|m| !m.is_empty()) {
        out.insert("metadata".into(), Json::Object(meta));
    }
    out.entry("max_tokens")
        .or_insert_with(|| json!(DEFAULT_MAX_TOKENS));
    if !translated.system.is_empty() {
        out.insert(
            "system".into(),
            Json::String(translated.system.join("\n\n")),
        );
    }
    out.insert("messages".into(), Json::Array(translated.messages));
    Ok(Translated {
        body: Json::Object(out),
        warnings,
    })
}

#[cfg(test)]
mod tests;
