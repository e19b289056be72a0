//! One HTTP call of a step part, sent on its provider's lane (a place in the
//! provider's concurrency, the least busy healthy endpoint, the retries and
//! limits of `calls.rs`): what chat, embed and http parts all go through.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use sluice_provider::{CallOptions, Dialect, Endpoint, StreamStats};
use sluice_spec::Step;

use super::UnitContext;
use crate::calls::{self, CallEnd, CallEnv, CallRequest, Tally};
use crate::item_error::ItemError;
use crate::job::lanes::{Lane, LaneRoute};

/// How an HTTP call of a step ended.
pub(super) enum CallOutcome {
    Done(Bytes),
    Failed(ItemError),
    Stopped,
}

/// Where a step's calls go.
pub(super) enum Target {
    /// `path` on the lane's least busy healthy base URL, per attempt (with
    /// `affinity`, on the one its key maps to).
    Pool {
        path: String,
        method: Method,
        affinity: Option<u64>,
        /// The pool member a step's `url` named: every attempt goes there.
        pinned: Option<usize>,
    },
    /// One absolute URL.
    Url(Endpoint),
}

/// How one call of a step went.
pub(super) struct Sent {
    pub(super) outcome: CallOutcome,
    /// HTTP status of the last attempt, if one arrived.
    pub(super) code: Option<u16>,
    pub(super) latency: Duration,
    pub(super) content_type: Option<String>,
    /// A streamed answer's timing.
    pub(super) stream: Option<StreamStats>,
}

/// The body of one call and how to send it.
pub(super) struct Outgoing<'a> {
    pub(super) body: Bytes,
    pub(super) headers: &'a [(String, String)],
    pub(super) content_type: Option<&'a str>,
    pub(super) expect_json: bool,
    /// Tokens reserved against token limits.
    pub(super) estimate: sluice_limit::Cost,
    /// Read the answer as server-sent events in this dialect.
    pub(super) stream: Option<Dialect>,
}

/// Sends one call on `lane`, holding a place in the provider's concurrency.
pub(super) async fn send(
    shared: &UnitContext,
    lane: &Lane,
    step: &Step,
    target: Target,
    out: Outgoing<'_>,
    tally: &mut Tally,
) -> Sent {
    let Outgoing {
        body,
        headers,
        content_type,
        expect_json,
        estimate,
        stream,
    } = out;
    let (retries, backoff, timeout) = lane.policy(step);
    let (run_meter, process_meter) = shared.progress.stats.meters(&step.name, &lane.name);
    let env = CallEnv {
        client: &lane.client,
        limiter: lane.limiter(),
        progress: &shared.progress,
        stopping: &shared.stopping,
        backoff,
        retries,
        timeout,
        tenant: lane.tenant,
        control: Some(&shared.control),
        meters: [Some(&run_meter), Some(&process_meter)],
        first_calls: shared
            .job
            .steps
            .iter()
            .position(|s| s.name == step.name)
            .and_then(|i| shared.first_calls.get(i)),
        recording: Some(&shared.recording),
    };
    let options = CallOptions {
        headers,
        content_type,
        expect_json,
    };
    let end = match target {
        Target::Pool {
            path,
            method,
            affinity,
            pinned,
        } => {
            let route = LaneRoute {
                lane,
                path,
                method,
                fail_when_open: step.fallback.is_some(),
                affinity: affinity.map(|key| (key, step.affinity_failover)),
                pinned,
            };
            calls::call(
                &env,
                &CallRequest {
                    route: &route,
                    body,
                    options,
                    estimate,
                    stream,
                },
                tally,
            )
            .await
        }
        Target::Url(endpoint) => {
            // One URL, no pool: the provider's concurrency is held for the call.
            let _place = lane.gate().enter(lane.tenant).await;
            let route = calls::Fixed(&endpoint);
            calls::call(
                &env,
                &CallRequest {
                    route: &route,
                    body,
                    options,
                    estimate,
                    stream,
                },
                tally,
            )
            .await
        }
    };
    let sent = |outcome, code, latency| Sent {
        outcome,
        code,
        latency,
        content_type: None,
        stream: None,
    };
    match end {
        CallEnd::Done(success) => Sent {
            code: Some(success.status),
            latency: success.latency,
            content_type: success.content_type,
            stream: success.stream,
            outcome: CallOutcome::Done(success.body),
        },
        CallEnd::Failed {
            error,
            status,
            latency,
            ..
        } => sent(CallOutcome::Failed(error), status, latency),
        CallEnd::Stopped => sent(CallOutcome::Stopped, None, Duration::ZERO),
    }
}
