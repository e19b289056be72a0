//! `kind = "embed"` steps: the embeddings body rendered from the step's
//! input, its estimate, and the vectors read back in input order.

use std::collections::BTreeMap;

use minijinja::Value;
use serde_json::{json, Value as Json};
use sluice_limit::Cost;
use sluice_spec::{Dialect, RenderError, TValue, Template};

use super::model_request::{object, text_estimate, usage, JsonRequest};
use super::{zero_usage, StepRules, Transport};
use crate::item_error::ItemError;
use crate::job::output::StepOutput;

/// An embed step's fields.
pub(crate) struct Embed<'a> {
    pub(super) model: &'a Template,
    /// A string or a list of strings.
    pub(super) input: &'a TValue,
    pub(super) params: &'a TValue,
    /// Path under the provider's base URL.
    pub(super) path: &'a str,
}

impl<'a> StepRules<'a> for Embed<'a> {
    fn transport(&self) -> Transport {
        Transport::Model { chat: false }
    }

    fn default_latency(&self) -> f64 {
        0.3
    }

    fn model(&self) -> Option<&'a Template> {
        Some(self.model)
    }

    fn templates(&self) -> Vec<&'a Template> {
        let mut out = vec![self.model];
        out.extend(TValue::templates(self.input));
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
        Some((request.estimate.total(), (0, 0)))
    }

    fn unfit_for(&self, dialect: Dialect, name: &str) -> Option<String> {
        (dialect == Dialect::Anthropic).then(|| format!(
            "embed steps need an OpenAI-compatible provider; provider {name:?} has api = \"anthropic\", which has no embeddings API"
        ))
    }

    fn output_fields(&self, _path: &str, fields: &mut BTreeMap<&'static str, Value>) {
        fields.insert("usage", zero_usage());
    }
}

impl Embed<'_> {
    /// The body: params first, then `model` and the rendered `input`.
    fn request(&self, ctx: &minijinja::Value) -> Result<JsonRequest, RenderError> {
        let mut body = object(self.params.render(ctx)?);
        let input = self.input.render(ctx)?;
        let model = self.model.render(ctx)?;
        let estimate = Cost::from(text_estimate(Some(&model), &input));
        body.insert("model".into(), Json::String(model));
        body.insert("input".into(), input);
        Ok(JsonRequest {
            path: self.path.to_string(),
            body: Json::Object(body),
            estimate,
        })
    }
}

/// Reads embeddings: one vector for a string input (`single`), a list for a
/// list input, in input order whatever order the answer lists them in.
pub(crate) fn read_answer(body: &[u8], single: bool) -> Result<StepOutput, ItemError> {
    let bad = |message: String| ItemError::new("bad_response", message);
    let value: Json = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let mut vectors: Vec<(u64, Json)> = value["data"]
        .as_array()
        .ok_or_else(|| bad("the answer has no data list".into()))?
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

#[cfg(test)]
mod tests {
    use super::super::{of, test_ctx, test_step};
    use super::*;

    #[test]
    fn the_body_has_params_model_and_input() {
        let step = test_step(
            "kind = \"embed\"\nmodel = \"e\"\ninput = [\"{{ item.a }}\", \"b\"]\nparams = { dimensions = 8 }",
        );
        let rules = of(&step.kind);
        let request = rules
            .model_request(&test_ctx(json!({"a": "x"})))
            .unwrap()
            .unwrap();
        assert_eq!(request.path, "/embeddings");
        assert_eq!(
            request.body,
            json!({"model": "e", "input": ["x", "b"], "dimensions": 8})
        );
        assert_eq!(request.estimate.output, 0);
        assert!(request.estimate.input > 0);
        assert_eq!(rules.transport(), Transport::Model { chat: false });
        assert!(rules
            .unfit_for(Dialect::Anthropic, "a")
            .is_some_and(|m| m.contains("\"a\"")));
        assert!(rules.unfit_for(Dialect::OpenAi, "o").is_none());
    }

    #[test]
    fn vectors_come_back_in_input_order() {
        let body = br#"{"data":[{"index":1,"embedding":[2.0]},{"index":0,"embedding":[1.0]}],"usage":{"prompt_tokens":4}}"#;
        let out = read_answer(body, false).unwrap();
        assert_eq!(out.json, Some(json!([[1.0], [2.0]])));
        assert_eq!(out.usage.map(|u| u.prompt_tokens), Some(4));
        let one = br#"{"data":[{"index":0,"embedding":[1.0]}]}"#;
        assert_eq!(read_answer(one, true).unwrap().json, Some(json!([1.0])));
        assert_eq!(read_answer(one, false).unwrap().json, Some(json!([[1.0]])));
        let e = read_answer(br#"{"object":"list"}"#, true).unwrap_err();
        assert_eq!(
            e,
            ItemError::new("bad_response", "the answer has no data list")
        );
    }

    #[test]
    fn its_output_before_an_answer_is_usage_only() {
        let step = test_step("kind = \"embed\"\nmodel = \"e\"\ninput = \"{{ item.a }}\"");
        let rules = of(&step.kind);
        let mut fields = BTreeMap::new();
        rules.output_fields("steps.s", &mut fields);
        assert_eq!(fields.keys().copied().collect::<Vec<_>>(), ["usage"]);
        let sources: Vec<&str> = rules.templates().iter().map(|t| t.source()).collect();
        assert_eq!(sources, ["e", "{{ item.a }}"]);
        assert!(rules.chat_params().is_none() && rules.model().is_some());
    }
}
