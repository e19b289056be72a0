//! `kind = "chat"` steps: the chat-completions body rendered from the step's
//! messages and params, its estimate, and the answer read back in the
//! provider's dialect (`.text`, `.json`, usage, tool calls).

use std::collections::BTreeMap;

use minijinja::Value;
use serde_json::{json, Value as Json};
use sluice_provider::dialect::{chat_answer, Dialect};
use sluice_spec::{Message, RenderError, TValue, Template};

use super::model_request::{chat_estimate, images, object, JsonRequest};
use super::{placeholder_text, zero_usage, StepRules, Transport};
use crate::item_error::ItemError;
use crate::job::output::{parse_json_text, StepOutput, Usage};

/// A chat step's fields.
pub(crate) struct Chat<'a> {
    pub(super) model: &'a Template,
    pub(super) messages: &'a [Message],
    pub(super) params: &'a TValue,
    /// When set, the answer must parse as JSON.
    pub(super) response_format: Option<&'a Json>,
    /// Path under the provider's base URL.
    pub(super) path: &'a str,
}

impl<'a> StepRules<'a> for Chat<'a> {
    fn transport(&self) -> Transport {
        Transport::Model { chat: true }
    }

    fn default_latency(&self) -> f64 {
        2.0
    }

    fn model(&self) -> Option<&'a Template> {
        Some(self.model)
    }

    fn chat_params(&self) -> Option<&'a TValue> {
        Some(self.params)
    }

    fn wants_json(&self) -> bool {
        self.response_format.is_some()
    }

    fn templates(&self) -> Vec<&'a Template> {
        let mut out = vec![self.model];
        out.extend(self.messages.iter().flat_map(|m| m.content.templates()));
        out.extend(TValue::templates(self.params));
        out
    }

    fn probe_templates(&self) -> Option<Vec<&'a Template>> {
        Some(self.templates())
    }

    fn fingerprint_parts(
        &self,
        ctx: &minijinja::Value,
        parts: &mut Vec<Json>,
    ) -> Result<(), RenderError> {
        let request = self.request(ctx)?;
        parts.push(json!(request.path));
        parts.push(request.body);
        Ok(())
    }

    fn model_request(&self, ctx: &minijinja::Value) -> Result<Option<JsonRequest>, RenderError> {
        self.request(ctx).map(Some)
    }

    fn plan_tokens(&self, ctx: &minijinja::Value) -> Option<(u64, (u64, u64))> {
        let request = self.request(ctx).ok()?;
        Some((request.estimate.total(), images(&request.body)))
    }

    fn template_chars(&self) -> usize {
        self.messages
            .iter()
            .flat_map(|m| m.content.templates())
            .map(|t| t.source().len())
            .sum()
    }

    fn output_fields(&self, path: &str, fields: &mut BTreeMap<&'static str, Value>) {
        fields.insert("text", placeholder_text(path));
        fields.insert("usage", zero_usage());
    }
}

impl Chat<'_> {
    /// The body: params first, then `model`, the rendered `messages` and
    /// `response_format`.
    fn request(&self, ctx: &minijinja::Value) -> Result<JsonRequest, RenderError> {
        let mut body = object(self.params.render(ctx)?);
        let mut rendered = Vec::with_capacity(self.messages.len());
        for m in self.messages {
            let mut message = json!({"role": m.role, "content": m.content.render(ctx)?});
            if let Some(id) = &m.tool_call_id {
                message["tool_call_id"] = Json::String(id.render(ctx)?);
            }
            if let Some(calls) = &m.tool_calls {
                message["tool_calls"] = calls.render(ctx)?;
            }
            rendered.push(message);
        }
        body.insert("model".into(), Json::String(self.model.render(ctx)?));
        body.insert("messages".into(), Json::Array(rendered));
        if let Some(rf) = self.response_format {
            body.insert("response_format".into(), rf.clone());
        }
        let body = Json::Object(body);
        Ok(JsonRequest {
            path: self.path.to_string(),
            estimate: chat_estimate(&body),
            body,
        })
    }
}

/// Reads a chat answer (a chat step's, or a conversation turn's) in
/// `dialect`'s shape: content, usage, and `.json` (required to parse when
/// `wants_json`: the step asked for a JSON `response_format`).
pub(crate) fn read_answer(
    wants_json: bool,
    dialect: Dialect,
    body: &[u8],
) -> Result<StepOutput, ItemError> {
    let bad = |message: String| ItemError::new("bad_response", message);
    let answer = chat_answer(dialect, body).map_err(|e| bad(e.to_string()))?;
    let text = answer.text;
    let json = parse_json_text(&text);
    if wants_json && json.is_none() && answer.tool_calls.is_empty() {
        let start: String = text.chars().take(120).collect();
        return Err(bad(format!(
            "the answer is not the JSON the step's response_format asks for; it starts: {start:?}"
        )));
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

#[cfg(test)]
mod tests {
    use super::super::{of, test_ctx, test_step};
    use super::*;

    const STEP: &str = r#"kind = "chat"
model = "m-{{ item.n }}"
messages = [
  { role = "system", content = "Be brief." },
  { role = "user", content = "Say {{ item.q }}" },
]
params = { temperature = 0, max_tokens = 9 }
response_format = { type = "json_object" }"#;

    #[test]
    fn the_body_has_params_model_messages_and_response_format() {
        let step = test_step(STEP);
        let request = of(&step.kind)
            .model_request(&test_ctx(json!({"q": "hi", "n": 2})))
            .unwrap()
            .unwrap();
        assert_eq!(request.path, "/chat/completions");
        assert_eq!(
            request.body,
            json!({
                "model": "m-2",
                "temperature": 0,
                "max_tokens": 9,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Say hi"},
                ],
                "response_format": {"type": "json_object"},
            })
        );
        assert_eq!(request.estimate.output, 9);
        let e = of(&step.kind).model_request(&test_ctx(json!({}))).err();
        assert!(e.is_some_and(|e| e.to_string().contains("item.q")));
    }

    #[test]
    fn plan_counts_tokens_and_the_template_floor() {
        let step = test_step(STEP);
        let rules = of(&step.kind);
        let (tokens, images) = rules
            .plan_tokens(&test_ctx(json!({"q": "hi", "n": 2})))
            .unwrap();
        assert!(tokens > 9, "{tokens}");
        assert_eq!(images, (0, 0));
        assert_eq!(
            rules.template_chars(),
            "Be brief.".len() + "Say {{ item.q }}".len()
        );
        assert!(rules.wants_json());
        assert_eq!(rules.model().map(|m| m.source()), Some("m-{{ item.n }}"));
    }

    #[test]
    fn an_answer_is_read_and_json_required_when_asked() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"{\"a\":1}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#;
        let out = read_answer(true, Dialect::OpenAi, body).unwrap();
        assert_eq!(out.text.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(out.json, Some(json!({"a": 1})));
        assert_eq!(
            out.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((5, 2))
        );
        let prose = br#"{"choices":[{"message":{"role":"assistant","content":"no json here"}}]}"#;
        let e = read_answer(true, Dialect::OpenAi, prose).unwrap_err();
        assert!(
            e.code == "bad_response" && e.message.contains("no json here"),
            "{e}"
        );
        let out = read_answer(false, Dialect::OpenAi, prose).unwrap();
        assert_eq!((out.json, out.usage.is_none()), (None, true));
        assert!(read_answer(false, Dialect::OpenAi, b"not json").is_err());
    }

    #[test]
    fn check_sees_its_templates_and_text_usage_stand_ins() {
        let step = test_step(STEP);
        let rules = of(&step.kind);
        let sources: Vec<&str> = rules.templates().iter().map(|t| t.source()).collect();
        assert!(sources.contains(&"m-{{ item.n }}"), "{sources:?}");
        assert!(sources.contains(&"Say {{ item.q }}"), "{sources:?}");
        assert_eq!(
            rules.probe_templates().map(|t| t.len()),
            Some(sources.len())
        );
        let mut fields = BTreeMap::new();
        rules.output_fields("steps.s", &mut fields);
        assert_eq!(
            fields.keys().copied().collect::<Vec<_>>(),
            ["text", "usage"]
        );
        assert_eq!(fields["text"].as_str(), Some("⟨steps.s.text⟩"));
    }
}
