//! Property tests of the limiters, judged by an independent count: a log of
//! what was admitted, checked over every window, not the limiter's own state.
//!
//! Cases per property: `SLUICE_PROPTEST_CASES` (default 64; a nightly or
//! manual run raises it). A failure prints the shrunk case and its seed; the
//! cases found so far are kept below as plain regression tests.

use proptest::prelude::*;
use sluice_limit::{
    Aimd, AimdConfig, Breaker, BreakerConfig, BreakerState, Rejection, WindowLimits, Windows,
};

const MS: u64 = 1_000_000;
const MINUTE: u64 = 60_000 * MS;
/// The catch-up the engine gives its windows (a waiter woken late keeps its place).
const CATCH_UP: u64 = 2 * MS;

#[path = "../../../tests/support/watchdog.rs"]
mod watchdog;

fn config() -> ProptestConfig {
    // Called on the test's thread before any case: the test's time limit
    // (`SLUICE_TEST_TIMEOUT_SECS`), so a case that hangs names its test.
    watchdog::once_per_test();
    let cases = std::env::var("SLUICE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// One admitted request as the referee logs it.
#[derive(Debug, Clone)]
struct Admitted {
    at: u64,
    reserved: u64,
    /// What it spent: the reservation until settled.
    charged: u64,
    settled: bool,
}

/// The invariant a burst-of-one limit of `limit` per minute promises, stated
/// over the log: for every earlier admission k, what was spent from k up to
/// (not including) a request admitted at `now` fits in the time since k at
/// the limit's rate, plus the catch-up a late waiter may recover. (A burst of
/// one charges each request forward: its own cost is paid by the time after it.)
fn check_log(
    log: &[Admitted],
    now: u64,
    limit: u64,
    cost: impl Fn(&Admitted) -> u64,
) -> Result<(), String> {
    let unit = MINUTE.div_ceil(limit);
    let mut spent = 0u64;
    for a in log.iter().rev() {
        spent += cost(a);
        let allowed = now - a.at + CATCH_UP;
        if spent * unit > allowed {
            return Err(format!(
                "{spent} units since {} ms, admitted again at {} ms: {} ms of sending time in {} ms",
                a.at / MS,
                now / MS,
                spent * unit / MS,
                allowed / MS
            ));
        }
    }
    Ok(())
}

/// What the simulated client does next.
#[derive(Debug, Clone)]
enum Step {
    /// Waits this long, then asks for a request of this many tokens; when
    /// told to wait, sleeps and wakes `late` ns after it was due.
    Send { gap: u64, tokens: u64, late: u64 },
    /// The answer to the `pick`th unsettled request arrives, having used
    /// `used_pct`% of what it reserved (never more: a refund, not a charge).
    Settle { pick: usize, used_pct: u64 },
    /// The provider refused it (429): nothing was used.
    Refused { pick: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u64..3_000 * MS, 1u64..2_000, 0u64..3 * MS)
            .prop_map(|(gap, tokens, late)| Step::Send { gap, tokens, late }),
        3 => (any::<usize>(), 0u64..=100).prop_map(|(pick, used_pct)| Step::Settle { pick, used_pct }),
        1 => any::<usize>().prop_map(|pick| Step::Refused { pick }),
    ]
}

/// Drives `Windows` with `steps` and checks every admission against the log.
fn simulate(rpm: u64, tpm: u64, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut w = Windows::new(
        &WindowLimits {
            rpm: Some(rpm),
            tpm: Some(tpm),
            ..WindowLimits::default()
        },
        CATCH_UP,
    );
    let mut log: Vec<Admitted> = Vec::new();
    let mut now = 0u64;
    for s in steps {
        match *s {
            Step::Send { gap, tokens, late } => {
                now += gap;
                let tokens = tokens.min(tpm);
                let mut tries = 0;
                loop {
                    match w.try_acquire(now, tokens) {
                        Ok(()) => break,
                        Err(Rejection::Wait(n)) => now += n + late,
                        Err(e) => return Err(TestCaseError::fail(format!("{e:?} for {tokens}"))),
                    }
                    tries += 1;
                    prop_assert!(
                        tries < 3,
                        "a wait that was not enough: still waiting at {now}"
                    );
                }
                check_log(&log, now, rpm, |_| 1).map_err(TestCaseError::fail)?;
                check_log(&log, now, tpm, |a| a.charged).map_err(TestCaseError::fail)?;
                log.push(Admitted {
                    at: now,
                    reserved: tokens,
                    charged: tokens,
                    settled: false,
                });
            }
            Step::Settle { pick, .. } | Step::Refused { pick }
                if log.iter().any(|a| !a.settled) =>
            {
                let open: Vec<usize> = (0..log.len()).filter(|&i| !log[i].settled).collect();
                let i = open[pick % open.len()];
                let used = match *s {
                    Step::Settle { used_pct, .. } => log[i].reserved * used_pct / 100,
                    _ => 0,
                };
                let a = &mut log[i];
                w.settle(now, a.at, a.reserved, used);
                a.charged = used;
                a.settled = true;
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// For any arrivals, answers and refunds, no window ending at an
    /// admission holds more than the limits allow: refunds give back only
    /// sending time still ahead, never time already spent on others.
    #[test]
    fn every_window_holds_for_any_arrivals_and_refunds(
        rpm in 1u64..2_000,
        tpm in 1_000u64..100_000,
        steps in prop::collection::vec(step(), 1..120),
    ) {
        simulate(rpm, tpm, &steps)?;
    }

    /// A limiter that is always asked at once runs at the limit: it neither
    /// admits more nor leaves sending time unused (within one request).
    #[test]
    fn a_steady_caller_gets_the_whole_rate(
        rpm in 60u64..6_000,
        n in 10u64..400,
    ) {
        let mut w = Windows::new(&WindowLimits { rpm: Some(rpm), ..WindowLimits::default() }, CATCH_UP);
        let mut now = 0;
        for _ in 0..n {
            while let Err(Rejection::Wait(t)) = w.try_acquire(now, 0) {
                now += t;
            }
        }
        let unit = MINUTE.div_ceil(rpm);
        prop_assert_eq!(now, (n - 1) * unit);
    }

    /// The breaker opens exactly after `failures` consecutive failures,
    /// refuses until the cooldown, then admits one probe at a time.
    #[test]
    fn the_breaker_opens_on_a_streak_and_probes_one_at_a_time(
        failures in 1u32..8,
        cooldown in 1u64..10_000,
        outcomes in prop::collection::vec((any::<bool>(), 0u64..5_000), 1..200),
    ) {
        let mut b = Breaker::new(BreakerConfig { failures, cooldown_nanos: cooldown, window: 0, rate: 0.5 });
        let (mut now, mut streak, mut opened) = (0u64, 0u32, 0u64);
        for (ok, gap) in outcomes {
            now += gap;
            let before = b.state();
            if !b.try_acquire(now) {
                match before {
                    BreakerState::Open { until } => prop_assert!(now < until),
                    BreakerState::HalfOpen => {}
                    BreakerState::Closed => prop_assert!(false, "a closed breaker refused"),
                }
                continue;
            }
            let probing = b.state() == BreakerState::HalfOpen;
            if probing {
                // A second caller is refused while the probe is out.
                prop_assert!(!b.try_acquire(now));
            }
            if ok {
                b.on_success(now);
                streak = 0;
                prop_assert_eq!(b.state(), BreakerState::Closed);
            } else {
                b.on_failure(now);
                streak += 1;
                if probing || streak >= failures {
                    opened += 1;
                    streak = 0;
                    prop_assert_eq!(b.state(), BreakerState::Open { until: now + cooldown });
                } else {
                    prop_assert_eq!(b.state(), BreakerState::Closed);
                }
            }
            prop_assert_eq!(b.opened_count(), opened);
        }
    }

    /// AIMD stays within its bounds whatever happens, never grows on a
    /// window that saw backpressure, and always shrinks on one.
    #[test]
    fn aimd_stays_in_bounds_and_backs_off(
        max in 1usize..64,
        min in 1usize..8,
        events in prop::collection::vec((any::<bool>(), 1u64..50 * MS), 1..300),
    ) {
        let cfg = AimdConfig { min, ..AimdConfig::up_to(max) };
        let mut a = Aimd::new(cfg);
        let (lo, hi) = (min.max(1), max.max(min.max(1)));
        let mut now = 0;
        for (backpressure, rtt) in events {
            now += rtt;
            let before = a.limit();
            for i in 1..=before {
                a.on_start(i);
            }
            // A whole window finishes: `before` calls.
            for i in 0..before {
                if backpressure && i == 0 {
                    a.on_backpressure(now);
                } else {
                    a.on_response(now, rtt);
                }
            }
            let after = a.limit();
            prop_assert!((lo..=hi).contains(&after), "{} outside {}..={}", after, lo, hi);
            if backpressure {
                prop_assert!(after < before || after == lo, "{} -> {} after backpressure", before, after);
            } else {
                prop_assert!(after <= before + 1);
            }
        }
    }
}

/// Found by `every_window_holds_for_any_arrivals_and_refunds`: a request
/// answered after its reserved sending time had passed gave that time back,
/// and it went to the requests already admitted after it — two requests of
/// a minute's tokens each, 58 ms apart.
#[test]
fn a_late_refund_does_not_free_time_already_spent() {
    let steps = [
        Step::Send {
            gap: 0,
            tokens: 1_000,
            late: 0,
        },
        Step::Send {
            gap: 0,
            tokens: 1_000,
            late: 0,
        },
        Step::Settle {
            pick: 0,
            used_pct: 0,
        },
        Step::Send {
            gap: 0,
            tokens: 1_000,
            late: 0,
        },
    ];
    simulate(1_000, 1_000, &steps).unwrap();
}
