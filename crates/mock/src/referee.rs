//! The mock's own account of a rate limit, written from the definition and
//! sharing no code with the client's limiter (`sluice-limit`), so a bug in
//! one is not hidden by the same bug in the other.
//!
//! The definition: a limit of `limit` units per `period` with a bucket of
//! `burst` units admits a request of `cost` at `t` when, for every earlier
//! admission `k`, the units admitted from `k` on plus this request fit in
//! `max(burst, cost)` plus what the rate gives over `t − t_k`:
//!
//! ```text
//!   (units since k + cost − max(burst, cost)) × period  ≤  limit × (t − t_k)
//! ```
//!
//! With a burst of one this is "no window that starts at an admission and
//! ends now has carried more than the rate": each request's own cost is paid
//! by the time after it, so a minute's budget is spread over the minute. The
//! arithmetic is exact (the rate is `limit / period`, not a rounded
//! per-unit interval).
//!
//! The log keeps every admission that can still bind. An admission whose
//! window is no tighter than a later one's can never bind again (every
//! later request adds the same units to both), and neither can one whose
//! window the rate has already paid off; both are dropped, so the check is
//! exact and the log stays short.

use std::collections::VecDeque;

/// One limit, judged from its log.
#[derive(Debug, Clone)]
pub(crate) struct Referee {
    limit: u64,
    period: u64,
    burst: u64,
    /// Units admitted so far.
    total: u128,
    /// For each admission that can still bind, `limit × t_k − period ×
    /// (units admitted before k)`: its window's load, scaled by `limit`,
    /// is this plus `period × total`. Strictly decreasing from the front.
    log: VecDeque<(u64, i128)>,
}

impl Referee {
    pub(crate) fn new(limit: u64, period: u64, burst: u64) -> Referee {
        Referee {
            limit: limit.max(1),
            period,
            burst: burst.max(1),
            total: 0,
            log: VecDeque::new(),
        }
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Nanoseconds of sending time one unit takes (rounded down).
    pub(crate) fn unit_nanos(&self) -> u64 {
        self.period / self.limit
    }

    /// `limit ×` the time at which the tightest window is paid off: when
    /// the bucket is full again.
    fn full_at_scaled(&self) -> Option<i128> {
        self.log
            .front()
            .map(|&(_, key)| key + self.period as i128 * self.total as i128)
    }

    /// Drops what can no longer bind at `now`.
    fn forget(&mut self, now: u64) {
        let (l, p, total) = (self.limit as i128, self.period as i128, self.total as i128);
        while let Some(&(_, key)) = self.log.front() {
            if key + p * total <= l * now as i128 {
                self.log.pop_front();
            } else {
                break;
            }
        }
    }

    /// Nanoseconds from `now` until `cost` units conform (0: they do now);
    /// `None`: they never will (more than the limit).
    pub(crate) fn wait(&self, now: u64, cost: u64) -> Option<u64> {
        if cost > self.limit {
            return None;
        }
        let Some(full_at) = self.full_at_scaled() else {
            return Some(0);
        };
        let (l, p) = (self.limit as i128, self.period as i128);
        // Admitted when full_at + p × (cost − max(burst, cost)) ≤ l × t.
        let due = full_at + p * (cost as i128 - self.burst.max(cost) as i128);
        let now_scaled = l * now as i128;
        Some(if due <= now_scaled {
            0
        } else {
            u64::try_from((due - now_scaled + l - 1) / l).unwrap_or(u64::MAX)
        })
    }

    /// Logs `cost` units admitted at `now` (checked or not).
    pub(crate) fn take(&mut self, now: u64, cost: u64) {
        self.forget(now);
        let (l, p) = (self.limit as i128, self.period as i128);
        // Its own window starts at `now` with nothing before it in the window.
        let key = l * now as i128 - p * self.total as i128;
        self.total += u128::from(cost);
        while self.log.back().is_some_and(|&(_, k)| k <= key) {
            self.log.pop_back();
        }
        self.log.push_back((now, key));
    }

    /// Nanoseconds from `now` until the bucket is full again.
    pub(crate) fn reset_nanos(&self, now: u64) -> u64 {
        let l = self.limit as i128;
        self.full_at_scaled().map_or(0, |full_at| {
            let debt = full_at - l * now as i128;
            if debt <= 0 {
                0
            } else {
                u64::try_from((debt + l - 1) / l).unwrap_or(u64::MAX)
            }
        })
    }

    /// Whole units the bucket holds at `now`.
    pub(crate) fn available(&self, now: u64) -> u64 {
        let (l, p) = (self.limit as i128, self.period as i128);
        let debt = self
            .full_at_scaled()
            .map_or(0, |f| (f - l * now as i128).max(0));
        let room = self.burst as i128 * p - debt;
        if room <= 0 {
            0
        } else {
            u64::try_from(room / p).unwrap_or(u64::MAX)
        }
    }

    /// How many entries the log holds (tests: it stays short).
    #[cfg(test)]
    pub(crate) fn logged(&self) -> usize {
        self.log.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const MINUTE: u64 = 60_000 * MS;

    #[test]
    fn a_burst_of_one_spreads_the_minute() {
        let mut r = Referee::new(600, MINUTE, 1); // one per 100 ms
        assert_eq!(r.wait(0, 1), Some(0));
        r.take(0, 1);
        assert_eq!(r.wait(MS, 1), Some(99 * MS));
        assert_eq!(r.wait(100 * MS, 1), Some(0));
        assert_eq!(r.wait(0, 601), None);
    }

    #[test]
    fn a_large_request_is_paid_by_the_time_after_it() {
        let mut r = Referee::new(6_000, MINUTE, 1); // 100 units a second
        r.take(0, 300);
        // Three seconds of sending time: the next request of any size waits.
        assert_eq!(r.wait(MS, 1), Some(2_999 * MS));
        assert_eq!(r.reset_nanos(0), 3_000 * MS);
        assert_eq!(r.wait(3_000 * MS, 6_000), Some(0));
    }

    #[test]
    fn an_allowance_holds_the_whole_minute() {
        let mut r = Referee::new(60, MINUTE, 60);
        for _ in 0..60 {
            assert_eq!(r.wait(0, 1), Some(0));
            r.take(0, 1);
        }
        assert_eq!(r.wait(0, 1), Some(1_000 * MS));
        assert_eq!(r.available(30_000 * MS), 30);
    }

    #[test]
    fn the_log_stays_short_at_the_limit() {
        let mut r = Referee::new(6_000, MINUTE, 1);
        for i in 0..100_000u64 {
            let t = i * 10 * MS;
            assert_eq!(r.wait(t, 1), Some(0), "at {i}");
            r.take(t, 1);
        }
        assert!(r.logged() <= 2, "{}", r.logged());
    }
}
