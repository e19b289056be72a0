//! OpenAI `tools`, `tool_choice` and `parallel_tool_calls` → Anthropic's
//! tools (`name`, `description`, `input_schema`) and `tool_choice`
//! (`auto`, `any`, `tool`, `none`, with `disable_parallel_tool_use`).

use serde_json::{json, Map, Value as Json};

use super::Refusal;

/// The tool list: function tools translated; a tool already in Anthropic's
/// shape (it has `input_schema`, or a server tool's versioned `type`) is
/// sent as written.
pub(super) fn tools(value: &Json) -> Result<Json, Refusal> {
    let Json::Array(list) = value else {
        return Err(Refusal::new("tools", "must be a list of tools"));
    };
    list.iter()
        .enumerate()
        .map(|(i, tool)| {
            let at = format!("tools[{i}]");
            match tool["type"].as_str() {
                Some("function") => function(tool, &at),
                _ if tool.get("input_schema").is_some() => Ok(tool.clone()),
                // Anthropic's server tools: `web_search_20250305`, …
                Some(t) if t.rsplit_once('_').is_some_and(|(_, v)| v.len() == 8 && v.bytes().all(|b| b.is_ascii_digit())) => {
                    Ok(tool.clone())
                }
                other => Err(Refusal::new(
                    at,
                    format!("tool type {other:?} has no Anthropic equivalent; only function tools translate"),
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Json::Array)
}

fn function(tool: &Json, at: &str) -> Result<Json, Refusal> {
    let f = &tool["function"];
    let Some(name) = f["name"].as_str() else {
        return Err(Refusal::new(
            format!("{at}.function.name"),
            "a function tool needs a name",
        ));
    };
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    if let Some(d) = f["description"].as_str() {
        out.insert("description".into(), json!(d));
    }
    // Anthropic requires an input schema; OpenAI's may be left out (no arguments).
    let schema = match &f["parameters"] {
        Json::Null => json!({"type": "object", "properties": {}}),
        s @ Json::Object(_) => s.clone(),
        _ => {
            return Err(Refusal::new(
                format!("{at}.function.parameters"),
                "must be a JSON schema object",
            ))
        }
    };
    out.insert("input_schema".into(), schema);
    Ok(Json::Object(out))
}

/// Anthropic's `tool_choice` for OpenAI's `tool_choice` and
/// `parallel_tool_calls` (`None`: leave Anthropic's default, auto).
pub(super) fn tool_choice(
    choice: Option<&Json>,
    parallel: Option<&Json>,
) -> Result<Option<Json>, Refusal> {
    let mut out = match choice {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            other => {
                return Err(Refusal::new(
                    "tool_choice",
                    format!("{other:?} is not auto, none or required"),
                ))
            }
        }),
        Some(v) => match v["type"].as_str() {
            Some("function") => match v.pointer("/function/name").and_then(Json::as_str) {
                Some(name) => Some(json!({"type": "tool", "name": name})),
                None => {
                    return Err(Refusal::new(
                        "tool_choice.function.name",
                        "a named tool choice needs the function's name",
                    ))
                }
            },
            // Anthropic's own shape, written for it.
            Some("auto" | "any" | "tool" | "none") => Some(v.clone()),
            other => {
                return Err(Refusal::new(
                    "tool_choice",
                    format!(
                        "type {other:?} has no Anthropic equivalent (allowed_tools and custom \
                         tools do not translate)"
                    ),
                ))
            }
        },
    };
    match parallel {
        None | Some(Json::Null) | Some(Json::Bool(true)) => {}
        Some(Json::Bool(false)) => {
            let choice = out.get_or_insert_with(|| json!({"type": "auto"}));
            if choice["type"] != "none" {
                choice["disable_parallel_tool_use"] = json!(true);
            }
        }
        Some(_) => return Err(Refusal::new("parallel_tool_calls", "must be true or false")),
    }
    Ok(out)
}
