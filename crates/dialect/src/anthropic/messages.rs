//! OpenAI chat messages → Anthropic's `system` and alternating `messages`:
//! content parts become blocks (text, images by URL or base64, PDFs), an
//! assistant's `tool_calls` become `tool_use` blocks, and `tool` messages
//! become `tool_result` blocks of a user turn.

use serde_json::{json, Value as Json};

use super::Refusal;

/// The translated conversation.
pub(super) struct Messages {
    /// System and developer messages' text, in order.
    pub(super) system: Vec<String>,
    /// Alternating user / assistant messages.
    pub(super) messages: Vec<Json>,
}

pub(super) fn translate(messages: Option<&Json>) -> Result<Messages, Refusal> {
    let list = match messages {
        Some(Json::Array(list)) => list.as_slice(),
        None | Some(Json::Null) => &[],
        Some(_) => return Err(Refusal::new("messages", "must be a list of messages")),
    };
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Json)> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = m["role"].as_str().unwrap_or("user");
        let (role, content) = match role {
            "system" | "developer" => {
                system.push(system_text(&m["content"], &at)?);
                continue;
            }
            "user" => ("user", content(&m["content"], &at)?),
            "assistant" => ("assistant", assistant(m, &at)?),
            "tool" => ("user", tool_result(m, &at)?),
            "function" => {
                return Err(Refusal::new(
                    at,
                    "role \"function\" is OpenAI's deprecated form; use tool messages",
                ))
            }
            other => {
                return Err(Refusal::new(
                    format!("{at}.role"),
                    format!(
                        "role {other:?} is not one of system, developer, user, assistant, tool"
                    ),
                ))
            }
        };
        match turns.last_mut() {
            Some((last, previous)) if *last == role => merge(previous, content),
            _ => turns.push((role, content)),
        }
    }
    Ok(Messages {
        system,
        messages: turns
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect(),
    })
}

/// A system message's text (Anthropic's `system` here is plain text).
fn system_text(content: &Json, at: &str) -> Result<String, Refusal> {
    match content {
        Json::String(s) => Ok(s.clone()),
        Json::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(k, p)| match (p["type"].as_str(), p["text"].as_str()) {
                (Some("text") | None, Some(t)) => Ok(t.to_string()),
                _ => Err(Refusal::new(
                    format!("{at}.content[{k}]"),
                    "a system message can hold only text",
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.join("\n")),
        Json::Null => Ok(String::new()),
        _ => Err(Refusal::new(
            format!("{at}.content"),
            "must be text or a list of text parts",
        )),
    }
}

/// A user message's content: a string stays a string; parts become blocks.
fn content(value: &Json, at: &str) -> Result<Json, Refusal> {
    let parts = match value {
        Json::Array(parts) => parts,
        Json::Null => return Ok(Json::String(String::new())),
        Json::String(_) => return Ok(value.clone()),
        _ => {
            return Err(Refusal::new(
                format!("{at}.content"),
                "must be text or a list of content parts",
            ))
        }
    };
    parts
        .iter()
        .enumerate()
        .map(|(k, part)| block(part, &format!("{at}.content[{k}]")))
        .collect::<Result<Vec<_>, _>>()
        .map(Json::Array)
}

/// One OpenAI content part as an Anthropic block.
fn block(part: &Json, at: &str) -> Result<Json, Refusal> {
    match part["type"].as_str() {
        Some("text") => Ok(part.clone()),
        Some("image_url") => {
            let url = part
                .pointer("/image_url/url")
                .and_then(Json::as_str)
                .ok_or_else(|| Refusal::new(at, "an image_url part needs image_url.url"))?;
            Ok(source_block("image", url))
        }
        Some("file") => match part.pointer("/file/file_data").and_then(Json::as_str) {
            Some(data) if data.starts_with("data:") => Ok(source_block("document", data)),
            _ => Err(Refusal::new(
                at,
                "a file part reaches Anthropic only as file_data (a base64 data URL); \
                 an OpenAI file_id means nothing there",
            )),
        },
        Some("input_audio") => Err(Refusal::new(at, "Anthropic takes no audio input")),
        // Already in Anthropic's shape (written for it): sent as written.
        Some("image" | "document" | "tool_use" | "tool_result" | "thinking") => Ok(part.clone()),
        other => Err(Refusal::new(
            at,
            format!("content part type {other:?} has no Anthropic equivalent"),
        )),
    }
}

/// An image or document block from a URL or a base64 data URL.
fn source_block(kind: &str, url: &str) -> Json {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((media_type, data)) = rest.split_once(";base64,") {
            return json!({"type": kind, "source": {"type": "base64", "media_type": media_type, "data": data}});
        }
    }
    json!({"type": kind, "source": {"type": "url", "url": url}})
}

/// An assistant message: its text, then a `tool_use` block per tool call.
fn assistant(m: &Json, at: &str) -> Result<Json, Refusal> {
    if m.get("function_call").is_some_and(|f| !f.is_null()) {
        return Err(Refusal::new(
            format!("{at}.function_call"),
            "OpenAI's deprecated form; use tool_calls",
        ));
    }
    if m.get("audio").is_some_and(|a| !a.is_null()) {
        return Err(Refusal::new(
            format!("{at}.audio"),
            "Anthropic answers in text only",
        ));
    }
    let calls = match &m["tool_calls"] {
        Json::Array(calls) if !calls.is_empty() => calls,
        _ => return content(&m["content"], at),
    };
    let mut blocks = match content(&m["content"], at)? {
        Json::String(s) if s.is_empty() => Vec::new(),
        other => blocks(other),
    };
    for (k, call) in calls.iter().enumerate() {
        let at = format!("{at}.tool_calls[{k}]");
        if call["type"].as_str().unwrap_or("function") != "function" {
            return Err(Refusal::new(
                at,
                "only function tool calls have an Anthropic equivalent",
            ));
        }
        let name = call.pointer("/function/name").and_then(Json::as_str);
        let id = call["id"].as_str();
        let (Some(name), Some(id)) = (name, id) else {
            return Err(Refusal::new(at, "a tool call needs id and function.name"));
        };
        // OpenAI carries the arguments as JSON text; Anthropic as an object.
        let input = match call.pointer("/function/arguments") {
            Some(Json::String(text)) if text.trim().is_empty() => json!({}),
            Some(Json::String(text)) => serde_json::from_str::<Json>(text).map_err(|e| {
                Refusal::new(
                    format!("{at}.function.arguments"),
                    format!("is not JSON ({e}); Anthropic needs the arguments as an object"),
                )
            })?,
            Some(Json::Object(o)) => Json::Object(o.clone()),
            None | Some(Json::Null) => json!({}),
            Some(_) => {
                return Err(Refusal::new(
                    format!("{at}.function.arguments"),
                    "must be JSON text of an object",
                ))
            }
        };
        if !input.is_object() {
            return Err(Refusal::new(
                format!("{at}.function.arguments"),
                "must be a JSON object: Anthropic's tool input is one",
            ));
        }
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(Json::Array(blocks))
}

/// A `tool` message as a `tool_result` block (in a user turn).
fn tool_result(m: &Json, at: &str) -> Result<Json, Refusal> {
    let Some(id) = m["tool_call_id"].as_str() else {
        return Err(Refusal::new(
            format!("{at}.tool_call_id"),
            "a tool message needs the tool_call_id it answers",
        ));
    };
    let content = match &m["content"] {
        Json::String(s) => Json::String(s.clone()),
        Json::Null => Json::String(String::new()),
        parts @ Json::Array(_) => content(parts, at)?,
        _ => {
            return Err(Refusal::new(
                format!("{at}.content"),
                "must be text or a list of text parts",
            ))
        }
    };
    Ok(json!([{"type": "tool_result", "tool_use_id": id, "content": content}]))
}

/// Appends `next` to `previous` (two messages of the same role in a row).
fn merge(previous: &mut Json, next: Json) {
    match (previous, next) {
        (Json::String(a), Json::String(b)) => {
            a.push_str("\n\n");
            a.push_str(&b);
        }
        (previous, next) => {
            let mut list = blocks(previous.take());
            list.extend(blocks(next));
            // Anthropic wants a user turn's tool results before its text.
            list.sort_by_key(|b| b["type"] != "tool_result");
            *previous = Json::Array(list);
        }
    }
}

fn blocks(content: Json) -> Vec<Json> {
    match content {
        Json::Array(list) => list,
        Json::String(s) if s.is_empty() => Vec::new(),
        Json::String(s) => vec![json!({"type": "text", "text": s})],
        other => vec![json!({"type": "text", "text": other.to_string()})],
    }
}
