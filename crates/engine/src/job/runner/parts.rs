//! One step part: reuse a recorded output or run it (chat, embed, http,
//! command), and record the outcome.

use std::time::{Duration, Instant};

use sluice_spec::{Fallback, Step};
use sluice_store::{ItemStatus, StepRecord};

use super::failure::PartError;
use super::model::{call_model, chat_part_output, ModelCall};
use super::send::{send, CallOutcome, Outgoing, Sent, Target};
use super::{PartEnd, RecordedParts, Unit, UnitContext, UnitTally};
use crate::calls::Tally;
use crate::clock::now_ms;
use crate::item_error::ItemError;
use crate::job::kinds::{self, Transport};
use crate::job::output::StepOutput;
use crate::job::timing;
use crate::progress::Progress;
use crate::writer::Message;

/// One step (or fan-out element): reuse or run, then record.
#[allow(clippy::too_many_arguments)]
pub(super) async fn part(
    shared: &UnitContext,
    unit: &Unit,
    step: &Step,
    ctx: &minijinja::Value,
    part: i64,
    file_stem: &str,
    recorded: &RecordedParts,
    tally: &mut UnitTally,
) -> PartEnd {
    let entered = now_ms();
    let hash = match kinds::fingerprint(step, ctx, part) {
        Ok(h) => h,
        Err(e) => return PartEnd::Failed(e.into()),
    };
    if let Some((h, output)) = recorded.get(&(step.name.clone(), part)) {
        if *h == hash {
            return PartEnd::Done(output.clone());
        }
    }
    let cache_key = step.cache_ttl.map(|_| cache_key(step, hash));
    if let (Some(ttl), Some(key)) = (step.cache_ttl, cache_key) {
        if let Some(mut output) = shared.cached(key, ttl).await {
            output.cached = Some(true);
            timing::set(&mut output, entered, now_ms());
            Progress::add(&shared.progress.cache_hits, 1);
            let end = PartEnd::Done(output);
            let none = Tally::default();
            record(
                shared,
                unit,
                step,
                part,
                hash,
                &end,
                &none,
                None,
                Duration::ZERO,
                now_ms(),
            )
            .await;
            return end;
        }
    }
    if shared.over_budget() {
        // Items stay pending; a rerun with a higher budget continues.
        return PartEnd::Stopped;
    }
    // One of the unit's `max_in_flight` places, then the step's own cap.
    let _unit_slot = match &unit.in_flight {
        Some(slots) => slots.clone().acquire_owned().await.ok(),
        None => None,
    };
    let _step_slot = match &shared.step_slots[step.index] {
        Some(slots) if step.for_each.is_none() => slots.clone().acquire_owned().await.ok(),
        _ => None,
    };
    let started = now_ms();
    let mut t = Tally::default();
    let (mut end, mut code, mut latency) = call_once(
        shared,
        unit,
        step,
        ctx,
        file_stem,
        None,
        (part, hash),
        &mut t,
    )
    .await;
    if let PartEnd::Done(o) = &mut end {
        o.latency_ms = Some(latency.as_millis() as u64);
    }
    if let (PartEnd::Failed(reason), Some(fallback)) = (&end, &step.fallback) {
        let reason = reason.clone();
        match fallback {
            Fallback::Value(value) => {
                end = PartEnd::Done(StepOutput {
                    text: Some(match value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }),
                    json: Some(value.clone()),
                    file: placeholder_file(&shared.job, value),
                    fallback: Some(reason.to_string()),
                    ..Default::default()
                });
            }
            Fallback::Provider(other) => {
                let key = (part, hash);
                let (again, c, l) =
                    call_once(shared, unit, step, ctx, file_stem, Some(other), key, &mut t).await;
                (end, code, latency) = match again {
                    PartEnd::Done(mut o) => {
                        o.fallback = Some(format!("provider {other} after: {reason}"));
                        o.latency_ms = Some(l.as_millis() as u64);
                        (PartEnd::Done(o), c, l)
                    }
                    PartEnd::Failed(then) => {
                        let both = PartError::Fallback {
                            first: Box::new(reason),
                            provider: other.clone(),
                            then: Box::new(then),
                        };
                        (PartEnd::Failed(both), c, l)
                    }
                    PartEnd::Stopped => (PartEnd::Stopped, c, l),
                };
            }
        }
        if matches!(end, PartEnd::Done(_)) {
            Progress::add(&shared.progress.fallbacks, 1);
        }
    }
    tally.attempts += t.attempts;
    tally.throttled += t.throttled;
    if let PartEnd::Done(o) = &mut end {
        timing::set(o, entered, now_ms());
    }
    if let PartEnd::Done(o) = &end {
        tally.add_usage(o.usage);
        if let (Some(key), None) = (cache_key, &o.fallback) {
            let _ = shared
                .tx
                .send(Message::Cache(key, o.to_value().to_string(), now_ms()))
                .await;
        }
    }
    record(
        shared, unit, step, part, hash, &end, &t, code, latency, started,
    )
    .await;
    end
}

/// A fallback value `{ file = "placeholder.png", ... }` stands in for a saved
/// file: its `file` becomes the output's `.file` (relative to the job file's
/// directory, like every path in a job), so later steps and readers of the
/// results find a path wherever a real call would have left one.
fn placeholder_file(job: &sluice_spec::Job, value: &serde_json::Value) -> Option<String> {
    let file = std::path::Path::new(value.get("file")?.as_str()?);
    let dir = job.path.parent().unwrap_or(std::path::Path::new(""));
    Some(dir.join(file).display().to_string())
}

/// The cache key of a step's request: its fingerprint and where it goes (the
/// same prompt to another provider is another answer).
fn cache_key(step: &Step, fingerprint: u64) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&fingerprint.to_le_bytes());
    hasher.update(step.provider.as_deref().unwrap_or("").as_bytes());
    hasher.digest()
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn record(
    shared: &UnitContext,
    unit: &Unit,
    step: &Step,
    part: i64,
    hash: u64,
    end: &PartEnd,
    tally: &Tally,
    code: Option<u16>,
    latency: Duration,
    started_at: i64,
) {
    let (status, output, error) = match end {
        PartEnd::Done(o) => (ItemStatus::Done, Some(o.to_value().to_string()), None),
        PartEnd::Failed(e) => {
            let text = e.to_string();
            shared.progress.stats.error(&unit.id, &step.name, &text);
            (ItemStatus::Failed, None, Some(text))
        }
        PartEnd::Stopped => return,
    };
    let usage = match end {
        // A cached answer's usage stays in its output, but no token was
        // spent on it: counting it would show a tokens/min no limit saw.
        PartEnd::Done(o) if o.cached != Some(true) => o.usage,
        _ => None,
    };
    let record = StepRecord {
        unit_id: unit.id.clone(),
        step: step.name.clone(),
        part,
        hash,
        status,
        attempts: tally.attempts,
        throttled: tally.throttled,
        status_code: code,
        prompt_tokens: usage.map(|u| u.prompt_tokens),
        completion_tokens: usage.map(|u| u.completion_tokens),
        latency_ms: latency.as_millis() as u64,
        started_at,
        finished_at: now_ms(),
        error,
        output,
    };
    // A send error means the writer died; its error is reported at the end.
    let _ = shared.tx.send(Message::Step(record)).await;
}

/// Sends one call of a chat, embed, http or command step, the way its kind
/// goes out; `key` is the part and the request's fingerprint (a batched
/// call's identity).
#[allow(clippy::too_many_arguments)]
async fn call_once(
    shared: &UnitContext,
    unit: &Unit,
    step: &Step,
    ctx: &minijinja::Value,
    file_stem: &str,
    provider: Option<&str>,
    key: (i64, u64),
    tally: &mut Tally,
) -> (PartEnd, Option<u16>, Duration) {
    // `provider` overrides the step's own (a fallback provider).
    let provider = provider.or(step.provider.as_deref());
    let rules = kinds::of(&step.kind);
    let not_sent = |why: PartError| (PartEnd::Failed(why), None, Duration::ZERO);
    let uncoded = |why: &str| not_sent(PartError::Uncoded(why.into()));
    match rules.transport() {
        Transport::Model { chat } => {
            let Some(lane) = provider.and_then(|p| shared.lanes.get(p)) else {
                return uncoded("the step has no provider");
            };
            let request = match rules.model_request(ctx) {
                Ok(Some(r)) => r,
                Ok(None) => return uncoded("not a JSON step"),
                Err(e) => return not_sent(e.into()),
            };
            let single = !request.body["input"].is_array();
            let model = request.body["model"].as_str().map(str::to_string);
            let affinity = match affinity_of(step, ctx) {
                Ok(a) => a,
                Err(e) => return not_sent(e.into()),
            };
            let call = ModelCall {
                unit,
                lane,
                step,
                request: &request,
                part: key.0,
                hash: key.1,
                affinity,
            };
            let end = match step.batch {
                Some(size) if !chat => super::embed_batch::call(shared, &call, size, tally).await,
                _ => call_model(shared, &call, tally).await,
            };
            let outcome = match end.outcome {
                CallOutcome::Done(body) => {
                    let parsed = if chat {
                        chat_part_output(rules.wants_json(), lane, &body, end.stream)
                    } else {
                        kinds::embed::read_answer(&body, single)
                    };
                    match parsed {
                        Ok(o) => {
                            shared.charge(lane, model.as_deref(), o.usage, end.batched);
                            PartEnd::Done(o)
                        }
                        Err(e) => PartEnd::Failed(e.into()),
                    }
                }
                CallOutcome::Failed(e) => PartEnd::Failed(e.into()),
                CallOutcome::Stopped => PartEnd::Stopped,
            };
            (outcome, end.code, end.latency)
        }
        Transport::Http => {
            let provider_lane = provider.and_then(|p| shared.lanes.get(p));
            let first_base = provider_lane.map(|l| l.first_base());
            let call = match rules.http_call(first_base, &[], ctx, shared.files.as_deref()) {
                Some(Ok(c)) => c,
                Some(Err(e)) => return not_sent(e.into()),
                None => return uncoded("not an http step"),
            };
            let mut headers: Vec<(String, String)> =
                provider_lane.map(|l| l.headers.clone()).unwrap_or_default();
            headers.extend(call.headers.iter().cloned());
            // A `path` step was built on the first base URL; each attempt
            // re-bases it on the least busy healthy one of the pool.
            // A `url` naming a host of the pool (e.g. the one an earlier
            // step's answer names) goes to that host, never re-based.
            let uri = call.endpoint.uri.to_string();
            let (pinned, rest) = match (provider_lane, call.by_url) {
                (Some(l), true) => match l.member_of(&uri) {
                    Some((i, path)) => (Some(i), Some(path)),
                    None => (None, None),
                },
                (_, true) => (None, None),
                (_, false) => (None, first_base.and_then(|b| uri.strip_prefix(b))),
            };
            let target = match (provider_lane, rest) {
                (Some(_), Some(path)) if path.starts_with('/') => Target::Pool {
                    affinity: match affinity_of(step, ctx) {
                        Ok(a) => a,
                        Err(e) => return not_sent(e.into()),
                    },
                    pinned,
                    path: path.to_string(),
                    method: call.endpoint.method.clone(),
                },
                _ => Target::Url(call.endpoint.clone()),
            };
            let lane = provider_lane.unwrap_or_else(|| shared.lanes.direct());
            let out = Outgoing {
                body: call.body.clone(),
                headers: &headers,
                content_type: call.content_type.as_deref(),
                expect_json: call.expect_json,
                estimate: sluice_limit::Cost::default(),
                stream: None,
            };
            let Sent {
                outcome: end,
                code,
                latency,
                content_type,
                ..
            } = send(shared, lane, step, target, out, tally).await;
            let end = match end {
                CallOutcome::Done(body) => match kinds::http::finish(
                    call.save,
                    &shared.output_dir,
                    &step.name,
                    file_stem,
                    content_type.as_deref(),
                    code.unwrap_or(200),
                    &body,
                ) {
                    Ok(out) => PartEnd::Done(out.into_step_output()),
                    Err(e) => PartEnd::Failed(e.into()),
                },
                CallOutcome::Failed(e) => PartEnd::Failed(e.into()),
                CallOutcome::Stopped => PartEnd::Stopped,
            };
            (end, code, latency)
        }
        Transport::Command => {
            let line = match rules.command_line(ctx) {
                Some(Ok(line)) => line,
                Some(Err(e)) => return not_sent(e.into()),
                None => return uncoded("not a command step"),
            };
            let _slot = shared.command_slots.clone().acquire_owned().await.ok();
            let timeout = step.timeout.unwrap_or(Duration::from_secs(600));
            tally.attempts += 1;
            let started = Instant::now();
            let result = kinds::command::run(&line.argv, line.stdin.as_deref(), timeout).await;
            let latency = started.elapsed();
            match result {
                Ok(out) => {
                    let code = u16::try_from(out.code).ok();
                    (PartEnd::Done(out.into_step_output()), code, latency)
                }
                Err(e) => {
                    let error = ItemError::new("command_error", e.to_string());
                    (PartEnd::Failed(error.into()), None, latency)
                }
            }
        }
        Transport::Turns => uncoded("conversation steps run turn by turn"),
    }
}

/// The step's `affinity` key for this part, rendered and hashed.
pub(super) fn affinity_of(
    step: &Step,
    ctx: &minijinja::Value,
) -> Result<Option<u64>, sluice_spec::RenderError> {
    step.affinity
        .as_ref()
        .map(|t| t.render(ctx).map(|k| crate::job::affinity::key(&k)))
        .transpose()
}
