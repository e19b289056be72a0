//! Request contract: what sluice sends Anthropic, checked field by field
//! against the Messages request schema documented in Anthropic's API
//! reference ("Messages", docs.anthropic.com/en/api/messages: `model`,
//! `messages`, `max_tokens` required; roles `user` and `assistant`; content
//! blocks; `tools` of `name`, `description`, `input_schema`; `tool_choice` of
//! type `auto`, `any`, `tool` or `none`), from requests written in OpenAI's
//! terms as OpenAI's reference documents them ("Create chat completion").

use serde_json::{json, Value as Json};
use sluice_dialect::to_anthropic;

/// Top-level fields of the Messages request (API reference, "Messages").
const MESSAGES_FIELDS: [&str; 17] = [
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
];

/// Fails with the path of the first field the schema does not allow.
fn check_messages_request(body: &Json) {
    let top = body.as_object().expect("an object");
    for key in top.keys() {
        assert!(
            MESSAGES_FIELDS.contains(&key.as_str()),
            "unknown field {key}"
        );
    }
    for required in ["model", "messages", "max_tokens"] {
        assert!(top.contains_key(required), "missing {required}");
    }
    assert!(body["max_tokens"].as_u64().is_some_and(|n| n >= 1));
    if let Some(t) = body.get("temperature") {
        let t = t.as_f64().unwrap();
        assert!((0.0..=1.0).contains(&t), "temperature {t}");
    }
    if let Some(meta) = body.get("metadata") {
        let keys: Vec<&String> = meta.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["user_id"], "metadata takes only user_id");
    }
    let messages = body["messages"].as_array().unwrap();
    let mut previous = "";
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap();
        assert!(
            role == "user" || role == "assistant",
            "messages[{i}].role {role}"
        );
        assert_ne!(role, previous, "messages[{i}]: roles must alternate");
        previous = role;
        let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["content", "role"], "messages[{i}]");
        match &m["content"] {
            Json::String(_) => {}
            Json::Array(blocks) => {
                for (k, b) in blocks.iter().enumerate() {
                    check_block(b, role, &format!("messages[{i}].content[{k}]"));
                }
                // Tool results come first in their user turn.
                let first_other = blocks.iter().position(|b| b["type"] != "tool_result");
                if let Some(p) = first_other {
                    assert!(blocks[p..].iter().all(|b| b["type"] != "tool_result"));
                }
            }
            other => panic!("messages[{i}].content {other}"),
        }
    }
    for (i, tool) in body["tools"].as_array().into_iter().flatten().enumerate() {
        let keys: Vec<&String> = tool.as_object().unwrap().keys().collect();
        assert!(
            keys.iter()
                .all(|k| ["name", "description", "input_schema"].contains(&k.as_str())),
            "tools[{i}] {keys:?}"
        );
        assert!(tool["name"].is_string());
        assert_eq!(tool["input_schema"]["type"], "object", "tools[{i}]");
    }
    if let Some(choice) = body.get("tool_choice") {
        let kind = choice["type"].as_str().unwrap();
        assert!(["auto", "any", "tool", "none"].contains(&kind), "{kind}");
        assert_eq!(choice.get("name").is_some(), kind == "tool");
    }
}

fn check_block(b: &Json, role: &str, at: &str) {
    let kind = b["type"]
        .as_str()
        .unwrap_or_else(|| panic!("{at}: no type"));
    let keys = |allowed: &[&str]| {
        for k in b.as_object().unwrap().keys() {
            assert!(allowed.contains(&k.as_str()), "{at}: {k} in a {kind} block");
        }
    };
    match kind {
        "text" => {
            keys(&["type", "text", "cache_control"]);
            assert!(b["text"].is_string());
        }
        "image" | "document" => {
            keys(&["type", "source", "cache_control"]);
            match b["source"]["type"].as_str() {
                Some("base64") => {
                    assert!(
                        b["source"]["media_type"].is_string() && b["source"]["data"].is_string()
                    )
                }
                Some("url") => assert!(b["source"]["url"].is_string()),
                other => panic!("{at}: source type {other:?}"),
            }
        }
        "tool_use" => {
            assert_eq!(role, "assistant", "{at}");
            keys(&["type", "id", "name", "input"]);
            assert!(b["input"].is_object(), "{at}: input must be an object");
        }
        "tool_result" => {
            assert_eq!(role, "user", "{at}");
            keys(&["type", "tool_use_id", "content", "is_error"]);
        }
        other => panic!("{at}: block type {other}"),
    }
}

/// OpenAI's API reference, "Create chat completion", "Functions" example
/// request, as sluice would send it to an Anthropic provider.
#[test]
fn the_documented_function_calling_request() {
    let openai = json!({
      "model": "gpt-4o",
      "messages": [
        {
          "role": "user",
          "content": "What's the weather like in Boston today?"
        }
      ],
      "tools": [
        {
          "type": "function",
          "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
              "type": "object",
              "properties": {
                "location": {
                  "type": "string",
                  "description": "The city and state, e.g. San Francisco, CA"
                },
                "unit": {
                  "type": "string",
                  "enum": ["celsius", "fahrenheit"]
                }
              },
              "required": ["location"]
            }
          }
        }
      ],
      "tool_choice": "auto"
    });
    let body = to_anthropic(&openai).unwrap().body;
    check_messages_request(&body);
    assert_eq!(body["tool_choice"], json!({"type": "auto"}));
    assert_eq!(
        body["tools"][0]["input_schema"],
        openai["tools"][0]["function"]["parameters"]
    );
}

/// Anthropic's "Streaming Messages" tool-use request, written in OpenAI's
/// terms: the translation is the documented body (with `tool_choice`
/// `required` ↦ `any`).
#[test]
fn the_documented_tool_use_request_round_trips() {
    let openai = json!({
        "model": "claude-opus-4-6",
        "max_tokens": 1024,
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA"
                    }
                },
                "required": ["location"]
            }
        }}],
        "tool_choice": "required",
        "messages": [{"role": "user", "content": "What is the weather like in San Francisco?"}],
        "stream": true
    });
    let documented = json!({
      "model": "claude-opus-4-6",
      "max_tokens": 1024,
      "tools": [
        {
          "name": "get_weather",
          "description": "Get the current weather in a given location",
          "input_schema": {
            "type": "object",
            "properties": {
              "location": {
                "type": "string",
                "description": "The city and state, e.g. San Francisco, CA"
              }
            },
            "required": ["location"]
          }
        }
      ],
      "tool_choice": {"type": "any"},
      "messages": [
        {
          "role": "user",
          "content": "What is the weather like in San Francisco?"
        }
      ],
      "stream": true
    });
    let body = to_anthropic(&openai).unwrap().body;
    check_messages_request(&body);
    assert_eq!(body, documented);
}

/// A whole tool round trip as OpenAI's function-calling guide builds it
/// (assistant `tool_calls`, then one `tool` message per call), with a
/// system prompt, an image and the parameters a step may carry.
#[test]
fn a_tool_round_trip_with_images_and_parameters_meets_the_schema() {
    let openai = json!({
        "model": "m",
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "user-7",
        "max_completion_tokens": 300,
        "parallel_tool_calls": false,
        "seed": 1,
        "response_format": {"type": "text"},
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
        "messages": [
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": [
                {"type": "text", "text": "Where is this, and what is the weather there?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "low"}}
            ]},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21C"}
        ]
    });
    let translated = to_anthropic(&openai).unwrap();
    check_messages_request(&translated.body);
    assert_eq!(translated.body["system"], "Answer in French.");
    assert_eq!(translated.body["max_tokens"], 300);
    assert_eq!(translated.body["stop_sequences"], json!(["END"]));
    assert_eq!(
        translated.body["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    // What was left out is said.
    assert_eq!(translated.warnings.len(), 2, "{:?}", translated.warnings);
}
