//! `plan --probe N`: a few real calls to learn the latency the time estimate
//! should use. Each step whose request needs no earlier answer is sent for
//! the first N units, one call at a time, and its median latency kept; a
//! step that reads earlier answers takes the median of its provider's
//! probed steps. Nothing is recorded; the calls are real (and paid for).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use minijinja::Value;
use serde_json::Value as Json;
use sluice_provider::{Attempt, CallOptions, Endpoint};
use sluice_spec::{Job, Step};

use super::estimate::Measured;
use super::kinds::{self, Transport};
use super::lanes::{Lane, Lanes};
use super::units::Combos;
use crate::error::{Error, Result};
use crate::inputs;

/// Latencies measured with `n` calls per step, by step name.
pub fn probe(job: &Job, spool_dir: &Path, n: usize) -> Result<HashMap<String, Measured>> {
    let env = super::job_env(job)?;
    let env_value = Value::from(minijinja::value::Serde(serde_json::json!({ "env": env })));
    let runtime = super::new_runtime()?;
    // An engine of its own: `sluice plan` runs nothing else to share with.
    let engine = crate::engine::Engine::new();
    let lanes = Lanes::new(&engine, job, &env_value, crate::fair::new_tenant())?;
    let prepared = runtime
        .block_on(inputs::prepare_with(
            &job.input.source,
            &lanes.direct().client,
            spool_dir,
            &env_value,
            true,
        ))
        .map_err(|e| Error::Input(e.to_string()))?;
    let combos = Combos::new(job);
    let mut samples: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    let mut units = 0;
    let items = prepared.items().map_err(|e| Error::Input(e.to_string()))?;
    'items: for item in items.flatten() {
        for combo in combos.iter() {
            if units >= n {
                break 'items;
            }
            units += 1;
            let ctx = Value::from(minijinja::value::Serde(serde_json::json!({
                "item": item.value, "index": item.position, "matrix": combo,
                "env": env, "steps": {},
            })));
            for step in job.steps.iter().filter(|s| probeable(s)) {
                let lane = step.provider.as_deref().and_then(|p| lanes.get(p));
                let took = runtime.block_on(call(step, lane, &ctx))?;
                samples.entry(step.name.clone()).or_default().push(took);
            }
        }
    }
    let mut measured: HashMap<String, Measured> = samples
        .into_iter()
        .map(|(step, mut times)| {
            times.sort();
            let median = times[times.len() / 2];
            let m = Measured {
                seconds: median.as_secs_f64(),
                calls: times.len(),
            };
            (step, m)
        })
        .collect();
    // Steps that read earlier answers: their provider's latency, if probed.
    let borrowed: Vec<(String, Measured)> = job
        .steps
        .iter()
        .filter(|s| !measured.contains_key(&s.name))
        .filter_map(|step| {
            job.steps
                .iter()
                .filter(|o| o.provider.is_some() && o.provider == step.provider)
                .find_map(|o| measured.get(&o.name).cloned())
                .map(|m| (step.name.clone(), m))
        })
        .collect();
    measured.extend(borrowed);
    Ok(measured)
}

/// Whether `step` can be sent with only the item's data: a model or http
/// call (not a local program), not a fan-out, reading no earlier answer.
fn probeable(step: &Step) -> bool {
    let reads_steps = |t: &sluice_spec::Template| {
        t.variables()
            .iter()
            .any(|v| v.starts_with("steps") || v.starts_with("answers"))
    };
    let Some(templates) = kinds::of(&step.kind).probe_templates() else {
        return false;
    };
    step.for_each.is_none() && !templates.into_iter().any(reads_steps)
}

/// Sends one call of `step` and returns how long it took.
async fn call(step: &Step, lane: Option<&Lane>, ctx: &Value) -> Result<Duration> {
    let fail = |what: String| Error::Config(format!("--probe: step {}: {what}", step.name));
    let render = |e: sluice_spec::RenderError| fail(e.to_string());
    let rules = kinds::of(&step.kind);
    let (lane, endpoint, body, headers, content_type) = match rules.transport() {
        Transport::Http => {
            let base = lane.and_then(|l| l.base_urls().next()).map(str::to_string);
            let call = rules
                .http_call(base.as_deref(), &[], ctx, None)
                .ok_or_else(|| fail("not an http step".into()))?
                .map_err(|e| fail(e.to_string()))?;
            let mut headers = lane.map(|l| l.headers.clone()).unwrap_or_default();
            headers.extend(call.headers);
            (lane, call.endpoint, call.body, headers, call.content_type)
        }
        _ => {
            let lane = lane.ok_or_else(|| fail("it has no provider".into()))?;
            let request = match rules.transport() {
                Transport::Turns => {
                    let first = rules
                        .turns()
                        .first()
                        .ok_or_else(|| fail("it has no turns".into()))?;
                    let prompt = first.render(ctx).map_err(render)?;
                    rules.turn_request(ctx, &[prompt], &[]).map_err(render)?
                }
                _ => rules.model_request(ctx).map_err(render)?,
            };
            let request = request.ok_or_else(|| fail("nothing to send".into()))?;
            let chat = rules.transport().is_chat();
            let sent = request
                .in_dialect(lane.dialect, chat)
                .map_err(|refusal| fail(format!("it cannot go to Anthropic: {refusal}")))?;
            let (path, body): (String, Json) = (sent.path, sent.translated.unwrap_or(request.body));
            let base = lane.base_urls().next().unwrap_or_default();
            let endpoint = Endpoint::parse(&format!("{base}{path}"), http::Method::POST)
                .map_err(|e| fail(e.to_string()))?;
            let body = Bytes::from(body.to_string());
            (Some(lane), endpoint, body, lane.headers.clone(), None)
        }
    };
    let client = match lane {
        Some(l) => l.client.clone(),
        None => sluice_provider::Client::new(1, None).map_err(|e| fail(e.to_string()))?,
    };
    let timeout = lane.map_or(Duration::from_secs(60), |l| l.timeout);
    let options = CallOptions {
        headers: &headers,
        content_type: content_type.as_deref(),
        expect_json: false,
    };
    match client.send(&endpoint, body, timeout, &options).await {
        Attempt::Ok(success) => Ok(success.latency),
        Attempt::Failed(f) => Err(fail(format!(
            "the probe call failed ({}); fix it before running, or plan without --probe",
            f.message
        ))),
    }
}
