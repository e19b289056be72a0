//! Counters of calls, cheap enough for every attempt: outcomes by HTTP status
//! or failure kind, a latency histogram with fixed buckets, retries, 429s,
//! tokens and time spent waiting for a place or a rate slot — all relaxed
//! atomics, no lock on the hot path.
//!
//! One [`CallStats`] exists per (provider, step) process-wide (what `/metrics`
//! exports, cumulative across runs) and one per run (what a run's live view
//! and its heartbeat show); an attempt is counted in both.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sluice_provider::FailureKind;

/// Upper bounds of the latency buckets, in milliseconds (the last bucket is +Inf).
pub const LATENCY_BUCKETS_MS: [u64; 22] = [
    1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000,
    10_000, 30_000, 60_000,
];

/// Failure kinds without an HTTP status, as exported.
pub const FAILURE_KINDS: [&str; 5] = [
    "timeout",
    "connect_error",
    "connection_error",
    "bad_response",
    "request_error",
];

/// A latency histogram with [`LATENCY_BUCKETS_MS`] buckets.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Per bucket (not cumulative); the last one is past the largest bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Adds one observation.
    pub(crate) fn observe(&self, latency: Duration) {
        let ms = latency.as_secs_f64() * 1e3;
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b as f64)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(latency.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Per-bucket counts (not cumulative), the +Inf bucket last.
    pub(crate) fn counts(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Relaxed)).collect()
    }

    /// Observations so far.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Sum of observations, in seconds.
    pub(crate) fn sum_secs(&self) -> f64 {
        self.sum_us.load(Relaxed) as f64 / 1e6
    }

    /// The `q` quantile (0–1) in milliseconds, interpolated within its bucket;
    /// `None` without observations.
    #[cfg(test)]
    pub(crate) fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile_ms(&self.counts(), q)
    }
}

/// The `q` quantile of per-bucket `counts` (as [`Histogram::counts`]).
pub fn quantile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut seen = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        if (seen + n) as f64 >= rank {
            let low = if i == 0 { 0 } else { LATENCY_BUCKETS_MS[i - 1] } as f64;
            let Some(&high) = LATENCY_BUCKETS_MS.get(i) else {
                return Some(low);
            };
            let within = (rank - seen as f64) / n as f64;
            return Some(low + (high as f64 - low) * within);
        }
        seen += n;
    }
    None
}

/// Outcomes of the attempts of one step on one provider.
#[derive(Debug)]
pub(crate) struct CallStats {
    /// Answers by HTTP status code (index = code; 0–99 unused).
    by_status: Box<[AtomicU64; 600]>,
    /// Failures without a status, by [`FAILURE_KINDS`].
    by_kind: [AtomicU64; FAILURE_KINDS.len()],
    /// Latency of answered attempts.
    pub(crate) latency: Histogram,
    retries: AtomicU64,
    throttled: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    in_flight: AtomicI64,
    /// Attempts that waited for a place (provider concurrency, a free endpoint).
    place_waits: AtomicU64,
    place_wait_us: AtomicU64,
    /// Attempts that waited for a rate slot.
    rate_waits: AtomicU64,
    rate_wait_us: AtomicU64,
}

impl Default for CallStats {
    fn default() -> Self {
        CallStats {
            by_status: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            by_kind: Default::default(),
            latency: Histogram::default(),
            retries: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            place_waits: AtomicU64::new(0),
            place_wait_us: AtomicU64::new(0),
            rate_waits: AtomicU64::new(0),
            rate_wait_us: AtomicU64::new(0),
        }
    }
}

/// Waits shorter than this are not counted as waits (the cost of looking).
const WAIT_FLOOR: Duration = Duration::from_micros(200);

/// A copy of [`CallStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CallCounts {
    /// Attempts by outcome: an HTTP status (`"200"`, `"429"`) or a failure kind.
    pub by_status: Vec<(String, u64)>,
    /// All attempts.
    pub attempts: u64,
    /// Attempts answered 2xx.
    pub ok: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    /// Tokens reported by answers.
    pub prompt_tokens: u64,
    /// Tokens reported by answers.
    pub completion_tokens: u64,
    /// Attempts on the wire now.
    pub in_flight: u64,
    /// Latency buckets (per bucket, +Inf last), see [`LATENCY_BUCKETS_MS`].
    pub latency_buckets: Vec<u64>,
    /// Sum of latencies, seconds.
    pub latency_sum_secs: f64,
    /// Attempts that waited for a place, and the seconds they waited.
    pub place_waits: (u64, f64),
    /// Attempts that waited for a rate slot, and the seconds they waited.
    pub rate_waits: (u64, f64),
}

impl CallStats {
    /// One attempt went out.
    pub(crate) fn started(&self, retry: bool) {
        self.in_flight.fetch_add(1, Relaxed);
        if retry {
            self.retries.fetch_add(1, Relaxed);
        }
    }

    /// The attempt that [`CallStats::started`] ended with `status` (an HTTP
    /// code) or `kind` after `latency`.
    pub(crate) fn ended(&self, status: Option<u16>, kind: Option<FailureKind>, latency: Duration) {
        self.in_flight.fetch_sub(1, Relaxed);
        match status {
            Some(code) if (100..600).contains(&code) => {
                self.by_status[code as usize].fetch_add(1, Relaxed);
                self.latency.observe(latency);
                if code == 429 {
                    self.throttled.fetch_add(1, Relaxed);
                }
            }
            _ => {
                let label = kind.map(kind_label).unwrap_or("connection_error");
                let i = FAILURE_KINDS.iter().position(|k| *k == label).unwrap_or(2);
                self.by_kind[i].fetch_add(1, Relaxed);
            }
        }
    }

    /// Tokens an answer reported.
    pub(crate) fn tokens(&self, prompt: Option<u64>, completion: Option<u64>) {
        self.prompt_tokens.fetch_add(prompt.unwrap_or(0), Relaxed);
        self.completion_tokens
            .fetch_add(completion.unwrap_or(0), Relaxed);
    }

    /// Time an attempt waited for its place, and for its rate slot.
    pub(crate) fn waited(&self, place: Duration, rate: Duration) {
        if place >= WAIT_FLOOR {
            self.place_waits.fetch_add(1, Relaxed);
            self.place_wait_us
                .fetch_add(place.as_micros() as u64, Relaxed);
        }
        if rate >= WAIT_FLOOR {
            self.rate_waits.fetch_add(1, Relaxed);
            self.rate_wait_us
                .fetch_add(rate.as_micros() as u64, Relaxed);
        }
    }

    /// Every counter now.
    pub(crate) fn counts(&self) -> CallCounts {
        let mut by_status = Vec::new();
        let mut attempts = 0;
        let mut ok = 0;
        for (code, n) in self.by_status.iter().enumerate() {
            let n = n.load(Relaxed);
            if n > 0 {
                by_status.push((code.to_string(), n));
                attempts += n;
                if (200..300).contains(&code) {
                    ok += n;
                }
            }
        }
        for (kind, n) in FAILURE_KINDS.iter().zip(&self.by_kind) {
            let n = n.load(Relaxed);
            if n > 0 {
                by_status.push((kind.to_string(), n));
                attempts += n;
            }
        }
        let secs = |us: &AtomicU64| us.load(Relaxed) as f64 / 1e6;
        CallCounts {
            by_status,
            attempts,
            ok,
            retries: self.retries.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
            prompt_tokens: self.prompt_tokens.load(Relaxed),
            completion_tokens: self.completion_tokens.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed).max(0) as u64,
            latency_buckets: self.latency.counts(),
            latency_sum_secs: self.latency.sum_secs(),
            place_waits: (self.place_waits.load(Relaxed), secs(&self.place_wait_us)),
            rate_waits: (self.rate_waits.load(Relaxed), secs(&self.rate_wait_us)),
        }
    }
}

fn kind_label(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Timeout => "timeout",
        FailureKind::Connect => "connect_error",
        FailureKind::BadBody => "bad_response",
        FailureKind::Client => "request_error",
        _ => "connection_error",
    }
}

/// Requests and tokens taken per second over the last minute: how much of
/// each configured limit is in use.
#[derive(Debug)]
pub(crate) struct Rolling {
    /// Per slot: the second it counts (since the limiter's origin), requests, tokens.
    slots: [(AtomicU64, AtomicU64, AtomicI64); 60],
    /// The second of the first request (`u64::MAX` before it): a rate is
    /// measured from there, not from the limiter's start, so the time a run
    /// spends before its first call (reading input, loading a tokenizer)
    /// does not make a limit look less used than it is.
    first: AtomicU64,
}

impl Default for Rolling {
    fn default() -> Self {
        Rolling {
            first: AtomicU64::new(u64::MAX),
            slots: std::array::from_fn(|_| {
                (
                    AtomicU64::new(u64::MAX),
                    AtomicU64::new(0),
                    AtomicI64::new(0),
                )
            }),
        }
    }
}

impl Rolling {
    /// Counts `requests` and `tokens` (negative: a correction) at second `sec`.
    pub(crate) fn add(&self, sec: u64, requests: u64, tokens: i64) {
        if requests > 0 {
            self.first.fetch_min(sec, Relaxed);
        }
        let (at, req, tok) = &self.slots[(sec % 60) as usize];
        let seen = at.load(Relaxed);
        if seen != sec {
            // A new second reuses the slot; concurrent adders at the turn of a
            // second may lose a count, which only blurs the live view.
            if at.compare_exchange(seen, sec, Relaxed, Relaxed).is_ok() {
                req.store(0, Relaxed);
                tok.store(0, Relaxed);
            }
        }
        req.fetch_add(requests, Relaxed);
        tok.fetch_add(tokens, Relaxed);
    }

    /// Requests and tokens per minute over the last `span` whole seconds
    /// before `now_sec` (at most 60; from the second after the first
    /// request's, which is only partly used, once there is one), scaled to
    /// a minute.
    pub(crate) fn per_minute(&self, now_sec: u64, span: u64) -> (f64, f64) {
        let first = self.first.load(Relaxed);
        let since_first = now_sec.saturating_sub(first.saturating_add(1));
        let span = span.min(since_first).clamp(1, 60);
        let (mut req, mut tok) = (0u64, 0i64);
        for (at, r, t) in &self.slots {
            let sec = at.load(Relaxed);
            if sec < now_sec && sec + span >= now_sec {
                req += r.load(Relaxed);
                tok += t.load(Relaxed);
            }
        }
        let scale = 60.0 / span as f64;
        (req as f64 * scale, tok.max(0) as f64 * scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = Histogram::default();
        for _ in 0..90 {
            h.observe(Duration::from_millis(40)); // bucket 30–50
        }
        for _ in 0..10 {
            h.observe(Duration::from_millis(900)); // bucket 750–1000
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        assert!((30.0..=50.0).contains(&p50), "{p50}");
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((750.0..=1000.0).contains(&p99), "{p99}");
        assert_eq!(h.count(), 100);
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn counts_group_statuses_and_kinds() {
        let s = CallStats::default();
        s.started(false);
        s.ended(Some(200), None, Duration::from_millis(5));
        s.started(true);
        s.ended(Some(429), None, Duration::from_millis(1));
        s.started(true);
        s.ended(None, Some(FailureKind::Timeout), Duration::from_secs(1));
        s.waited(Duration::from_millis(3), Duration::ZERO);
        let c = s.counts();
        assert_eq!(c.attempts, 3);
        assert_eq!(c.ok, 1);
        assert_eq!(c.retries, 2);
        assert_eq!(c.throttled, 1);
        assert_eq!(c.in_flight, 0);
        assert_eq!(
            c.by_status,
            vec![("200".into(), 1), ("429".into(), 1), ("timeout".into(), 1)]
        );
        assert_eq!(c.place_waits.0, 1);
        assert_eq!(c.rate_waits.0, 0);
    }

    #[test]
    fn rolling_counts_the_last_seconds_only() {
        let r = Rolling::default();
        for sec in 0..10 {
            r.add(sec, 2, 100);
        }
        // Seconds 5..=9 complete before second 10: 10 requests in 5 s.
        let (rpm, tpm) = r.per_minute(10, 5);
        assert_eq!(rpm, 120.0);
        assert_eq!(tpm, 6_000.0);
        r.add(70, 1, -50);
        let (rpm, _) = r.per_minute(71, 60);
        assert_eq!(rpm, 1.0);
    }

    #[test]
    fn the_seconds_before_the_first_request_do_not_count() {
        // Calls began 3.5 s after the limiter: 10/s is 600/min from the
        // first whole second on.
        let r = Rolling::default();
        assert_eq!(r.per_minute(3, 3), (0.0, 0.0));
        r.add(3, 5, 0);
        assert_eq!(r.per_minute(4, 4).0, 300.0, "only the partial second yet");
        for sec in 4..6 {
            r.add(sec, 10, 0);
        }
        assert_eq!(r.per_minute(6, 6).0, 600.0);
        // A correction alone (no request) is not a first request.
        let r = Rolling::default();
        r.add(1, 0, -5);
        r.add(4, 10, 0);
        assert_eq!(r.per_minute(5, 5).0, 600.0);
    }
}
