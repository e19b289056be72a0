//! An OpenAI chat completion body → an Anthropic Messages body.
//!
//! `system` messages become the top-level `system` field; consecutive
//! messages of one role are merged (Anthropic wants the roles to alternate);
//! `max_tokens` is required, so it defaults to [`DEFAULT_MAX_TOKENS`];
//! `max_completion_tokens` becomes `max_tokens`, `stop` becomes
//! `stop_sequences`, `user` becomes `metadata.user_id`; parameters Anthropic
//! rejects (`response_format`, `n`, penalties, `seed`, logprobs, …) are
//! dropped; everything else (`temperature`, `top_p`, `top_k`, `metadata`,
//! `tools`, …) passes through as written.

use serde_json::{json, Map, Value as Json};

/// `max_tokens` sent when the step sets none: Anthropic requires one.
pub const DEFAULT_MAX_TOKENS: u64 = 1024;

/// The `anthropic-version` header sent unless the provider's headers set one.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// OpenAI-only parameters an Anthropic endpoint would refuse.
const DROPPED: [&str; 13] = [
    "response_format",
    "n",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "stream_options",
    "parallel_tool_calls",
    "store",
    "modalities",
    "service_tier",
];

/// Translates an OpenAI-shaped chat body (`model`, `messages`, parameters).
pub fn to_anthropic(body: &Json) -> Json {
    let Some(fields) = body.as_object() else {
        return body.clone();
    };
    let mut out = Map::new();
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<(String, Json)> = Vec::new();
    for m in fields
        .get("messages")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let role = m["role"].as_str().unwrap_or("user");
        let content = content(&m["content"]);
        match role {
            "system" | "developer" => system.push(text_of(&content)),
            _ => {
                let role = if role == "assistant" {
                    "assistant"
                } else {
                    "user"
                };
                match messages.last_mut() {
                    Some((last, previous)) if last == role => merge(previous, content),
                    _ => messages.push((role.to_string(), content)),
                }
            }
        }
    }
    for (key, value) in fields {
        match key.as_str() {
            "messages" => {}
            "max_completion_tokens" | "max_tokens" => {
                out.insert("max_tokens".into(), value.clone());
            }
            "stop" => {
                let list = match value {
                    Json::String(s) => json!([s]),
                    other => other.clone(),
                };
                out.insert("stop_sequences".into(), list);
            }
            "user" => {
                out.insert("metadata".into(), json!({"user_id": value}));
            }
            k if DROPPED.contains(&k) => {}
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    out.entry("max_tokens")
        .or_insert_with(|| json!(DEFAULT_MAX_TOKENS));
    if !system.is_empty() {
        out.insert("system".into(), Json::String(system.join("\n\n")));
    }
    out.insert(
        "messages".into(),
        Json::Array(
            messages
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    Json::Object(out)
}

/// A message's content: a string stays a string; OpenAI content parts become
/// Anthropic blocks (text, and images by URL or base64 data URL).
fn content(value: &Json) -> Json {
    let Some(parts) = value.as_array() else {
        return match value {
            Json::Null => Json::String(String::new()),
            other => other.clone(),
        };
    };
    Json::Array(
        parts
            .iter()
            .map(|part| match part["type"].as_str() {
                Some("image_url") => {
                    let url = part
                        .pointer("/image_url/url")
                        .and_then(Json::as_str)
                        .unwrap_or("");
                    image(url)
                }
                _ => part.clone(),
            })
            .collect(),
    )
}

fn image(url: &str) -> Json {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((media_type, data)) = rest.split_once(";base64,") {
            return json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}});
        }
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

/// The text of a content value (system messages are plain text to Anthropic).
fn text_of(content: &Json) -> String {
    match content {
        Json::String(s) => s.clone(),
        Json::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

/// Appends `next` to `previous` (two messages of the same role in a row).
fn merge(previous: &mut Json, next: Json) {
    match (previous, next) {
        (Json::String(a), Json::String(b)) => {
            a.push_str("\n\n");
            a.push_str(&b);
        }
        (previous, next) => {
            let mut blocks = blocks(previous.take());
            blocks.extend(self::blocks(next));
            *previous = Json::Array(blocks);
        }
    }
}

fn blocks(content: Json) -> Vec<Json> {
    match content {
        Json::Array(list) => list,
        Json::String(s) => vec![json!({"type": "text", "text": s})],
        other => vec![json!({"type": "text", "text": other.to_string()})],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_moves_out_roles_merge_and_max_tokens_defaults() {
        let body = json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "user", "content": "Still there?"},
                {"role": "assistant", "content": "Yes."},
                {"role": "user", "content": "Good."}
            ],
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "stop": "END",
            "seed": 3
        });
        let out = to_anthropic(&body);
        assert_eq!(
            out,
            json!({
                "model": "claude",
                "max_tokens": DEFAULT_MAX_TOKENS,
                "temperature": 0,
                "stop_sequences": ["END"],
                "system": "Be brief.",
                "messages": [
                    {"role": "user", "content": "Hi\n\nStill there?"},
                    {"role": "assistant", "content": "Yes."},
                    {"role": "user", "content": "Good."}
                ]
            })
        );
    }

    #[test]
    fn max_completion_tokens_user_and_image_parts_translate() {
        let body = json!({
            "model": "m",
            "max_completion_tokens": 77,
            "user": "u-1",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
            ]}]
        });
        let out = to_anthropic(&body);
        assert_eq!(out["max_tokens"], 77);
        assert_eq!(out["metadata"], json!({"user_id": "u-1"}));
        assert!(out.get("system").is_none());
        let blocks = &out["messages"][0]["content"];
        assert_eq!(blocks[0], json!({"type": "text", "text": "What is this?"}));
        assert_eq!(
            blocks[1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
        );
        assert_eq!(blocks[2]["source"]["url"], "https://x/y.png");
    }
}
