//! Tests for [`Windows`]: which window binds when, day totals, oversize
//! requests, settling and holds.

use super::*;

const MS: u64 = 1_000_000;

fn windows(limits: WindowLimits) -> Windows {
    Windows::new(&limits, 0)
}

/// Admits `n` requests of `tokens` greedily from `start`, waiting exactly as
/// told, and returns the admission times.
fn admit(w: &mut Windows, start: u64, n: usize, tokens: u64) -> Vec<u64> {
    let mut now = start;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        loop {
            match w.try_acquire(now, tokens) {
                Ok(()) => break,
                Err(Rejection::Wait(wait)) => now += wait,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        times.push(now);
    }
    times
}

/// The most admissions in any half-open span of `period` nanoseconds.
fn busiest(times: &[u64], period: u64) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|&&t| t < times[i] + period)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn the_tighter_of_rps_and_rpm_binds() {
    // 30/min is one per 2 s: the minute binds, 10/s never gets a say.
    let mut w = windows(WindowLimits {
        rps: Some(10),
        rpm: Some(30),
        ..Default::default()
    });
    assert_eq!(admit(&mut w, 0, 3, 0), [0, 2 * SECOND, 4 * SECOND]);
    // Both refuse at 4.05 s; the wait is the longer of the two.
    assert_eq!(
        w.try_acquire(4 * SECOND + 50 * MS, 0),
        Err(Rejection::Wait(2 * SECOND - 50 * MS))
    );

    // 1,200/min is one per 50 ms: now the second binds, at 100 ms.
    let mut w = windows(WindowLimits {
        rps: Some(10),
        rpm: Some(1_200),
        ..Default::default()
    });
    assert_eq!(admit(&mut w, 0, 3, 0), [0, 100 * MS, 200 * MS]);
}

#[test]
fn a_request_refused_by_one_window_takes_from_none() {
    let mut w = windows(WindowLimits {
        rps: Some(10),
        rpm: Some(1_200),
        ..Default::default()
    });
    w.try_acquire(0, 1).unwrap();
    // At 60 ms the minute would admit (50 ms spacing), the second would not.
    assert_eq!(w.try_acquire(60 * MS, 1), Err(Rejection::Wait(40 * MS)));
    // Had the minute been charged at 60 ms, 100 ms would be 10 ms too early.
    assert_eq!(w.try_acquire(100 * MS, 1), Ok(()));
}

#[test]
fn an_hour_window_lends_a_sixtieth_then_paces() {
    // 600/h: a burst of 10 (at the per-second pace), then the hour binds, its
    // rate lowered by the nine extra requests the burst lent: 591 per hour.
    let mut w = windows(WindowLimits {
        rps: Some(10),
        rph: Some(600),
        ..Default::default()
    });
    let times = admit(&mut w, 0, 12, 0);
    let per_second: Vec<u64> = (0..10).map(|i| i * 100 * MS).collect();
    assert_eq!(&times[..10], &per_second[..]);
    let unit = HOUR.div_ceil(591);
    assert_eq!(&times[10..], &[unit, 2 * unit]);
}

#[test]
fn a_small_day_limit_holds_its_total_over_every_day() {
    // 120/day: a burst of two, then one every ~12 minutes, whatever the
    // per-second window would allow.
    let mut w = windows(WindowLimits {
        rps: Some(10),
        rpd: Some(120),
        ..Default::default()
    });
    let times = admit(&mut w, 0, 360, 0);
    let unit = DAY.div_ceil(119);
    assert_eq!(&times[..4], &[0, 100 * MS, unit, 2 * unit]);
    // The first day admits the whole budget, and no day ever holds more.
    assert_eq!(times.iter().filter(|&&t| t < DAY).count(), 120);
    assert_eq!(busiest(&times, DAY), 120);
    // Once the day's 120 are spent, nothing more goes that day.
    assert!(times[119] > 23 * HOUR && times[120] >= DAY, "{times:?}");
    // After the burst, a request waits for the day's pace, not the second's.
    let mut w = windows(WindowLimits {
        rpd: Some(120),
        ..Default::default()
    });
    admit(&mut w, 0, 2, 0);
    assert_eq!(
        w.try_acquire(MINUTE, 0),
        Err(Rejection::Wait(unit - MINUTE))
    );
}

#[test]
fn a_large_day_limit_is_not_paced_to_the_second() {
    // 14,400/day spaced evenly would be one per 6 s; with a burst of 240 a job
    // of 200 requests runs at the per-second limit.
    let mut w = windows(WindowLimits {
        rps: Some(20),
        rpd: Some(14_400),
        ..Default::default()
    });
    let times = admit(&mut w, 0, 200, 0);
    assert_eq!(times[199], 199 * 50 * MS);
}

#[test]
fn tokens_above_tpm_or_tpd_are_too_large() {
    let mut w = windows(WindowLimits {
        rpm: Some(1),
        tpm: Some(1_000),
        tpd: Some(50_000),
        ..Default::default()
    });
    assert_eq!(
        w.try_acquire(0, 1_001),
        Err(Rejection::TooLarge {
            cost: 1_001,
            limit: 1_000
        })
    );
    // Refused outright, not charged: the one request a minute is still there.
    assert_eq!(w.try_acquire(0, 1_000), Ok(()));

    let mut w = windows(WindowLimits {
        tpm: Some(10_000),
        tpd: Some(2_000),
        ..Default::default()
    });
    assert_eq!(
        w.try_acquire(0, 2_001),
        Err(Rejection::TooLarge {
            cost: 2_001,
            limit: 2_000
        })
    );
    // Within tpd but above the rate left after its burst: refused, named
    // against the configured limit, rather than waiting forever.
    assert_eq!(
        w.try_acquire(0, 1_990),
        Err(Rejection::TooLarge {
            cost: 1_990,
            limit: 2_000
        })
    );
}

#[test]
fn settle_refunds_and_charges_every_token_window() {
    // 100 tokens/s per minute; ~1 token/s per day, with a burst of 1,440.
    let mut w = windows(WindowLimits {
        tpm: Some(6_000),
        tpd: Some(86_400),
        ..Default::default()
    });
    let debts = |w: &Windows, now| -> Vec<u64> {
        w.windows.iter().map(|x| x.gcra.reset_nanos(now)).collect()
    };
    let day_unit = DAY.div_ceil(86_400 - 1_440 + 1);
    w.try_acquire(0, 2_000).unwrap();
    assert_eq!(debts(&w, 0), [20 * SECOND, 2_000 * day_unit]);
    // The day window binds: 2,100 tokens of debt against a bucket of 1,440.
    assert!(matches!(w.try_acquire(0, 100), Err(Rejection::Wait(_))));
    // Only 200 were used: both windows get 1,800 back.
    w.settle(0, 0, 2_000, 200);
    assert_eq!(debts(&w, 0), [2 * SECOND, 200 * day_unit]);
    assert_eq!(w.try_acquire(2 * SECOND, 100), Ok(()));
    // Using more than reserved charges both.
    w.settle(2 * SECOND, 2 * SECOND, 100, 600);
    assert_eq!(
        debts(&w, 2 * SECOND),
        [6 * SECOND, 800 * day_unit - 2 * SECOND]
    );
}

#[test]
fn requests_without_tokens_pass_token_windows() {
    let mut w = windows(WindowLimits {
        rpm: Some(6_000),
        tpm: Some(600),
        ..Default::default()
    });
    w.try_acquire(0, 600).unwrap();
    // The minute's tokens are spent, but a call that spends none still goes.
    assert_eq!(w.try_acquire(10 * MS, 0), Ok(()));
    assert!(matches!(w.try_acquire(10 * MS, 1), Err(Rejection::Wait(_))));
}

#[test]
fn hold_pauses_everything_and_spends_no_budget() {
    let mut w = windows(WindowLimits::default());
    assert!(!w.is_limited());
    assert_eq!(w.try_acquire(0, 1), Ok(()));
    // A retry-after holds even a provider with no configured limits.
    w.hold_until(700 * MS);
    w.hold_until(300 * MS);
    assert!(w.is_limited());
    assert_eq!(w.try_acquire(100 * MS, 1), Err(Rejection::Wait(600 * MS)));
    assert_eq!(w.try_acquire(700 * MS, 1), Ok(()));

    // After the hold, the hour window's burst is still whole.
    let mut w = windows(WindowLimits {
        rph: Some(600),
        ..Default::default()
    });
    assert!(w.is_limited());
    w.hold_until(5 * SECOND);
    assert_eq!(w.try_acquire(0, 0), Err(Rejection::Wait(5 * SECOND)));
    assert_eq!(admit(&mut w, 5 * SECOND, 10, 0), [5 * SECOND; 10]);
}

#[test]
fn catch_up_reaches_every_window() {
    let mut w = Windows::new(
        &WindowLimits {
            rps: Some(100),
            tpm: Some(60_000),
            ..Default::default()
        },
        2 * MS,
    );
    w.try_acquire(0, 10).unwrap();
    // Woken 1.5 ms late: the next slot is still 10 ms after the first.
    w.try_acquire(11 * MS + MS / 2, 10).unwrap();
    assert_eq!(w.try_acquire(20 * MS, 10), Ok(()), "the lateness was lost");
}

#[test]
fn fits_before_keeps_a_request_inside_a_slice_of_sending_time() {
    // 600/min: each request occupies 100 ms of the schedule.
    let mut w = windows(WindowLimits {
        rpm: Some(600),
        tpm: Some(60_000), // 1 token per ms
        rph: Some(100_000),
        ..Default::default()
    });
    assert_eq!(w.occupancy(0), 100 * MS);
    assert_eq!(w.occupancy(250), 250 * MS, "tokens bind");
    assert!(w.fits_before(0, 0, 100 * MS));
    assert!(!w.fits_before(0, 0, 99 * MS));
    w.try_acquire(0, 0).unwrap();
    // The next conforms at 100 ms and would end at 200 ms.
    assert!(w.fits_before(50 * MS, 0, 200 * MS));
    assert!(!w.fits_before(50 * MS, 0, 150 * MS));
    // 150 tokens end 150 ms after the token window's tat.
    assert!(!w.fits_before(100 * MS, 150, 200 * MS));
    assert!(w.fits_before(100 * MS, 150, 250 * MS));
    assert_eq!(w.schedule_end(100 * MS, 150), 250 * MS);
}

fn report(limit: u64, remaining: u64, reset_nanos: u64) -> Report {
    Report {
        limit: Some(limit),
        remaining: Some(remaining),
        reset_nanos: Some(reset_nanos),
        ..Report::default()
    }
}

#[test]
fn requests_sent_after_the_reported_one_count_against_the_allowance() {
    // 64 went out before anything was known; the first answer (of the first
    // request, admitted at 0) says 239 of 240/min remain. The 63 others are
    // on their way: 176 are left, not 239.
    let mut w = windows(WindowLimits::default());
    let first = Report {
        sent_at: Some(0),
        sent_after: 63,
        ..report(240, 239, 250 * MS)
    };
    w.observe(200 * MS, Dim::Requests, first, false);
    let times = admit(&mut w, 200 * MS, 177, 0);
    assert_eq!(times[175], 200 * MS, "176 go at once");
    assert!(times[176] > 200 * MS, "the 177th waits: {}", times[176]);
    // An evenly paced provider's answer, 20 ms after its request: the next
    // slot is 50 ms after the request, not after the answer.
    let mut w = windows(WindowLimits::default());
    let paced = Report {
        sent_at: Some(0),
        ..report(1_200, 0, 50 * MS)
    };
    w.observe(20 * MS, Dim::Requests, paced, false);
    assert_eq!(w.try_acquire(20 * MS, 0), Err(Rejection::Wait(30 * MS)));
}

#[test]
fn a_still_full_allowance_goes_at_once_then_at_the_announced_rate() {
    let mut w = windows(WindowLimits::default());
    // 1,200/min, one used by the request that brought the answer.
    w.observe(0, Dim::Requests, report(1_200, 1_199, 50 * MS), false);
    let times = admit(&mut w, 0, 1_300, 0);
    assert_eq!(times[1_198], 0, "the 1,199 left go at once");
    assert_eq!(times[1_199], 50 * MS, "then one per 50 ms");
    assert_eq!(times[1_299], 101 * 50 * MS);
    assert_eq!(w.announced()[0].learned.span, crate::Span::Minute);
}

#[test]
fn an_evenly_paced_provider_is_mirrored_evenly() {
    let mut w = windows(WindowLimits::default());
    w.observe(0, Dim::Requests, report(1_200, 0, 50 * MS), false);
    assert_eq!(admit(&mut w, 0, 3, 0), [50 * MS, 100 * MS, 150 * MS]);
}

#[test]
fn the_first_429_turns_a_burst_into_even_pacing() {
    let mut w = windows(WindowLimits::default());
    w.observe(0, Dim::Requests, report(1_200, 1_199, 50 * MS), false);
    assert_eq!(admit(&mut w, 0, 20, 0), [0; 20]);
    assert!(w.back_off(0));
    assert!(!w.back_off(0), "once is enough");
    // The mirrored bucket still has room: one now (after the 429's own
    // retry-after, held apart), then one per 50 ms.
    let times = admit(&mut w, 0, 3, 0);
    assert_eq!(times, [0, 50 * MS, 100 * MS]);
    // An emptied bucket: the next unit when one is back, not when all are.
    let mut w = windows(WindowLimits::default());
    w.observe(0, Dim::Requests, report(1_200, 1_199, 50 * MS), false);
    admit(&mut w, 0, 1_199, 0);
    w.back_off(0);
    assert_eq!(admit(&mut w, 0, 2, 0), [50 * MS, 100 * MS]);
    // Later reports keep the even pacing.
    w.observe(
        2 * SECOND,
        Dim::Requests,
        report(1_200, 1_199, 50 * MS),
        false,
    );
    let t = admit(&mut w, 2 * SECOND, 2, 0);
    assert_eq!(t[1] - t[0], 50 * MS);
}

#[test]
fn a_daily_quota_is_counted_down_to_its_reset() {
    let mut w = windows(WindowLimits::default());
    let reset = (23 * 3600 + 47 * 60 + 36) * SECOND;
    w.observe(0, Dim::Requests, report(10_000, 3, reset), false);
    assert_eq!(admit(&mut w, 0, 3, 0), [0, 0, 0]);
    assert_eq!(w.try_acquire(0, 0), Err(Rejection::Wait(reset)));
    let a = w.announced();
    assert_eq!(
        (a[0].learned.span, a[0].learned.limit),
        (crate::Span::Day, 10_000)
    );
}

#[test]
fn remaining_zero_holds_even_where_a_limit_is_configured() {
    let mut w = windows(WindowLimits {
        rpm: Some(6_000),
        ..Default::default()
    });
    // The provider (shared with other clients) has nothing left until its
    // daily reset: the configured 100/s does not override that.
    w.observe(0, Dim::Requests, report(1_000, 0, 5 * 3600 * SECOND), true);
    assert_eq!(w.try_acquire(0, 0), Err(Rejection::Wait(5 * 3600 * SECOND)));
    assert!(
        w.announced().is_empty(),
        "the configured limit is held, not the announced one"
    );
}

#[test]
fn input_and_output_tokens_are_held_apart() {
    let mut w = windows(WindowLimits::default());
    // Anthropic: 80k input + 16k output per minute, both full.
    w.observe(0, Dim::InputTokens, report(80_000, 80_000, 0), false);
    w.observe(0, Dim::OutputTokens, report(16_000, 16_000, 0), false);
    let big_output = Cost {
        input: 1_000,
        output: 8_000,
    };
    assert_eq!(w.try_acquire(0, big_output), Ok(()));
    assert_eq!(w.try_acquire(0, big_output), Ok(()));
    // Output is spent (16k), input is not (2k of 80k): output binds.
    let Err(Rejection::Wait(wait)) = w.try_acquire(0, big_output) else {
        panic!("output tokens should bind");
    };
    assert_eq!(wait, 30 * SECOND, "8,000 of 16,000/min come back in 30 s");
    // A prompt-only request passes: input has room, output is not spent.
    assert_eq!(
        w.try_acquire(
            0,
            Cost {
                input: 5_000,
                output: 0
            }
        ),
        Ok(())
    );
}
