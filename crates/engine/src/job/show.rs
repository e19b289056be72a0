//! `plan --show N`: the first N units' requests as they would be sent —
//! method, URL, headers and body in the provider's dialect — with every
//! secret masked and earlier steps' answers shown as `⟨steps.NAME.text⟩`.

use std::collections::BTreeMap;

use minijinja::Value;
use serde::Serialize;
use serde_json::{json, Value as Json};
use sluice_provider::dialect::ANTHROPIC_VERSION;
use sluice_provider::Dialect;
use sluice_spec::{Job, Placeholder, Step};

use super::check::typed_output;
use super::kinds::{self, Transport};
use crate::error::{Error, Result};
use crate::inputs::Prepared;

/// One request of one unit.
#[derive(Debug, Clone, Serialize)]
pub struct ShownRequest {
    /// The unit's id.
    pub unit: String,
    /// The step.
    pub step: String,
    /// `element 2` of a fan-out, `turn 1` of a conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// `POST`, …; `RUN` for a command step.
    pub method: String,
    /// The URL (base URL of the pool's first host); the program for a command.
    pub url: String,
    /// Headers as sent, secrets masked.
    pub headers: Vec<(String, String)>,
    /// The JSON body, the text body, or a command's arguments and stdin.
    pub body: Json,
    /// How it goes out when not as a live call (the batch API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What every secret is replaced with.
const MASK: &str = "****";

/// The requests of the first `n` units of `prepared`.
pub(crate) fn requests_of(
    job: &Job,
    prepared: &Prepared,
    env: &serde_json::Map<String, Json>,
    n: usize,
    batched: &[String],
) -> Result<Vec<ShownRequest>> {
    let ids = super::units::UnitIds::check(job, prepared, "input")?;
    let combos = super::units::Combos::new(job);
    let secrets = Secrets::of(job, env);
    let env_value = Value::from(minijinja::value::Serde(Json::Object(env.clone())));
    let mut out = Vec::new();
    let mut seen = 0;
    let items = prepared.items().map_err(|e| Error::Input(e.to_string()))?;
    'items: for item in items.flatten() {
        for unit in ids.units(&item, &combos) {
            if seen >= n {
                break 'items;
            }
            seen += 1;
            let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
            ctx.insert(
                "item".into(),
                Value::from(minijinja::value::Serde(unit.item.clone())),
            );
            ctx.insert("index".into(), Value::from(unit.index));
            ctx.insert(
                "matrix".into(),
                Value::from(minijinja::value::Serde(Json::Object(unit.matrix.clone()))),
            );
            ctx.insert("env".into(), env_value.clone());
            let mut steps: BTreeMap<String, Value> = BTreeMap::new();
            for step in &job.steps {
                ctx.insert("steps".into(), Value::from(steps.clone()));
                let path = format!("steps.{}", step.name);
                let shown = Shown {
                    job,
                    step,
                    unit: &unit.id,
                    secrets: &secrets,
                    env: &env_value,
                    batched: step.provider.as_ref().is_some_and(|p| batched.contains(p)),
                };
                match &step.for_each {
                    Some(for_each) => {
                        let elements = match for_each.eval(&Value::from(ctx.clone())) {
                            Ok(v) if Placeholder::is(&v) => vec![Placeholder::value("each")],
                            Ok(v) => v.try_iter().map(|i| i.collect()).unwrap_or_default(),
                            Err(e) => return Err(Error::Config(e.to_string())),
                        };
                        for (i, element) in elements.iter().enumerate() {
                            let mut each = ctx.clone();
                            each.insert("each".into(), element.clone());
                            each.insert("each_index".into(), Value::from(i));
                            out.extend(shown.call(&each, Some(format!("element {i}")))?);
                        }
                        let list: Vec<Value> = (0..elements.len().max(1))
                            .map(|i| typed_output(step, &format!("{path}[{i}]")))
                            .collect();
                        steps.insert(step.name.clone(), Value::from(list));
                    }
                    None => {
                        out.extend(shown.call(&ctx, None)?);
                        steps.insert(step.name.clone(), typed_output(step, &path));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One step of one unit, being shown.
struct Shown<'a> {
    job: &'a Job,
    step: &'a Step,
    unit: &'a str,
    secrets: &'a Secrets,
    env: &'a Value,
    batched: bool,
}

impl Shown<'_> {
    fn call(
        &self,
        ctx: &BTreeMap<String, Value>,
        part: Option<String>,
    ) -> Result<Vec<ShownRequest>> {
        let value = Value::from(ctx.clone());
        let render = |e: sluice_spec::RenderError| Error::Config(e.to_string());
        let step = self.step;
        let provider = step.provider.as_deref().and_then(|p| self.job.provider(p));
        let dialect = provider.map(|p| p.api).unwrap_or_default();
        let base = provider
            .and_then(|p| p.base_urls.first())
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_default();
        let mut headers: Vec<(String, String)> = Vec::new();
        if let Some(p) = provider {
            for (name, t) in &p.headers {
                headers.push((name.clone(), t.render(self.env).map_err(render)?));
            }
            if p.api_key_env.is_some() {
                headers.push(match dialect {
                    Dialect::OpenAi => ("Authorization".into(), format!("Bearer {MASK}")),
                    Dialect::Anthropic => ("x-api-key".into(), MASK.into()),
                });
            }
            if dialect == Dialect::Anthropic
                && !headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("anthropic-version"))
            {
                headers.push(("anthropic-version".into(), ANTHROPIC_VERSION.into()));
            }
        }
        let rules = kinds::of(&step.kind);
        let chat = rules.transport().is_chat();
        let model_call = |request: kinds::JsonRequest, part: Option<String>| {
            let (path, mut body) = match request.in_dialect(dialect, chat) {
                Ok(sent) => (sent.path, sent.translated.unwrap_or(request.body)),
                // A refused request is shown with why it would not be sent.
                Err(refusal) => (
                    dialect.chat_path(&request.path).to_string(),
                    serde_json::json!({"not_sent": refusal.to_string()}),
                ),
            };
            if step.stream && chat && !self.batched {
                dialect.set_streaming(&mut body);
            }
            let mut headers = headers.clone();
            headers.push(("Content-Type".into(), "application/json".into()));
            self.finish(part, "POST", format!("{base}{path}"), headers, body)
        };
        match rules.transport() {
            Transport::Model { .. } => {
                let request = rules.model_request(&value).map_err(render)?;
                Ok(request.map(|r| model_call(r, part)).into_iter().collect())
            }
            Transport::Turns => {
                let mut out = Vec::new();
                let (mut prompts, mut answers) = (Vec::new(), Vec::new());
                for (k, turn) in rules.turns().iter().enumerate() {
                    let mut turn_ctx = ctx.clone();
                    let said: Vec<Value> = answers
                        .iter()
                        .map(|a: &String| Value::from(a.as_str()))
                        .collect();
                    turn_ctx.insert("answers".into(), Value::from(said));
                    prompts.push(turn.render(&Value::from(turn_ctx)).map_err(render)?);
                    let request = rules
                        .turn_request(&value, &prompts, &answers)
                        .map_err(render)?;
                    let label = match &part {
                        Some(p) => format!("{p}, turn {}", k + 1),
                        None => format!("turn {}", k + 1),
                    };
                    out.extend(request.map(|r| model_call(r, Some(label))));
                    answers.push(format!("⟨answers[{k}]⟩"));
                }
                Ok(out)
            }
            Transport::Http => {
                let provider_headers = provider.map(|p| p.headers.as_slice()).unwrap_or(&[]);
                let call = rules
                    .http_call(
                        provider
                            .and_then(|p| p.base_urls.first())
                            .map(String::as_str),
                        provider_headers,
                        &value,
                        // `plan` runs the user's own job: no file confinement.
                        None,
                    )
                    .ok_or_else(|| Error::Config("not an http step".into()))?
                    .map_err(|e| Error::Config(e.to_string()))?;
                let mut headers = call.headers.clone();
                if provider.is_some_and(|p| p.api_key_env.is_some()) {
                    headers.push(("Authorization".into(), format!("Bearer {MASK}")));
                }
                headers.push((
                    "Content-Type".into(),
                    call.content_type
                        .clone()
                        .unwrap_or_else(|| "application/json".into()),
                ));
                let text = String::from_utf8_lossy(&call.body).into_owned();
                let body = serde_json::from_str(&text).unwrap_or(Json::String(text));
                let url = call.endpoint.uri.to_string();
                let method = call.endpoint.method.to_string();
                Ok(vec![self.finish(part, &method, url, headers, body)])
            }
            Transport::Command => {
                let line = rules
                    .command_line(&value)
                    .ok_or_else(|| Error::Config("not a command step".into()))?
                    .map_err(render)?;
                let program = line.argv.first().cloned().unwrap_or_default();
                let body = json!({"argv": line.argv, "stdin": line.stdin});
                Ok(vec![self.finish(part, "RUN", program, Vec::new(), body)])
            }
        }
    }

    fn finish(
        &self,
        part: Option<String>,
        method: &str,
        url: String,
        headers: Vec<(String, String)>,
        body: Json,
    ) -> ShownRequest {
        ShownRequest {
            unit: self.unit.to_string(),
            step: self.step.name.clone(),
            part,
            method: method.to_string(),
            url: self.secrets.mask(&sluice_store::redact_url(&url)),
            headers: headers
                .into_iter()
                .map(|(n, v)| (n, self.secrets.mask(&v)))
                .collect(),
            body: self.secrets.mask_json(body),
            note: self.batched.then(|| {
                "through the batch API: this body is one request of a batch file".to_string()
            }),
        }
    }
}

/// The values that must not be shown: every `env` variable's and every
/// provider key's.
struct Secrets(Vec<String>);

impl Secrets {
    fn of(job: &Job, env: &serde_json::Map<String, Json>) -> Secrets {
        let mut values: Vec<String> = env
            .values()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        for p in &job.providers {
            if let Some(key) = p.api_key_env.as_ref().and_then(|v| std::env::var(v).ok()) {
                values.push(key);
            }
        }
        // Longest first, so a secret inside another is not half-masked.
        values.retain(|v| v.len() >= 4);
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Secrets(values)
    }

    fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.0 {
            out = out.replace(secret.as_str(), MASK);
        }
        out
    }

    fn mask_json(&self, value: Json) -> Json {
        match value {
            Json::String(s) => Json::String(shorten_inline_file(self.mask(&s))),
            Json::Array(items) => {
                Json::Array(items.into_iter().map(|v| self.mask_json(v)).collect())
            }
            Json::Object(map) => Json::Object(
                map.into_iter()
                    .map(|(k, v)| (k, self.mask_json(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

/// A file inlined as a data URL (`data_url()`), shown by its start and size:
/// thousands of base64 characters say nothing on a terminal.
fn shorten_inline_file(text: String) -> String {
    const SHOWN: usize = 48;
    match sluice_provider::dialect::media::data_url(&text) {
        Some((media, data)) if data.len() > SHOWN => format!(
            "data:{media};base64,{}… ({} bytes)",
            &data[..SHOWN],
            data.len() * 3 / 4
        ),
        _ => text,
    }
}

#[cfg(test)]
mod inline_tests {
    #[test]
    fn a_long_data_url_is_shown_by_its_start_and_size() {
        let url = format!("data:image/png;base64,{}", "A".repeat(400));
        let shown = super::shorten_inline_file(url);
        assert_eq!(
            shown,
            format!("data:image/png;base64,{}… (300 bytes)", "A".repeat(48))
        );
        let short = "data:image/png;base64,AAAA".to_string();
        assert_eq!(super::shorten_inline_file(short.clone()), short);
    }
}
