//! One logical call with its retries: limits, send, sort the answer, back off,
//! try again. Shared by quick mode and every pipeline step that calls HTTP.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use sluice_limit::{Backoff, Cost};
use sluice_provider::{Attempt, CallOptions, Client, Dialect, Endpoint, FailureKind, Success};

use crate::control::RunControl;
use crate::early_stop::{Ending, FirstCalls};
use crate::fair::Tenant;
use crate::item_error::ItemError;
use crate::limiter::Limiter;
use crate::meter::CallStats;
use crate::progress::Progress;
use crate::recording::Recording;
use crate::stopping::{Halt, Stopping};

/// What a call needs besides its request.
pub(crate) struct CallEnv<'a> {
    pub(crate) client: &'a Client,
    pub(crate) limiter: &'a Limiter,
    pub(crate) progress: &'a Progress,
    /// Set when the run is stopping: no further retries start.
    pub(crate) stopping: &'a Stopping,
    pub(crate) backoff: Backoff,
    /// Retries after the first attempt.
    pub(crate) retries: u32,
    pub(crate) timeout: Duration,
    /// The run, in the limiter's turns between runs.
    pub(crate) tenant: Tenant,
    /// Pause and cancel from outside (the server); checked before each attempt.
    pub(crate) control: Option<&'a RunControl>,
    /// Where attempts are counted: the run's and the process's stats of
    /// this step on this provider.
    pub(crate) meters: [Option<&'a CallStats>; 2],
    /// Watches the first calls' endings for a systematic failure, which
    /// halts the run through `stopping`.
    pub(crate) first_calls: Option<&'a FirstCalls>,
    /// The store's writer: while it hangs, no new call goes out.
    pub(crate) recording: Option<&'a Recording>,
}

/// What one attempt said about the endpoint it went to (for breakers and
/// adaptive concurrency).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Report {
    /// A 2xx after this round trip.
    Success(Duration),
    /// A failure; `retryable` counts against a breaker, `backpressure` (429,
    /// 503, time-out) shrinks adaptive concurrency.
    Failure { retryable: bool, backpressure: bool },
}

/// Where each attempt of a call goes.
pub(crate) trait Route {
    /// Holds the attempt's place on its endpoint until reported (or dropped,
    /// when the call is cut off).
    type Ticket;
    /// The endpoint for the next attempt; waits while every endpoint is
    /// cooling down (that wait is not an attempt). An `Err` is the call's
    /// end: a request that cannot be addressed (a bad URL), or no endpoint
    /// left to try (every breaker open).
    async fn pick(&self) -> Result<(Cow<'_, Endpoint>, Self::Ticket), ItemError>;
    /// What the attempt said about its endpoint.
    fn report(&self, ticket: Self::Ticket, report: Report);
}

/// Always the same endpoint, nothing to report to.
pub(crate) struct Fixed<'a>(pub(crate) &'a Endpoint);

impl Route for Fixed<'_> {
    type Ticket = ();

    async fn pick(&self) -> Result<(Cow<'_, Endpoint>, ()), ItemError> {
        Ok((Cow::Borrowed(self.0), ()))
    }

    fn report(&self, _: (), _: Report) {}
}

/// The request of a call.
pub(crate) struct CallRequest<'a, R: Route> {
    pub(crate) route: &'a R,
    pub(crate) body: Bytes,
    pub(crate) options: CallOptions<'a>,
    /// Tokens reserved against token limits before sending.
    pub(crate) estimate: Cost,
    /// The body asks for a streamed answer in this dialect (read as events).
    pub(crate) stream: Option<Dialect>,
}

/// Attempts made for one call.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    pub(crate) attempts: u32,
    pub(crate) throttled: u32,
}

/// How a call ended.
// `Done` is the common case and is moved once, to its reader: boxing it
// would allocate on every call to save a copy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub(crate) enum CallEnd {
    /// A successful answer.
    Done(Success),
    /// Failed for good; `error`'s message ends `(after N attempts)` when
    /// an attempt was made.
    Failed {
        error: ItemError,
        status: Option<u16>,
        body: Option<Bytes>,
        latency: Duration,
    },
    /// The run is stopping: leave the work pending.
    Stopped,
}

/// What a wait before an attempt came to.
enum Waited<T> {
    /// It ended with this.
    Ready(T),
    /// The run is stopping: leave the work pending.
    Stopping,
    /// The run was paused (or cancelled) meanwhile: start over, which waits
    /// for the resume (or stops).
    Paused,
}

/// `wait`'s output, unless the run stops or is paused first: a call waiting
/// for a place, a rate slot or its backoff must not hold up the end of a
/// stopped run (it would leave only when the grace period for calls on the
/// wire is over), nor go out once the run is paused (pause holds everything
/// not on the wire yet). `wait` is polled first, so one that is ready at
/// once costs no registration with the stop signal.
async fn unless_held<T>(env: &CallEnv<'_>, wait: impl Future<Output = T>) -> Waited<T> {
    let paused = async {
        match env.control {
            Some(control) => control.held().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        out = wait => Waited::Ready(out),
        () = env.stopping.wait() => Waited::Stopping,
        () = paused => Waited::Paused,
    }
}

/// Whether the run is paused now (a call that got its place and rate slot
/// meanwhile does not go out).
fn paused(env: &CallEnv<'_>) -> bool {
    env.control.is_some_and(RunControl::is_paused)
}

/// Reports a call's ending to the watch over the first calls; a systematic
/// failure halts the run.
fn watch_ending(env: &CallEnv<'_>, ending: Ending<'_>) {
    if let Some(why) = env.first_calls.and_then(|w| w.observe(ending)) {
        tracing::debug!("stopping early: {why}");
        env.stopping.halt(Halt::Systematic(why));
    }
}

/// Sends `request` until it succeeds, fails for good, or the run stops.
pub(crate) async fn call<R: Route>(
    env: &CallEnv<'_>,
    request: &CallRequest<'_, R>,
    tally: &mut Tally,
) -> CallEnd {
    let progress = env.progress;
    loop {
        if let Some(control) = env.control {
            let go = tokio::select! {
                biased;
                go = control.proceed() => go,
                () = env.stopping.wait() => false,
            };
            if !go {
                return CallEnd::Stopped;
            }
        }
        let asked = std::time::Instant::now();
        // A place first (provider concurrency, a healthy endpoint), then the
        // rate: a call that took its rate slot and then queued for a place
        // would go out late, and the next one on time — closer than the limit.
        let picked = match unless_held(env, request.route.pick()).await {
            Waited::Ready(picked) => picked,
            Waited::Paused => continue,
            Waited::Stopping => return CallEnd::Stopped,
        };
        let (endpoint, ticket) = match picked {
            Ok(picked) => picked,
            Err(error) => {
                return CallEnd::Failed {
                    error,
                    status: None,
                    body: None,
                    latency: Duration::ZERO,
                };
            }
        };
        let placed = std::time::Instant::now();
        let acquired =
            match unless_held(env, env.limiter.acquire_for(env.tenant, request.estimate)).await {
                Waited::Ready(acquired) => acquired,
                // The place is given back with its ticket; the rate slot is
                // taken again after the resume.
                Waited::Paused => continue,
                Waited::Stopping => return CallEnd::Stopped,
            };
        let admission = match acquired {
            Ok(admission) => admission,
            Err(too_large) => return CallEnd::Failed {
                error: ItemError::new("token_limit", format!(
                    "this request needs about {} tokens (prompt estimate + max_tokens) but the tokens/minute limit (--tpm, or the provider's tpm) is {}, so it can never be sent; raise --tpm or lower max_tokens",
                    too_large.tokens, too_large.tpm
                )),
                status: None,
                body: None,
                latency: Duration::ZERO,
            },
        };
        if env.stopping.is_set() {
            // Stopping: only calls already on the wire may finish. This one
            // waited for its place and rate slot and would start now.
            return CallEnd::Stopped;
        }
        if paused(env) {
            // Paused as its slot came: it waits for the resume like the rest.
            continue;
        }
        if let Some(recording) = env.recording.filter(|r| r.stalled()) {
            // The store does not answer: a result now might not be kept.
            match unless_held(env, recording.caught_up()).await {
                Waited::Ready(()) | Waited::Paused => continue,
                Waited::Stopping => return CallEnd::Stopped,
            }
        }
        tally.attempts += 1;
        Progress::add(&progress.attempts, 1);
        if tally.attempts > 1 {
            Progress::add(&progress.retries, 1);
        }
        Progress::add(&progress.in_flight, 1);
        for meter in env.meters.iter().flatten() {
            meter.waited(placed - asked, placed.elapsed());
            meter.started(tally.attempts > 1);
        }
        let body = request.body.clone();
        let result = match request.stream {
            None => {
                env.client
                    .send(&endpoint, body, env.timeout, &request.options)
                    .await
            }
            // Boxed: the streamed exchange's larger state stays out of
            // every call's future.
            Some(dialect) => {
                Box::pin(env.client.send_stream(
                    &endpoint,
                    body,
                    env.timeout,
                    &request.options,
                    dialect,
                ))
                .await
            }
        };
        Progress::sub(&progress.in_flight, 1);
        for meter in env.meters.iter().flatten() {
            match &result {
                Attempt::Ok(s) => {
                    meter.ended(Some(s.status), None, s.latency);
                    meter.tokens(s.prompt_tokens, s.completion_tokens);
                }
                Attempt::Failed(f) => meter.ended(f.status, Some(f.kind), f.latency),
            }
        }
        request.route.report(
            ticket,
            match &result {
                Attempt::Ok(s) => Report::Success(s.latency),
                Attempt::Failed(f) => Report::Failure {
                    retryable: f.is_retryable() && f.kind != FailureKind::RateLimited,
                    // 529: Anthropic's "overloaded".
                    backpressure: matches!(f.kind, FailureKind::RateLimited | FailureKind::Timeout)
                        || matches!(f.status, Some(503 | 529)),
                },
            },
        );
        let failure = match result {
            Attempt::Ok(success) => {
                progress.observe_latency(success.latency);
                env.limiter.observe(&success.signals, Some(admission));
                if success.prompt_tokens.is_some() || success.completion_tokens.is_some() {
                    let used = Cost {
                        input: success.prompt_tokens.unwrap_or(0),
                        output: success.completion_tokens.unwrap_or(0),
                    };
                    env.limiter.settle(admission, request.estimate, used);
                }
                watch_ending(env, Ending::Success);
                return CallEnd::Done(success);
            }
            Attempt::Failed(failure) => failure,
        };
        env.limiter.observe(&failure.signals, Some(admission));
        if matches!(
            failure.kind,
            FailureKind::RateLimited | FailureKind::Connect
        ) {
            // The provider did not take these tokens.
            env.limiter
                .settle(admission, request.estimate, Cost::default());
        }
        if failure.kind == FailureKind::RateLimited {
            tally.throttled += 1;
            Progress::add(&progress.throttled, 1);
            env.limiter.rate_limited();
            if let Some(after) = failure.retry_after {
                env.limiter.pause(after);
            }
        }
        if failure.is_retryable() && tally.attempts <= env.retries {
            if env.stopping.is_set() {
                return CallEnd::Stopped;
            }
            let delay = env.backoff.delay_ms(
                tally.attempts,
                fastrand::f64(),
                failure.retry_after.map(|d| d.as_millis() as u64),
            );
            // A pause during the backoff is held at the top of the loop.
            let slept = tokio::select! {
                biased;
                () = tokio::time::sleep(Duration::from_millis(delay)) => true,
                () = env.stopping.wait() => false,
            };
            if !slept {
                return CallEnd::Stopped;
            }
            continue;
        }
        watch_ending(
            env,
            Ending::Failure {
                status: failure.status,
                retryable: failure.is_retryable(),
                message: &failure.message,
            },
        );
        let tries = match tally.attempts {
            1 => "1 attempt".to_string(),
            n => format!("{n} attempts"),
        };
        return CallEnd::Failed {
            error: ItemError::new(
                error_code(failure.kind),
                format!("{} (after {tries})", failure.message),
            ),
            status: failure.status,
            body: failure.body,
            latency: failure.latency,
        };
    }
}

/// The error code exported with a failed item.
pub(crate) fn error_code(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::RateLimited => "rate_limited",
        FailureKind::Server => "server_error",
        FailureKind::Timeout => "timeout",
        FailureKind::Connect => "connect_error",
        FailureKind::Connection => "connection_error",
        FailureKind::BadBody => "bad_response",
        FailureKind::Client => "request_error",
    }
}
