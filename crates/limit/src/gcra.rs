//! The generic cell rate algorithm: a limit of N units per period, held continuously.
//!
//! One `Gcra` is a virtual token bucket kept as a single number, the theoretical
//! arrival time (`tat`) of the next unit. A request of cost `c` conforms when the
//! bucket, refilled continuously at `limit / period`, holds `c` units. The bucket
//! holds `burst` units (at least one whole request, whatever its size), so with the
//! default burst of one request a 1,200/min limit is held as one request every
//! 50 ms: providers enforce per-minute limits over shorter periods, and a client
//! that bursts a minute's budget at once gets 429s.

/// Why a request cannot be admitted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Admissible after this many nanoseconds from `now`.
    Wait(u64),
    /// The cost alone exceeds what the limit allows in a whole period: it can
    /// never conform, so waiting would be forever.
    TooLarge {
        /// The request's cost.
        cost: u64,
        /// The limit per period.
        limit: u64,
    },
}

/// A GCRA limiter: `limit` units per `period`, with a bucket of `burst` units.
#[derive(Debug, Clone)]
pub struct Gcra {
    /// Nanoseconds one unit occupies (period ÷ limit, rounded up so the
    /// long-run rate never exceeds the limit).
    unit_nanos: u64,
    /// Units the bucket holds when idle; a larger request still conforms when
    /// the bucket is full, so one request is always a possible burst.
    burst: u64,
    limit: u64,
    /// How late a request may be admitted and still keep its place in the
    /// schedule (see [`Gcra::with_catch_up`]).
    catch_up: u64,
    /// Theoretical arrival time of the next unit, in nanoseconds since the
    /// caller's origin.
    tat: u64,
}

impl Gcra {
    /// A limit of `limit` units per minute with the default burst of one request.
    pub fn per_minute(limit: u64) -> Gcra {
        Gcra::new(limit, 60_000_000_000, 1)
    }

    /// A limit of `limit` units per `period_nanos`, with a bucket of `burst` units.
    ///
    /// `limit` must be at least one; zero is clamped to one.
    pub fn new(limit: u64, period_nanos: u64, burst: u64) -> Gcra {
        let limit = limit.max(1);
        Gcra {
            unit_nanos: period_nanos.div_ceil(limit).max(1),
            burst: burst.max(1),
            limit,
            catch_up: 0,
            tat: 0,
        }
    }

    /// Lets a caller that wakes up late by up to `nanos` keep its place in
    /// the schedule instead of losing the lateness.
    ///
    /// Timers wake about a millisecond late (tokio's wheel has 1 ms slots); at
    /// 100 requests/s a strict GCRA would lose ~10% of the rate to that. With a
    /// catch-up of a few milliseconds, two requests can be at most that much
    /// closer than one interval, never more.
    pub fn with_catch_up(mut self, nanos: u64) -> Gcra {
        self.catch_up = nanos;
        self
    }

    /// The schedule position a request at `now` is charged from.
    fn base(&self, now: u64) -> u64 {
        self.tat.max(now.saturating_sub(self.catch_up))
    }

    /// The configured limit per period.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Nanoseconds one unit occupies.
    pub fn unit_nanos(&self) -> u64 {
        self.unit_nanos
    }

    /// Units the bucket holds at `now`: how many one-unit requests would conform
    /// back to back. (A larger request also conforms whenever the bucket is full.)
    pub fn available(&self, now: u64) -> u64 {
        let debt = self.tat.saturating_sub(now);
        self.burst
            .saturating_mul(self.unit_nanos)
            .saturating_sub(debt)
            / self.unit_nanos
    }

    /// Nanoseconds from `now` until the bucket is full again; zero when it is.
    pub fn reset_nanos(&self, now: u64) -> u64 {
        self.tat.saturating_sub(now)
    }

    /// Whether `cost` units conform at `now`, without taking them.
    pub fn check(&self, now: u64, cost: u64) -> Result<(), Rejection> {
        if cost > self.limit {
            return Err(Rejection::TooLarge {
                cost,
                limit: self.limit,
            });
        }
        let capacity = self.burst.max(cost).saturating_mul(self.unit_nanos);
        let after = self
            .base(now)
            .saturating_add(cost.saturating_mul(self.unit_nanos));
        let needed = after.saturating_sub(now);
        if needed <= capacity {
            Ok(())
        } else {
            Err(Rejection::Wait(needed - capacity))
        }
    }

    /// Where the schedule would end if `cost` units were taken at `now`.
    pub fn tat_after(&self, now: u64, cost: u64) -> u64 {
        self.base(now)
            .saturating_add(cost.saturating_mul(self.unit_nanos))
    }

    /// Takes `cost` units at `now` if they conform.
    pub fn try_acquire(&mut self, now: u64, cost: u64) -> Result<(), Rejection> {
        self.check(now, cost)?;
        self.take(now, cost);
        Ok(())
    }

    /// Takes `cost` units unconditionally (the caller checked, or the units were
    /// spent anyway, e.g. a response reporting more tokens than estimated).
    pub fn take(&mut self, now: u64, cost: u64) {
        self.tat = self
            .base(now)
            .saturating_add(cost.saturating_mul(self.unit_nanos));
    }

    /// Gives back `cost` units of the `reserved` taken at `admitted_at` but
    /// not spent (an estimate higher than the response's usage).
    ///
    /// Only sending time still ahead comes back: the reservation occupied the
    /// schedule from its admission (less the catch-up) for `reserved` units,
    /// and the part of that already past was time the limit did not give to
    /// anyone else; refunding it would hand it to the requests admitted since,
    /// bunching them closer than the limit allows. Never moves below `now`,
    /// so a refund cannot create a burst larger than the bucket.
    pub fn refund(&mut self, now: u64, admitted_at: u64, reserved: u64, cost: u64) {
        let end = admitted_at
            .saturating_sub(self.catch_up)
            .saturating_add(reserved.saturating_mul(self.unit_nanos));
        let ahead = end.saturating_sub(now);
        let credit = cost
            .min(reserved)
            .saturating_mul(self.unit_nanos)
            .min(ahead);
        self.tat = self.tat.saturating_sub(credit).max(now);
    }

    /// Makes the bucket full no sooner than `at`: the state a provider
    /// reported (what it holds now, and when it is full again), never
    /// loosening what was already taken here.
    pub fn hold_until_full(&mut self, at: u64) {
        self.tat = self.tat.max(at);
    }

    /// Admits nothing before `until` (a provider's `retry-after`, or its reported
    /// reset of an exhausted limit).
    pub fn hold_until(&mut self, until: u64) {
        // A one-unit request conforms exactly when tat <= now + (burst - 1) units.
        let headroom = (self.burst - 1).saturating_mul(self.unit_nanos);
        self.tat = self.tat.max(until.saturating_add(headroom));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    /// Admits greedily from t=0 and returns the admission times.
    fn admit_all(gcra: &mut Gcra, costs: &[u64]) -> Vec<u64> {
        let mut now = 0;
        let mut times = Vec::new();
        for &cost in costs {
            loop {
                match gcra.try_acquire(now, cost) {
                    Ok(()) => break,
                    Err(Rejection::Wait(w)) => now += w,
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            times.push(now);
        }
        times
    }

    #[test]
    fn per_minute_limit_is_spread_evenly() {
        let mut g = Gcra::per_minute(1200);
        let times = admit_all(&mut g, &[1; 601]);
        assert_eq!(times[0], 0);
        assert_eq!(times[1], 50_000_000);
        assert_eq!(times[600], 30 * SEC);
    }

    #[test]
    fn no_sixty_second_window_holds_more_than_the_limit() {
        let mut g = Gcra::per_minute(90);
        let times = admit_all(&mut g, &[1; 400]);
        for (i, &start) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|&&t| t < start + 60 * SEC)
                .count();
            assert!(in_window <= 90, "window at {start} held {in_window}");
        }
    }

    #[test]
    fn burst_allows_that_many_at_once_then_the_rate() {
        let mut g = Gcra::new(60, 60 * SEC, 5);
        let times = admit_all(&mut g, &[1; 7]);
        assert_eq!(&times[..5], &[0; 5]);
        assert_eq!(times[5], SEC);
        assert_eq!(times[6], 2 * SEC);
    }

    #[test]
    fn token_costs_pace_by_size() {
        let mut g = Gcra::per_minute(60_000); // 1,000 tokens per second
        let times = admit_all(&mut g, &[500, 2_000, 100]);
        assert_eq!(times, vec![0, SEC / 2, SEC / 2 + 2 * SEC]);
    }

    #[test]
    fn a_request_larger_than_the_limit_is_rejected_not_delayed() {
        let g = Gcra::per_minute(1_000);
        assert_eq!(
            g.check(0, 1_001),
            Err(Rejection::TooLarge {
                cost: 1_001,
                limit: 1_000
            })
        );
        assert_eq!(g.check(0, 1_000), Ok(()));
    }

    #[test]
    fn refund_returns_unspent_units_but_never_below_now() {
        let mut g = Gcra::per_minute(60_000);
        g.try_acquire(0, 3_000).unwrap();
        assert_eq!(g.check(SEC, 1), Err(Rejection::Wait(2 * SEC)));
        g.refund(SEC, 0, 3_000, 2_000);
        assert_eq!(g.check(SEC, 1), Ok(()));
        g.refund(SEC, 0, 3_000, 1_000_000);
        g.try_acquire(SEC, 1_000).unwrap();
        // The huge refund did not bank credit: the next 1,000 wait a full second.
        assert_eq!(g.check(SEC, 1_000), Err(Rejection::Wait(SEC)));
    }

    #[test]
    fn a_refund_gives_back_only_the_reserved_time_still_ahead() {
        let mut g = Gcra::per_minute(60_000); // 1,000 units a second
        g.try_acquire(0, 1_000).unwrap(); // reserved [0 s, 1 s)
        g.try_acquire(SEC, 1_000).unwrap(); // [1 s, 2 s)
                                            // The first was answered at 1.5 s having used nothing: its second
                                            // has passed, so nothing comes back.
        g.refund(SEC + SEC / 2, 0, 1_000, 1_000);
        assert_eq!(g.check(SEC + SEC / 2, 1), Err(Rejection::Wait(SEC / 2)));
        // Answered within its second, half of it is still ahead.
        let mut g = Gcra::per_minute(60_000);
        g.try_acquire(0, 1_000).unwrap();
        g.refund(SEC / 2, 0, 1_000, 1_000);
        assert_eq!(g.check(SEC / 2, 1), Ok(()));
    }

    #[test]
    fn available_and_reset_follow_the_bucket_level() {
        let mut g = Gcra::new(60, 60 * SEC, 5);
        assert_eq!((g.available(0), g.reset_nanos(0)), (5, 0));
        g.try_acquire(0, 2).unwrap();
        assert_eq!((g.available(0), g.reset_nanos(0)), (3, 2 * SEC));
        g.try_acquire(0, 3).unwrap();
        assert_eq!(g.available(0), 0);
        // Half a unit refilled is not yet a unit.
        assert_eq!(g.available(SEC / 2), 0);
        assert_eq!(g.available(SEC), 1);
        assert_eq!((g.available(9 * SEC), g.reset_nanos(9 * SEC)), (5, 0));
    }

    #[test]
    fn catch_up_keeps_the_schedule_when_woken_late() {
        let ms = 1_000_000;
        let mut strict = Gcra::per_minute(6_000); // one per 10 ms
        let mut lenient = Gcra::per_minute(6_000).with_catch_up(2 * ms);
        // Every admission happens 1.5 ms after it was due.
        let (mut t_strict, mut t_lenient) = (0, 0);
        for _ in 0..100 {
            strict.take(t_strict, 1);
            t_strict += 10 * ms + 3 * ms / 2;
            lenient.take(t_lenient, 1);
            t_lenient = lenient.tat + 3 * ms / 2;
        }
        // Strict loses the lateness every time; catch-up keeps the 10 ms grid.
        assert_eq!(strict.tat, 100 * 10 * ms + 99 * (3 * ms / 2));
        assert_eq!(lenient.tat, 100 * 10 * ms + 3 * ms / 2 - 3 * ms / 2);
        // After a long idle spell only the catch-up is banked, not a burst.
        let mut g = Gcra::per_minute(6_000).with_catch_up(2 * ms);
        g.take(0, 1);
        g.take(1_000 * ms, 1);
        assert_eq!(g.check(1_000 * ms, 1), Err(Rejection::Wait(8 * ms)));
    }

    #[test]
    fn hold_until_blocks_everything_before_the_reset() {
        let mut g = Gcra::per_minute(6_000);
        g.hold_until(5 * SEC);
        assert_eq!(g.check(SEC, 1), Err(Rejection::Wait(4 * SEC)));
        assert_eq!(g.check(5 * SEC, 1), Ok(()));
    }
}
