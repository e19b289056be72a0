//! Tests for [`Breaker`]: each transition, the rate window, and a flapping
//! endpoint end to end.

use super::*;

const SEC: u64 = 1_000_000_000;

fn breaker(failures: u32, window: u32, rate: f64) -> Breaker {
    Breaker::new(BreakerConfig {
        failures,
        cooldown_nanos: 10 * SEC,
        window,
        rate,
    })
}

#[test]
fn opens_after_consecutive_failures_only() {
    let mut b = breaker(3, 0, 0.5);
    b.on_failure(0);
    b.on_failure(0);
    // A success in between breaks the streak.
    b.on_success(0);
    b.on_failure(SEC);
    b.on_failure(2 * SEC);
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.try_acquire(2 * SEC));
    b.on_failure(3 * SEC);
    assert_eq!(b.state(), BreakerState::Open { until: 13 * SEC });
    assert_eq!(b.opened_count(), 1);
}

#[test]
fn open_refuses_until_cooldown_then_admits_one_probe() {
    let mut b = breaker(1, 0, 0.5);
    b.on_failure(SEC);
    assert!(!b.try_acquire(SEC));
    assert!(!b.try_acquire(11 * SEC - 1));
    assert_eq!(b.retry_at(5 * SEC), 11 * SEC);
    assert!(b.try_acquire(11 * SEC));
    assert_eq!(b.state(), BreakerState::HalfOpen);
    // Only the one probe while it is in flight.
    assert!(!b.try_acquire(11 * SEC));
    assert!(!b.try_acquire(12 * SEC));
    assert_eq!(b.retry_at(12 * SEC), 12 * SEC + PROBE_POLL_NANOS);
}

#[test]
fn a_successful_probe_closes_and_resets() {
    let mut b = breaker(2, 0, 0.5);
    b.on_failure(0);
    b.on_failure(0);
    assert!(b.try_acquire(10 * SEC));
    b.on_success(10 * SEC);
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.try_acquire(10 * SEC));
    // The count restarted: one failure does not reopen it.
    b.on_failure(11 * SEC);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.retry_at(11 * SEC), 11 * SEC);
}

#[test]
fn a_failed_probe_reopens_for_another_cooldown() {
    let mut b = breaker(5, 0, 0.5);
    for _ in 0..5 {
        b.on_failure(0);
    }
    assert!(b.try_acquire(10 * SEC));
    b.on_failure(12 * SEC);
    assert_eq!(b.state(), BreakerState::Open { until: 22 * SEC });
    assert_eq!(b.opened_count(), 2);
    assert!(!b.try_acquire(21 * SEC));
    assert!(b.try_acquire(22 * SEC));
}

#[test]
fn late_outcomes_while_open_change_nothing() {
    let mut b = breaker(1, 0, 0.5);
    b.on_failure(0);
    b.on_failure(5 * SEC);
    assert_eq!(b.state(), BreakerState::Open { until: 10 * SEC });
    b.on_success(6 * SEC);
    assert_eq!(b.state(), BreakerState::Open { until: 10 * SEC });
    assert_eq!(b.opened_count(), 1);
}

#[test]
fn an_abandoned_probe_is_replaced_after_a_cooldown() {
    let mut b = breaker(1, 0, 0.5);
    b.on_failure(0);
    assert!(b.try_acquire(10 * SEC));
    // The probe's caller never reports.
    assert_eq!(b.retry_at(19_990_000_000), 20 * SEC);
    assert!(!b.try_acquire(20 * SEC - 1));
    assert!(b.try_acquire(20 * SEC));
    assert!(!b.try_acquire(20 * SEC));
}

#[test]
fn rate_window_opens_on_intermittent_failures() {
    // Never two in a row, but 6 of the last 10 failed (> 50%).
    let mut b = breaker(3, 10, 0.5);
    let pattern = [
        true, false, true, false, true, true, false, true, false, true,
    ];
    for (i, &failed) in pattern.iter().enumerate() {
        assert_eq!(b.state(), BreakerState::Closed, "outcome {i}");
        if failed {
            b.on_failure(i as u64);
        } else {
            b.on_success(i as u64);
        }
    }
    assert_eq!(
        b.state(),
        BreakerState::Open {
            until: 9 + 10 * SEC
        }
    );
}

#[test]
fn rate_window_needs_a_full_window_and_more_than_the_rate() {
    let mut b = breaker(5, 10, 0.5);
    // Two of the first three failed: not yet a window.
    b.on_failure(0);
    b.on_success(0);
    b.on_failure(0);
    assert_eq!(b.state(), BreakerState::Closed);
    // Exactly half of ten failed, alternating: not more than the rate.
    for i in 0..7 {
        if i % 2 == 0 {
            b.on_success(0);
        } else {
            b.on_failure(0);
        }
    }
    assert_eq!((b.recent.len(), b.recent_failures), (10, 5));
    assert_eq!(b.state(), BreakerState::Closed);
    // The oldest outcome (a failure) slides out as a success comes in.
    b.on_success(0);
    assert_eq!(b.recent_failures, 4);
    b.on_failure(0);
    b.on_failure(0);
    assert_eq!((b.state(), b.recent_failures), (BreakerState::Closed, 5));
    // Six of ten, with only three in a row.
    b.on_failure(0);
    assert_eq!(b.state(), BreakerState::Open { until: 10 * SEC });
}

#[test]
fn config_is_normalized() {
    let b = breaker(0, 2, f64::NAN);
    assert_eq!((b.cfg.failures, b.cfg.window, b.cfg.rate), (1, 2, 0.5));
    let b = breaker(5, 3, 7.0);
    assert_eq!((b.cfg.window, b.cfg.rate), (5, 1.0));
    let d = BreakerConfig::default();
    assert_eq!((d.failures, d.cooldown_nanos, d.window), (5, 30 * SEC, 0));
}

#[test]
fn a_flapping_endpoint_is_probed_once_per_cooldown() {
    // The endpoint is down for 95 s, then up. Callers hammer every 100 ms.
    let mut b = Breaker::new(BreakerConfig::default());
    let (mut sent, mut t) = (0, 0);
    while t < 130 * SEC {
        if b.try_acquire(t) {
            sent += 1;
            if t < 95 * SEC {
                b.on_failure(t);
            } else {
                b.on_success(t);
            }
        }
        t += SEC / 10;
    }
    // 5 to open at 0.4 s and probes at 30.4, 60.4, 90.4 s: 8 calls reach
    // the dead endpoint, not 950. The probe at 120.4 s succeeds and the
    // remaining 96 ticks all go.
    assert_eq!(b.opened_count(), 4);
    assert_eq!(sent, 8 + 96);
    assert_eq!(b.state(), BreakerState::Closed);
}
