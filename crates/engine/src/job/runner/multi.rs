//! Steps made of several parts: a fan-out over a list, and a conversation's turns.

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Map, Value as Json};
use sluice_spec::Step;

use super::failure::{PartError, StepFailure, Within};
use super::model::{call_model, chat_part_output, conversation_stream, model_of, ModelCall};
use super::parts::{part, record};
use super::send::CallOutcome;
use super::{
    context, Done, Failed, PartEnd, RecordedParts, StepEnd, Stopped, Unit, UnitContext, UnitTally,
};
use crate::calls::Tally;
use crate::clock::now_ms;
use crate::job::kinds::{self, hash_json};
use crate::job::output::{parse_json_text, StepOutput, Turn, Usage};
use crate::job::timing;

#[allow(clippy::too_many_arguments)]
pub(super) async fn fan_out(
    shared: &UnitContext,
    unit: &Unit,
    step: &Step,
    outputs: &Map<String, Json>,
    ctx: &minijinja::Value,
    for_each: &sluice_spec::Template,
    recorded: &RecordedParts,
    tally: &mut UnitTally,
) -> StepEnd {
    let list = match for_each.render_value(ctx) {
        Ok(Json::Array(list)) => list,
        Ok(other) => {
            let message = format!(
                "for_each must render to a list, got {} (template: {:?})",
                kind_of(&other),
                for_each.source()
            );
            return Failed(StepFailure::whole(PartError::Template(message)));
        }
        Err(e) => return Failed(StepFailure::whole(e)),
    };
    let width = step.concurrency.unwrap_or(4).max(1);
    let base_stem = kinds::http::safe_stem(&unit.id);
    // Futures built first, then run `width` at a time in order: a closure
    // inside the stream trips rustc's Send inference (rust-lang/rust#64552).
    let mut elements = Vec::with_capacity(list.len());
    for (i, element) in list.iter().enumerate() {
        let ctx = context(shared, unit, outputs, Some((element, i)));
        let stem = format!("{base_stem}-{i}");
        elements.push(async move {
            let mut t = UnitTally::default();
            let end = part(shared, unit, step, &ctx, i as i64, &stem, recorded, &mut t).await;
            (end, t)
        });
    }
    let results: Vec<(PartEnd, UnitTally)> = stream::iter(elements).buffered(width).collect().await;
    let mut values = Vec::with_capacity(results.len());
    let mut first_failure = None;
    for (i, (end, t)) in results.into_iter().enumerate() {
        tally.add(&t);
        match end {
            PartEnd::Done(o) => values.push(o.to_value()),
            PartEnd::Failed(e) if first_failure.is_none() => {
                first_failure = Some(StepFailure::within(Within::Element(i), e))
            }
            PartEnd::Failed(_) => {}
            PartEnd::Stopped => return Stopped,
        }
    }
    match first_failure {
        Some(why) => Failed(why),
        None => Done(Json::Array(values)),
    }
}

fn not_conversation() -> PartError {
    PartError::Uncoded("not a conversation".into())
}

fn kind_of(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

pub(super) async fn conversation(
    shared: &UnitContext,
    unit: &Unit,
    step: &Step,
    ctx: &minijinja::Value,
    recorded: &RecordedParts,
    tally: &mut UnitTally,
) -> StepEnd {
    let rules = kinds::of(&step.kind);
    if rules.transport() != kinds::Transport::Turns {
        return Failed(StepFailure::whole(not_conversation()));
    }
    let turns = rules.turns();
    let Some(lane) = step.provider.as_deref().and_then(|p| shared.lanes.get(p)) else {
        let why = PartError::Uncoded("the step has no provider".into());
        return Failed(StepFailure::whole(why));
    };
    let mut prompts: Vec<Json> = Vec::new();
    let mut answers: Vec<String> = Vec::new();
    let mut usages: Vec<Option<Usage>> = Vec::new();
    let mut streams: Vec<(Option<u64>, Option<f64>)> = Vec::new();
    let mut total = Usage::default();
    let mut latency_ms: Option<u64> = None;
    let mut times: Vec<Json> = Vec::with_capacity(turns.len());
    for (k, turn) in turns.iter().enumerate() {
        let entered = now_ms();
        let prompt = match turn.render(&kinds::conversation::turn_context(ctx, &answers)) {
            Ok(p) => p,
            Err(e) => return Failed(StepFailure::whole(e)),
        };
        prompts.push(prompt);
        let request = match rules.turn_request(ctx, &prompts, &answers) {
            Ok(Some(r)) => r,
            Ok(None) => return Failed(StepFailure::whole(not_conversation())),
            Err(e) => return Failed(StepFailure::whole(e)),
        };
        let hash = hash_json(&json!([step.name, k, request.path, request.body]));
        let part = k as i64;
        let output = if let Some((h, output)) = recorded.get(&(step.name.clone(), part)) {
            if *h == hash {
                Some(output.clone())
            } else {
                None
            }
        } else {
            None
        };
        let output = match output {
            Some(o) => o,
            None => {
                if shared.over_budget() {
                    return Stopped;
                }
                let started = now_ms();
                let _unit_slot = match &unit.in_flight {
                    Some(slots) => slots.clone().acquire_owned().await.ok(),
                    None => None,
                };
                let mut t = Tally::default();
                let affinity = match super::parts::affinity_of(step, ctx) {
                    Ok(a) => a,
                    Err(e) => return Failed(StepFailure::whole(e)),
                };
                let call = ModelCall {
                    unit,
                    lane,
                    step,
                    request: &request,
                    part,
                    hash,
                    affinity,
                };
                let ended = call_model(shared, &call, &mut t).await;
                let (code, latency) = (ended.code, ended.latency);
                let end = match ended.outcome {
                    CallOutcome::Done(body) => {
                        match chat_part_output(rules.wants_json(), lane, &body, ended.stream) {
                            Ok(mut o) => {
                                o.latency_ms = Some(latency.as_millis() as u64);
                                timing::set(&mut o, entered, now_ms());
                                let model = model_of(&request.body);
                                shared.charge(lane, model, o.usage, ended.batched);
                                PartEnd::Done(o)
                            }
                            Err(e) => PartEnd::Failed(e.into()),
                        }
                    }
                    CallOutcome::Failed(e) => PartEnd::Failed(e.into()),
                    CallOutcome::Stopped => PartEnd::Stopped,
                };
                tally.attempts += t.attempts;
                tally.throttled += t.throttled;
                record(
                    shared, unit, step, part, hash, &end, &t, code, latency, started,
                )
                .await;
                match end {
                    PartEnd::Done(o) => {
                        tally.add_usage(o.usage);
                        o
                    }
                    PartEnd::Failed(e) => {
                        return Failed(StepFailure::within(Within::Turn(k + 1), e))
                    }
                    PartEnd::Stopped => return Stopped,
                }
            }
        };
        if let Some(u) = output.usage {
            total.prompt_tokens += u.prompt_tokens;
            total.completion_tokens += u.completion_tokens;
        }
        if let Some(ms) = output.latency_ms {
            *latency_ms.get_or_insert(0) += ms;
        }
        times.push(json!({"started_at": output.started_at, "finished_at": output.finished_at}));
        answers.push(output.text.clone().unwrap_or_default());
        usages.push(output.usage);
        streams.push((output.ttft_ms, output.tokens_per_s));
    }
    let last = answers.last().cloned().unwrap_or_default();
    let turns: Vec<Turn> = prompts
        .into_iter()
        .zip(answers)
        .zip(usages.into_iter().zip(streams))
        .map(
            |((prompt, answer), (usage, (ttft_ms, tokens_per_s)))| Turn {
                prompt: kinds::conversation::prompt_text(&prompt),
                answer,
                usage,
                ttft_ms,
                tokens_per_s,
            },
        )
        .collect();
    let (ttft_ms, tokens_per_s) = conversation_stream(&turns);
    let (started_at, finished_at, duration_ms) = match timing::span(&times) {
        Some((s, f, d)) => (Some(s), Some(f), Some(d)),
        None => (None, None, None),
    };
    let out = StepOutput {
        started_at,
        finished_at,
        duration_ms,
        json: parse_json_text(&last),
        text: Some(last),
        usage: Some(total),
        turns: Some(turns),
        ttft_ms,
        tokens_per_s,
        latency_ms,
        ..Default::default()
    };
    Done(out.to_value())
}
