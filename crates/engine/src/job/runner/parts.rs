//! One step part: reuse a recorded output or run it (chat, embed, http,
//! command), and record the outcome.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use sluice_provider::{CallOptions, Endpoint};
use sluice_spec::{Step, StepKind};
use sluice_store::{ItemStatus, StepRecord};

use super::{Known, PartEnd, Shared, Unit, UnitTally};
use crate::calls::{self, CallEnd, CallEnv, CallRequest, Tally};
use crate::job::lanes::Lane;
use crate::job::output::{parse_json_text, StepOutput};
use crate::job::requests::{self, JsonRequest};
use crate::quick::now_ms;
use crate::writer::Message;

/// One step (or fan-out element): reuse or run, then record.
#[allow(clippy::too_many_arguments)]
pub(super) async fn part(
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
pub(super) async fn record(
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
pub(super) enum CallOutcome {
    Done(Bytes),
    Failed(String),
    Stopped,
}

/// Calls a JSON API on `lane` with its limits and retries.
pub(super) async fn call_json(
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
