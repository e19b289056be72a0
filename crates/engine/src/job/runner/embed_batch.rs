//! `batch = N` on an `embed` step: the inputs of up to N units that reach the
//! step together go in one embeddings request, and each unit gets its own
//! vectors back (with its share of the reported tokens), so 2,000 texts make
//! 20 calls instead of 2,000.
//!
//! No task of its own: the first unit to arrive leads a gathering. It waits
//! until N units joined or [`WINDOW`] passed, sends their request once
//! (limits reserve the whole request's tokens; a retry resends it whole),
//! and hands each member its part. Each unit then records its own step, so a
//! resumed run reuses every unit's vectors on their own. A leader that goes
//! away before it sent (its unit cut by `unit_timeout`) leaves the others to
//! gather again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::Method;
use serde_json::{json, Value as Json};
use sluice_limit::Cost;
use tokio::sync::{oneshot, Notify};

use super::model::{ModelCall, ModelEnd};
use super::send::{send, CallOutcome, Outgoing, Target};
use super::UnitContext;
use crate::calls::Tally;
use crate::item_error::ItemError;

/// How long a leader waits for its gathering to fill: long enough for the
/// units that reach the step together, short beside a call.
const WINDOW: Duration = Duration::from_millis(50);

/// The gatherings open now, by step, provider and request (model and
/// params): only units whose requests differ in their input alone share one.
#[derive(Default)]
pub(crate) struct Gatherings {
    open: Mutex<HashMap<u64, Gathering>>,
}

struct Gathering {
    members: Vec<Member>,
    full: Arc<Notify>,
}

/// One unit's place in a gathering.
struct Member {
    inputs: Vec<Json>,
    estimate: Cost,
    reply: oneshot::Sender<Share>,
}

/// What a member gets back: its answer (its own vectors as an embeddings
/// body), and how the shared request went.
struct Share {
    outcome: CallOutcome,
    code: Option<u16>,
    latency: Duration,
    tally: Tally,
}

/// Sends `call` (an embed request) in a request shared with up to `size`
/// units, and returns this unit's part as if it had been sent alone.
pub(super) async fn call(
    shared: &UnitContext,
    call: &ModelCall<'_>,
    size: usize,
    tally: &mut Tally,
) -> ModelEnd {
    let key = key(call);
    let inputs = match &call.request.body["input"] {
        Json::Array(list) => list.clone(),
        one => vec![one.clone()],
    };
    loop {
        let (tx, rx) = oneshot::channel();
        let member = Member {
            inputs: inputs.clone(),
            estimate: call.request.estimate,
            reply: tx,
        };
        if let Some(full) = shared.embed_batches.join(key, member, size) {
            lead(shared, call, key, full, size).await;
        }
        // A closed channel: the leader went away before sending; gather again.
        if let Ok(share) = rx.await {
            tally.attempts += share.tally.attempts;
            tally.throttled += share.tally.throttled;
            return ModelEnd {
                outcome: share.outcome,
                code: share.code,
                latency: share.latency,
                stream: None,
                batched: false,
            };
        }
        if shared.stopping.is_set() {
            return ModelEnd {
                outcome: CallOutcome::Stopped,
                code: None,
                latency: Duration::ZERO,
                stream: None,
                batched: false,
            };
        }
    }
}

impl Gatherings {
    /// Adds `member` to the open gathering for `key`; `Some` (what says it
    /// is full) when it opened a new one, which this caller then leads.
    fn join(&self, key: u64, member: Member, size: usize) -> Option<Arc<Notify>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = open.get_mut(&key) {
            g.members.push(member);
            if g.members.len() >= size {
                g.full.notify_one();
            }
            return None;
        }
        let full = Arc::new(Notify::new());
        open.insert(
            key,
            Gathering {
                members: vec![member],
                full: full.clone(),
            },
        );
        Some(full)
    }

    fn close(&self, key: u64) -> Vec<Member> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&key).map(|g| g.members).unwrap_or_default()
    }
}

/// Closes the gathering it leaves if its leader is dropped before sending:
/// the members' channels close and they gather again.
struct Leading<'a> {
    gatherings: &'a Gatherings,
    key: u64,
    armed: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.armed {
            drop(self.gatherings.close(self.key));
        }
    }
}

/// Waits for the gathering to fill (or the window to pass), then sends it
/// in requests of at most `size` units and answers every member.
async fn lead(
    shared: &UnitContext,
    call: &ModelCall<'_>,
    key: u64,
    full: Arc<Notify>,
    size: usize,
) {
    let mut leading = Leading {
        gatherings: &shared.embed_batches,
        key,
        armed: true,
    };
    if size > 1 {
        tokio::select! {
            _ = full.notified() => {}
            _ = tokio::time::sleep(WINDOW) => {}
        }
    }
    let mut members = shared.embed_batches.close(key);
    leading.armed = false;
    let mut groups = Vec::new();
    while !members.is_empty() {
        let rest = members.split_off(members.len().min(size));
        groups.push(std::mem::replace(&mut members, rest));
    }
    join_all(groups.into_iter().map(|g| send_group(shared, call, g))).await;
}

/// One request for `members`; each gets its vectors, or the failure.
async fn send_group(shared: &UnitContext, call: &ModelCall<'_>, members: Vec<Member>) {
    let mut body = call.request.body.clone();
    let all: Vec<Json> = members.iter().flat_map(|m| m.inputs.clone()).collect();
    let count = all.len();
    body["input"] = Json::Array(all);
    let estimate = members.iter().fold(Cost::default(), |a, m| Cost {
        input: a.input + m.estimate.input,
        output: a.output + m.estimate.output,
    });
    let out = Outgoing {
        body: Bytes::from(body.to_string()),
        headers: &call.lane.headers,
        content_type: None,
        expect_json: true,
        estimate,
        stream: None,
    };
    let target = Target::Pool {
        affinity: call.affinity,
        pinned: None,
        path: call.request.path.clone(),
        method: Method::POST,
    };
    let mut t = Tally::default();
    let sent = send(shared, call.lane, call.step, target, out, &mut t).await;
    let parts = match sent.outcome {
        CallOutcome::Done(answer) => split(&answer, &members, count),
        CallOutcome::Failed(m) => Err(m),
        CallOutcome::Stopped => {
            for m in members {
                let _ = m.reply.send(Share {
                    outcome: CallOutcome::Stopped,
                    code: None,
                    latency: sent.latency,
                    tally: Tally::default(),
                });
            }
            return;
        }
    };
    let units = members.len();
    match parts {
        Ok(bodies) => {
            for (m, b) in members.into_iter().zip(bodies) {
                let _ = m.reply.send(Share {
                    outcome: CallOutcome::Done(b),
                    code: sent.code,
                    latency: sent.latency,
                    tally: Tally { ..t },
                });
            }
        }
        Err(error) => {
            let message = format!("{} (a request batching {units} units)", error.message);
            let error = ItemError::new(error.code, message);
            for m in members {
                let _ = m.reply.send(Share {
                    outcome: CallOutcome::Failed(error.clone()),
                    code: sent.code,
                    latency: sent.latency,
                    tally: Tally { ..t },
                });
            }
        }
    }
}

/// Each member's part of the shared answer, as the body of an answer to its
/// own request: its vectors (`index` from 0) and its share of the tokens
/// (by its estimate; the last takes what rounding left).
fn split(answer: &[u8], members: &[Member], count: usize) -> Result<Vec<Bytes>, ItemError> {
    let bad = |message: String| ItemError::new("bad_response", message);
    let value: Json = serde_json::from_slice(answer).map_err(|e| bad(e.to_string()))?;
    let mut vectors: Vec<(u64, Json)> = value["data"]
        .as_array()
        .ok_or_else(|| bad("the answer has no data list".into()))?
        .iter()
        .map(|d| (d["index"].as_u64().unwrap_or(0), d["embedding"].clone()))
        .collect();
    if vectors.len() != count {
        return Err(bad(format!("{} vectors for {count} inputs", vectors.len())));
    }
    vectors.sort_by_key(|(i, _)| *i);
    let usage = &value["usage"];
    let total = usage["prompt_tokens"]
        .as_u64()
        .or_else(|| usage["input_tokens"].as_u64());
    let weights: Vec<u64> = members.iter().map(|m| m.estimate.input.max(1)).collect();
    let weight_sum: u64 = weights.iter().sum();
    let mut given = 0;
    let mut next = vectors.into_iter().map(|(_, v)| v);
    let mut out = Vec::with_capacity(members.len());
    for (k, m) in members.iter().enumerate() {
        let data: Vec<Json> = (0..m.inputs.len())
            .map(|i| json!({"object": "embedding", "index": i, "embedding": next.next()}))
            .collect();
        let mut part = json!({"object": "list", "data": data, "model": value["model"]});
        if let Some(total) = total {
            let share = if k + 1 == members.len() {
                total - given
            } else {
                total * weights[k] / weight_sum
            };
            given += share;
            part["usage"] = json!({"prompt_tokens": share, "total_tokens": share});
        }
        out.push(Bytes::from(part.to_string()));
    }
    Ok(out)
}

/// The gathering `call` belongs to: its step, provider and request but its input.
fn key(call: &ModelCall<'_>) -> u64 {
    let mut body = call.request.body.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("input");
    }
    let text = json!([
        call.step.name,
        call.lane.name,
        call.request.path,
        call.affinity,
        body
    ])
    .to_string();
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(inputs: usize, tokens: u64) -> Member {
        Member {
            inputs: vec![json!("x"); inputs],
            estimate: Cost {
                input: tokens,
                output: 0,
            },
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn each_member_gets_its_own_vectors_and_a_share_of_the_tokens() {
        let answer = json!({"model": "e", "data": [
            {"index": 2, "embedding": [2.0]},
            {"index": 0, "embedding": [0.0]},
            {"index": 1, "embedding": [1.0]},
        ], "usage": {"prompt_tokens": 10, "total_tokens": 10}});
        let members = [member(1, 3), member(2, 6)];
        let parts = split(answer.to_string().as_bytes(), &members, 3).unwrap();
        let a: Json = serde_json::from_slice(&parts[0]).unwrap();
        let b: Json = serde_json::from_slice(&parts[1]).unwrap();
        assert_eq!(a["data"][0]["embedding"], json!([0.0]));
        assert_eq!(b["data"][0]["embedding"], json!([1.0]));
        assert_eq!(b["data"][1]["embedding"], json!([2.0]));
        assert_eq!(b["data"][1]["index"], 1);
        assert_eq!(a["usage"]["prompt_tokens"], 3);
        assert_eq!(b["usage"]["prompt_tokens"], 7, "the rest");
    }

    #[test]
    fn an_answer_short_of_vectors_fails_every_member() {
        let answer = json!({"data": [{"index": 0, "embedding": [0.0]}]});
        let members = [member(1, 1), member(1, 1)];
        let e = split(answer.to_string().as_bytes(), &members, 2).unwrap_err();
        assert_eq!(e, ItemError::new("bad_response", "1 vectors for 2 inputs"));
    }
}
