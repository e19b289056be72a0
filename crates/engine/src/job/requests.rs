//! Rendering a step into its request, and reading its answer back.
//!
//! Chat, embed and conversation steps are built here; http and command steps
//! by `crate::steps`. Every step also has a fingerprint: the hash of everything
//! its templates rendered to, so a resumed run reuses a step's output only when
//! its request would be the same.

use serde_json::{json, Map, Value as Json};
use sluice_limit::{Cost, DEFAULT_COMPLETION_ESTIMATE, MESSAGE_OVERHEAD, REPLY_PRIMING};
use sluice_provider::dialect::{chat_answer, Dialect};
use sluice_spec::{RenderError, Step, StepKind};

use super::output::{parse_json_text, StepOutput, Usage};

/// A rendered OpenAI-style JSON request.
pub(crate) struct JsonRequest {
    /// Path under the provider's base URL.
    pub(crate) path: String,
    pub(crate) body: Json,
    /// Tokens to reserve: the prompt's estimate (input) and the completion
    /// cap (output).
    pub(crate) estimate: Cost,
}

/// Renders a chat or embed step (not conversation, not http/command).
pub(crate) fn json_request(
    step: &Step,
    ctx: &minijinja::Value,
) -> Result<Option<JsonRequest>, RenderError> {
    match &step.kind {
        StepKind::Chat {
            model,
            messages,
            params,
            response_format,
            path,
        } => {
            let mut body = object(params.render(ctx)?);
            let mut rendered = Vec::with_capacity(messages.len());
            for m in messages {
                let mut message = json!({"role": m.role, "content": m.content.render(ctx)?});
                if let Some(id) = &m.tool_call_id {
                    message["tool_call_id"] = Json::String(id.render(ctx)?);
                }
                if let Some(calls) = &m.tool_calls {
                    message["tool_calls"] = calls.render(ctx)?;
                }
                rendered.push(message);
            }
            body.insert("model".into(), Json::String(model.render(ctx)?));
            body.insert("messages".into(), Json::Array(rendered));
            if let Some(rf) = response_format {
                body.insert("response_format".into(), rf.clone());
            }
            let body = Json::Object(body);
            Ok(Some(JsonRequest {
                path: path.clone(),
                estimate: chat_estimate(&body),
                body,
            }))
        }
        StepKind::Embed {
            model,
            input,
            params,
            path,
        } => {
            let mut body = object(params.render(ctx)?);
            let input = input.render(ctx)?;
            let model = model.render(ctx)?;
            let estimate = Cost::from(text_estimate(Some(&model), &input));
            body.insert("model".into(), Json::String(model));
            body.insert("input".into(), input);
            Ok(Some(JsonRequest {
                path: path.clone(),
                body: Json::Object(body),
                estimate,
            }))
        }
        _ => Ok(None),
    }
}

/// The chat body of conversation turn `k`: the system message, the earlier
/// turns (text or content parts) with their answers, then turn `k`.
pub(crate) fn conversation_request(
    step: &Step,
    ctx: &minijinja::Value,
    prompts: &[Json],
    answers: &[String],
) -> Result<Option<JsonRequest>, RenderError> {
    let StepKind::Conversation {
        model,
        system,
        params,
        path,
        ..
    } = &step.kind
    else {
        return Ok(None);
    };
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system.render(ctx)?}));
    }
    for (k, prompt) in prompts.iter().enumerate() {
        messages.push(json!({"role": "user", "content": prompt}));
        if let Some(answer) = answers.get(k) {
            messages.push(json!({"role": "assistant", "content": answer}));
        }
    }
    let mut body = object(params.render(ctx)?);
    body.insert("model".into(), Json::String(model.render(ctx)?));
    body.insert("messages".into(), Json::Array(messages));
    let body = Json::Object(body);
    Ok(Some(JsonRequest {
        path: path.clone(),
        estimate: chat_estimate(&body),
        body,
    }))
}

fn object(value: Json) -> Map<String, Json> {
    match value {
        Json::Object(map) => map,
        _ => Map::new(),
    }
}

/// The prompt's tokens (the model's tokenizer, else chars ÷ 4; images by
/// the tile rule; a few per message for its framing) and the completion cap
/// (the same estimate as quick mode).
fn chat_estimate(body: &Json) -> Cost {
    let model = body["model"].as_str();
    let prompt: u64 = body["messages"]
        .as_array()
        .map(|ms| {
            REPLY_PRIMING
                + ms.iter()
                    .map(|m| {
                        MESSAGE_OVERHEAD
                            + text_estimate(model, &m["content"])
                            + m.get("tool_calls")
                                .map_or(0, |c| crate::tokens::estimate(model, &c.to_string()))
                    })
                    .sum::<u64>()
        })
        .unwrap_or(0);
    let tools = body
        .get("tools")
        .map_or(0, |t| crate::tokens::estimate(model, &t.to_string()));
    let completion = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Json::as_u64)
        .unwrap_or(DEFAULT_COMPLETION_ESTIMATE);
    Cost {
        input: prompt + tools,
        output: completion,
    }
}

/// The text of a rendered turn: itself, or its text parts one per line
/// (what a conversation's `.turns[k].prompt` keeps).
pub(crate) fn prompt_text(prompt: &Json) -> String {
    match prompt {
        Json::String(s) => s.clone(),
        Json::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

/// Estimated tokens of a content value (a string, a list of parts or of
/// inputs, `{text}`).
pub(crate) fn text_estimate(model: Option<&str>, value: &Json) -> u64 {
    match value {
        Json::String(s) => crate::tokens::estimate(model, s),
        Json::Array(items) => items.iter().map(|i| text_estimate(model, i)).sum(),
        Json::Object(o) => match o.get("image_url") {
            Some(image) => crate::tokens::image_estimate(
                image["url"].as_str().unwrap_or(""),
                image["detail"].as_str(),
            ),
            None => o.get("text").map(|t| text_estimate(model, t)).unwrap_or(0),
        },
        _ => 0,
    }
}

/// Reads a chat answer in `dialect`'s shape: content, usage, and `.json`
/// (required to parse when the step asked for a JSON `response_format`).
pub(crate) fn chat_output(
    step: &Step,
    dialect: Dialect,
    body: &[u8],
) -> Result<StepOutput, String> {
    let answer = chat_answer(dialect, body).map_err(|e| format!("bad_response: {e}"))?;
    let text = answer.text;
    let wants_json = matches!(
        &step.kind,
        StepKind::Chat {
            response_format: Some(_),
            ..
        }
    );
    let json = parse_json_text(&text);
    if wants_json && json.is_none() && answer.tool_calls.is_empty() {
        let start: String = text.chars().take(120).collect();
        return Err(format!(
            "bad_response: the answer is not the JSON the step's response_format asks for; it starts: {start:?}"
        ));
    }
    let usage =
        (answer.prompt_tokens.is_some() || answer.completion_tokens.is_some()).then(|| Usage {
            prompt_tokens: answer.prompt_tokens.unwrap_or(0),
            completion_tokens: answer.completion_tokens.unwrap_or(0),
        });
    let tool_calls = (!answer.tool_calls.is_empty())
        .then(|| answer.tool_calls.iter().map(|c| c.to_openai()).collect());
    Ok(StepOutput {
        text: Some(text),
        json,
        usage,
        tool_calls,
        refusal: answer.refusal,
        finish_reason: answer.finish,
        ..Default::default()
    })
}

/// Reads embeddings: one vector for a string input, a list for a list input.
pub(crate) fn embed_output(body: &[u8], single: bool) -> Result<StepOutput, String> {
    let value: Json = serde_json::from_slice(body).map_err(|e| format!("bad_response: {e}"))?;
    let mut vectors: Vec<(u64, Json)> = value["data"]
        .as_array()
        .ok_or_else(|| "bad_response: the answer has no data list".to_string())?
        .iter()
        .map(|d| (d["index"].as_u64().unwrap_or(0), d["embedding"].clone()))
        .collect();
    vectors.sort_by_key(|(i, _)| *i);
    let mut list: Vec<Json> = vectors.into_iter().map(|(_, v)| v).collect();
    let json = if single && list.len() == 1 {
        list.remove(0)
    } else {
        Json::Array(list)
    };
    Ok(StepOutput {
        json: Some(json),
        usage: usage(&value),
        ..Default::default()
    })
}

fn usage(value: &Json) -> Option<Usage> {
    let u = value.get("usage")?;
    let get = |a: &str, b: &str| u.get(a).or_else(|| u.get(b)).and_then(Json::as_u64);
    Some(Usage {
        prompt_tokens: get("prompt_tokens", "input_tokens").unwrap_or(0),
        completion_tokens: get("completion_tokens", "output_tokens").unwrap_or(0),
    })
}

/// Hash of everything a step renders to for this unit (and fan-out element):
/// equal fingerprints mean an equal request.
pub(crate) fn fingerprint(
    step: &Step,
    ctx: &minijinja::Value,
    part: i64,
) -> Result<u64, RenderError> {
    let mut parts: Vec<Json> = vec![json!(step.name), json!(step.kind.name()), json!(part)];
    match &step.kind {
        StepKind::Chat { .. } | StepKind::Embed { .. } => {
            if let Some(request) = json_request(step, ctx)? {
                parts.push(json!(request.path));
                parts.push(request.body);
            }
        }
        StepKind::Conversation { .. } => {
            // Each turn hashes its own body (history included) in the runner.
        }
        StepKind::Http {
            method,
            url,
            path,
            headers,
            json,
            body,
            upload,
            save,
        } => {
            parts.push(json!(method));
            parts.push(json!(save));
            for t in url.iter().chain(path.iter()).chain(body.iter()) {
                parts.push(Json::String(t.render(ctx)?));
            }
            for (name, t) in headers {
                parts.push(json!([name, t.render(ctx)?]));
            }
            if let Some(j) = json {
                parts.push(j.render(ctx)?);
            }
            if let Some(u) = upload {
                let file = u.file.render(ctx)?;
                // The file's identity, not its bytes: path, size and mtime.
                let meta = std::fs::metadata(&file).ok();
                parts.push(json!([
                    u.field,
                    file,
                    meta.as_ref().map(|m| m.len()),
                    meta.and_then(|m| m.modified().ok())
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64),
                ]));
                for (name, t) in &u.fields {
                    parts.push(json!([name, t.render(ctx)?]));
                }
            }
        }
        StepKind::Command { argv, stdin } => {
            for t in argv {
                parts.push(Json::String(t.render(ctx)?));
            }
            if let Some(t) = stdin {
                parts.push(Json::String(t.render(ctx)?));
            }
        }
    }
    Ok(hash_json(&Json::Array(parts)))
}

/// xxh3 of a JSON value's canonical text (object keys sorted by serde_json's map).
pub(crate) fn hash_json(value: &Json) -> u64 {
    xxhash_rust::xxh3::xxh3_64(value.to_string().as_bytes())
}
