//! Several rate windows held together: requests per second, minute, hour and
//! day, and tokens per minute and day, as providers publish them.
//!
//! Each configured window is one [`Gcra`]; a request conforms only when it
//! conforms to all of them, and takes from all or from none, so a request
//! refused by one window does not use up another's budget while it waits.
//!
//! Bursts differ by period. Per-second and per-minute windows keep the default
//! burst of one request: providers enforce them over shorter spans (1,200/min
//! as 20/s), so they must be paced. Per-hour and per-day windows get a burst of
//! a sixtieth of their limit: a day's budget need not be paced to the second,
//! only its total matters, and pacing 10,000/day as one request every 8.6 s
//! would stall a short job for no reason. The burst is borrowed from the rate
//! (the bucket refills at `limit - burst + 1` per period), so no hour or day
//! ever holds more than its limit, however the burst is spent.

use crate::gcra::{Gcra, Rejection};

const SECOND: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Requests and tokens per second/minute/hour/day, all held at once. `None`
/// leaves a window out; a limit of zero is treated as one (as [`Gcra`] does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowLimits {
    /// Requests per second.
    pub rps: Option<u64>,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Requests per hour.
    pub rph: Option<u64>,
    /// Requests per day.
    pub rpd: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Tokens per day.
    pub tpd: Option<u64>,
}

/// One configured window.
#[derive(Debug, Clone)]
struct Window {
    gcra: Gcra,
    /// The limit as configured, for [`Rejection::TooLarge`]: the GCRA's own
    /// limit is lower by the burst it lends on hour and day windows.
    limit: u64,
    /// Charged a request's tokens rather than one per request.
    tokens: bool,
    /// Paced with a burst of one request (per-second and per-minute
    /// windows): what a slice of shared sending time must hold.
    paced: bool,
}

impl Window {
    fn new(limit: u64, period: u64, tokens: bool, catch_up: u64) -> Window {
        let limit = limit.max(1);
        let burst = if period >= HOUR {
            (limit / 60).max(1)
        } else {
            1
        };
        // A bucket of `burst` refilled at `r` per period admits at most
        // `burst + r - 1` in any period; `r = limit - burst + 1` keeps that at
        // the limit.
        let rate = limit - burst + 1;
        Window {
            gcra: Gcra::new(rate, period, burst).with_catch_up(catch_up),
            limit,
            tokens,
            paced: burst == 1 && period < HOUR,
        }
    }

    /// What a request of `tokens` costs in this window.
    fn cost(&self, tokens: u64) -> u64 {
        if self.tokens {
            tokens
        } else {
            1
        }
    }

    /// Whether this window has a say over a request of `tokens`. A request that
    /// spends no tokens is not held back by token windows' debt: it adds none.
    fn applies(&self, tokens: u64) -> bool {
        !self.tokens || tokens > 0
    }
}

/// Every rate window of one provider (or endpoint), held together. See the
/// module docs for the bursts.
#[derive(Debug, Clone)]
pub struct Windows {
    windows: Vec<Window>,
    /// Nothing is admitted before this (nanoseconds since the caller's origin;
    /// 0 for no hold). Kept apart from the windows so that a provider's
    /// `retry-after` also pauses a provider with no configured limits, and so a
    /// short pause does not spend the hour and day windows' bursts, as
    /// [`Gcra::hold_until`] on each would.
    held_until: u64,
}

impl Windows {
    /// The windows set in `limits`, each letting a caller woken up to
    /// `catch_up_nanos` late keep its place (see [`Gcra::with_catch_up`]).
    pub fn new(limits: &WindowLimits, catch_up_nanos: u64) -> Self {
        let configured = [
            (limits.rps, SECOND, false),
            (limits.rpm, MINUTE, false),
            (limits.rph, HOUR, false),
            (limits.rpd, DAY, false),
            (limits.tpm, MINUTE, true),
            (limits.tpd, DAY, true),
        ];
        let windows = configured
            .into_iter()
            .filter_map(|(limit, period, tokens)| {
                limit.map(|l| Window::new(l, period, tokens, catch_up_nanos))
            })
            .collect();
        Windows {
            windows,
            held_until: 0,
        }
    }

    /// Whether [`Windows::try_acquire`] can ever refuse: some window is
    /// configured, or a hold was placed. A caller may skip the windows when not.
    pub fn is_limited(&self) -> bool {
        !self.windows.is_empty() || self.held_until > 0
    }

    /// Takes one request of `tokens` (the estimate) from every window at `now`
    /// if it conforms to all of them; otherwise takes nothing.
    ///
    /// `Err(Wait(n))`: try again in `n` nanoseconds, the longest wait among the
    /// windows and the hold. `Err(TooLarge)`: `tokens` exceed `tpm` or `tpd`, so
    /// the request can never conform.
    pub fn try_acquire(&mut self, now: u64, tokens: u64) -> Result<(), Rejection> {
        let mut wait = self.held_until.saturating_sub(now);
        for w in self.windows.iter().filter(|w| w.applies(tokens)) {
            let cost = w.cost(tokens);
            // Checked against the configured limit first, so the error names
            // the number the user wrote.
            if cost > w.limit {
                return Err(Rejection::TooLarge {
                    cost,
                    limit: w.limit,
                });
            }
            match w.gcra.check(now, cost) {
                Ok(()) => {}
                Err(Rejection::Wait(n)) => wait = wait.max(n),
                // Within the limit but above the rate left after the burst an
                // hour or day window lends: nearly the whole budget in one
                // request, which could only conform to a full bucket it never
                // holds. Refused rather than kept waiting forever.
                Err(Rejection::TooLarge { .. }) => {
                    return Err(Rejection::TooLarge {
                        cost,
                        limit: w.limit,
                    })
                }
            }
        }
        if wait > 0 {
            return Err(Rejection::Wait(wait));
        }
        for w in self.windows.iter_mut().filter(|w| w.applies(tokens)) {
            w.gcra.take(now, w.cost(tokens));
        }
        Ok(())
    }

    /// Whether a request of `tokens`, admitted at `now` or when it next
    /// conforms, leaves every paced window's schedule ending by `end`: a process
    /// that owns the provider's sending time only until `end` (a slice of a
    /// shared limit) must not push its requests' spacing into the next
    /// owner's time.
    pub fn fits_before(&self, now: u64, tokens: u64, end: u64) -> bool {
        let wait = self.held_until.saturating_sub(now);
        let at = self
            .windows
            .iter()
            .filter(|w| w.paced && w.applies(tokens))
            .map(|w| match w.gcra.check(now, w.cost(tokens)) {
                Err(Rejection::Wait(n)) => now + n,
                _ => now,
            })
            .fold(now + wait, u64::max);
        self.windows
            .iter()
            .filter(|w| w.paced && w.applies(tokens))
            .all(|w| w.gcra.tat_after(at, w.cost(tokens)) <= end)
    }

    /// Whether a request of `tokens` can never conform: `(cost, limit)` of
    /// the window it exceeds (the same check [`Windows::try_acquire`] makes).
    pub fn too_large(&self, tokens: u64) -> Option<(u64, u64)> {
        self.windows
            .iter()
            .filter(|w| w.applies(tokens))
            .find_map(|w| {
                let cost = w.cost(tokens);
                let never = cost > w.limit
                    || matches!(
                        w.gcra.check(u64::MAX / 2, cost),
                        Err(Rejection::TooLarge { .. })
                    );
                never.then_some((cost, w.limit))
            })
    }

    /// The sending time one request of `tokens` occupies in the tightest
    /// paced window (nanoseconds): the least a slice must last to admit it.
    pub fn occupancy(&self, tokens: u64) -> u64 {
        self.windows
            .iter()
            .filter(|w| w.paced && w.applies(tokens))
            .map(|w| w.cost(tokens).saturating_mul(w.gcra.unit_nanos()))
            .max()
            .unwrap_or(0)
    }

    /// Corrects the token windows once a response reports its usage: gives
    /// back what was `reserved` but not `used`, or charges the excess.
    pub fn settle(&mut self, now: u64, reserved: u64, used: u64) {
        for w in self.windows.iter_mut().filter(|w| w.tokens) {
            if used < reserved {
                w.gcra.refund(now, reserved - used);
            } else if used > reserved {
                w.gcra.take(now, used - reserved);
            }
        }
    }

    /// Admits nothing before `until` (a provider's `retry-after`, or the reset
    /// of a limit it reports exhausted). A later hold extends an earlier one;
    /// an earlier one never shortens it.
    pub fn hold_until(&mut self, until: u64) {
        self.held_until = self.held_until.max(until);
    }
}

#[cfg(test)]
mod tests;
