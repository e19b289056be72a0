//! One unit through every step, in order: render, reuse a recorded output when
//! the request is unchanged, otherwise call (with fan-out and conversation
//! turns as parts), record each part, and finally the unit itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::Method;
use serde_json::{json, Map, Value as Json};
use sluice_provider::{CallOptions, Endpoint};
use sluice_spec::{Job, Step, StepKind};
use sluice_store::{ItemRecord, ItemStatus, SqliteStore, StepRecord, Store};
use tokio::sync::{mpsc, Semaphore};

use super::lanes::{Lane, Lanes};
use super::output::{parse_json_text, StepOutput, Turn, Usage};
use super::requests::{self, hash_json, JsonRequest};
use crate::calls::{self, CallEnd, CallEnv, CallRequest, Tally};
use crate::progress::Progress;
use crate::quick::now_ms;
use crate::writer::Message;

/// What every unit task shares.
pub(crate) struct Shared {
    pub(crate) job: Arc<Job>,
    pub(crate) lanes: Lanes,
    pub(crate) progress: Arc<Progress>,
    pub(crate) stopping: AtomicBool,
    pub(crate) tx: mpsc::Sender<Message>,
    /// Step-wide caps (non-fan-out steps with `concurrency`), by step index.
    pub(crate) step_slots: Vec<Option<Arc<Semaphore>>>,
    /// Local programs in flight at most (default: the number of CPUs).
    pub(crate) command_slots: Arc<Semaphore>,
    pub(crate) output_dir: PathBuf,
    /// `env` for templates: only the variables the job lists.
    pub(crate) env: Json,
    /// Reads earlier step records on resume; `None` for a new run.
    pub(crate) reader: Option<Mutex<SqliteStore>>,
    pub(crate) run_id: String,
}

/// An input item × one matrix combination.
pub(crate) struct Unit {
    pub(crate) id: String,
    pub(crate) item_id: String,
    /// Export order.
    pub(crate) idx: u64,
    pub(crate) index: u64,
    pub(crate) item: Json,
    pub(crate) matrix: Map<String, Json>,
    pub(crate) hash: u64,
}

/// A part's end: its output, a failure message, or the run stopping.
enum PartEnd {
    Done(StepOutput),
    Failed(String),
    Stopped,
}

/// Totals over a unit's calls made in this run.
#[derive(Default)]
struct UnitTally {
    attempts: u32,
    throttled: u32,
    usage: Usage,
}

/// Runs `unit` through the job; `None` when the run stopped first (the unit
/// stays pending, its finished steps recorded).
pub(crate) async fn run_unit(shared: &Shared, unit: Unit) -> Option<ItemRecord> {
    let started_at = now_ms();
    let clock = Instant::now();
    let known = known_parts(shared, &unit.id);
    let mut outputs = Map::new();
    let mut tally = UnitTally::default();
    let mut failure: Option<String> = None;
    for step in &shared.job.steps {
        let ctx = context(shared, &unit, &outputs, None);
        let end = if let Some(for_each) = &step.for_each {
            fan_out(
                shared, &unit, step, &outputs, &ctx, for_each, &known, &mut tally,
            )
            .await
        } else if matches!(step.kind, StepKind::Conversation { .. }) {
            conversation(shared, &unit, step, &ctx, &known, &mut tally).await
        } else {
            let stem = crate::steps::http::safe_stem(&unit.id);
            part(shared, &unit, step, &ctx, -1, &stem, &known, &mut tally)
                .await
                .map_done(|o| o.to_value())
        };
        match end {
            Done(value) => {
                outputs.insert(step.name.clone(), value);
            }
            Failed(message) => {
                failure = Some(unit_error(&step.name, &message));
                break;
            }
            Stopped => return None,
        }
    }
    let status = if failure.is_some() {
        ItemStatus::Failed
    } else {
        ItemStatus::Done
    };
    let response = json!({
        "item_id": unit.item_id,
        "matrix": unit.matrix,
        "steps": outputs,
    });
    Some(ItemRecord {
        item_id: unit.id,
        idx: unit.idx,
        hash: unit.hash,
        status,
        attempts: tally.attempts,
        throttled: tally.throttled,
        status_code: None,
        response: Some(response.to_string()),
        error: failure,
        prompt_tokens: Some(tally.usage.prompt_tokens),
        completion_tokens: Some(tally.usage.completion_tokens),
        latency_ms: clock.elapsed().as_millis() as u64,
        started_at,
        finished_at: now_ms(),
        metadata: None,
        custom_id: Some(unit.item_id),
    })
}

/// `code: step NAME: message`: the failure's own code first (`server_error`,
/// `timeout`, …; `template_error` for a template that did not render), so
/// exports can group by it, then the step.
fn unit_error(step: &str, message: &str) -> String {
    let coded = message.split_once(": ").filter(|(code, _)| {
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    });
    match coded {
        Some((code, rest)) => format!("{code}: step {step}: {rest}"),
        None if message.contains("(template: ") => {
            format!("template_error: step {step}: {message}")
        }
        None => format!("step_failed: step {step}: {message}"),
    }
}

/// A step's end with its output as JSON.
enum StepEnd {
    Done(Json),
    Failed(String),
    Stopped,
}
use StepEnd::{Done, Failed, Stopped};

impl PartEnd {
    fn map_done(self, f: impl FnOnce(StepOutput) -> Json) -> StepEnd {
        match self {
            PartEnd::Done(o) => Done(f(o)),
            PartEnd::Failed(m) => Failed(m),
            PartEnd::Stopped => Stopped,
        }
    }
}

type Known = HashMap<(String, i64), (u64, StepOutput)>;

/// Done parts recorded by earlier runs of this unit: (step, part) → (hash, output).
fn known_parts(shared: &Shared, unit_id: &str) -> Known {
    let Some(reader) = &shared.reader else {
        return Known::new();
    };
    let mut store = reader.lock().unwrap_or_else(|e| e.into_inner());
    let Ok(records) = store.unit_steps(&shared.run_id, unit_id) else {
        return Known::new();
    };
    records
        .into_iter()
        .filter(|r| r.status == ItemStatus::Done)
        .filter_map(|r| {
            let output = serde_json::from_str(r.output.as_deref()?).ok()?;
            Some(((r.step, r.part), (r.hash, output)))
        })
        .collect()
}

/// The template variables of one unit (and fan-out element).
fn context(
    shared: &Shared,
    unit: &Unit,
    steps: &Map<String, Json>,
    each: Option<(&Json, usize)>,
) -> minijinja::Value {
    let mut ctx = json!({
        "item": unit.item,
        "index": unit.index,
        "matrix": unit.matrix,
        "env": shared.env,
        "steps": steps,
    });
    if let Some((element, i)) = each {
        ctx["each"] = element.clone();
        ctx["each_index"] = json!(i);
    }
    minijinja::Value::from(minijinja::value::Serde(ctx))
}

#[allow(clippy::too_many_arguments)]
async fn fan_out(
    shared: &Shared,
    unit: &Unit,
    step: &Step,
    outputs: &Map<String, Json>,
    ctx: &minijinja::Value,
    for_each: &sluice_spec::Template,
    known: &Known,
    tally: &mut UnitTally,
) -> StepEnd {
    let list = match for_each.render_value(ctx) {
        Ok(Json::Array(list)) => list,
        Ok(other) => {
            return Failed(format!(
                "for_each must render to a list, got {} (template: {:?})",
                kind_of(&other),
                for_each.source()
            ))
        }
        Err(e) => return Failed(e.to_string()),
    };
    let width = step.concurrency.unwrap_or(4).max(1);
    let base_stem = crate::steps::http::safe_stem(&unit.id);
    // Futures built first, then run `width` at a time in order: a closure
    // inside the stream trips rustc's Send inference (rust-lang/rust#64552).
    let mut elements = Vec::with_capacity(list.len());
    for (i, element) in list.iter().enumerate() {
        let ctx = context(shared, unit, outputs, Some((element, i)));
        let stem = format!("{base_stem}-{i}");
        elements.push(async move {
            let mut t = UnitTally::default();
            let end = part(shared, unit, step, &ctx, i as i64, &stem, known, &mut t).await;
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
            PartEnd::Failed(m) if first_failure.is_none() => {
                first_failure = Some(format!("element {i}: {m}"))
            }
            PartEnd::Failed(_) => {}
            PartEnd::Stopped => return Stopped,
        }
    }
    match first_failure {
        Some(m) => Failed(m),
        None => Done(Json::Array(values)),
    }
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

async fn conversation(
    shared: &Shared,
    unit: &Unit,
    step: &Step,
    ctx: &minijinja::Value,
    known: &Known,
    tally: &mut UnitTally,
) -> StepEnd {
    let StepKind::Conversation { turns, .. } = &step.kind else {
        return Failed("not a conversation".into());
    };
    let Some(lane) = step.provider.as_deref().and_then(|p| shared.lanes.get(p)) else {
        return Failed("the step has no provider".into());
    };
    let mut prompts: Vec<String> = Vec::new();
    let mut answers: Vec<String> = Vec::new();
    let mut usages: Vec<Option<Usage>> = Vec::new();
    let mut total = Usage::default();
    for (k, turn) in turns.iter().enumerate() {
        // A turn may quote earlier answers: `answers[0]`.
        let mut turn_ctx: Json = serde_json::to_value(ctx).unwrap_or(Json::Null);
        turn_ctx["answers"] = json!(answers);
        let turn_ctx = minijinja::Value::from(minijinja::value::Serde(turn_ctx));
        let prompt = match turn.render(&turn_ctx) {
            Ok(p) => p,
            Err(e) => return Failed(e.to_string()),
        };
        prompts.push(prompt.clone());
        let request = match requests::conversation_request(step, ctx, &prompts, &answers) {
            Ok(Some(r)) => r,
            Ok(None) => return Failed("not a conversation".into()),
            Err(e) => return Failed(e.to_string()),
        };
        let hash = hash_json(&json!([step.name, k, request.path, request.body]));
        let part = k as i64;
        let output = if let Some((h, output)) = known.get(&(step.name.clone(), part)) {
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
                let started = now_ms();
                let mut t = Tally::default();
                let (end, code, latency) = call_json(shared, lane, step, &request, &mut t).await;
                let end = match end {
                    CallOutcome::Done(body) => match requests::chat_output(step, &body) {
                        Ok(o) => PartEnd::Done(o),
                        Err(m) => PartEnd::Failed(m),
                    },
                    CallOutcome::Failed(m) => PartEnd::Failed(m),
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
                    PartEnd::Failed(m) => return Failed(format!("turn {}: {m}", k + 1)),
                    PartEnd::Stopped => return Stopped,
                }
            }
        };
        if let Some(u) = output.usage {
            total.prompt_tokens += u.prompt_tokens;
            total.completion_tokens += u.completion_tokens;
        }
        answers.push(output.text.clone().unwrap_or_default());
        usages.push(output.usage);
    }
    let last = answers.last().cloned().unwrap_or_default();
    let out = StepOutput {
        json: parse_json_text(&last),
        text: Some(last),
        usage: Some(total),
        turns: Some(
            prompts
                .into_iter()
                .zip(answers)
                .zip(usages)
                .map(|((prompt, answer), usage)| Turn {
                    prompt,
                    answer,
                    usage,
                })
                .collect(),
        ),
        ..Default::default()
    };
    Done(out.to_value())
}

impl UnitTally {
    fn add(&mut self, other: &UnitTally) {
        self.attempts += other.attempts;
        self.throttled += other.throttled;
        self.usage.prompt_tokens += other.usage.prompt_tokens;
        self.usage.completion_tokens += other.usage.completion_tokens;
    }

    fn add_usage(&mut self, usage: Option<Usage>) {
        if let Some(u) = usage {
            self.usage.prompt_tokens += u.prompt_tokens;
            self.usage.completion_tokens += u.completion_tokens;
        }
    }
}

/// One step (or fan-out element): reuse or run, then record.
#[allow(clippy::too_many_arguments)]
async fn part(
    shared: &Shared,
    unit: &Unit,
    step: &Step,
    ctx: &minijinja::Value,
    part: i64,
    file_stem: &str,
    known: &Known,
    tally: &mut UnitTally,
) -> PartEnd {
    let hash = match requests::fingerprint(step, ctx, part) {
        Ok(h) => h,
        Err(e) => return PartEnd::Failed(e.to_string()),
    };
    if let Some((h, output)) = known.get(&(step.name.clone(), part)) {
        if *h == hash {
            return PartEnd::Done(output.clone());
        }
    }
    let _step_slot = match &shared.step_slots[step.index] {
        Some(slots) if step.for_each.is_none() => slots.clone().acquire_owned().await.ok(),
        _ => None,
    };
    let started = now_ms();
    let mut t = Tally::default();
    let (end, code, latency) = execute(shared, unit, step, ctx, file_stem, &mut t).await;
    tally.attempts += t.attempts;
    tally.throttled += t.throttled;
    if let PartEnd::Done(o) = &end {
        tally.add_usage(o.usage);
    }
    record(
        shared, unit, step, part, hash, &end, &t, code, latency, started,
    )
    .await;
    end
}

#[allow(clippy::too_many_arguments)]
async fn record(
    shared: &Shared,
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
        PartEnd::Failed(m) => (ItemStatus::Failed, None, Some(m.clone())),
        PartEnd::Stopped => return,
    };
    let usage = match end {
        PartEnd::Done(o) => o.usage,
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

/// How an HTTP call of a step ended.
enum CallOutcome {
    Done(Bytes),
    Failed(String),
    Stopped,
}

/// Calls a JSON API on `lane` with its limits and retries.
async fn call_json(
    shared: &Shared,
    lane: &Lane,
    step: &Step,
    request: &JsonRequest,
    tally: &mut Tally,
) -> (CallOutcome, Option<u16>, Duration) {
    let base = lane.base();
    let url = format!("{}{}", base.url, request.path);
    let endpoint = match Endpoint::parse(&url, Method::POST) {
        Ok(e) => e,
        Err(e) => {
            return (
                CallOutcome::Failed(format!("request_error: {e}")),
                None,
                Duration::ZERO,
            )
        }
    };
    let body = Bytes::from(request.body.to_string());
    let (end, _) = send(
        shared,
        lane,
        step,
        &endpoint,
        body,
        &lane.headers,
        None,
        true,
        request.estimate,
        tally,
    )
    .await;
    end
}

/// Sends one call on `lane`, holding the provider's concurrency slot.
#[allow(clippy::too_many_arguments)]
async fn send(
    shared: &Shared,
    lane: &Lane,
    step: &Step,
    endpoint: &Endpoint,
    body: Bytes,
    headers: &[(String, String)],
    content_type: Option<&str>,
    expect_json: bool,
    estimate: u64,
    tally: &mut Tally,
) -> ((CallOutcome, Option<u16>, Duration), Option<String>) {
    let _slot = match &lane.slots {
        Some(slots) => slots.clone().acquire_owned().await.ok(),
        None => None,
    };
    let (retries, backoff, timeout) = lane.policy(step);
    let env = CallEnv {
        client: &lane.client,
        limiter: &lane.limiter,
        progress: &shared.progress,
        stopping: &shared.stopping,
        backoff,
        retries,
        timeout,
    };
    let request = CallRequest {
        endpoint,
        body,
        options: CallOptions {
            headers,
            content_type,
            expect_json,
        },
        estimate,
    };
    match calls::call(&env, &request, tally).await {
        CallEnd::Done(success) => {
            let code = Some(success.status);
            let latency = success.latency;
            let content_type = success.content_type.clone();
            (
                (CallOutcome::Done(success.body), code, latency),
                content_type,
            )
        }
        CallEnd::Failed {
            error,
            status,
            latency,
            ..
        } => ((CallOutcome::Failed(error), status, latency), None),
        CallEnd::Stopped => ((CallOutcome::Stopped, None, Duration::ZERO), None),
    }
}

/// Runs a chat, embed, http or command step once.
async fn execute(
    shared: &Shared,
    unit: &Unit,
    step: &Step,
    ctx: &minijinja::Value,
    file_stem: &str,
    tally: &mut Tally,
) -> (PartEnd, Option<u16>, Duration) {
    match &step.kind {
        StepKind::Chat { .. } | StepKind::Embed { .. } => {
            let Some(lane) = step.provider.as_deref().and_then(|p| shared.lanes.get(p)) else {
                return (
                    PartEnd::Failed("the step has no provider".into()),
                    None,
                    Duration::ZERO,
                );
            };
            let request = match requests::json_request(step, ctx) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    return (
                        PartEnd::Failed("not a JSON step".into()),
                        None,
                        Duration::ZERO,
                    )
                }
                Err(e) => return (PartEnd::Failed(e.to_string()), None, Duration::ZERO),
            };
            let single = !request.body["input"].is_array();
            let (end, code, latency) = call_json(shared, lane, step, &request, tally).await;
            let end = match end {
                CallOutcome::Done(body) => {
                    let parsed = if matches!(step.kind, StepKind::Chat { .. }) {
                        requests::chat_output(step, &body)
                    } else {
                        requests::embed_output(&body, single)
                    };
                    match parsed {
                        Ok(o) => PartEnd::Done(o),
                        Err(m) => PartEnd::Failed(m),
                    }
                }
                CallOutcome::Failed(m) => PartEnd::Failed(m),
                CallOutcome::Stopped => PartEnd::Stopped,
            };
            (end, code, latency)
        }
        StepKind::Http { save, .. } => {
            let provider_lane = step.provider.as_deref().and_then(|p| shared.lanes.get(p));
            let base = provider_lane.map(|l| l.base());
            let call =
                match crate::steps::http::build(&step.kind, base.as_ref().map(|b| b.url), &[], ctx)
                {
                    Ok(c) => c,
                    Err(e) => return (PartEnd::Failed(e.to_string()), None, Duration::ZERO),
                };
            let mut headers: Vec<(String, String)> =
                provider_lane.map(|l| l.headers.clone()).unwrap_or_default();
            headers.extend(call.headers.iter().cloned());
            let lane = provider_lane.unwrap_or_else(|| shared.lanes.direct());
            let ((end, code, latency), content_type) = send(
                shared,
                lane,
                step,
                &call.endpoint,
                call.body.clone(),
                &headers,
                call.content_type.as_deref(),
                call.expect_json,
                0,
                tally,
            )
            .await;
            drop(base);
            let end = match end {
                CallOutcome::Done(body) => match crate::steps::http::finish(
                    *save,
                    &shared.output_dir,
                    &step.name,
                    file_stem,
                    content_type.as_deref(),
                    code.unwrap_or(200),
                    &body,
                ) {
                    Ok(out) => PartEnd::Done(StepOutput {
                        text: out.text,
                        json: out.json,
                        file: out.file.map(|p| p.display().to_string()),
                        status: Some(i64::from(out.status)),
                        usage: None,
                        turns: None,
                    }),
                    Err(e) => PartEnd::Failed(e.to_string()),
                },
                CallOutcome::Failed(m) => PartEnd::Failed(m),
                CallOutcome::Stopped => PartEnd::Stopped,
            };
            (end, code, latency)
        }
        StepKind::Command { argv, stdin } => {
            let mut args = Vec::with_capacity(argv.len());
            for t in argv {
                match t.render(ctx) {
                    Ok(a) => args.push(a),
                    Err(e) => return (PartEnd::Failed(e.to_string()), None, Duration::ZERO),
                }
            }
            let input = match stdin.as_ref().map(|t| t.render(ctx)).transpose() {
                Ok(i) => i,
                Err(e) => return (PartEnd::Failed(e.to_string()), None, Duration::ZERO),
            };
            let _slot = shared.command_slots.clone().acquire_owned().await.ok();
            let timeout = step.timeout.unwrap_or(Duration::from_secs(600));
            tally.attempts += 1;
            let started = Instant::now();
            let result = crate::steps::command::run(&args, input.as_deref(), timeout).await;
            let latency = started.elapsed();
            let _ = unit;
            match result {
                Ok(out) => {
                    let code = u16::try_from(out.code).ok();
                    (
                        PartEnd::Done(StepOutput {
                            json: parse_json_text(&out.stdout),
                            text: Some(out.stdout),
                            status: Some(i64::from(out.code)),
                            ..Default::default()
                        }),
                        code,
                        latency,
                    )
                }
                Err(e) => (
                    PartEnd::Failed(format!("command_error: {e}")),
                    None,
                    latency,
                ),
            }
        }
        StepKind::Conversation { .. } => (
            PartEnd::Failed("conversation steps run turn by turn".into()),
            None,
            Duration::ZERO,
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_errors_lead_with_the_failure_code() {
        assert_eq!(
            super::unit_error("a", "server_error: HTTP 500 (after 1 attempt)"),
            "server_error: step a: HTTP 500 (after 1 attempt)"
        );
        assert_eq!(
            super::unit_error(
                "b",
                "steps.b.json.x: undefined value (template: \"{{ item.x }}\")"
            ),
            "template_error: step b: steps.b.json.x: undefined value (template: \"{{ item.x }}\")"
        );
        assert_eq!(
            super::unit_error("c", "element 2: boom"),
            "step_failed: step c: element 2: boom"
        );
    }
}
