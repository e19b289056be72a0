//! What the mock saw: outcome counters, per-minute maxima and duplicate bodies.

use std::collections::{BTreeMap, HashSet, VecDeque};

/// A snapshot of what the mock has seen since it started or was last reset.
///
/// Every API request (the OpenAI routes and `/stages/*`) lands in exactly one
/// of the outcome counters (`ok` through `rejected`), so they add up to
/// `requests`. The CMS (`/items/*`) and webhook (`/hooks/*`) routes are not API
/// requests: they are counted in `routes` and `hooks` only.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct MockStats {
    /// Every request received on an API route.
    pub requests: u64,
    /// Complete 200s.
    pub ok: u64,
    /// 429s, from rpm, tpm or the concurrency cap.
    pub rate_limited: u64,
    /// Injected 500s.
    pub server_errors: u64,
    /// Connections closed with no response.
    pub resets: u64,
    /// Requests that got no response for an hour.
    pub hangs: u64,
    /// 200s whose body was cut in half.
    pub truncated: u64,
    /// 401s: missing or wrong API key.
    pub unauthorized: u64,
    /// 400s (and 405s): a request the client should never have sent.
    pub bad_requests: u64,
    /// 413s and 422s: requests refused for their content (`max_upload_bytes`,
    /// `reject_rate`), which no retry can fix.
    #[serde(default)]
    pub rejected: u64,
    /// 404s: a model the mock does not serve (`models`), as a provider
    /// answers a wrong model name.
    #[serde(default)]
    pub not_found: u64,
    /// Peak number of requests being handled at once (past the concurrency cap
    /// check, so never above it).
    pub max_in_flight: u64,
    /// Requests being handled now (a test waits on it for a dropped
    /// connection's place to be freed, instead of sleeping).
    #[serde(default)]
    pub in_flight: u64,
    /// Most accepted requests in any sliding 60 s window: compare with rpm.
    pub max_requests_per_minute: u64,
    /// Most tokens charged to accepted requests in any sliding 60 s window:
    /// compare with tpm.
    pub max_tokens_per_minute: u64,
    /// Tokens charged (prompt + completion) to accepted requests.
    pub tokens_charged: u64,
    /// Accepted requests whose exact body was accepted before: work the client
    /// paid for twice.
    pub duplicate_requests: u64,
    /// Unix time in milliseconds the first 200 was sent.
    pub first_ok_unix_ms: Option<u64>,
    /// Unix time in milliseconds the last 200 was sent.
    pub last_ok_unix_ms: Option<u64>,
    /// The generic routes (`/stages/NAME`, `/items/NAME`, `/hooks/NAME`) by
    /// path: what each answered.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteStats>,
    /// Webhook deliveries to `/hooks/*`.
    #[serde(default)]
    pub hooks: HookStats,
    /// Image parts in chat requests that passed the checks (an inline image
    /// must decode to the PNG, JPEG, GIF or WebP it claims to be, or the
    /// request is a 400), answered or not.
    #[serde(default)]
    pub images: u64,
    /// Decoded bytes of those images sent inline.
    #[serde(default)]
    pub image_bytes: u64,
    /// Chat requests that carried at least one image.
    #[serde(default)]
    pub requests_with_images: u64,
    /// Rates over a window of the length asked (`GET
    /// /_mock/stats?window_ms=N`, [`crate::MockServer::rates`]); absent
    /// unless asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowRates>,
}

/// What the accepted requests came to over windows of one length, measured
/// from the mock's log of admissions (to the nanosecond), for a test to
/// compare both ways with a limit: never above it, and close to it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct WindowRates {
    /// The window's length.
    pub window_ms: u64,
    /// Most accepted requests in any window of that length.
    pub max_requests: u64,
    /// Most tokens charged in any window of that length.
    pub max_tokens: u64,
    /// Accepted requests.
    pub accepted: u64,
    /// From the first admission to the last (ms).
    pub span_ms: f64,
    /// Requests per minute achieved over the span: each request but the
    /// last over the span (a limit paced at `r` admits `n` in `(n-1)/r`).
    pub requests_per_minute: f64,
    /// Tokens per minute achieved over the span, likewise (each request's
    /// tokens but the last's).
    pub tokens_per_minute: f64,
}

/// What one generic route answered.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RouteStats {
    /// Requests received.
    pub requests: u64,
    /// Responses by HTTP status (`"200"`, `"500"`, …).
    pub statuses: BTreeMap<String, u64>,
    /// Requests that got no response: injected resets and hangs.
    pub no_response: u64,
}

/// Webhook deliveries received.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct HookStats {
    /// Deliveries received.
    pub received: u64,
    /// Deliveries whose signature matched the hook secret.
    pub verified: u64,
    /// Deliveries refused with 401: no or a wrong signature (only with a
    /// hook secret).
    pub refused: u64,
}

/// One outcome of an API request, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Truncated,
    RateLimited,
    ServerError,
    Reset,
    Hang,
    Unauthorized,
    BadRequest,
    Rejected,
    NotFound,
}

/// Accepted requests of one millisecond: the sliding window's unit, which keeps
/// it at most 60,000 entries however fast the client goes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    ms: u64,
    requests: u64,
    tokens: u64,
}

const WINDOW_MS: u64 = 60_000;

/// The counters behind [`MockStats`], kept under the server's lock.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    /// Everything but `max_in_flight` and the OK times, which are atomics
    /// outside the lock.
    pub(crate) stats: MockStats,
    window: VecDeque<Slot>,
    window_requests: u64,
    window_tokens: u64,
    /// Hashes of accepted bodies.
    seen: HashSet<u64>,
    /// Every admission: nanoseconds since the origin, tokens charged.
    admissions: Vec<(u64, u64)>,
}

impl Recorder {
    /// Counts one API request and its outcome.
    pub(crate) fn count(&mut self, outcome: Outcome) {
        let s = &mut self.stats;
        s.requests += 1;
        let counter = match outcome {
            Outcome::Ok => &mut s.ok,
            Outcome::Truncated => &mut s.truncated,
            Outcome::RateLimited => &mut s.rate_limited,
            Outcome::ServerError => &mut s.server_errors,
            Outcome::Reset => &mut s.resets,
            Outcome::Hang => &mut s.hangs,
            Outcome::Unauthorized => &mut s.unauthorized,
            Outcome::BadRequest => &mut s.bad_requests,
            Outcome::Rejected => &mut s.rejected,
            Outcome::NotFound => &mut s.not_found,
        };
        *counter += 1;
    }

    /// Counts one request to a generic route and its status (`None`: no
    /// response).
    pub(crate) fn route(&mut self, path: &str, status: Option<u16>) {
        let route = match self.stats.routes.get_mut(path) {
            Some(route) => route,
            None => self.stats.routes.entry(path.to_owned()).or_default(),
        };
        route.requests += 1;
        match status {
            Some(code) => *route.statuses.entry(code.to_string()).or_default() += 1,
            None => route.no_response += 1,
        }
    }

    /// Records a request admitted at `now_ms` (since the server's origin) that
    /// was charged `tokens`, with body hash `hash`.
    pub(crate) fn accept(&mut self, now_ms: u64, tokens: u64, hash: u64) {
        while let Some(front) = self.window.front() {
            if front.ms + WINDOW_MS > now_ms {
                break;
            }
            self.window_requests -= front.requests;
            self.window_tokens -= front.tokens;
            self.window.pop_front();
        }
        match self.window.back_mut() {
            // Admissions happen under one lock, so times only repeat or grow.
            Some(back) if back.ms >= now_ms => {
                back.requests += 1;
                back.tokens += tokens;
            }
            _ => self.window.push_back(Slot {
                ms: now_ms,
                requests: 1,
                tokens,
            }),
        }
        self.window_requests += 1;
        self.window_tokens += tokens;
        let s = &mut self.stats;
        s.max_requests_per_minute = s.max_requests_per_minute.max(self.window_requests);
        s.max_tokens_per_minute = s.max_tokens_per_minute.max(self.window_tokens);
        s.tokens_charged += tokens;
        if !self.seen.insert(hash) {
            s.duplicate_requests += 1;
        }
    }
}

impl Recorder {
    /// Logs an admission at `now_nanos` charged `tokens`, for [`WindowRates`].
    pub(crate) fn admitted(&mut self, now_nanos: u64, tokens: u64) {
        self.admissions.push((now_nanos, tokens));
    }

    /// The rates over windows of `window_ms` (at least 1 ms).
    pub(crate) fn rates(&self, window_ms: u64) -> WindowRates {
        let window = window_ms.max(1).saturating_mul(1_000_000);
        let log = &self.admissions;
        let (mut start, mut tokens) = (0, 0u64);
        let (mut max_requests, mut max_tokens) = (0u64, 0u64);
        for (end, &(t, cost)) in log.iter().enumerate() {
            tokens += cost;
            // The window (t - window, t].
            while log[start].0 + window <= t {
                tokens -= log[start].1;
                start += 1;
            }
            max_requests = max_requests.max((end + 1 - start) as u64);
            max_tokens = max_tokens.max(tokens);
        }
        let span = match (log.first(), log.last()) {
            (Some(a), Some(b)) => b.0 - a.0,
            _ => 0,
        };
        let per_minute = |units: u64| {
            if span == 0 {
                0.0
            } else {
                units as f64 * 60e9 / span as f64
            }
        };
        let before_last: u64 = log.iter().rev().skip(1).map(|a| a.1).sum();
        WindowRates {
            window_ms: window_ms.max(1),
            max_requests,
            max_tokens,
            accepted: log.len() as u64,
            span_ms: span as f64 / 1e6,
            requests_per_minute: per_minute((log.len() as u64).saturating_sub(1)),
            tokens_per_minute: per_minute(before_last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_measured_over_any_window_length() {
        let mut r = Recorder::default();
        let ms = 1_000_000;
        // One request of 10 tokens every 100 ms for a second.
        for i in 0..=10 {
            r.admitted(i * 100 * ms, 10);
        }
        let w = r.rates(1_000);
        assert_eq!((w.max_requests, w.max_tokens), (10, 100));
        assert_eq!(r.rates(100).max_requests, 1);
        assert_eq!(r.rates(101).max_requests, 2);
        assert_eq!(w.accepted, 11);
        assert!((w.requests_per_minute - 600.0).abs() < 1e-6);
        assert!((w.tokens_per_minute - 6_000.0).abs() < 1e-6);
    }

    #[test]
    fn window_maxima_forget_what_is_a_minute_old() {
        let mut r = Recorder::default();
        r.accept(0, 10, 1);
        r.accept(0, 10, 2);
        r.accept(30_000, 5, 3);
        assert_eq!(r.stats.max_requests_per_minute, 3);
        assert_eq!(r.stats.max_tokens_per_minute, 25);
        // At 60 s the two at 0 s leave the window: 2 requests, 105 tokens.
        r.accept(60_000, 100, 4);
        assert_eq!(r.stats.max_requests_per_minute, 3);
        assert_eq!(r.stats.max_tokens_per_minute, 105);
        r.accept(60_001, 1, 5);
        r.accept(60_002, 1, 6);
        assert_eq!(r.stats.max_requests_per_minute, 4);
        assert_eq!(r.stats.tokens_charged, 127);
    }

    #[test]
    fn the_same_body_accepted_twice_is_a_duplicate() {
        let mut r = Recorder::default();
        r.accept(0, 1, 7);
        r.accept(1, 1, 8);
        r.accept(2, 1, 7);
        r.accept(3, 1, 7);
        assert_eq!(r.stats.duplicate_requests, 2);
    }

    #[test]
    fn every_outcome_counts_as_a_request() {
        let mut r = Recorder::default();
        for o in [
            Outcome::Ok,
            Outcome::Truncated,
            Outcome::Hang,
            Outcome::BadRequest,
            Outcome::NotFound,
        ] {
            r.count(o);
        }
        let s = &r.stats;
        assert_eq!((s.requests, s.ok, s.truncated, s.hangs), (5, 1, 1, 1));
        assert_eq!((s.bad_requests, s.not_found), (1, 1));
    }
}
