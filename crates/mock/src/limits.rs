//! Requests/minute and tokens/minute held the way providers hold them.
//!
//! Each limit is judged by a [`Referee`] (the mock's own log of what it
//! admitted, checked over every window; no code shared with the client's
//! limiter) with a burst of one unit: a minute's budget is spread
//! evenly over the minute, so a client that bursts gets 429s even when its
//! per-minute total is fine. With an allowance ([`Limits::with_allowance`])
//! each is instead a bucket holding the whole minute's limit, refilled
//! continuously — what OpenAI's and Anthropic's headers describe — so a
//! still-full allowance may be spent at once. A request is checked as if it arrived a little later
//! than it did (the slack), so a client pacing exactly at the limit is not
//! punished when the network delivers one request a few milliseconds early; the
//! units are then taken at the real arrival time, so the slack never accumulates.
//!
//! By default the slack is 25 ms, at most half the request's own time slot:
//! two requests arriving together are refused, and so, within a few
//! requests, is a client sending faster than the limit. A configured slack
//! ([`crate::MockConfig::slack_ms`]) is taken as it is: on a loaded machine a
//! stalled process delays one request and bunches it with the next, and a
//! slack of S forgives every stall up to S (while letting about S ÷ slot
//! requests through together). It never adds to the rate: the units are
//! still taken at the real arrival time.

use crate::referee::Referee;

const MINUTE_NANOS: u64 = 60_000_000_000;

/// The most slack any check gets by default: more than loopback jitter, far
/// less than a burst. A loaded machine delays processes by more (tens of
/// milliseconds), hence [`crate::MockConfig::slack_ms`].
const DEFAULT_SLACK_NANOS: u64 = 25_000_000;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Requests,
    Tokens,
}

impl Kind {
    /// The name OpenAI uses in the error's `type` and in its messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Throttle {
    /// It conforms after `wait_nanos` (measured strictly, without slack).
    Wait {
        kind: Kind,
        limit: u64,
        cost: u64,
        wait_nanos: u64,
    },
    /// More tokens than the whole per-minute limit: it never conforms.
    TooLarge { limit: u64, cost: u64 },
}

/// One limit's state as the `x-ratelimit-*` headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitState {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    pub(crate) reset_nanos: u64,
}

/// Both limits' states, for the headers of one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RateSnapshot {
    pub(crate) requests: Option<LimitState>,
    pub(crate) tokens: Option<LimitState>,
}

/// The requests/minute and tokens/minute limiters of one server.
#[derive(Debug)]
pub(crate) struct Limits {
    rpm: Option<Referee>,
    tpm: Option<Referee>,
    /// The configured slack (ns); `None`: the default (see the module docs).
    slack_nanos: Option<u64>,
    /// Buckets hold the whole limit (see the module docs).
    allowance: bool,
}

impl Limits {
    /// Fresh limiters for the configured limits, checked with `slack_ms` of
    /// slack (`None`: the default).
    pub(crate) fn new(rpm: Option<u64>, tpm: Option<u64>, slack_ms: Option<u64>) -> Limits {
        let per_minute = |limit| Referee::new(limit, MINUTE_NANOS, 1);
        Limits {
            rpm: rpm.map(per_minute),
            tpm: tpm.map(per_minute),
            slack_nanos: slack_ms.map(|ms| ms.saturating_mul(1_000_000)),
            allowance: false,
        }
    }

    /// Makes each limit a bucket holding the whole minute's allowance.
    pub(crate) fn with_allowance(mut self, allowance: bool) -> Limits {
        if allowance {
            let full = |g: Referee| Referee::new(g.limit(), MINUTE_NANOS, g.limit());
            self.rpm = self.rpm.map(full);
            self.tpm = self.tpm.map(full);
        }
        self.allowance = allowance;
        self
    }

    /// Admits one request costing `tokens` at `now` (nanoseconds since the
    /// server's origin), charging both limits, or charges neither.
    pub(crate) fn admit(&mut self, now: u64, tokens: u64) -> Result<(), Throttle> {
        let requests = self.rpm.as_ref().map_or(Ok(()), |g| {
            check(g, now, 1, Kind::Requests, self.slack_nanos)
        });
        let token_check = self.tpm.as_ref().map_or(Ok(()), |g| {
            check(g, now, tokens, Kind::Tokens, self.slack_nanos)
        });
        match (requests, token_check) {
            (Ok(()), Ok(())) => {
                if let Some(g) = &mut self.rpm {
                    g.take(now, 1);
                }
                if let Some(g) = &mut self.tpm {
                    g.take(now, tokens);
                }
                Ok(())
            }
            (Err(t), Ok(())) | (Ok(()), Err(t)) => Err(t),
            (Err(a), Err(b)) => Err(worse(a, b)),
        }
    }

    /// What the `x-ratelimit-*` headers say at `now`.
    pub(crate) fn snapshot(&self, now: u64) -> RateSnapshot {
        RateSnapshot {
            requests: self.rpm.as_ref().map(|g| LimitState {
                limit: g.limit(),
                remaining: g.available(now),
                reset_nanos: g.reset_nanos(now),
            }),
            tokens: self.tpm.as_ref().map(|g| {
                let reset_nanos = g.reset_nanos(now);
                LimitState {
                    limit: g.limit(),
                    // A full bucket admits one request of any size up to the limit.
                    remaining: if reset_nanos == 0 || self.allowance {
                        g.limit()
                    } else {
                        g.available(now)
                    },
                    reset_nanos,
                }
            }),
        }
    }
}

/// Checks `cost` units against `g` with `slack` (ns), or by default with
/// half the request's own time slot, at most [`DEFAULT_SLACK_NANOS`].
fn check(g: &Referee, now: u64, cost: u64, kind: Kind, slack: Option<u64>) -> Result<(), Throttle> {
    let slack = slack
        .unwrap_or_else(|| DEFAULT_SLACK_NANOS.min(cost.max(1).saturating_mul(g.unit_nanos()) / 2));
    match g.wait(now.saturating_add(slack), cost) {
        Some(0) => Ok(()),
        Some(wait) => Err(Throttle::Wait {
            kind,
            limit: g.limit(),
            cost,
            wait_nanos: wait + slack,
        }),
        None => Err(Throttle::TooLarge {
            limit: g.limit(),
            cost,
        }),
    }
}

/// The refusal to report when both limits refuse: the one that lasts longer.
fn worse(a: Throttle, b: Throttle) -> Throttle {
    match (a, b) {
        (Throttle::TooLarge { .. }, _) => a,
        (_, Throttle::TooLarge { .. }) => b,
        (Throttle::Wait { wait_nanos: x, .. }, Throttle::Wait { wait_nanos: y, .. }) => {
            if y > x {
                b
            } else {
                a
            }
        }
    }
}

/// `nanos` in Go's duration format, as OpenAI's reset headers use it, rounded up
/// to the millisecond: `"0s"`, `"20ms"`, `"1.5s"`, `"6m0s"`, `"1h2m3.004s"`.
pub(crate) fn go_duration(nanos: u64) -> String {
    let ms = nanos.div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1_000 % 60,
        ms % 1_000,
    );
    let mut out = if h > 0 {
        format!("{h}h{m}m{s}")
    } else if m > 0 {
        format!("{m}m{s}")
    } else {
        s.to_string()
    };
    if frac > 0 {
        let digits = format!("{frac:03}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn durations_read_like_openais() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1), "1ms");
        assert_eq!(go_duration(20 * MS), "20ms");
        assert_eq!(go_duration(1_000 * MS), "1s");
        assert_eq!(go_duration(1_500 * MS), "1.5s");
        assert_eq!(go_duration(360_000 * MS), "6m0s");
        assert_eq!(go_duration(3_723_004 * MS), "1h2m3.004s");
    }

    #[test]
    fn a_burst_is_refused_with_the_strict_wait() {
        let mut l = Limits::new(Some(600), None, None); // one request per 100 ms
        assert_eq!(l.admit(0, 0), Ok(()));
        let refused = l.admit(MS, 0);
        assert_eq!(
            refused,
            Err(Throttle::Wait {
                kind: Kind::Requests,
                limit: 600,
                cost: 1,
                wait_nanos: 99 * MS
            })
        );
        // Arriving up to 25 ms early passes; the slack does not carry over.
        assert_eq!(l.admit(76 * MS, 0), Ok(()));
        assert!(l.admit(151 * MS, 0).is_err());
        assert_eq!(l.admit(176 * MS, 0), Ok(()));
    }

    #[test]
    fn a_configured_slack_forgives_a_stall_but_not_a_faster_rate() {
        // One request per 100 ms; a stall delays one request by 90 ms and
        // bunches it with the next.
        let arrivals = [0, 100, 290, 300, 400, 500];
        let strict = Limits::new(Some(600), None, None);
        let forgiving = Limits::new(Some(600), None, Some(100));
        for (mut l, refused) in [(strict, 1), (forgiving, 0)] {
            let n = arrivals
                .iter()
                .filter(|&&t| l.admit(t * MS, 0).is_err())
                .count();
            assert_eq!(n, refused);
        }
        // Twice the rate is refused all the same, about every other time.
        let mut l = Limits::new(Some(600), None, Some(100));
        let refused = (0..40).filter(|i| l.admit(i * 50 * MS, 0).is_err()).count();
        assert!(refused >= 15, "{refused} of 40 refused");
        // Zero slack is strict.
        let mut l = Limits::new(Some(600), None, Some(0));
        assert_eq!(l.admit(0, 0), Ok(()));
        assert!(l.admit(99 * MS, 0).is_err());
        assert_eq!(l.admit(100 * MS, 0), Ok(()));
    }

    #[test]
    fn a_refused_request_is_charged_to_neither_limit() {
        let mut l = Limits::new(Some(6_000), Some(6_000), None); // 10 ms per request and per token
        assert_eq!(l.admit(0, 100), Ok(()));
        let Err(Throttle::Wait {
            kind, wait_nanos, ..
        }) = l.admit(10 * MS, 100)
        else {
            panic!("tokens should refuse");
        };
        assert_eq!((kind, wait_nanos), (Kind::Tokens, 990 * MS));
        // The refused request took no request slot: one 1-token request fits at 1 s.
        assert_eq!(l.admit(1_000 * MS, 1), Ok(()));
        let snap = l.snapshot(1_000 * MS);
        assert_eq!(
            snap.requests.map(|s| (s.remaining, s.reset_nanos)),
            Some((0, 10 * MS))
        );
        assert_eq!(
            snap.tokens.map(|s| (s.remaining, s.reset_nanos)),
            Some((0, 10 * MS))
        );
        let later = l.snapshot(2_000 * MS);
        assert_eq!(later.requests.map(|s| s.remaining), Some(1));
        assert_eq!(later.tokens.map(|s| s.remaining), Some(6_000));
    }

    #[test]
    fn an_allowance_is_spent_at_once_then_refills_at_the_rate() {
        // 600/min: the whole minute at once, then one per 100 ms.
        let mut l = Limits::new(Some(600), None, None).with_allowance(true);
        assert!((0..600).all(|_| l.admit(0, 0).is_ok()));
        assert!(l.admit(0, 0).is_err());
        let snap = l.snapshot(0).requests.unwrap();
        assert_eq!((snap.limit, snap.remaining), (600, 0));
        assert_eq!(snap.reset_nanos, 60_000 * MS, "full again in a minute");
        assert_eq!(l.admit(100 * MS, 0), Ok(()));
        // Half a minute later half the allowance is back.
        assert_eq!(l.snapshot(30_100 * MS).requests.unwrap().remaining, 300);
    }

    #[test]
    fn too_large_outranks_any_wait() {
        let mut l = Limits::new(Some(1), Some(100), None);
        assert_eq!(l.admit(0, 10), Ok(()));
        assert_eq!(
            l.admit(0, 101),
            Err(Throttle::TooLarge {
                limit: 100,
                cost: 101
            })
        );
    }

    #[test]
    fn no_limits_admit_everything() {
        let mut l = Limits::new(None, None, None);
        assert!((0..1_000).all(|_| l.admit(0, 1_000_000).is_ok()));
        assert_eq!(l.snapshot(0), RateSnapshot::default());
    }
}
