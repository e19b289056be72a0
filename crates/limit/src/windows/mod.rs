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
//!
//! Limits a provider announces are held beside the configured ones
//! ([`Windows::observe`]): a window per announced limit the job left out,
//! mirroring the provider's own bucket (its span and capacity inferred by
//! [`Learned`]), so a still-full allowance is used at once and then the
//! announced rate; a quota that comes back only at its reset is counted down
//! instead. At the first 429 ([`Windows::back_off`]) those windows fall back
//! to even pacing: a provider that holds a minute's limit over shorter
//! periods draws a handful of 429s, not a storm.

use crate::gcra::{Gcra, Rejection};
use crate::learned::{Learned, Refill};

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
    /// Input (prompt) tokens per minute: Anthropic holds them apart.
    pub itpm: Option<u64>,
    /// Output (completion) tokens per minute, held apart from input.
    pub otpm: Option<u64>,
}

/// What one request costs: its input (prompt) tokens and the output
/// (completion) tokens it may generate. A plain number is all input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens (the cap reserved before the call).
    pub output: u64,
}

impl Cost {
    /// Input and output together.
    pub fn total(self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

impl From<u64> for Cost {
    fn from(tokens: u64) -> Cost {
        Cost {
            input: tokens,
            output: 0,
        }
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dim {
    /// Requests.
    Requests,
    /// Tokens, input and output together.
    Tokens,
    /// Input tokens.
    InputTokens,
    /// Output tokens.
    OutputTokens,
}

impl Dim {
    /// What a request of `cost` spends of this.
    fn of(self, cost: Cost) -> u64 {
        match self {
            Dim::Requests => 1,
            Dim::Tokens => cost.total(),
            Dim::InputTokens => cost.input,
            Dim::OutputTokens => cost.output,
        }
    }

    /// `requests`, `tokens`, `input tokens`, `output tokens`.
    pub fn name(self) -> &'static str {
        match self {
            Dim::Requests => "requests",
            Dim::Tokens => "tokens",
            Dim::InputTokens => "input tokens",
            Dim::OutputTokens => "output tokens",
        }
    }
}

/// One limit's state as a response reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Units per window, if said.
    pub limit: Option<u64>,
    /// Units left now.
    pub remaining: Option<u64>,
    /// Nanoseconds until the limit is whole again.
    pub reset_nanos: Option<u64>,
    /// When the request that brought the report was admitted here (ns): the
    /// provider's figures describe that moment, not the answer's arrival.
    /// `None`: now.
    pub sent_at: Option<u64>,
    /// Units of this dimension admitted here after that request: the report
    /// does not count them yet.
    pub sent_after: u64,
}

/// A limit the provider announced, as held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// What it counts.
    pub dim: Dim,
    /// How it was inferred.
    pub learned: Learned,
}

/// One configured window.
#[derive(Debug, Clone)]
struct Window {
    gcra: Gcra,
    /// The limit as configured, for [`Rejection::TooLarge`]: the GCRA's own
    /// limit is lower by the burst it lends on hour and day windows.
    limit: u64,
    /// What it counts.
    dim: Dim,
    /// Announced by the provider (not configured): its inferred shape.
    announced: Option<Learned>,
    /// Paced with a burst of one request (per-second and per-minute
    /// windows): what a slice of shared sending time must hold.
    paced: bool,
}

impl Window {
    fn new(limit: u64, period: u64, dim: Dim, catch_up: u64) -> Window {
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
            dim,
            announced: None,
            paced: burst == 1 && period < HOUR,
        }
    }

    /// A window mirroring an announced limit: a bucket of the provider's
    /// capacity (one, when pacing `even`ly), refilled at its rate.
    fn announced(learned: Learned, dim: Dim, even: bool, catch_up: u64) -> Window {
        let burst = if even { 1 } else { learned.capacity };
        Window {
            gcra: Gcra::new(learned.limit, learned.span.nanos(), burst).with_catch_up(catch_up),
            limit: learned.limit,
            dim,
            announced: Some(learned),
            paced: burst == 1 && learned.span.nanos() < HOUR,
        }
    }

    /// What a request of `cost` costs in this window.
    fn cost(&self, cost: Cost) -> u64 {
        self.dim.of(cost)
    }

    /// Whether this window has a say over a request of `cost`. A request that
    /// spends none of what it counts is not held back by its debt: it adds none.
    fn applies(&self, cost: Cost) -> bool {
        self.dim == Dim::Requests || self.dim.of(cost) > 0
    }
}

/// A quota that comes back whole at a fixed time (a daily quota).
#[derive(Debug, Clone, Copy)]
struct Quota {
    dim: Dim,
    /// As inferred from the report that set it.
    learned: Learned,
    /// Units left before `until`.
    left: u64,
    /// When it is whole again (ns); after that it says nothing until the
    /// provider reports again.
    until: u64,
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
    /// Announced quotas that come back only at their reset.
    quotas: Vec<Quota>,
    /// Announced limits are paced evenly (after a 429, or when the limits
    /// are shared by several processes, whose slices need even spacing).
    even: bool,
    catch_up: u64,
}

impl Windows {
    /// The windows set in `limits`, each letting a caller woken up to
    /// `catch_up_nanos` late keep its place (see [`Gcra::with_catch_up`]).
    pub fn new(limits: &WindowLimits, catch_up_nanos: u64) -> Self {
        let configured = [
            (limits.rps, SECOND, Dim::Requests),
            (limits.rpm, MINUTE, Dim::Requests),
            (limits.rph, HOUR, Dim::Requests),
            (limits.rpd, DAY, Dim::Requests),
            (limits.tpm, MINUTE, Dim::Tokens),
            (limits.tpd, DAY, Dim::Tokens),
            (limits.itpm, MINUTE, Dim::InputTokens),
            (limits.otpm, MINUTE, Dim::OutputTokens),
        ];
        let windows = configured
            .into_iter()
            .filter_map(|(limit, period, dim)| {
                limit.map(|l| Window::new(l, period, dim, catch_up_nanos))
            })
            .collect();
        Windows {
            windows,
            held_until: 0,
            quotas: Vec::new(),
            even: false,
            catch_up: catch_up_nanos,
        }
    }

    /// Whether [`Windows::try_acquire`] can ever refuse: some window is
    /// configured, or a hold was placed. A caller may skip the windows when not.
    pub fn is_limited(&self) -> bool {
        !self.windows.is_empty() || self.held_until > 0 || !self.quotas.is_empty()
    }

    /// Takes one request of `tokens` (the estimate) from every window at `now`
    /// if it conforms to all of them; otherwise takes nothing.
    ///
    /// `Err(Wait(n))`: try again in `n` nanoseconds, the longest wait among the
    /// windows and the hold. `Err(TooLarge)`: `tokens` exceed `tpm` or `tpd`, so
    /// the request can never conform.
    pub fn try_acquire(&mut self, now: u64, cost: impl Into<Cost>) -> Result<(), Rejection> {
        let tokens: Cost = cost.into();
        let mut wait = self.held_until.saturating_sub(now);
        for q in &self.quotas {
            if now < q.until && q.dim.of(tokens) > q.left {
                wait = wait.max(q.until - now);
            }
        }
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
        for q in self.quotas.iter_mut().filter(|q| now < q.until) {
            q.left -= q.dim.of(tokens).min(q.left);
        }
        Ok(())
    }

    /// Whether a request of `tokens`, admitted at `now` or when it next
    /// conforms, leaves every paced window's schedule ending by `end`: a process
    /// that owns the provider's sending time only until `end` (a slice of a
    /// shared limit) must not push its requests' spacing into the next
    /// owner's time.
    pub fn fits_before(&self, now: u64, tokens: impl Into<Cost>, end: u64) -> bool {
        self.schedule_end(now, tokens) <= end
    }

    /// Where the paced windows' schedule would end if a request of `tokens`
    /// were admitted at `now` or when it next conforms (0 without paced
    /// windows).
    pub fn schedule_end(&self, now: u64, tokens: impl Into<Cost>) -> u64 {
        let tokens: Cost = tokens.into();
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
            .map(|w| w.gcra.tat_after(at, w.cost(tokens)))
            .max()
            .unwrap_or(0)
    }

    /// Whether a request of `tokens` can never conform: `(cost, limit)` of
    /// the window it exceeds (the same check [`Windows::try_acquire`] makes).
    pub fn too_large(&self, tokens: impl Into<Cost>) -> Option<(u64, u64)> {
        let tokens: Cost = tokens.into();
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
    pub fn occupancy(&self, tokens: impl Into<Cost>) -> u64 {
        let tokens: Cost = tokens.into();
        self.windows
            .iter()
            .filter(|w| w.paced && w.applies(tokens))
            .map(|w| w.cost(tokens).saturating_mul(w.gcra.unit_nanos()))
            .max()
            .unwrap_or(0)
    }

    /// Corrects the token windows once a response reports its usage: gives
    /// back what was `reserved` at `admitted_at` but not `used` (only the
    /// sending time still ahead: see [`Gcra::refund`]), or charges the excess.
    pub fn settle(
        &mut self,
        now: u64,
        admitted_at: u64,
        reserved: impl Into<Cost>,
        used: impl Into<Cost>,
    ) {
        let (reserved, used): (Cost, Cost) = (reserved.into(), used.into());
        for w in self.windows.iter_mut().filter(|w| w.dim != Dim::Requests) {
            let (reserved, used) = (w.dim.of(reserved), w.dim.of(used));
            if used < reserved {
                w.gcra.refund(now, admitted_at, reserved, reserved - used);
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

impl Windows {
    /// Takes up what a response said about one limit the provider holds on
    /// `dim`. Where the job configured none on `dim` (`configured` false) the
    /// announced limit is held — a bucket mirroring the provider's, brought
    /// in line with what it says is left (only ever tightened: requests on
    /// the wire are not counted there yet), or a quota counted down to its
    /// reset. Whatever is configured, `remaining: 0` holds everything until
    /// the provider admits again.
    pub fn observe(&mut self, now: u64, dim: Dim, report: Report, configured: bool) {
        let Some(limit) = report.limit.filter(|&l| l > 0) else {
            // Nothing to infer from: an exhausted limit holds until its reset.
            if let (Some(0), Some(reset)) = (report.remaining, report.reset_nanos) {
                self.hold_until(now.saturating_add(reset));
            }
            return;
        };
        let learned = Learned::infer(limit, report.remaining, report.reset_nanos);
        let reset = report.reset_nanos.unwrap_or(0);
        let at = report.sent_at.unwrap_or(now).min(now);
        if report.remaining == Some(0) {
            self.hold_until(at.saturating_add(learned.next_unit_nanos(reset)));
        }
        if configured {
            return;
        }
        match learned.refill {
            Refill::AtReset => {
                self.windows
                    .retain(|w| !(w.announced.is_some() && w.dim == dim));
                self.quotas.retain(|q| q.dim != dim);
                let left = report.remaining.unwrap_or(limit);
                self.quotas.push(Quota {
                    dim,
                    learned,
                    left: left.saturating_sub(report.sent_after),
                    until: at.saturating_add(reset),
                });
            }
            Refill::Continuous => {
                self.quotas.retain(|q| q.dim != dim);
                let same = |w: &Window| {
                    w.dim == dim
                        && w.announced.is_some_and(|a| {
                            (a.limit, a.span, a.refill)
                                == (learned.limit, learned.span, learned.refill)
                        })
                };
                if !self.windows.iter().any(same) {
                    self.windows
                        .retain(|w| !(w.announced.is_some() && w.dim == dim));
                    self.windows
                        .push(Window::announced(learned, dim, self.even, self.catch_up));
                }
                let Some(w) = self.windows.iter_mut().find(|w| same(w)) else {
                    return;
                };
                // The provider's bucket held `remaining` when it admitted the
                // request; what was sent here since comes off it too. Ours, of
                // `burst` units, holds at most that much.
                let unit = w.gcra.unit_nanos();
                let burst = if self.even { 1 } else { learned.capacity };
                let spare = learned.capacity.saturating_sub(burst).saturating_mul(unit);
                let full = reset
                    .saturating_add(report.sent_after.saturating_mul(unit))
                    .saturating_sub(spare);
                w.gcra.hold_until_full(at.saturating_add(full));
            }
        }
    }

    /// The provider refused a request (429) although announced limits were
    /// held: it holds them over shorter periods than their capacity says.
    /// From now on they are paced evenly (a burst of one). Returns whether
    /// anything changed.
    pub fn back_off(&mut self, now: u64) -> bool {
        let changed = !self.even
            && self
                .windows
                .iter()
                .any(|w| w.announced.is_some_and(|a| a.capacity > 1));
        self.even = true;
        for w in self.windows.iter_mut() {
            if let Some(learned) = w.announced.filter(|a| a.capacity > 1) {
                // The next unit is due when the provider's bucket, as
                // mirrored, has one again; from there one per interval.
                let debt = w.gcra.reset_nanos(now);
                let spare = (learned.capacity - 1).saturating_mul(w.gcra.unit_nanos());
                *w = Window::announced(learned, w.dim, true, self.catch_up);
                w.gcra.hold_until_full(now + debt.saturating_sub(spare));
            }
        }
        changed
    }

    /// Paces announced limits evenly from the start (limits shared by
    /// several processes send in slices, which need even spacing).
    pub fn pace_evenly(&mut self, now: u64) {
        self.back_off(now);
    }

    /// The announced limits held now.
    pub fn announced(&self) -> Vec<Announced> {
        let windows = self.windows.iter().filter_map(|w| {
            w.announced.map(|learned| Announced {
                dim: w.dim,
                learned,
            })
        });
        let quotas = self.quotas.iter().map(|q| Announced {
            dim: q.dim,
            learned: q.learned,
        });
        windows.chain(quotas).collect()
    }
}

#[cfg(test)]
mod tests;
