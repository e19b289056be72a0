//! `kind = "conversation"` steps: turns asked in order in one growing chat
//! history. Each turn's body (system message, earlier turns with their
//! answers, then this turn) and its estimate; the runner sends them one by
//! one (`runner::multi`) and reads each answer as a chat answer.

use std::collections::BTreeMap;

use minijinja::Value;
use serde_json::{json, Value as Json};
use sluice_spec::{Content, RenderError, TValue, Template};

use super::model_request::{chat_estimate, object, JsonRequest};
use super::{placeholder_text, zero_usage, StepRules, Transport};

/// A conversation step's fields.
pub(crate) struct Conversation<'a> {
    pub(super) model: &'a Template,
    pub(super) system: Option<&'a Template>,
    /// The user turns: text, or content parts.
    pub(super) turns: &'a [Content],
    pub(super) params: &'a TValue,
    /// Path under the provider's base URL.
    pub(super) path: &'a str,
}

/// What `plan` takes an earlier answer's length to be in later turns, when
/// the step sets no `max_tokens`: tokens, at four characters each.
const PLANNED_ANSWER_TOKENS: u64 = 256;

impl<'a> StepRules<'a> for Conversation<'a> {
    fn transport(&self) -> Transport {
        Transport::Turns
    }

    fn default_latency(&self) -> f64 {
        2.0
    }

    fn calls_per_unit(&self) -> u64 {
        self.turns.len() as u64
    }

    fn turns(&self) -> &'a [Content] {
        self.turns
    }

    fn model(&self) -> Option<&'a Template> {
        Some(self.model)
    }

    fn chat_params(&self) -> Option<&'a TValue> {
        Some(self.params)
    }

    fn templates(&self) -> Vec<&'a Template> {
        let mut out = vec![self.model];
        out.extend(self.system);
        out.extend(TValue::templates(self.params));
        out
    }

    /// The first turn only: a probe asks one question.
    fn probe_templates(&self) -> Option<Vec<&'a Template>> {
        let mut out = vec![self.model];
        out.extend(self.system);
        out.extend(self.turns.first().into_iter().flat_map(|c| c.templates()));
        out.extend(TValue::templates(self.params));
        Some(out)
    }

    /// Nothing: each turn hashes its own body (history included) in the runner.
    fn fingerprint_parts(
        &self,
        _ctx: &minijinja::Value,
        _parts: &mut Vec<Json>,
    ) -> Result<(), RenderError> {
        Ok(())
    }

    fn turn_request(
        &self,
        ctx: &minijinja::Value,
        prompts: &[Json],
        answers: &[String],
    ) -> Result<Option<JsonRequest>, RenderError> {
        self.request(ctx, prompts, answers).map(Some)
    }

    /// Every turn's body, earlier answers counted at their cap's size.
    fn plan_tokens(&self, ctx: &minijinja::Value) -> Option<(u64, (u64, u64))> {
        let mut prompts = Vec::new();
        let mut answers = Vec::new();
        let mut total = 0;
        for turn in self.turns {
            prompts.push(turn.render(&turn_context(ctx, &answers)).ok()?);
            let request = self.request(ctx, &prompts, &answers).ok()?;
            total += request.estimate.total();
            let cap = request
                .body
                .get("max_tokens")
                .and_then(Json::as_u64)
                .unwrap_or(PLANNED_ANSWER_TOKENS);
            answers.push("x".repeat((cap * 4) as usize));
        }
        Some((total, (0, 0)))
    }

    fn template_chars(&self) -> usize {
        self.turns
            .iter()
            .flat_map(|t| t.templates())
            .map(|t| t.source().len())
            .sum()
    }

    fn output_fields(&self, path: &str, fields: &mut BTreeMap<&'static str, Value>) {
        fields.insert("text", placeholder_text(path));
        fields.insert("usage", zero_usage());
        let exchanges: Vec<Value> = (0..self.turns.len())
            .map(|k| {
                let mut t = BTreeMap::new();
                t.insert("prompt", Value::from(format!("⟨{path}.turns[{k}].prompt⟩")));
                t.insert("answer", Value::from(format!("⟨{path}.turns[{k}].answer⟩")));
                t.insert("usage", zero_usage());
                Value::from(t)
            })
            .collect();
        fields.insert("turns", Value::from(exchanges));
    }
}

impl Conversation<'_> {
    /// The chat body of turn `prompts.len() - 1`: the system message, the
    /// earlier turns (text or content parts) with their answers, then the
    /// last prompt.
    fn request(
        &self,
        ctx: &minijinja::Value,
        prompts: &[Json],
        answers: &[String],
    ) -> Result<JsonRequest, RenderError> {
        let mut messages = Vec::new();
        if let Some(system) = self.system {
            messages.push(json!({"role": "system", "content": system.render(ctx)?}));
        }
        for (k, prompt) in prompts.iter().enumerate() {
            messages.push(json!({"role": "user", "content": prompt}));
            if let Some(answer) = answers.get(k) {
                messages.push(json!({"role": "assistant", "content": answer}));
            }
        }
        let mut body = object(self.params.render(ctx)?);
        body.insert("model".into(), Json::String(self.model.render(ctx)?));
        body.insert("messages".into(), Json::Array(messages));
        let body = Json::Object(body);
        Ok(JsonRequest {
            path: self.path.to_string(),
            estimate: chat_estimate(&body),
            body,
        })
    }
}

/// `ctx` with `answers`: the answers so far, which a turn may quote
/// (`answers[0]`).
pub(crate) fn turn_context(ctx: &minijinja::Value, answers: &[String]) -> minijinja::Value {
    let mut turn_ctx: Json = serde_json::to_value(ctx).unwrap_or(Json::Null);
    turn_ctx["answers"] = json!(answers);
    minijinja::Value::from(minijinja::value::Serde(turn_ctx))
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

#[cfg(test)]
mod tests {
    use super::super::{of, test_ctx, test_step};
    use super::*;

    const STEP: &str = r#"kind = "conversation"
model = "m"
system = "Be brief."
turns = ["Hi {{ item.name }}", "And {{ answers[0] }}?"]
params = { max_tokens = 5 }"#;

    #[test]
    fn a_turn_carries_the_history_with_its_answers() {
        let step = test_step(STEP);
        let rules = of(&step.kind);
        let ctx = test_ctx(json!({"name": "Ada"}));
        let prompts = [json!("Hi Ada"), json!("And yes?")];
        let answers = ["yes".to_string()];
        let request = rules
            .turn_request(&ctx, &prompts, &answers)
            .unwrap()
            .unwrap();
        assert_eq!(
            request.body["messages"],
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi Ada"},
                {"role": "assistant", "content": "yes"},
                {"role": "user", "content": "And yes?"},
            ])
        );
        assert_eq!(
            (request.body["max_tokens"].clone(), request.estimate.output),
            (json!(5), 5)
        );
        assert!(rules.model_request(&ctx).unwrap().is_none());
        assert_eq!(rules.turns().len(), 2);
        assert_eq!(rules.calls_per_unit(), 2);
    }

    #[test]
    fn plan_counts_every_turn_with_the_answers_before_it() {
        let step = test_step(STEP);
        let rules = of(&step.kind);
        let ctx = test_ctx(json!({"name": "Ada"}));
        let (total, images) = rules.plan_tokens(&ctx).unwrap();
        let first = rules
            .turn_request(&ctx, &[json!("Hi Ada")], &[])
            .unwrap()
            .unwrap()
            .estimate
            .total();
        // The second turn repeats the first and its (capped) answer.
        assert!(total > 2 * first, "{total} vs {first}");
        assert_eq!(images, (0, 0));
        assert!(rules.plan_tokens(&test_ctx(json!({}))).is_none());
    }

    #[test]
    fn prompt_text_keeps_the_text_parts() {
        assert_eq!(prompt_text(&json!("plain")), "plain");
        let parts = json!([
            {"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "http://h/i.png"}},
            {"type": "text", "text": "b"},
        ]);
        assert_eq!(prompt_text(&parts), "a\nb");
    }

    #[test]
    fn check_and_probe_see_the_turns_their_own_way() {
        let step = test_step(STEP);
        let rules = of(&step.kind);
        // The turns render with `answers`: the check renders them itself.
        let sources: Vec<&str> = rules.templates().iter().map(|t| t.source()).collect();
        assert!(
            !sources.iter().any(|s| s.contains("answers")),
            "{sources:?}"
        );
        // A probe asks the first turn only.
        let probed: Vec<&str> = rules
            .probe_templates()
            .unwrap()
            .iter()
            .map(|t| t.source())
            .collect();
        assert!(probed.contains(&"Hi {{ item.name }}"), "{probed:?}");
        assert!(!probed.iter().any(|s| s.contains("answers")), "{probed:?}");
        let mut fields = BTreeMap::new();
        rules.output_fields("steps.s", &mut fields);
        assert_eq!(
            fields.keys().copied().collect::<Vec<_>>(),
            ["text", "turns", "usage"]
        );
        let turns = &fields["turns"];
        assert_eq!(turns.len(), Some(2));
        let second = turns.get_item(&Value::from(1)).unwrap();
        let answer = second.get_attr("answer").unwrap();
        assert_eq!(answer.as_str(), Some("⟨steps.s.turns[1].answer⟩"));
    }

    #[test]
    fn a_turn_may_quote_the_answers_so_far() {
        let step = test_step(STEP);
        let second = &of(&step.kind).turns()[1];
        let ctx = turn_context(&test_ctx(json!({"name": "Ada"})), &["yes".to_string()]);
        assert_eq!(second.render(&ctx).unwrap(), json!("And yes?"));
        let none = turn_context(&test_ctx(json!({})), &[]);
        assert!(second.render(&none).is_err());
    }
}
