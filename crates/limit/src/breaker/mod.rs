//! A circuit breaker per endpoint: stop sending to an endpoint that keeps failing,
//! then let one probe find out whether it has recovered.
//!
//! Closed → Open after `failures` consecutive retryable failures (or, when a
//! window is configured, after more than `rate` of the last `window` outcomes
//! failed); Open → HalfOpen once `cooldown` has passed and a caller asks; one
//! probe goes out, and its outcome closes the breaker or opens it for another
//! cooldown. Sending into a dead endpoint only burns retries and quota, and a
//! recovering one is knocked over again by a full-rate stampede, hence the probe.

use std::collections::VecDeque;

/// How often a caller refused during a half-open probe looks again: the probe
/// usually answers within one request's time, and polling is cheap.
const PROBE_POLL_NANOS: u64 = 50_000_000;

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive retryable failures that open the breaker (at least one;
    /// zero is treated as one).
    pub failures: u32,
    /// How long an open breaker refuses calls before it admits a probe.
    pub cooldown_nanos: u64,
    /// Also open when, of the last `window` outcomes, more than `rate` failed;
    /// 0 turns this off. Catches an endpoint failing intermittently, which never
    /// strings together `failures` in a row. Raised to `failures` when smaller,
    /// so the rate never judges from fewer outcomes than the streak does.
    pub window: u32,
    /// Fraction of the window's outcomes that may fail without opening,
    /// clamped to `[0, 1]`.
    pub rate: f64,
}

impl Default for BreakerConfig {
    /// Five failures in a row open it for 30 s; no rate window.
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            cooldown_nanos: 30_000_000_000,
            window: 0,
            rate: 0.5,
        }
    }
}

/// Where a breaker stands, as of the last call made on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; failures are being counted.
    Closed,
    /// Calls are refused until `until` (nanoseconds since the caller's origin).
    /// An open breaker past its `until` stays reported as open until the next
    /// [`Breaker::try_acquire`] turns it half-open.
    Open {
        /// When a probe may go.
        until: u64,
    },
    /// One probe is in flight; everything else is refused until it reports.
    HalfOpen,
}

/// The internal state: the public one plus what the half-open state needs.
#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open {
        until: u64,
    },
    /// `since` is when the probe was admitted.
    HalfOpen {
        since: u64,
    },
}

/// A circuit breaker for one endpoint. See the module docs for the states.
#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: State,
    /// Retryable failures since the last success (while closed).
    consecutive: u32,
    /// The last `cfg.window` outcomes while closed, `true` for a failure; empty
    /// and unused when the window is off.
    recent: VecDeque<bool>,
    /// Failures among `recent`, kept so the rate check is O(1).
    recent_failures: u32,
    /// Times the breaker opened, including re-opens after a failed probe.
    opened: u64,
}

impl Breaker {
    /// A closed breaker with `cfg` (normalized as the field docs describe).
    pub fn new(cfg: BreakerConfig) -> Self {
        let failures = cfg.failures.max(1);
        let window = if cfg.window == 0 {
            0
        } else {
            cfg.window.max(failures)
        };
        let rate = if cfg.rate.is_nan() {
            0.5
        } else {
            cfg.rate.clamp(0.0, 1.0)
        };
        Breaker {
            cfg: BreakerConfig {
                failures,
                window,
                rate,
                ..cfg
            },
            state: State::Closed,
            consecutive: 0,
            recent: VecDeque::with_capacity(window as usize),
            recent_failures: 0,
            opened: 0,
        }
    }

    /// Whether a call may go at `now`. Closed: yes. Open before its `until`: no.
    /// Open at or after `until`: turns half-open and admits exactly one probe;
    /// further calls are refused until the probe reports.
    pub fn try_acquire(&mut self, now: u64) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until } if now < until => false,
            State::Open { .. } => {
                self.state = State::HalfOpen { since: now };
                true
            }
            // A probe whose caller was cancelled never reports; without this the
            // breaker would stay half-open, refusing everything, forever.
            State::HalfOpen { since } if now >= since.saturating_add(self.cfg.cooldown_nanos) => {
                self.state = State::HalfOpen { since: now };
                true
            }
            State::HalfOpen { .. } => false,
        }
    }

    /// When a caller refused at `now` should ask again: the open state's
    /// `until`, or shortly after `now` while a half-open probe is in flight.
    /// `now` itself when a call would be admitted.
    pub fn retry_at(&self, now: u64) -> u64 {
        match self.state {
            State::Closed => now,
            State::Open { until } => until.max(now),
            State::HalfOpen { since } => {
                let abandoned = since.saturating_add(self.cfg.cooldown_nanos);
                now.saturating_add(PROBE_POLL_NANOS).min(abandoned).max(now)
            }
        }
    }

    /// A call succeeded: closes a half-open breaker and clears the failure count.
    pub fn on_success(&mut self, _now: u64) {
        match self.state {
            State::Closed => {
                self.consecutive = 0;
                self.record(false);
            }
            State::HalfOpen { .. } => self.close(),
            // A call admitted before the breaker opened describes the endpoint as
            // it was before the failures that opened it: it neither closes the
            // breaker nor skips the probe.
            State::Open { .. } => {}
        }
    }

    /// A call failed in a retryable way (5xx, timeout, connection reset). The
    /// caller decides what counts: a 429 is the provider pacing us, not the
    /// endpoint failing, and belongs to the rate limiter instead.
    ///
    /// Opens the breaker at the threshold; a failed probe opens it for another
    /// cooldown.
    pub fn on_failure(&mut self, now: u64) {
        match self.state {
            State::Closed => {
                self.consecutive = self.consecutive.saturating_add(1);
                self.record(true);
                if self.consecutive >= self.cfg.failures || self.rate_exceeded() {
                    self.open(now);
                }
            }
            State::HalfOpen { .. } => self.open(now),
            // Late failures from calls sent before it opened would otherwise keep
            // pushing the probe back while the endpoint may already be fine.
            State::Open { .. } => {}
        }
    }

    /// The current state (as of the last call; see [`BreakerState::Open`]).
    pub fn state(&self) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } => BreakerState::Open { until },
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How many times the breaker opened, re-opens after a failed probe
    /// included (for metrics and tests).
    pub fn opened_count(&self) -> u64 {
        self.opened
    }

    /// Adds one outcome to the rate window, dropping the oldest when full.
    fn record(&mut self, failed: bool) {
        let window = self.cfg.window as usize;
        if window == 0 {
            return;
        }
        if self.recent.len() == window && self.recent.pop_front() == Some(true) {
            self.recent_failures -= 1;
        }
        self.recent.push_back(failed);
        self.recent_failures += u32::from(failed);
    }

    /// Whether more than `rate` of a full window failed. A window not yet full
    /// is no evidence: two failures out of the first three calls are not 66%.
    fn rate_exceeded(&self) -> bool {
        let window = self.cfg.window;
        window > 0
            && self.recent.len() == window as usize
            && f64::from(self.recent_failures) > self.cfg.rate * f64::from(window)
    }

    fn open(&mut self, now: u64) {
        self.state = State::Open {
            until: now.saturating_add(self.cfg.cooldown_nanos),
        };
        self.opened += 1;
        self.reset_counts();
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.reset_counts();
    }

    /// A breaker that closes starts with a clean slate: failures from before it
    /// opened say nothing about the recovered endpoint.
    fn reset_counts(&mut self) {
        self.consecutive = 0;
        self.recent.clear();
        self.recent_failures = 0;
    }
}

#[cfg(test)]
mod tests;
