//! `sluice plan`: what a job will do, estimated without sending anything.

use serde::Serialize;
use serde_json::{json, Value as Json};
use sluice_limit::DEFAULT_COMPLETION_ESTIMATE;
use sluice_provider::dialect::DEFAULT_MAX_TOKENS;
use sluice_spec::{Api, InputSource, Job, StepKind};

use super::choose::Offload;
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
    /// The same through the provider's batch API (its batch prices).
    pub batch_cost_usd: Option<f64>,
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
    /// The longest any of its limits (rps, rpm, rph, rpd, tpm, tpd) makes
    /// the live calls take: the estimated live wall time.
    pub bound_seconds: Option<f64>,
    /// The limit that sets `bound_seconds`, or `none` (only latency × calls
    /// ÷ concurrency bounds it).
    pub binding: String,
    /// Estimated USD live, when priced.
    pub cost_usd: Option<f64>,
    /// Estimated USD through the batch API, when priced.
    pub batch_cost_usd: Option<f64>,
    /// Live or batch, and why (`mode`, or what `auto` chose by the deadline).
    pub offload: Offload,
    /// `batch.max_enqueued_tokens`: prompt tokens per model its unfinished
    /// batches may hold, when given.
    pub max_enqueued_tokens: Option<u64>,
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
    let prepared = if matches!(job.input.source, InputSource::Url { .. }) {
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
        Some(prepared)
    };
    estimate_plan(job, prepared.as_ref())
}

/// Estimates over `prepared` items (`None`: not known before the run).
pub(crate) fn estimate_plan(job: &Job, prepared: Option<&inputs::Prepared>) -> Result<Plan> {
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
            batch_cost_usd: None,
        })
        .collect();
    let items = if let Some(prepared) = prepared {
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
                        let t = t + unset_cap_gap(job, step, &ctx) * turns;
                        *tokens += t;
                        if let Some((live, batch)) = cost(job, step, &ctx, t, turns) {
                            *plan.cost_usd.get_or_insert(0.0) += live;
                            *plan.batch_cost_usd.get_or_insert(0.0) += batch;
                        }
                    }
                }
            }
        }
        Some(prepared.total)
    } else {
        None
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
            let windows = [
                ("rps", p.rps, calls, 1.0),
                ("rpm", p.rpm, calls, 60.0),
                ("rph", p.rph, calls, 3600.0),
                ("rpd", p.rpd, calls, 86_400.0),
                ("tpm", p.tpm, tokens, 60.0),
                ("tpd", p.tpd, tokens, 86_400.0),
            ];
            let bound = windows
                .iter()
                .filter_map(|(name, limit, n, period)| {
                    limit.map(|l| (*name, *n as f64 / l as f64 * period))
                })
                .fold(None, |best: Option<(&str, f64)>, (name, secs)| match best {
                    Some((_, b)) if b >= secs => best,
                    _ => Some((name, secs)),
                });
            let sum = |f: fn(&StepPlan) -> Option<f64>| {
                steps
                    .iter()
                    .filter(|s| s.provider.as_deref() == Some(&p.name))
                    .filter_map(f)
                    .reduce(|a, b| a + b)
            };
            let cost_usd = sum(|s| s.cost_usd);
            let batch_cost_usd = sum(|s| s.batch_cost_usd);
            let bound_seconds = bound.map(|(_, secs)| secs);
            ProviderPlan {
                offload: super::choose::decide(p, bound_seconds, cost_usd, batch_cost_usd),
                cost_usd,
                batch_cost_usd,
                name: p.name.clone(),
                calls,
                tokens,
                rpm_seconds,
                tpm_seconds,
                bound_seconds,
                binding: bound.map_or("none", |(name, _)| name).into(),
                max_enqueued_tokens: p.batch.max_enqueued_tokens,
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

/// USD of `tokens` for one unit's call(s) of `step`, live and through the
/// batch API: the completion caps at the output price, the rest at the input
/// price.
fn cost(
    job: &Job,
    step: &sluice_spec::Step,
    ctx: &minijinja::Value,
    tokens: u64,
    calls: u64,
) -> Option<(f64, f64)> {
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
        .unwrap_or(if params.is_none() {
            0
        } else if provider.api == Api::Anthropic {
            DEFAULT_MAX_TOKENS
        } else {
            DEFAULT_COMPLETION_ESTIMATE
        });
    let output = (cap * calls).min(tokens);
    let input = tokens - output;
    let usd = |i: f64, o: f64| input as f64 * i / 1e6 + output as f64 * o / 1e6;
    Some((
        usd(price.input_per_mtok, price.output_per_mtok),
        usd(price.batch_input_per_mtok, price.batch_output_per_mtok),
    ))
}

/// Extra tokens per call that the estimate (which reserves
/// [`DEFAULT_COMPLETION_ESTIMATE`] for an unset cap) misses on an Anthropic
/// provider: there `max_tokens` is required and sent as [`DEFAULT_MAX_TOKENS`]
/// when the step sets none, and the limiter reserves that much at run time.
fn unset_cap_gap(job: &Job, step: &sluice_spec::Step, ctx: &minijinja::Value) -> u64 {
    let anthropic = step
        .provider
        .as_deref()
        .and_then(|name| job.provider(name))
        .is_some_and(|p| p.api == Api::Anthropic);
    let params = match &step.kind {
        StepKind::Chat { params, .. } | StepKind::Conversation { params, .. } => params,
        _ => return 0,
    };
    let unset = params
        .render(ctx)
        .ok()
        .is_some_and(|p| p.get("max_tokens").is_none() && p.get("max_completion_tokens").is_none());
    if anthropic && unset {
        DEFAULT_MAX_TOKENS.saturating_sub(DEFAULT_COMPLETION_ESTIMATE)
    } else {
        0
    }
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
