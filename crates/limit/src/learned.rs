//! What a provider's `(limit, remaining, reset)` says about the limit it
//! holds, since no header names the window: the span it counts over, how
//! much it lets through at once, and whether it refills continuously or all
//! at once at its reset.
//!
//! Providers document per-minute limits refilled continuously (OpenAI's
//! "reset" is the time until the bucket is back to its initial state;
//! Anthropic's is when it "will be fully replenished"), so a minute is the
//! default. A reset longer than a minute cannot belong to a minute's bucket:
//! the span is then an hour or a day — whichever the reset and the share
//! already used point to (`23h47m36s` is a day). A minute's capacity follows
//! from the same figures: `remaining` now, plus what refills during `reset`
//! at `limit` per span. When that comes to more than the limit, the reset is
//! not a refill but a boundary: a quota of `remaining` until then.
//!
//! Hourly and daily limits are always held as such quotas: one report cannot
//! tell a nearly spent daily bucket (the next unit in 86 s) from a daily
//! quota (nothing until midnight), and a wrong guess of the first kind draws
//! 429s all day. Each report renews the quota, so while there is room it is
//! used at once; `remaining: 0` then waits for the reset.

/// Nanoseconds per span.
const MINUTE: u64 = 60_000_000_000;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// The period a learned limit counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Span {
    /// Per minute (what providers document).
    Minute,
    /// Per hour.
    Hour,
    /// Per day.
    Day,
}

impl Span {
    /// The span in nanoseconds.
    pub fn nanos(self) -> u64 {
        match self {
            Span::Minute => MINUTE,
            Span::Hour => HOUR,
            Span::Day => DAY,
        }
    }

    /// `minute`, `hour` or `day`.
    pub fn name(self) -> &'static str {
        match self {
            Span::Minute => "minute",
            Span::Hour => "hour",
            Span::Day => "day",
        }
    }
}

/// How a learned limit comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refill {
    /// A bucket refilled at `limit` per span (OpenAI's and Anthropic's kind).
    Continuous,
    /// A quota that comes back whole at the reset.
    AtReset,
}

/// What one response said about one limit, as inferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// Units per span.
    pub limit: u64,
    /// The span.
    pub span: Span,
    /// Units the provider lets through at once when it is full (1 for a
    /// provider that paces a minute's limit evenly, the whole limit for one
    /// that lets a full minute's allowance go at once).
    pub capacity: u64,
    /// Continuous or at the reset.
    pub refill: Refill,
}

impl Learned {
    /// Nanoseconds one unit takes to come back (continuous refill).
    pub fn unit_nanos(&self) -> u64 {
        self.span.nanos().div_ceil(self.limit.max(1)).max(1)
    }

    /// Infers a limit from `limit`, `remaining` and `reset` (nanoseconds);
    /// without `remaining` the provider is taken as full, without `reset` as
    /// needing no time to be.
    pub fn infer(limit: u64, remaining: Option<u64>, reset_nanos: Option<u64>) -> Learned {
        let limit = limit.max(1);
        let remaining = remaining.unwrap_or(limit).min(limit);
        let reset = reset_nanos.unwrap_or(0);
        // The span a full bucket of `limit` would need to refill what is used.
        let used = limit - remaining;
        let full_span = if used > 0 {
            (limit as u128 * reset as u128 / used as u128).min(u64::MAX as u128) as u64
        } else {
            0
        };
        // A second of slack: resets are rounded (Anthropic's to the second).
        let span = if reset <= MINUTE + 1_000_000_000 && full_span <= 2 * MINUTE {
            Span::Minute
        } else if reset > HOUR + 1_000_000_000 {
            Span::Day
        } else {
            // Between an hour and a day, the nearer on a log scale (their
            // geometric mean is ~4.9 h).
            let mean = ((HOUR as f64) * (DAY as f64)).sqrt() as u64;
            if full_span.max(reset) <= mean {
                Span::Hour
            } else {
                Span::Day
            }
        };
        let unit = span.nanos().div_ceil(limit).max(1);
        let capacity = remaining.saturating_add(reset.div_ceil(unit));
        // More than the limit could ever hold: the reset is a boundary.
        let slack = (limit / 20).max(1);
        if capacity > limit + slack || span != Span::Minute {
            return Learned {
                limit,
                span,
                capacity: limit,
                refill: Refill::AtReset,
            };
        }
        Learned {
            limit,
            span,
            capacity: capacity.clamp(1, limit),
            refill: Refill::Continuous,
        }
    }

    /// How long after this response the provider admits a unit again, when
    /// it said none remain: a continuous bucket's next unit (its reset is the
    /// time to be *full*), a quota's reset.
    pub fn next_unit_nanos(&self, reset_nanos: u64) -> u64 {
        match self.refill {
            Refill::AtReset => reset_nanos,
            Refill::Continuous => {
                let rest = (self.capacity - 1).saturating_mul(self.unit_nanos());
                reset_nanos.saturating_sub(rest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000 * MS;

    #[test]
    fn a_full_minute_allowance_is_a_burst_of_the_whole_limit() {
        // OpenAI's shape: 1,200/min, one used, full again in 50 ms.
        let l = Learned::infer(1_200, Some(1_199), Some(50 * MS));
        assert_eq!(
            l,
            Learned {
                limit: 1_200,
                span: Span::Minute,
                capacity: 1_200,
                refill: Refill::Continuous
            }
        );
        // No remaining/reset said: taken as full.
        assert_eq!(Learned::infer(600, None, None).capacity, 600);
    }

    #[test]
    fn an_evenly_paced_limit_has_a_capacity_of_one() {
        // A provider holding 1,200/min as one request per 50 ms.
        let l = Learned::infer(1_200, Some(0), Some(49 * MS));
        assert_eq!((l.span, l.capacity), (Span::Minute, 1));
        assert_eq!(l.next_unit_nanos(49 * MS), 49 * MS);
        let l = Learned::infer(1_200, Some(1), Some(0));
        assert_eq!(l.capacity, 1);
    }

    #[test]
    fn long_resets_mean_daily_or_hourly_limits() {
        // A daily quota counted per calendar day: resets at midnight.
        let reset = (23 * 3600 + 47 * 60 + 36) * SEC;
        let l = Learned::infer(10_000, Some(9_990), Some(reset));
        assert_eq!((l.span, l.refill), (Span::Day, Refill::AtReset));
        assert_eq!(l.next_unit_nanos(reset), reset);
        // A daily bucket refilled continuously (one of 1,000 back in 86.4 s)
        // is a day too, held as a quota renewed by every report.
        let l = Learned::infer(1_000, Some(999), Some(86_400 * MS));
        assert_eq!((l.span, l.refill), (Span::Day, Refill::AtReset));
        // An hourly one: half used, full in half an hour.
        let l = Learned::infer(1_000, Some(500), Some(1_800 * SEC));
        assert_eq!((l.span, l.refill), (Span::Hour, Refill::AtReset));
        // Nothing left and a long reset: wait for it.
        let l = Learned::infer(1_000, Some(0), Some(5 * 3_600 * SEC));
        assert_eq!(l.next_unit_nanos(5 * 3_600 * SEC), 5 * 3_600 * SEC);
    }

    #[test]
    fn an_exhausted_minute_bucket_admits_again_after_one_unit() {
        // 60/min, empty, full in 60 s: the next request in 1 s.
        let l = Learned::infer(60, Some(0), Some(60 * SEC));
        assert_eq!((l.span, l.capacity), (Span::Minute, 60));
        assert_eq!(l.next_unit_nanos(60 * SEC), SEC);
    }
}
