//! One API request, in the order providers handle it: auth, parse, content
//! rejection, concurrency, faults, admission, latency, response.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};

use crate::faults::Fault;
use crate::limits::{Kind, RateSnapshot, Throttle};
use crate::request::{self, Api};
use crate::response::{self, Body};
use crate::state::{unix_ms, Shared, Verdict};
use crate::stats::Outcome;

/// How long a hung request waits before it is answered after all.
const HANG: Duration = Duration::from_secs(3_600);

/// The service error that makes hyper close the connection without a response:
/// the injected reset.
#[derive(Debug)]
pub(crate) struct ConnectionReset;

impl fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset injected by the mock")
    }
}

impl std::error::Error for ConnectionReset {}

/// Answers one request to an API route; `arrived` is when its head came in
/// (latency counts from then, so the mock's own work is inside it).
pub(crate) async fn api(
    shared: &Shared,
    api: Api,
    arrived: Instant,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Body>, ConnectionReset> {
    if let Some(res) = unauthorized(shared, headers) {
        return Ok(res);
    }
    let parsed = match request::parse(api, &body, shared.cfg.default_completion_tokens()) {
        Ok(parsed) => {
            shared.count_images(parsed.images);
            parsed
        }
        Err(msg) => {
            let rates = shared.refuse(Outcome::BadRequest);
            return Ok(with_rates(response::bad_request(&msg), &rates));
        }
    };
    if !shared.cfg.models.is_empty() && !shared.cfg.models.iter().any(|m| *m == parsed.model) {
        let rates = shared.refuse(Outcome::NotFound);
        let message = format!(
            "The model `{}` does not exist or you do not have access to it.",
            parsed.model
        );
        let res = response::error(
            StatusCode::NOT_FOUND,
            &message,
            "invalid_request_error",
            Some("model_not_found"),
        );
        return Ok(with_rates(res, &rates));
    }
    let hash = xxhash_rust::xxh3::xxh3_64_with_seed(&body, shared.cfg.seed);
    if shared.rejects(hash) {
        return Ok(rejected(shared, StatusCode::UNPROCESSABLE_ENTITY, REJECTED));
    }
    let tokens = parsed
        .prompt_tokens
        .saturating_add(parsed.completion_tokens());
    answer(shared, arrived, tokens, hash, |id| {
        // Chat replies follow the conversation, whatever carried it.
        let seed = parsed
            .conversation
            .map_or(hash, |c| crate::convo::reply_seed(shared.cfg.seed, c));
        let created = unix_ms() / 1_000;
        let invalid = parsed.json.is_some() && shared.invalid_json(hash, id);
        match parsed.stream {
            Some(usage) => (
                crate::sse::EVENT_STREAM,
                crate::sse::openai_chat(&parsed, id, created, seed, usage, invalid),
            ),
            None => (
                JSON,
                response::success(api, &parsed, id, created, seed, invalid),
            ),
        }
    })
    .await
}

/// The message of a `reject_rate` refusal.
pub(crate) const REJECTED: &str =
    "The service cannot process this input (refused by --reject-rate: the same request is refused every time).";

/// The 401 for a request without the key, when one is required.
pub(crate) fn unauthorized(shared: &Shared, headers: &HeaderMap) -> Option<Response<Body>> {
    if authorized(shared.cfg.api_key.as_deref(), headers) {
        return None;
    }
    let rates = shared.refuse(Outcome::Unauthorized);
    let res = response::error(
        StatusCode::UNAUTHORIZED,
        "Incorrect or missing API key: send `Authorization: Bearer <key>` with the key the mock was started with.",
        "invalid_request_error",
        Some("invalid_api_key"),
    );
    Some(with_rates(res, &rates))
}

/// A 413 or 422 for a request refused for its content (counted as rejected).
pub(crate) fn rejected(shared: &Shared, status: StatusCode, message: &str) -> Response<Body> {
    let rates = shared.refuse(Outcome::Rejected);
    let res = response::error(status, message, "invalid_request_error", Some("rejected"));
    with_rates(res, &rates)
}

/// The media type of a JSON success.
pub(crate) const JSON: &str = "application/json";

/// Takes the request through concurrency, faults, admission (one request and
/// `tokens` tokens) and latency; `success` makes the 200's media type and
/// body from the request's id.
pub(crate) async fn answer(
    shared: &Shared,
    arrived: Instant,
    tokens: u64,
    hash: u64,
    success: impl FnOnce(u64) -> (&'static str, Vec<u8>),
) -> Result<Response<Body>, ConnectionReset> {
    let place = shared.enter();
    let decision = shared.decide(place.is_some(), tokens, hash, arrived);
    let delay = Duration::from_millis(shared.cfg.latency_ms.saturating_add(decision.jitter_ms));
    let res = match decision.verdict {
        Verdict::Busy => {
            let limit = shared.cfg.max_concurrency.unwrap_or(0);
            let wait_ms = shared.cfg.latency_ms.max(1);
            let msg = format!(
                "Too many concurrent requests: at most {limit} in flight. Please try again in {wait_ms}ms."
            );
            let mut res = response::error(
                StatusCode::TOO_MANY_REQUESTS,
                &msg,
                "requests",
                Some("rate_limit_exceeded"),
            );
            response::add_retry_after(res.headers_mut(), wait_ms.saturating_mul(1_000_000));
            res
        }
        Verdict::Fault(Fault::Hang) => {
            tokio::time::sleep(HANG).await;
            response::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The mock hung this request for an hour (injected fault).",
                "server_error",
                None,
            )
        }
        Verdict::Fault(Fault::Reset) => {
            pause(arrived, delay).await;
            return Err(ConnectionReset);
        }
        Verdict::Fault(Fault::ServerError) => {
            pause(arrived, delay).await;
            response::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request (injected fault).",
                "server_error",
                None,
            )
        }
        Verdict::Throttled(throttle) => {
            pause(arrived, delay).await;
            throttled(throttle)
        }
        Verdict::Accept { id, truncate } => {
            pause(arrived, delay).await;
            let (content_type, mut body) = success(id);
            if truncate {
                body.truncate(body.len() / 2);
            }
            shared.sent_ok();
            response::bytes(StatusCode::OK, content_type, body)
        }
    };
    drop(place);
    Ok(with_rates(res, &decision.rates))
}

/// Whether `headers` carry the key, when one is required.
fn authorized(key: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(key) = key else {
        return true;
    };
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| given == key.as_bytes())
}

async fn pause(arrived: Instant, delay: Duration) {
    if !delay.is_zero() {
        crate::timer::sleep_until(arrived + delay).await;
    }
}

/// The 429 for a request a limit refused, worded like OpenAI's.
fn throttled(throttle: Throttle) -> Response<Body> {
    let (kind, message, wait) = match throttle {
        Throttle::Wait {
            kind,
            limit,
            cost,
            wait_nanos,
        } => {
            let (what, abbr) = match kind {
                Kind::Requests => ("requests", "RPM"),
                Kind::Tokens => ("tokens", "TPM"),
            };
            let ms = wait_nanos.div_ceil(1_000_000).max(1);
            let message = format!(
                "Rate limit reached for {what} per min ({abbr}): Limit {limit}, Requested {cost}. Please try again in {ms}ms."
            );
            (kind, message, Some(wait_nanos))
        }
        Throttle::TooLarge { limit, cost } => {
            let message = format!(
                "Request too large for tokens per min (TPM): Limit {limit}, Requested {cost}. It can never be admitted: send fewer tokens or lower max_tokens."
            );
            (Kind::Tokens, message, None)
        }
    };
    let mut res = response::error(
        StatusCode::TOO_MANY_REQUESTS,
        &message,
        kind.name(),
        Some("rate_limit_exceeded"),
    );
    if let Some(wait) = wait {
        response::add_retry_after(res.headers_mut(), wait);
    }
    res
}

fn with_rates(mut res: Response<Body>, rates: &RateSnapshot) -> Response<Body> {
    response::add_rate_headers(res.headers_mut(), rates);
    res
}
