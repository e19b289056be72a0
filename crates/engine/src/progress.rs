//! Live counters of a run, shared between the engine, the writer thread and
//! whatever displays progress.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::engine::Engine;

/// Counters updated as the run goes; read with [`Progress::snapshot`].
///
/// `done` and `failed` are bumped only after the outcome is committed to the
/// store, so what is reported is always already durable.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    /// Items in the input (known after the validation pass).
    pub total: AtomicU64,
    /// Items skipped because an earlier run already did them.
    pub skipped: AtomicU64,
    /// Items recorded as done in this run.
    pub done: AtomicU64,
    /// Items recorded as failed in this run.
    pub failed: AtomicU64,
    /// Calls currently on the wire.
    pub in_flight: AtomicU64,
    /// Requests handed to a provider's batch API and not answered yet.
    pub in_batch: AtomicU64,
    /// Calls sent, retries included.
    pub attempts: AtomicU64,
    /// Calls that were retries.
    pub retries: AtomicU64,
    /// 429 responses seen.
    pub throttled: AtomicU64,
    /// Prompt + completion tokens reported by responses.
    pub tokens: AtomicU64,
    /// Pipeline step outcomes recorded (steps, fan-out elements, turns).
    pub steps: AtomicU64,
    /// Step outputs served from the cache.
    pub cache_hits: AtomicU64,
    /// Steps that ended with their fallback.
    pub fallbacks: AtomicU64,
    /// Spend so far, in millionths of a USD (priced providers only).
    pub spent_micro_usd: AtomicU64,
    /// 1 once the budget stopped new calls.
    pub budget_reached: AtomicU64,
    /// Webhook deliveries that failed after their retries.
    pub webhook_failures: AtomicU64,
    /// Times an endpoint's circuit breaker opened.
    pub breaker_openings: AtomicU64,
    /// Moving average of successful calls' latency, in microseconds.
    pub latency_ewma_us: AtomicU64,
    /// Per step and provider detail (job runs).
    pub stats: crate::stats::RunStats,
    /// The session's samples, one per heartbeat (see [`crate::history`]).
    pub history: crate::history::Recorder,
    /// While paused: microseconds since `started` when the pause began,
    /// plus one (0: not paused).
    paused_since_us: AtomicU64,
    /// Microseconds spent paused before the current pause.
    paused_us: AtomicU64,
    /// The engine the run belongs to (its providers and totals).
    engine: Engine,
}

impl Progress {
    /// The counters of a new run of `engine`.
    pub fn new(engine: &Engine) -> Self {
        Progress {
            started: Instant::now(),
            total: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            in_batch: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            spent_micro_usd: AtomicU64::new(0),
            budget_reached: AtomicU64::new(0),
            webhook_failures: AtomicU64::new(0),
            breaker_openings: AtomicU64::new(0),
            latency_ewma_us: AtomicU64::new(0),
            stats: crate::stats::RunStats::counting_into(engine.totals().clone()),
            history: crate::history::Recorder::default(),
            paused_since_us: AtomicU64::new(0),
            paused_us: AtomicU64::new(0),
            engine: engine.clone(),
        }
    }

    /// The engine the run belongs to.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// A consistent-enough copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// Items in the input.
    pub total: u64,
    /// Already done by an earlier run.
    pub skipped: u64,
    /// Done in this run.
    pub done: u64,
    /// Failed in this run.
    pub failed: u64,
    /// Calls on the wire now.
    pub in_flight: u64,
    /// Requests waiting in a provider's batch API now.
    pub in_batch: u64,
    /// Calls sent.
    pub attempts: u64,
    /// Retries sent.
    pub retries: u64,
    /// 429s seen.
    pub throttled: u64,
    /// Tokens used.
    pub tokens: u64,
    /// Pipeline step outcomes recorded.
    pub steps: u64,
    /// Step outputs served from the cache.
    pub cache_hits: u64,
    /// Steps that ended with their fallback.
    pub fallbacks: u64,
    /// Spend so far in USD (priced providers only).
    pub spent_usd: f64,
    /// Whether the budget stopped new calls.
    pub budget_reached: bool,
    /// Webhook deliveries that failed.
    pub webhook_failures: u64,
    /// Times an endpoint's circuit breaker opened.
    pub breaker_openings: u64,
    /// Seconds since the run started.
    pub elapsed_secs: f64,
    /// Whether the run is paused now: nothing new starts, the ETA stops.
    pub paused: bool,
    /// Seconds the run was paused (its clock stood still).
    pub paused_secs: f64,
}

impl Snapshot {
    /// Items still to do in this run.
    pub fn remaining(&self) -> u64 {
        self.total
            .saturating_sub(self.skipped + self.done + self.failed)
    }

    /// Items finished per second in this run.
    pub fn items_per_sec(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            (self.done + self.failed) as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }

    /// Estimated time to finish at the average rate so far, the time spent
    /// paused left out; none while paused (the run's clock stands still).
    pub fn eta(&self) -> Option<Duration> {
        if self.paused {
            return None;
        }
        let active = self.elapsed_secs - self.paused_secs;
        let rate = if active > 0.0 {
            (self.done + self.failed) as f64 / active
        } else {
            0.0
        };
        (rate > 0.0).then(|| Duration::from_secs_f64(self.remaining() as f64 / rate))
    }
}

impl Progress {
    /// Reads every counter.
    pub fn snapshot(&self) -> Snapshot {
        let elapsed = self.started.elapsed();
        let since = self.paused_since_us.load(Relaxed);
        let current = match since {
            0 => 0,
            s => (elapsed.as_micros() as u64).saturating_sub(s - 1),
        };
        let paused_us = self.paused_us.load(Relaxed) + current;
        Snapshot {
            total: self.total.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            done: self.done.load(Relaxed),
            failed: self.failed.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            in_batch: self.in_batch.load(Relaxed),
            attempts: self.attempts.load(Relaxed),
            retries: self.retries.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
            tokens: self.tokens.load(Relaxed),
            steps: self.steps.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            fallbacks: self.fallbacks.load(Relaxed),
            spent_usd: self.spent_micro_usd.load(Relaxed) as f64 / 1e6,
            budget_reached: self.budget_reached.load(Relaxed) > 0,
            webhook_failures: self.webhook_failures.load(Relaxed),
            breaker_openings: self.breaker_openings.load(Relaxed),
            elapsed_secs: elapsed.as_secs_f64(),
            paused: since > 0,
            paused_secs: paused_us as f64 / 1e6,
        }
    }

    /// Starts or ends a pause of the run's clock (idempotent).
    pub(crate) fn set_paused(&self, paused: bool) {
        let now = self.started.elapsed().as_micros() as u64 + 1;
        if paused {
            let _ = self
                .paused_since_us
                .compare_exchange(0, now, Relaxed, Relaxed);
        } else {
            let since = self.paused_since_us.swap(0, Relaxed);
            if since > 0 {
                self.paused_us.fetch_add(now.saturating_sub(since), Relaxed);
            }
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Folds one successful call's latency into the moving average.
    pub(crate) fn observe_latency(&self, latency: std::time::Duration) {
        let sample = latency.as_micros() as u64;
        let old = self.latency_ewma_us.load(Relaxed);
        // Races between threads only lose a sample; the average stays sound.
        let new = if old == 0 {
            sample
        } else {
            (old * 4 + sample) / 5
        };
        self.latency_ewma_us.store(new, Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_stops_while_paused_and_leaves_the_pause_out() {
        let s = Snapshot {
            total: 100,
            done: 10,
            elapsed_secs: 20.0,
            paused_secs: 10.0,
            ..Snapshot::default()
        };
        // 10 items in 10 s of work: 90 left take 90 s.
        assert_eq!(s.eta(), Some(Duration::from_secs(90)));
        let paused = Snapshot { paused: true, ..s };
        assert_eq!(paused.eta(), None);
        let progress = Progress::new(&crate::engine::Engine::new());
        progress.set_paused(true);
        progress.set_paused(true);
        std::thread::sleep(Duration::from_millis(20));
        let during = progress.snapshot();
        assert!(during.paused && during.paused_secs >= 0.02, "{during:?}");
        progress.set_paused(false);
        let after = progress.snapshot();
        assert!(!after.paused && after.paused_secs >= during.paused_secs);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(progress.snapshot().paused_secs, after.paused_secs);
    }
}
