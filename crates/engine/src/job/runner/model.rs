//! A model call of a step part (chat, embed, a conversation turn): the
//! request put into the provider's dialect, sent live (streamed when the step
//! asks) or through the provider's batch API, and the answer read back the
//! same way whichever path it took.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::Value as Json;
use sluice_provider::StreamStats;
use sluice_spec::Step;

use super::send::{send, CallOutcome, Outgoing, Target};
use super::{Unit, UnitContext};
use crate::calls::Tally;
use crate::item_error::ItemError;
use crate::job::batch::{BatchEnd, BatchRequest};
use crate::job::kinds::model_request::DialectRequest;
use crate::job::kinds::{self, JsonRequest};
use crate::job::lanes::Lane;
use crate::job::output::StepOutput;
use crate::progress::Progress;

/// One model call: which unit, step and part it belongs to, and its request
/// (OpenAI-shaped, as rendered).
pub(super) struct ModelCall<'a> {
    pub(super) unit: &'a Unit,
    pub(super) lane: &'a Lane,
    pub(super) step: &'a Step,
    pub(super) request: &'a JsonRequest,
    /// Fan-out element or conversation turn; -1 for a plain step.
    pub(super) part: i64,
    /// The request's fingerprint.
    pub(super) hash: u64,
    /// The step's `affinity` key, rendered and hashed.
    pub(super) affinity: Option<u64>,
}

/// How a model call ended.
pub(super) struct ModelEnd {
    pub(super) outcome: CallOutcome,
    pub(super) code: Option<u16>,
    /// A live call's last attempt; a batched call: from submission to its result.
    pub(super) latency: Duration,
    /// A streamed answer's timing.
    pub(super) stream: Option<StreamStats>,
    /// Answered through the batch API (so priced at batch prices).
    pub(super) batched: bool,
}

/// Sends `call` the way its provider takes it.
pub(super) async fn call_model(
    shared: &UnitContext,
    call: &ModelCall<'_>,
    tally: &mut Tally,
) -> ModelEnd {
    let lane = call.lane;
    let chat = kinds::of(&call.step.kind).transport().is_chat();
    // A file too large for this API fails its unit here, not at the API.
    if let Err(e) = sluice_provider::dialect::media::check_sizes(lane.dialect, &call.request.body) {
        let error = ItemError::new(
            "request_error",
            format!(
                "step {:?} to provider {:?}: {e}; nothing was sent",
                call.step.name, lane.name
            ),
        );
        return ended(CallOutcome::Failed(error), None);
    }
    // Only a translated body is a new value; an OpenAI one is sent as rendered.
    let DialectRequest {
        path,
        translated,
        warnings,
        estimate,
    } = match call.request.in_dialect(lane.dialect, chat) {
        Ok(request) => request,
        Err(refusal) => {
            let error = ItemError::new(
                "request_error",
                format!(
                    "step {:?} cannot go to provider {:?} (api = {:?}): {refusal}; nothing was sent",
                    call.step.name,
                    lane.name,
                    lane.dialect.name()
                ),
            );
            return ended(CallOutcome::Failed(error), None);
        }
    };
    for warning in &warnings {
        warn_once(shared.progress.engine(), &call.step.name, warning);
    }
    let body = translated.as_ref().unwrap_or(&call.request.body);
    if let Some(batcher) = shared.batches.lane(&lane.name) {
        let request = BatchRequest {
            custom_id: custom_id(call, &lane.name),
            path: path.clone(),
            body: body.clone(),
        };
        let end = {
            // Counted down however the wait ends (also when the unit is dropped).
            let _waiting = InBatch::enter(&shared.progress);
            batcher.call(call.unit, request).await
        };
        if let BatchEnd::Done { attempts, .. }
        | BatchEnd::Failed { attempts, .. }
        | BatchEnd::Live { attempts } = &end
        {
            // Each batch a request went into is an attempt, as a live call's would be.
            Progress::add(&shared.progress.attempts, u64::from(*attempts));
            Progress::add(
                &shared.progress.retries,
                u64::from(attempts.saturating_sub(1)),
            );
        }
        match end {
            BatchEnd::Done {
                status,
                body,
                latency,
                attempts,
            } => {
                tally.attempts += attempts;
                return ModelEnd {
                    outcome: CallOutcome::Done(body),
                    code: Some(status),
                    latency,
                    stream: None,
                    batched: true,
                };
            }
            BatchEnd::Failed {
                error,
                status,
                attempts,
            } => {
                tally.attempts += attempts;
                return ended(CallOutcome::Failed(error), status);
            }
            BatchEnd::Stopped => return ended(CallOutcome::Stopped, None),
            // Expired or failed in its batch, and the provider retries live.
            BatchEnd::Live { attempts } => tally.attempts += attempts,
        }
    }
    let stream = (call.step.stream && chat).then_some(lane.dialect);
    let text = match stream {
        Some(dialect) => {
            let mut body = body.clone();
            dialect.set_streaming(&mut body);
            body.to_string()
        }
        None => body.to_string(),
    };
    let out = Outgoing {
        body: Bytes::from(text),
        headers: &lane.headers,
        content_type: None,
        expect_json: true,
        estimate,
        stream,
    };
    let target = Target::Pool {
        affinity: call.affinity,
        pinned: None,
        path,
        method: Method::POST,
    };
    let sent = send(shared, lane, call.step, target, out, tally).await;
    ModelEnd {
        outcome: sent.outcome,
        code: sent.code,
        latency: sent.latency,
        stream: sent.stream,
        batched: false,
    }
}

/// Says once per engine and step what a translation left out (every call
/// of the step leaves out the same).
fn warn_once(engine: &crate::engine::Engine, step: &str, warning: &str) {
    if engine.first_time(format!("{step}\u{0}{warning}")) {
        tracing::warn!("step {step:?} on an Anthropic provider: not sent: {warning}");
    }
}

fn ended(outcome: CallOutcome, code: Option<u16>) -> ModelEnd {
    ModelEnd {
        outcome,
        code,
        latency: Duration::ZERO,
        stream: None,
        batched: false,
    }
}

/// A batched request's identity, the same in every run: its unit, step,
/// part, provider and fingerprint (a changed request is another request).
/// `[A-Za-z0-9_-]`, at most 64 characters, as Anthropic requires.
fn custom_id(call: &ModelCall<'_>, provider: &str) -> String {
    let key = serde_json::json!([call.unit.id, call.step.name, call.part, provider, call.hash]);
    let digest = xxhash_rust::xxh3::xxh3_128(key.to_string().as_bytes());
    format!("s{}-{digest:032x}", call.step.index)
}

/// A chat answer read from its dialect's body, with a streamed answer's timing.
pub(super) fn chat_part_output(
    wants_json: bool,
    lane: &Lane,
    body: &[u8],
    stream: Option<StreamStats>,
) -> Result<StepOutput, ItemError> {
    let mut output = kinds::chat::read_answer(wants_json, lane.dialect, body)?;
    if let Some(stats) = stream {
        let completion = output.usage.map_or(0, |u| u.completion_tokens);
        output.ttft_ms = stats.first_token.map(|d| d.as_millis() as u64);
        output.tokens_per_s = stats.tokens_per_second(completion).map(round2);
    }
    Ok(output)
}

/// Two decimals: a rate, not a measurement to the nanosecond.
pub(super) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A conversation's streaming figures from its turns: the mean time to first
/// token, and all completion tokens over all generation time.
pub(super) fn conversation_stream(
    turns: &[crate::job::output::Turn],
) -> (Option<u64>, Option<f64>) {
    let firsts: Vec<u64> = turns.iter().filter_map(|t| t.ttft_ms).collect();
    if firsts.is_empty() {
        return (None, None);
    }
    let mean = firsts.iter().sum::<u64>() / firsts.len() as u64;
    let (tokens, secs) = turns
        .iter()
        .filter_map(|t| {
            let tokens = t.usage?.completion_tokens as f64;
            let rate = t.tokens_per_s.filter(|r| *r > 0.0)?;
            Some((tokens, tokens / rate))
        })
        .fold((0.0, 0.0), |(a, b), (t, s)| (a + t, b + s));
    let rate = (secs > 0.0).then(|| round2(tokens / secs));
    (Some(mean), rate)
}

/// The model name of a rendered body, for prices.
pub(super) fn model_of(body: &Json) -> Option<&str> {
    body["model"].as_str()
}

/// One request counted in [`Progress::in_batch`] while it lives.
struct InBatch<'a>(&'a Progress);

impl<'a> InBatch<'a> {
    fn enter(progress: &'a Progress) -> InBatch<'a> {
        Progress::add(&progress.in_batch, 1);
        InBatch(progress)
    }
}

impl Drop for InBatch<'_> {
    fn drop(&mut self) {
        Progress::sub(&self.0.in_batch, 1);
    }
}
