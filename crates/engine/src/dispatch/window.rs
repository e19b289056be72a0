//! How many pieces of work may be in progress at once, and the one rule that
//! grows it to a rate: with a rate but no fixed concurrency, enough for the
//! rate at the latency observed (Little's law), with 25% headroom.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::progress::Progress;

/// The most pieces of work (quick mode's requests, a job's units) a window
/// starts with or grows to.
pub(crate) const MAX_IN_FLIGHT: usize = 4_096;

/// How often the window looks at the latency again.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Work in progress at most; grows (never shrinks) to what `rate` needs.
#[derive(Debug)]
pub(crate) struct Window {
    /// Calls a second to reach; `None`: the size is fixed.
    rate: Option<f64>,
    /// Calls one piece of work makes in turn (a job's steps; 1 for quick mode).
    steps: usize,
    size: usize,
    next_check: tokio::time::Instant,
}

impl Window {
    /// A window of `size` that grows to `rate` calls a second (when given)
    /// for work making `steps` calls in turn.
    pub(crate) fn new(size: usize, rate: Option<f64>, steps: usize) -> Window {
        Window {
            rate,
            steps: steps.max(1),
            size: size.max(1),
            next_check: tokio::time::Instant::now(),
        }
    }

    /// The new size when the rate needs more work in progress than the
    /// window holds now (looked at every 200 ms at most).
    pub(crate) fn grow(&mut self, progress: &Progress) -> Option<usize> {
        let rate = self.rate?;
        let now = tokio::time::Instant::now();
        if now < self.next_check {
            return None;
        }
        self.next_check += CHECK_EVERY;
        if self.next_check < now {
            // Not looked at for a while (paused, or nothing to hand out):
            // the next look is a period from now, not a burst of catch-ups.
            self.next_check = now + CHECK_EVERY;
        }
        let latency = progress.latency_ewma_us.load(Relaxed) as f64 / 1e6;
        let needed = needed(rate, self.steps, latency);
        if needed <= self.size {
            return None;
        }
        tracing::debug!(needed, "more work in progress to reach the rate");
        self.size = needed;
        Some(needed)
    }
}

/// Work in progress to sustain `per_sec` calls a second when each piece
/// makes `steps` calls in turn, each taking `latency` seconds, with 25%
/// headroom; at most [`MAX_IN_FLIGHT`].
pub(crate) fn needed(per_sec: f64, steps: usize, latency: f64) -> usize {
    let needed = (per_sec * latency * steps as f64 * 1.25).ceil() as usize;
    needed.min(MAX_IN_FLIGHT)
}
