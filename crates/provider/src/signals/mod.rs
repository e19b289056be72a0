//! Rate-limit signals a provider sends back, parsed once per response:
//! OpenAI's `x-ratelimit-*` family (requests, tokens), Anthropic's
//! `anthropic-ratelimit-*` (requests, and input and output tokens held
//! separately; resets are RFC 3339 times), `retry-after` in its three forms,
//! and `x-should-retry`.

use std::time::Duration;

use http::HeaderMap;

mod time;

use time::http_date_unix;
pub use time::parse_reset_duration;
pub use time::rfc3339_unix;

/// The longest `retry-after` obeyed as given: a longer one (a daily quota's
/// reset, a misconfigured proxy) is waited for this long, after which the
/// normal backoff takes over.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

/// One limit's state as a response reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// `*-limit`: what the limit allows per window (the window is not sent;
    /// see `sluice_limit::Learned` for how it is inferred).
    pub limit: Option<u64>,
    /// `*-remaining`: what is left now.
    pub remaining: Option<u64>,
    /// `*-reset`: time until the limit is whole again.
    pub reset: Option<Duration>,
}

impl Budget {
    fn is_empty(&self) -> bool {
        *self == Budget::default()
    }
}

/// What the provider said about its limits in one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateSignals {
    /// Requests (`x-ratelimit-*-requests`, `anthropic-ratelimit-requests-*`).
    pub requests: Budget,
    /// Tokens of any kind: OpenAI's `x-ratelimit-*-tokens`; Anthropic's
    /// combined `tokens-*` only when it sent no input/output families.
    pub tokens: Budget,
    /// Anthropic's input tokens (`anthropic-ratelimit-input-tokens-*`).
    pub input_tokens: Budget,
    /// Anthropic's output tokens (`anthropic-ratelimit-output-tokens-*`),
    /// a limit of its own: a 96k total is 80k input + 16k output.
    pub output_tokens: Budget,
}

impl RateSignals {
    /// Reads the OpenAI-style headers, else Anthropic's; absent or malformed
    /// ones are `None`.
    pub fn from_headers(headers: &HeaderMap) -> RateSignals {
        let openai = RateSignals::openai(headers);
        // Most responses carry no Anthropic headers: check once, allocate nothing.
        let anthropic = headers
            .keys()
            .any(|k| k.as_str().starts_with(ANTHROPIC_PREFIX));
        if openai != RateSignals::default() || !anthropic {
            return openai;
        }
        RateSignals::anthropic(headers, unix_now())
    }

    fn openai(headers: &HeaderMap) -> RateSignals {
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let dur = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_reset_duration)
        };
        let budget = |kind: &str| Budget {
            limit: num(&format!("x-ratelimit-limit-{kind}")),
            remaining: num(&format!("x-ratelimit-remaining-{kind}")),
            reset: dur(&format!("x-ratelimit-reset-{kind}")),
        };
        RateSignals {
            requests: budget("requests"),
            tokens: budget("tokens"),
            ..RateSignals::default()
        }
    }

    /// Anthropic's `anthropic-ratelimit-{requests,tokens,input-tokens,
    /// output-tokens}-{limit,remaining,reset}`; `now` in Unix seconds turns
    /// the reset times into waits.
    fn anthropic(headers: &HeaderMap, now: f64) -> RateSignals {
        let text = |name: &str| {
            headers
                .get(format!("{ANTHROPIC_PREFIX}{name}"))
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let budget = |kind: &str| Budget {
            limit: text(&format!("{kind}-limit")).and_then(|v| v.parse().ok()),
            remaining: text(&format!("{kind}-remaining")).and_then(|v| v.parse().ok()),
            reset: text(&format!("{kind}-reset"))
                .and_then(rfc3339_unix)
                .map(|at| Duration::from_secs_f64((at - now).max(0.0))),
        };
        let input_tokens = budget("input-tokens");
        let output_tokens = budget("output-tokens");
        // The combined figure is what the separate ones add up to: held only
        // when they are absent (older API versions, some proxies).
        let separate = !input_tokens.is_empty() || !output_tokens.is_empty();
        RateSignals {
            requests: budget("requests"),
            tokens: if separate {
                Budget::default()
            } else {
                budget("tokens")
            },
            input_tokens,
            output_tokens,
        }
    }
}

const ANTHROPIC_PREFIX: &str = "anthropic-ratelimit-";

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The wait a provider asked for: `retry-after-ms` (milliseconds) wins over
/// `retry-after` (seconds, or an HTTP date). Zero is no request at all (the
/// official SDKs then use their backoff; retrying at once only earns another
/// refusal), and a wait past [`RETRY_AFTER_CAP`] is cut to it.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, unix_now())
}

fn retry_after_at(headers: &HeaderMap, now: f64) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let secs = |s: f64| (s.is_finite() && s > 0.0).then(|| Duration::from_secs_f64(s));
    let asked = text("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| secs(ms / 1000.0))
        .or_else(|| {
            let value = text("retry-after")?;
            match value.parse::<f64>() {
                Ok(s) => secs(s),
                Err(_) => secs(http_date_unix(value)? - now),
            }
        })?;
    Some(asked.min(RETRY_AFTER_CAP))
}

/// `x-should-retry: true|false`: the provider's own word on whether to retry,
/// which overrides the status rule (as openai-python and anthropic-sdk-python
/// do); anything else is no word.
pub(crate) fn should_retry(headers: &HeaderMap) -> Option<bool> {
    match headers.get("x-should-retry")?.to_str().ok()?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
