//! Tests for shared limits: slices are disjoint and bounded, several
//! simulated processes together hold one rate, concurrency shares never sum
//! past the limit and converge to fair shares.

use super::*;
use crate::{WindowLimits, Windows};

const MS: i64 = 1_000;
const SEC: i64 = 1_000_000;

#[test]
fn slices_are_consecutive_disjoint_and_bounded_by_the_horizon() {
    let mut s = SharedLimitState::default();
    let grants: Vec<_> = (0..3)
        .map(|_| s.claim_slice(10 * SEC, 250 * MS, SEC))
        .collect();
    assert_eq!(
        grants,
        [
            SliceGrant::Slice {
                start: 10 * SEC,
                end: 10 * SEC + 250 * MS
            },
            SliceGrant::Slice {
                start: 10 * SEC + 250 * MS,
                end: 10 * SEC + 500 * MS
            },
            SliceGrant::Slice {
                start: 10 * SEC + 500 * MS,
                end: 10 * SEC + 750 * MS
            },
        ]
    );
    // Two more fit within the 1 s horizon; the next must wait.
    s.claim_slice(10 * SEC, 250 * MS, SEC);
    s.claim_slice(10 * SEC, 250 * MS, SEC);
    assert_eq!(
        s.claim_slice(10 * SEC, 250 * MS, SEC),
        SliceGrant::Later {
            at: 10 * SEC + 250 * MS
        }
    );
    // After an idle spell the next slice starts now, not in the past.
    assert_eq!(
        s.claim_slice(60 * SEC, 250 * MS, SEC),
        SliceGrant::Slice {
            start: 60 * SEC,
            end: 60 * SEC + 250 * MS
        }
    );
}

#[test]
fn unused_time_comes_back_only_from_the_last_slice() {
    let mut s = SharedLimitState::default();
    let SliceGrant::Slice { start, end } = s.claim_slice(0, 250 * MS, SEC) else {
        panic!()
    };
    s.give_back(start + 100 * MS, end, 50 * MS);
    assert_eq!(s.claimed_until, 100 * MS);
    let SliceGrant::Slice { end: first_end, .. } = s.claim_slice(0, 250 * MS, SEC) else {
        panic!()
    };
    s.claim_slice(0, 250 * MS, SEC);
    let before = s.claimed_until;
    s.give_back(first_end - 10 * MS, first_end, 0);
    assert_eq!(s.claimed_until, before, "someone claimed after it");
}

#[test]
fn a_pause_delays_every_later_slice() {
    let mut s = SharedLimitState::default();
    s.pause(5 * SEC);
    s.pause(2 * SEC);
    assert_eq!(s.paused_until, 5 * SEC);
    assert_eq!(
        s.claim_slice(SEC, 250 * MS, 10 * SEC),
        SliceGrant::Slice {
            start: 5 * SEC,
            end: 5 * SEC + 250 * MS
        }
    );
}

#[test]
fn open_endpoints_are_remembered_until_their_time() {
    let mut s = SharedLimitState::default();
    s.open("http://a", 30 * SEC, 0);
    s.open("http://a", 10 * SEC, 0);
    s.open("http://b", 5 * SEC, 0);
    assert_eq!(s.open_until["http://a"], 30 * SEC);
    s.open("http://c", 40 * SEC, 6 * SEC);
    assert!(!s.open_until.contains_key("http://b"), "expired entries go");
}

/// Three simulated processes, each with its own limiter at the full rate,
/// claiming slices when they have work: the admissions of all of them
/// together are paced as one limiter would pace them.
#[test]
fn three_processes_together_hold_one_rate() {
    let rpm = 6_000u64; // one request per 10 ms
    let interval_ns = 10_000_000u64;
    let slice = 250 * MS;
    let mut state = SharedLimitState::default();
    let mut procs: Vec<(Windows, Option<(i64, i64)>)> = (0..3)
        .map(|_| {
            let limits = WindowLimits {
                rpm: Some(rpm),
                ..Default::default()
            };
            (Windows::new(&limits, 2_000_000), None)
        })
        .collect();
    let mut sent: Vec<(i64, usize)> = Vec::new();
    // Step through 20 s in 1 ms ticks; every process always has work. Each
    // process wakes up to 1.5 ms late, as timers do.
    let mut now = 0i64;
    while now < 20 * SEC {
        for (p, (windows, owned)) in procs.iter_mut().enumerate() {
            let late = (p as i64 * 500) % 1_500;
            let t = now + late;
            let t_ns = t as u64 * 1_000;
            if owned.is_none_or(|(_, end)| !windows.fits_before(t_ns, 0, end as u64 * 1_000)) {
                *owned = match state.claim_slice(t, slice, SEC) {
                    SliceGrant::Slice { start, end } => Some((start, end)),
                    SliceGrant::Later { .. } => None,
                };
            }
            if let Some((start, end)) = *owned {
                if t >= start
                    && windows.fits_before(t_ns, 0, end as u64 * 1_000)
                    && windows.try_acquire(t_ns, 0).is_ok()
                {
                    sent.push((t, p));
                }
            }
        }
        now += MS;
    }
    sent.sort_unstable();
    // Every process sent, and together at ≥ 95% of the rate over 20 s.
    for p in 0..3 {
        assert!(
            sent.iter().filter(|(_, q)| *q == p).count() > 300,
            "process {p}"
        );
    }
    let expected = 20 * rpm / 60;
    assert!(
        sent.len() as u64 >= expected * 95 / 100 && sent.len() as u64 <= expected + 1,
        "{} sent, bound {expected}",
        sent.len()
    );
    // No two admissions closer than the interval less the timer lateness.
    let closest = sent.windows(2).map(|w| w[1].0 - w[0].0).min().unwrap();
    assert!(
        closest as u64 * 1_000 >= interval_ns - 2_000_000,
        "{closest} µs"
    );
    // No 1 s span holds more than the rate allows (plus the one at its edge).
    let busiest = (0..sent.len())
        .map(|i| {
            sent[i..]
                .iter()
                .take_while(|(t, _)| *t < sent[i].0 + SEC)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        busiest <= (rpm / 60) as usize + 1,
        "{busiest} in one second"
    );
}

#[test]
fn concurrency_shares_never_exceed_the_limit_and_become_fair() {
    let cap = 10;
    let mut s = SharedLimitState::default();
    // Both want everything; each keeps as many calls in flight as granted,
    // and a call ends between renewals.
    let mut in_flight = [0u64, 0];
    let mut granted = [0u64, 0];
    for round in 0..20 {
        for p in 0..2 {
            let name = ["a", "b"][p];
            granted[p] = s.grant(name, cap, in_flight[p], cap, round * SEC, 5 * SEC);
            // Calls drain to the grant, or grow to it.
            in_flight[p] = granted[p];
            assert!(
                in_flight[0] + in_flight[1] <= cap,
                "round {round}: {in_flight:?}"
            );
        }
    }
    assert_eq!(granted, [5, 5]);
    // One process alone gets all of it; a stopped one's share expires.
    let mut s = SharedLimitState::default();
    assert_eq!(s.grant("a", 8, 0, cap, 0, 5 * SEC), 8);
    assert_eq!(s.grant("b", 8, 0, cap, 0, 5 * SEC), 2);
    assert_eq!(s.grant("b", 8, 0, cap, 10 * SEC, 5 * SEC), 8, "a expired");
    s.leave("b");
    assert!(s.shares.is_empty());
}

#[test]
fn a_shrinking_share_stays_held_until_its_calls_drain() {
    let cap = 10;
    let mut s = SharedLimitState::default();
    assert_eq!(s.grant("a", 10, 0, cap, 0, 5 * SEC), 10);
    assert_eq!(s.grant("b", 10, 0, cap, 0, 5 * SEC), 0);
    // a is told to shrink to its fair half but still has 10 in flight.
    assert_eq!(s.grant("a", 10, 10, cap, SEC, 5 * SEC), 5);
    assert_eq!(
        s.grant("b", 10, 0, cap, SEC, 5 * SEC),
        0,
        "nothing released yet"
    );
    assert_eq!(s.grant("a", 10, 5, cap, 2 * SEC, 5 * SEC), 5);
    assert_eq!(s.grant("b", 10, 0, cap, 2 * SEC, 5 * SEC), 5);
}
