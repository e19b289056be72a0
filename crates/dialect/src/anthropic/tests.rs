use serde_json::json;

use super::*;

fn body(value: Json) -> Json {
    to_anthropic(&value).expect("translates").body
}

#[test]
fn system_moves_out_roles_merge_and_max_tokens_defaults() {
    let t = to_anthropic(&json!({
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
    }))
    .unwrap();
    assert_eq!(
        t.body,
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
    // What was left out is said, by name.
    let dropped: Vec<&str> = t
        .warnings
        .iter()
        .map(|w| w.split(':').next().unwrap())
        .collect();
    assert_eq!(dropped, ["response_format", "seed"]);
}

#[test]
fn max_completion_tokens_user_and_image_parts_translate() {
    let out = body(json!({
        "model": "m",
        "max_completion_tokens": 77,
        "max_tokens": 5,
        "user": "u-1",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}}
        ]}]
    }));
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
    assert_eq!(blocks[3]["type"], "document");
    assert_eq!(blocks[3]["source"]["media_type"], "application/pdf");
}

#[test]
fn tools_tool_choice_and_a_tool_round_trip_translate() {
    let out = body(json!({
        "model": "m",
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}, {"type": "function", "function": {"name": "now"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
            {"role": "user", "content": "Which is warmer?"}
        ]
    }));
    assert_eq!(
        out["tools"],
        json!([
            {"name": "get_weather", "description": "Weather in a city",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            {"name": "now", "input_schema": {"type": "object", "properties": {}}}
        ])
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
                {"type": "text", "text": "Which is warmer?"}
            ]}
        ])
    );
}

#[test]
fn every_tool_choice_string_translates() {
    for (openai, anthropic) in [
        ("auto", json!({"type": "auto"})),
        ("none", json!({"type": "none"})),
        ("required", json!({"type": "any"})),
    ] {
        let out = body(json!({"model": "m", "messages": [], "tool_choice": openai}));
        assert_eq!(out["tool_choice"], anthropic, "{openai}");
    }
    // parallel_tool_calls alone: auto, one tool at a time.
    let out = body(json!({"model": "m", "messages": [], "parallel_tool_calls": false}));
    assert_eq!(
        out["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    assert!(
        body(json!({"model": "m", "messages": [], "parallel_tool_calls": true}))
            .get("tool_choice")
            .is_none()
    );
}

#[test]
fn refusals_name_the_place_and_the_reason() {
    let refused = |v: Json| to_anthropic(&v).unwrap_err();
    let r = refused(json!({"model": "m", "messages": [], "reasoning_effort": "high"}));
    assert_eq!(r.at, "reasoning_effort");
    assert!(r.reason.contains("thinking"), "{r}");
    let r = refused(json!({"model": "m", "messages": [], "temperature": 1.3}));
    assert_eq!(r.at, "temperature");
    let r = refused(json!({"model": "m", "messages": [], "metadata": {"run": "7"}}));
    assert_eq!(r.at, "metadata");
    let r = refused(json!({"model": "m", "messages": [], "n": 2}));
    assert_eq!(r.at, "n");
    let r = refused(json!({"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}
    ]}));
    assert_eq!(r.at, "messages[0].tool_calls[0].function.arguments");
    let r = refused(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}));
    assert_eq!(r.at, "messages[0].tool_call_id");
    let r = refused(
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "..", "format": "wav"}}
        ]}]}),
    );
    assert_eq!(r.at, "messages[0].content[0]");
    let r = refused(
        json!({"model": "m", "messages": [], "tools": [{"type": "custom", "custom": {"name": "x"}}]}),
    );
    assert_eq!(r.at, "tools[0]");
    let r = refused(json!({"model": "m", "messages": [], "tool_choice": "sometimes"}));
    assert_eq!(r.at, "tool_choice");
}

#[test]
fn user_metadata_and_anthropic_own_parameters_pass() {
    let out = body(json!({
        "model": "m", "messages": [],
        "metadata": {"user_id": "u-9"},
        "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "n": 1, "logprobs": false, "presence_penalty": 0
    }));
    assert_eq!(out["metadata"], json!({"user_id": "u-9"}));
    assert_eq!(out["top_k"], 5);
    assert_eq!(out["thinking"]["budget_tokens"], 2000);
    for gone in ["n", "logprobs", "presence_penalty"] {
        assert!(out.get(gone).is_none(), "{gone}");
    }
}
