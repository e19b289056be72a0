//! `sluice plan`: what a job will do, estimated without sending anything.

use serde::Serialize;
use serde_json::{json, Value as Json};
use sluice_limit::DEFAULT_COMPLETION_ESTIMATE;
use sluice_provider::dialect::DEFAULT_MAX_TOKENS;
use sluice_spec::{Dialect, InputSource, Job};

use std::collections::HashMap;

use super::check;
use super::choose::Offload;
use super::estimate::{Estimate, Measured, ProviderBound, StepCalls};
use super::kinds;
use super::show::ShownRequest;
use super::units::Combos;
use super::window::UnitWindow;
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
    /// Image parts its requests carry (over the units rendered).
    pub images: u64,
    /// Of those, images whose size is not known before sending (a URL the
    /// API fetches): counted at the tile rule's largest answer.
    pub images_unsized: u64,
    /// A step whose provider is chosen per unit (`provider = "{{ matrix.… }}"`):
    /// its calls and tokens by the provider each unit goes to.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub by_provider: std::collections::BTreeMap<String, (u64, u64)>,
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
    /// Items in the input (of a url input: on its first page), when read.
    pub items: Option<u64>,
    /// What to know about the item count (a url input's first page only,
    /// or why the input could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_note: Option<String>,
    /// Matrix combinations.
    pub combinations: u64,
    /// Units = items × combinations (the first `limit` with `--limit`).
    pub units: Option<u64>,
    /// `--limit N`: only the first N units are planned (and would be run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Units in progress at once, and why.
    pub window: UnitWindow,
    /// Per step.
    pub steps: Vec<StepPlan>,
    /// Per provider.
    pub providers: Vec<ProviderPlan>,
    /// Wall time of the live calls, one after another, and the speedup.
    pub estimate: Option<Estimate>,
    /// `--show N`: the first N units' requests as they would be sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shown: Vec<ShownRequest>,
}

/// What `plan` is asked for besides the job.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Only the first N units, as `run --limit N` would run them.
    pub limit: Option<u64>,
    /// Latencies measured by `plan --probe`, by step name.
    pub measured: HashMap<String, Measured>,
    /// Show the first N units' requests as they would be sent.
    pub show: usize,
    /// Latency for steps with nothing measured and no `assume_latency`.
    pub default_latency: Option<std::time::Duration>,
}

/// Reads the input (of a url input only the first page), renders every
/// unit's templates (an error when some cannot render) and estimates.
pub fn plan(job: &Job, spool_dir: &std::path::Path, options: &PlanOptions) -> Result<Plan> {
    let env = env_present(job);
    let missing: Vec<&str> = job
        .env
        .iter()
        .filter(|n| !env.contains_key(n.as_str()))
        .map(String::as_str)
        .collect();
    let is_url = matches!(job.input.source, InputSource::Url { .. });
    let url_needs_env = match &job.input.source {
        InputSource::Url { headers, .. } => headers
            .iter()
            .any(|(_, t)| t.variables().iter().any(|v| v.starts_with("env."))),
        _ => false,
    };
    if is_url && url_needs_env && !missing.is_empty() {
        let note = format!(
            "not read: the url input's headers need {}; export it to let plan read the first page",
            missing.join(", ")
        );
        return estimate_plan(job, None, &[], options, Some(note));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(e.to_string()))?;
    let client = sluice_provider::Client::new(1, None).map_err(|e| Error::Config(e.to_string()))?;
    let env_value = minijinja::Value::from(minijinja::value::Serde(json!({ "env": env })));
    let prepared = runtime
        .block_on(inputs::prepare_with(
            &job.input.source,
            &client,
            spool_dir,
            &env_value,
            true,
        ))
        .map_err(|e| Error::Input(e.to_string()))?;
    let (report, fan_outs) = check::whole_input(job, &prepared, &env, false, options.limit)?;
    if !report.is_clean() {
        return Err(Error::Templates(Box::new(report)));
    }
    let note = match (is_url, prepared.more_pages) {
        (true, true) => Some(
            "the url input's first page only (the run fetches every page): a lower bound".into(),
        ),
        (true, false) => Some("the url input's only page".into()),
        _ => None,
    };
    let mut plan = estimate_plan(job, Some(&prepared), &fan_outs, options, note)?;
    if options.show > 0 {
        let batched: Vec<String> = plan
            .providers
            .iter()
            .filter(|p| p.offload.batched())
            .map(|p| p.name.clone())
            .collect();
        plan.shown = super::show::requests_of(job, &prepared, &env, options.show, &batched)?;
    }
    Ok(plan)
}

/// The job's `env` variables that are set (plan runs without the others).
fn env_present(job: &Job) -> serde_json::Map<String, Json> {
    job.env
        .iter()
        .filter_map(|name| {
            std::env::var(name)
                .ok()
                .map(|v| (name.clone(), Json::String(v)))
        })
        .collect()
}

/// Estimates over `prepared` items (`None`: not known before the run).
pub(crate) fn estimate_plan(
    job: &Job,
    prepared: Option<&inputs::Prepared>,
    fan_outs: &[check::FanOut],
    options: &PlanOptions,
    input_note: Option<String>,
) -> Result<Plan> {
    let combos = Combos::new(job);
    let n = combos.len() as u64;
    let mut steps: Vec<StepPlan> = job
        .steps
        .iter()
        .map(|s| StepPlan {
            name: s.name.clone(),
            kind: s.kind.name().into(),
            provider: s
                .provider
                .clone()
                .or_else(|| s.provider_template.as_ref().map(|t| t.source().to_owned())),
            calls: 0,
            calls_at_least: false,
            // Model steps count tokens; http and command steps none.
            tokens: kinds::of(&s.kind).model().is_some().then_some(0),
            tokens_partial: false,
            cost_usd: None,
            batch_cost_usd: None,
            images: 0,
            images_unsized: 0,
            by_provider: Default::default(),
        })
        .collect();
    let mut units = 0u64;
    let mut items_seen = 0u64;
    if let Some(prepared) = prepared {
        'items: for item in prepared
            .items()
            .map_err(|e| Error::Input(e.to_string()))?
            .flatten()
        {
            items_seen += 1;
            for combo in combos.iter() {
                if options.limit.is_some_and(|l| units >= l) {
                    break 'items;
                }
                units += 1;
                let ctx = json!({"item": item.value, "index": item.position, "matrix": combo, "env": {}, "steps": {}});
                let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
                for (plan, step) in steps.iter_mut().zip(&job.steps) {
                    // A provider chosen per unit: this unit's.
                    let resolved;
                    let step = match &step.provider_template {
                        Some(t) => {
                            let mut own = step.clone();
                            own.provider = t.render(&ctx).ok().map(|n| n.trim().to_owned());
                            resolved = own;
                            &resolved
                        }
                        None => step,
                    };
                    let (calls_before, tokens_before) = (plan.calls, plan.tokens.unwrap_or(0));
                    let turns = kinds::of(&step.kind).calls_per_unit();
                    plan.calls += turns;
                    plan.calls_at_least |= step.for_each.is_some();
                    if let Some(tokens) = plan.tokens.as_mut() {
                        let t = match estimate(step, &ctx) {
                            Some((t, (images, unknown))) => {
                                plan.images += images;
                                plan.images_unsized += unknown;
                                t
                            }
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
                    if let (Some(_), Some(name)) = (&step.provider_template, &step.provider) {
                        let mine = plan.by_provider.entry(name.clone()).or_default();
                        mine.0 += plan.calls - calls_before;
                        mine.1 += plan.tokens.unwrap_or(0) - tokens_before;
                    }
                }
            }
        }
    }
    // Fan-outs: the lists found in the data, and at least one call per unit
    // whose list comes from an earlier answer.
    for ((plan, step), fan) in steps.iter_mut().zip(&job.steps).zip(fan_outs) {
        if step.for_each.is_some() {
            plan.calls = fan.elements + fan.unknown_units;
            plan.calls_at_least = fan.unknown_units > 0;
        }
        // `batch = N`: N units' inputs a request (fewer when a gathering
        // does not fill, so this is the least).
        if let Some(n) = step.batch {
            plan.calls = plan.calls.div_ceil(n as u64);
        }
    }
    let items = prepared.map(|p| match options.limit {
        Some(_) => items_seen,
        None => p.total,
    });
    let providers = job
        .providers
        .iter()
        .map(|p| {
            let mine = steps
                .iter()
                .filter(|s| s.provider.as_deref() == Some(&p.name));
            let (calls, tokens) =
                mine.fold((0, 0), |(c, t), s| (c + s.calls, t + s.tokens.unwrap_or(0)));
            // And its share of the steps whose provider each unit chooses.
            let (calls, tokens) = steps
                .iter()
                .filter_map(|s| s.by_provider.get(&p.name))
                .fold((calls, tokens), |(c, t), (sc, st)| (c + sc, t + st));
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
        .collect::<Vec<_>>();
    let units = prepared.map(|p| match options.limit {
        Some(_) => units,
        None => p.total.saturating_sub(p.bad_count) * n,
    });
    let window = super::window::unit_window(job);
    let step_calls: Vec<StepCalls> = steps.iter().map(|s| StepCalls { calls: s.calls }).collect();
    let bounds: Vec<ProviderBound> = providers
        .iter()
        .map(|p| ProviderBound {
            name: p.name.clone(),
            batched: p.offload.batched(),
            bound_seconds: p.bound_seconds,
            binding: p.binding.clone(),
        })
        .collect();
    let estimate = units.and_then(|units| {
        super::estimate::estimate(&super::estimate::Inputs {
            job,
            steps: &step_calls,
            providers: &bounds,
            units,
            window: &window,
            measured: &options.measured,
            default_latency: options.default_latency,
        })
    });
    Ok(Plan {
        name: job.name.clone(),
        items,
        input_note,
        combinations: n,
        units,
        limit: options.limit,
        window,
        steps,
        providers,
        estimate,
        shown: Vec::new(),
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
    let rules = kinds::of(&step.kind);
    let (model, params) = (rules.model()?, rules.chat_params());
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
        } else if provider.api == Dialect::Anthropic {
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
        .is_some_and(|p| p.api == Dialect::Anthropic);
    let rules = kinds::of(&step.kind);
    let Some(params) = rules.chat_params() else {
        return 0;
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
/// earlier steps' outputs, and its image parts (all, and those of unknown size).
fn estimate(step: &sluice_spec::Step, ctx: &minijinja::Value) -> Option<(u64, (u64, u64))> {
    if step.for_each.is_some() {
        return None;
    }
    kinds::of(&step.kind).plan_tokens(ctx)
}

/// A floor when prompts cannot be rendered yet: the template text itself.
fn template_estimate(step: &sluice_spec::Step) -> u64 {
    let text = kinds::of(&step.kind).template_chars();
    (text as u64).div_ceil(4)
}
