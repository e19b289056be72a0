//! Adaptive concurrency: how many calls to keep in flight, found by additive
//! increase and multiplicative decrease (AIMD), after Vector's adaptive request
//! concurrency.
//!
//! A service that is not told its capacity still shows it: below capacity its
//! round-trip time (RTT) is flat; past it, requests queue and RTT climbs; far past
//! it, it answers 429/503 or times out. The controller keeps a baseline RTT (an
//! exponentially weighted moving average of past windows' means) and judges
//! each window of responses against it. A window closes once `limit` calls have
//! finished — about one round trip at full concurrency, so the limit moves at
//! most once per round trip, as TCP's congestion window does — or once two
//! baseline RTTs have passed with at least one call finished, so a lightly
//! loaded controller still reacts.
//!
//! At the end of a window: backpressure, or a mean RTT more than `rtt_deviance`
//! standard errors above the baseline, multiplies the limit by
//! `decrease_ratio`; otherwise, if the limit was actually reached during the
//! window and the mean RTT was no higher than the baseline, it grows by one.
//! Growing only when reached keeps the limit from drifting up on evidence it
//! never tested.

/// Tuning for [`Aimd`]. The defaults follow Vector's, chosen there by simulation,
/// except a deviance of 2 rather than 2.5: measured in standard errors (see
/// [`AimdConfig::rtt_deviance`]), a larger one let the limit run past a noisy
/// knee in this crate's simulations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AimdConfig {
    /// The limit to start from, clamped into `[min, max]`. Small, because a
    /// start above capacity costs a burst of 429s before the first decrease.
    pub initial: usize,
    /// The smallest limit (at least one: a limit of zero would never send the
    /// call that could show the service recovered).
    pub min: usize,
    /// The largest limit (raised to `min` when smaller).
    pub max: usize,
    /// Factor applied on a decrease, in `(0, 1)`; the result is rounded down, so
    /// every decrease lowers the limit by at least one until `min`.
    pub decrease_ratio: f64,
    /// How many standard errors above the baseline a window's mean RTT may be
    /// before it counts as the service slowing down; jitter below that is
    /// ignored. (The standard error is the spread of the window's RTTs over the
    /// square root of their number: how far their mean strays by chance.)
    pub rtt_deviance: f64,
    /// Weight of each window's mean RTT in the baseline, in `(0, 1]`. Smaller
    /// remembers longer.
    pub ewma_alpha: f64,
}

impl AimdConfig {
    /// The default tuning with a limit of at most `max`, starting at
    /// `min(4, max)`.
    pub fn up_to(max: usize) -> Self {
        AimdConfig {
            initial: 4.min(max),
            min: 1,
            max,
            decrease_ratio: 0.9,
            rtt_deviance: 2.0,
            ewma_alpha: 0.4,
        }
    }

    /// Out-of-range values replaced as the field docs describe.
    fn normalized(self) -> Self {
        let min = self.min.max(1);
        let max = self.max.max(min);
        let in_range = |x: f64, default: f64, ok: fn(f64) -> bool| if ok(x) { x } else { default };
        AimdConfig {
            initial: self.initial.clamp(min, max),
            min,
            max,
            decrease_ratio: in_range(self.decrease_ratio, 0.9, |r| r > 0.0 && r < 1.0),
            rtt_deviance: in_range(self.rtt_deviance, 2.0, |d| d >= 0.0),
            ewma_alpha: in_range(self.ewma_alpha, 0.4, |a| a > 0.0 && a <= 1.0),
        }
    }
}

impl Default for AimdConfig {
    /// Up to 200 concurrent calls (Vector's cap).
    fn default() -> Self {
        AimdConfig::up_to(200)
    }
}

/// Running mean and variance of one window's RTTs (Welford's algorithm: a
/// constant RTT gives exactly that mean and a variance of exactly zero, so equal
/// RTTs never look slower than themselves through rounding).
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    count: u64,
    mean: f64,
    /// Sum of squared differences from the mean.
    m2: f64,
}

impl Sample {
    fn add(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// The standard error of the mean: how far the mean of this many RTTs
    /// strays by chance. `None` below two RTTs, which show no spread.
    fn standard_error(&self) -> Option<f64> {
        let n = self.count as f64;
        (self.count >= 2).then(|| (self.m2 / (n - 1.0) / n).sqrt())
    }
}

/// An AIMD concurrency controller. The caller keeps at most [`Aimd::limit`]
/// calls in flight, reports each start with [`Aimd::on_start`], and each
/// finished call with exactly one of [`Aimd::on_response`] (the service
/// answered; its RTT is a fair measurement) or [`Aimd::on_backpressure`].
#[derive(Debug, Clone)]
pub struct Aimd {
    cfg: AimdConfig,
    limit: usize,
    /// The usual RTT in nanoseconds: an exponentially weighted moving average of
    /// the windows' means. `None` until a window with an RTT closes: there is
    /// nothing to compare the first window against.
    baseline: Option<f64>,
    /// When the current window opened.
    window_start: u64,
    /// Calls finished in this window, backpressured ones included, so a window
    /// of nothing but 429s still closes and decreases.
    finished: usize,
    /// The RTTs reported in this window.
    rtts: Sample,
    /// Whether in-flight calls reached the limit during this window.
    reached: bool,
    /// Whether any call in this window met a 429, 503 or timeout.
    backpressure: bool,
}

impl Aimd {
    /// A controller at `cfg.initial` (after normalizing `cfg`).
    pub fn new(cfg: AimdConfig) -> Self {
        let cfg = cfg.normalized();
        Aimd {
            cfg,
            limit: cfg.initial,
            baseline: None,
            window_start: 0,
            finished: 0,
            rtts: Sample::default(),
            reached: false,
            backpressure: false,
        }
    }

    /// The current concurrency limit, within `[min, max]`.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The caller started a call; `in_flight_after` counts it. Reaching the limit
    /// is what licenses the next increase.
    pub fn on_start(&mut self, in_flight_after: usize) {
        if in_flight_after >= self.limit {
            self.reached = true;
        }
    }

    /// A call finished with a response that measures the service (a success, or
    /// an error that is not backpressure), `rtt_nanos` after it was sent.
    pub fn on_response(&mut self, now: u64, rtt_nanos: u64) {
        self.rtts.add(rtt_nanos as f64);
        self.finish(now);
    }

    /// A call finished with a 429, a 503 or a timeout: the service is past its
    /// capacity. Its RTT is not a measurement of the service's work, so it is not
    /// taken.
    pub fn on_backpressure(&mut self, now: u64) {
        self.backpressure = true;
        self.finish(now);
    }

    fn finish(&mut self, now: u64) {
        self.finished += 1;
        let overdue = self
            .baseline
            .is_some_and(|b| now.saturating_sub(self.window_start) as f64 > 2.0 * b);
        if self.finished >= self.limit || overdue {
            self.close_window(now);
        }
    }

    fn close_window(&mut self, now: u64) {
        let current = (self.rtts.count > 0).then_some(self.rtts.mean);
        let (slower, no_slower) = match (self.baseline, current) {
            // Judged in standard errors of this window's own mean, not in the
            // spread of past windows' means as Vector does: that spread grows
            // with the controller's own swings (every decrease is followed by
            // fast windows), and in simulation it hid the RTT climbing past the
            // knee until 429s at twice the capacity stopped the limit.
            (Some(b), Some(c)) => {
                let noise = self
                    .rtts
                    .standard_error()
                    .map(|se| self.cfg.rtt_deviance * se);
                (noise.is_some_and(|n| c > b + n), c <= b)
            }
            // Nothing to compare the first window against: reaching the limit
            // is the only evidence there is.
            (None, Some(_)) => (false, true),
            (_, None) => (false, false),
        };
        if self.backpressure || slower {
            let shrunk = (self.limit as f64 * self.cfg.decrease_ratio) as usize;
            self.limit = shrunk.max(self.cfg.min);
        } else if self.reached && no_slower {
            // Growing only while no slower than usual (Vector's rule): past the
            // knee each step adds a little latency that may stay within the
            // noise, and holding lets the next step show against a settled
            // baseline instead of creeping up unseen.
            self.limit = (self.limit + 1).min(self.cfg.max);
        }
        // The baseline learns from every window, slow ones included: a service
        // whose normal latency changes (longer prompts, another region) must
        // become the new normal, or the limit would shrink forever.
        if let Some(c) = current {
            self.baseline = Some(match self.baseline {
                Some(b) => b + self.cfg.ewma_alpha * (c - b),
                None => c,
            });
        }
        self.window_start = now;
        self.finished = 0;
        self.rtts = Sample::default();
        self.reached = false;
        self.backpressure = false;
    }
}

#[cfg(test)]
mod tests;
