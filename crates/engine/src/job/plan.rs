//! `sluice plan`: what a job will do, estimated without sending anything.

use serde::Serialize;
use serde_json::{json, Value as Json};
use sluice_spec::{InputSource, Job, StepKind};

use super::requests;
use super::units::Combos;
use crate::error::{Error, Result};
use crate::inputs;

/// The estimate of one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepPlan {
    /// Step name.
    pub name: String,
    /// Step kind.
    pub kind: String,
    /// Provider, if any.
    pub provider: Option<String>,
    /// Calls over the whole run (a minimum for fan-out steps).
    pub calls: u64,
    /// Whether `calls` is only a lower bound (fan-out sizes are known at run time).
    pub calls_at_least: bool,
    /// Estimated tokens (prompt chars ÷ 4 + completion caps); `None` for non-LLM steps.
    pub tokens: Option<u64>,
    /// Whether some prompts depend on earlier steps' answers, so `tokens`
    /// counts only their template text.
    pub tokens_partial: bool,
    /// Estimated USD (completions at their caps), when the provider has prices.
    pub cost_usd: Option<f64>,
}

/// The lower bound one provider's limits put on the run's wall time.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderPlan {
    /// Provider name.
    pub name: String,
    /// Calls it receives.
    pub calls: u64,
    /// Tokens it receives.
    pub tokens: u64,
    /// Seconds implied by requests/minute.
    pub rpm_seconds: Option<f64>,
    /// Seconds implied by tokens/minute.
    pub tpm_seconds: Option<f64>,
    /// The larger of the two, and which it is.
    pub bound_seconds: Option<f64>,
    /// `rpm`, `tpm`, or `none` (only latency × calls ÷ concurrency bounds it).
    pub binding: String,
    /// Estimated USD, when priced.
    pub cost_usd: Option<f64>,
}

/// A job's plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Job name.
    pub name: String,
    /// Items in the input, when known without fetching (`None` for url inputs).
    pub items: Option<u64>,
    /// Matrix combinations.
    pub combinations: u64,
    /// Units = items × combinations.
    pub units: Option<u64>,
    /// Per step.
    pub steps: Vec<StepPlan>,
    /// Per provider.
    pub providers: Vec<ProviderPlan>,
}

/// Reads the input (not a url input: that would send requests) and estimates.
pub fn plan(job: &Job, spool_dir: &std::path::Path) -> Result<Plan> {
    let combos = Combos::new(job);
    let n = combos.len() as u64;
    let mut steps: Vec<StepPlan> = job
        .steps
        .iter()
        .map(|s| StepPlan {
            name: s.name.clone(),
            kind: s.kind.name().into(),
            provider: s.provider.clone(),
            calls: 0,
            calls_at_least: s.for_each.is_some(),
            tokens: matches!(
                s.kind,
                StepKind::Chat { .. } | StepKind::Embed { .. } | StepKind::Conversation { .. }
            )
            .then_some(0),
            tokens_partial: false,
            cost_usd: None,
        })
        .collect();
    let items = if matches!(job.input.source, InputSource::Url { .. }) {
        None
    } else {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let client =
            sluice_provider::Client::new(1, None).map_err(|e| Error::Config(e.to_string()))?;
        let env = minijinja::Value::from(minijinja::value::Serde(json!({"env": {}})));
        let prepared = runtime
            .block_on(inputs::prepare(&job.input.source, &client, spool_dir, &env))
            .map_err(|e| Error::Config(e.to_string()))?;
        for item in prepared
            .items()
            .map_err(|e| Error::Config(e.to_string()))?
            .flatten()
        {
            for combo in combos.iter() {
                let ctx = json!({"item": item.value, "index": item.position, "matrix": combo, "env": {}, "steps": {}});
                let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
                for (plan, step) in steps.iter_mut().zip(&job.steps) {
                    let turns = match &step.kind {
                        StepKind::Conversation { turns, .. } => turns.len() as u64,
                        _ => 1,
                    };
                    plan.calls += turns;
                    if let Some(tokens) = plan.tokens.as_mut() {
                        let t = match estimate(step, &ctx) {
                            Some(t) => t,
                            None => {
                                plan.tokens_partial = true;
                                template_estimate(step)
                            }
                        };
                        *tokens += t;
                        if let Some(usd) = cost(job, step, &ctx, t, turns) {
                            *plan.cost_usd.get_or_insert(0.0) += usd;
                        }
                    }
                }
            }
        }
        Some(prepared.total)
    };
    let providers = job
        .providers
        .iter()
        .map(|p| {
            let mine = steps
                .iter()
                .filter(|s| s.provider.as_deref() == Some(&p.name));
            let (calls, tokens) =
                mine.fold((0, 0), |(c, t), s| (c + s.calls, t + s.tokens.unwrap_or(0)));
            let rpm_seconds = p.rpm.map(|r| calls as f64 / r as f64 * 60.0);
            let tpm_seconds = p.tpm.map(|t| tokens as f64 / t as f64 * 60.0);
            let (bound_seconds, binding) = match (rpm_seconds, tpm_seconds) {
                (Some(r), Some(t)) if t > r => (Some(t), "tpm"),
                (Some(r), _) => (Some(r), "rpm"),
                (None, Some(t)) => (Some(t), "tpm"),
                (None, None) => (None, "none"),
            };
            let cost_usd = steps
                .iter()
                .filter(|s| s.provider.as_deref() == Some(&p.name))
                .filter_map(|s| s.cost_usd)
                .reduce(|a, b| a + b);
            ProviderPlan {
                cost_usd,
                name: p.name.clone(),
                calls,
                tokens,
                rpm_seconds,
                tpm_seconds,
                bound_seconds,
                binding: binding.into(),
            }
        })
        .collect();
    Ok(Plan {
        name: job.name.clone(),
        items,
        combinations: n,
        units: items.map(|i| i * n),
        steps,
        providers,
    })
}

/// USD of `tokens` for one unit's call(s) of `step`: the completion caps at
/// the output price, the rest at the input price.
fn cost(
    job: &Job,
    step: &sluice_spec::Step,
    ctx: &minijinja::Value,
    tokens: u64,
    calls: u64,
) -> Option<f64> {
    let provider = job.provider(step.provider.as_deref()?)?;
    let (model, params) = match &step.kind {
        StepKind::Chat { model, params, .. } | StepKind::Conversation { model, params, .. } => {
            (model, Some(params))
        }
        StepKind::Embed { model, .. } => (model, None),
        _ => return None,
    };
    let price = provider.price(&model.render(ctx).ok()?)?;
    let cap = params
        .and_then(|p| p.render(ctx).ok())
        .and_then(|p| {
            p.get("max_completion_tokens")
                .or_else(|| p.get("max_tokens"))
                .and_then(Json::as_u64)
        })
        .unwrap_or(if params.is_some() { 256 } else { 0 });
    let output = (cap * calls).min(tokens);
    let input = tokens - output;
    Some(input as f64 * price.input_per_mtok / 1e6 + output as f64 * price.output_per_mtok / 1e6)
}

/// Tokens of one unit's call(s) of `step`, when its templates render without
/// earlier steps' outputs.
fn estimate(step: &sluice_spec::Step, ctx: &minijinja::Value) -> Option<u64> {
    if step.for_each.is_some() {
        return None;
    }
    match &step.kind {
        StepKind::Chat { .. } | StepKind::Embed { .. } => requests::json_request(step, ctx)
            .ok()
            .flatten()
            .map(|r| r.estimate),
        StepKind::Conversation { turns, .. } => {
            let mut prompts = Vec::new();
            let mut answers = Vec::new();
            let mut total = 0;
            for turn in turns {
                let mut turn_ctx: Json = serde_json::to_value(ctx).ok()?;
                turn_ctx["answers"] = json!(answers);
                let turn_ctx = minijinja::Value::from(minijinja::value::Serde(turn_ctx));
                prompts.push(turn.render(&turn_ctx).ok()?);
                let request =
                    requests::conversation_request(step, ctx, &prompts, &answers).ok()??;
                total += request.estimate;
                // Earlier answers count at their cap's size in later turns.
                let cap = request
                    .body
                    .get("max_tokens")
                    .and_then(Json::as_u64)
                    .unwrap_or(256);
                answers.push("x".repeat((cap * 4) as usize));
            }
            Some(total)
        }
        _ => None,
    }
}

/// A floor when prompts cannot be rendered yet: the template text itself.
fn template_estimate(step: &sluice_spec::Step) -> u64 {
    let text: usize = match &step.kind {
        StepKind::Chat { messages, .. } => messages.iter().map(|m| m.content.source().len()).sum(),
        StepKind::Conversation { turns, .. } => turns.iter().map(|t| t.source().len()).sum(),
        _ => 0,
    };
    (text as u64).div_ceil(4)
}
