//! Tests for [`Aimd`]: the window rules one by one, then simulations against a
//! service with a capacity the controller is not told.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::*;

const MS: u64 = 1_000_000;

/// One window at the current limit with the limit reached: call `i` of the
/// window answers in `rtt(i)`, the calls finishing 1 ms apart. Returns the time
/// after the window.
fn window(a: &mut Aimd, mut now: u64, rtt: impl Fn(usize) -> u64) -> u64 {
    let limit = a.limit();
    a.on_start(limit);
    for i in 0..limit {
        now += MS;
        a.on_response(now, rtt(i));
    }
    now
}

/// RTTs alternating `mean - 10 ms` and `mean + 10 ms`: a spread of ~10 ms.
fn jittery(mean_ms: u64) -> impl Fn(usize) -> u64 {
    move |i| {
        (if i % 2 == 0 {
            mean_ms - 10
        } else {
            mean_ms + 10
        }) * MS
    }
}

#[test]
fn constant_rtt_at_the_limit_grows_by_one_per_window() {
    let mut a = Aimd::new(AimdConfig::up_to(50));
    assert_eq!(a.limit(), 4);
    let mut now = 0;
    for expected in 5..=20 {
        now = window(&mut a, now, |_| 100 * MS);
        assert_eq!(a.limit(), expected);
    }
}

#[test]
fn no_growth_without_reaching_the_limit() {
    let mut a = Aimd::new(AimdConfig::up_to(50));
    let mut now = 0;
    for _ in 0..10 {
        a.on_start(a.limit() - 1);
        for _ in 0..a.limit() {
            now += 10 * MS;
            a.on_response(now, 40 * MS);
        }
    }
    assert_eq!(a.limit(), 4);
}

#[test]
fn a_backpressure_burst_shrinks_multiplicatively_to_min() {
    let mut a = Aimd::new(AimdConfig {
        initial: 20,
        min: 2,
        ..AimdConfig::up_to(50)
    });
    let mut seen = vec![a.limit()];
    for _ in 0..14 {
        // One window of 429s; reaching the limit does not rescue it.
        a.on_start(a.limit());
        for _ in 0..a.limit() {
            a.on_backpressure(0);
        }
        seen.push(a.limit());
    }
    assert_eq!(seen, [20, 18, 16, 14, 12, 10, 9, 8, 7, 6, 5, 4, 3, 2, 2]);
}

#[test]
fn one_429_in_a_window_is_enough_to_decrease() {
    let mut a = Aimd::new(AimdConfig {
        initial: 10,
        ..AimdConfig::up_to(50)
    });
    let now = window(&mut a, 0, |_| 100 * MS);
    assert_eq!(a.limit(), 11);
    a.on_start(11);
    a.on_backpressure(now);
    for i in 1..11 {
        a.on_response(now + i * MS, 100 * MS);
    }
    assert_eq!(a.limit(), 9);
}

#[test]
fn slower_beyond_the_noise_decreases_within_it_holds() {
    let mut a = Aimd::new(AimdConfig {
        initial: 16,
        ..AimdConfig::up_to(50)
    });
    let mut now = 0;
    for _ in 0..4 {
        now = window(&mut a, now, |_| 100 * MS);
    }
    assert_eq!((a.limit(), a.baseline), (20, Some(100e6)));
    // 20 calls with a spread of ~10 ms have a standard error of ~2.3 ms: a mean
    // of 103 ms is within two, so no decrease, but no growth either.
    now = window(&mut a, now, jittery(103));
    assert_eq!(a.limit(), 20);
    // 112 ms is well beyond: shrinks, though nothing was rejected.
    now = window(&mut a, now, jittery(112));
    assert_eq!(a.limit(), 18);
    // Faster than usual again: grows.
    window(&mut a, now, jittery(95));
    assert_eq!(a.limit(), 19);
}

#[test]
fn a_lightly_loaded_window_closes_after_two_baseline_rtts() {
    let mut a = Aimd::new(AimdConfig {
        initial: 20,
        ..AimdConfig::up_to(50)
    });
    let now = window(&mut a, 0, |_| 100 * MS);
    assert_eq!(a.limit(), 21);
    // One call at a time: 21 completions would take seconds to gather.
    a.on_backpressure(now + 150 * MS);
    assert_eq!(a.limit(), 21);
    a.on_backpressure(now + 201 * MS);
    assert_eq!(a.limit(), 18);
}

#[test]
fn config_is_normalized() {
    let a = Aimd::new(AimdConfig {
        initial: 0,
        min: 0,
        max: 0,
        decrease_ratio: 1.5,
        rtt_deviance: f64::NAN,
        ewma_alpha: 0.0,
    });
    assert_eq!(a.cfg, AimdConfig::up_to(1));
    assert_eq!(AimdConfig::up_to(2).initial, 2);
    assert_eq!(AimdConfig::default().initial, 4);
}

/// A service with a capacity its clients are not told: RTT is flat up to
/// `capacity` concurrent calls, grows in proportion past it (calls queue), and
/// past twice the capacity it answers 429 at once.
struct Service {
    capacity: usize,
    rtt: u64,
    /// Each RTT is scaled by a uniform factor in `[1 - jitter, 1 + jitter]`.
    jitter: f64,
    /// Past `capacity`, answer 429 instead of slowing down.
    rejects_early: bool,
}

impl Service {
    fn new(capacity: usize, jitter: f64) -> Service {
        Service {
            capacity,
            rtt: 100 * MS,
            jitter,
            rejects_early: false,
        }
    }
}

/// xorshift64*: deterministic noise without a dependency.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Drives `a` against `service` with an endless backlog, keeping `limit` calls
/// in flight, for `calls` completions. Returns the limit after each completion
/// and the largest in-flight count seen.
fn simulate(a: &mut Aimd, service: &Service, calls: usize, seed: u64) -> (Vec<usize>, usize) {
    let mut rng = Rng(seed);
    // (finish time, sequence for a stable order, rtt, rejected)
    let mut pending = BinaryHeap::new();
    let (mut now, mut seq, mut in_flight, mut peak) = (0u64, 0u64, 0usize, 0usize);
    let mut limits = Vec::with_capacity(calls);
    for _ in 0..calls {
        while in_flight < a.limit() {
            in_flight += 1;
            peak = peak.max(in_flight);
            a.on_start(in_flight);
            let load = in_flight as f64 / service.capacity as f64;
            let rejected = load > 2.0 || (service.rejects_early && load > 1.0);
            let noise = 1.0 + service.jitter * (2.0 * rng.unit() - 1.0);
            let rtt = if rejected {
                service.rtt / 10
            } else {
                (service.rtt as f64 * load.max(1.0) * noise) as u64
            };
            seq += 1;
            pending.push(Reverse((now + rtt, seq, rtt, rejected)));
        }
        let Reverse((at, _, rtt, rejected)) = pending.pop().expect("calls in flight");
        now = at;
        in_flight -= 1;
        if rejected {
            a.on_backpressure(now);
        } else {
            a.on_response(now, rtt);
        }
        limits.push(a.limit());
    }
    (limits, peak)
}

/// Lowest, highest and mean limit.
fn summary(limits: &[usize]) -> (usize, usize, f64) {
    let lo = *limits.iter().min().unwrap();
    let hi = *limits.iter().max().unwrap();
    let mean = limits.iter().sum::<usize>() as f64 / limits.len() as f64;
    (lo, hi, mean)
}

#[test]
fn converges_near_capacity_when_latency_grows_past_it() {
    for jitter in [0.05, 0.2] {
        for capacity in [10, 20, 50] {
            for seed in 1..=5 {
                let mut a = Aimd::new(AimdConfig::up_to(500));
                let service = Service::new(capacity, jitter);
                let (limits, _) = simulate(&mut a, &service, 200 * capacity, seed);
                // After the climb from 4 (about one tenth of the run), the
                // limit stays around the knee.
                let (lo, hi, mean) = summary(&limits[limits.len() / 2..]);
                let c = capacity as f64;
                let case = format!(
                    "jitter {jitter}, capacity {capacity}, seed {seed}: {lo}..={hi}, mean {mean:.1}"
                );
                assert!(lo as f64 >= 0.7 * c && hi as f64 <= 1.3 * c, "{case}");
                assert!((0.8 * c..=1.15 * c).contains(&mean), "{case}");
            }
        }
    }
}

#[test]
fn converges_near_capacity_on_429s_alone() {
    // No latency signal beyond jitter: only rejections past capacity.
    for seed in 1..=5 {
        let mut a = Aimd::new(AimdConfig::up_to(500));
        let service = Service {
            rejects_early: true,
            ..Service::new(40, 0.05)
        };
        let (limits, _) = simulate(&mut a, &service, 10_000, seed);
        let (lo, hi, mean) = summary(&limits[5_000..]);
        // The sawtooth of AIMD: never past one over capacity, then down by
        // 10% (sometimes twice, when the window after a decrease still holds
        // calls sent under the old limit).
        assert!(lo >= 24 && hi <= 41, "seed {seed}: {lo}..={hi}");
        assert!((34.0..=42.0).contains(&mean), "seed {seed}: mean {mean:.1}");
    }
}

#[test]
fn a_lasting_change_in_latency_becomes_the_new_normal() {
    let mut a = Aimd::new(AimdConfig::up_to(30));
    let mut rng = Rng(3);
    let mut noisy = |mean_ms: f64| -> Vec<u64> {
        (0..30)
            .map(|_| (mean_ms * (0.9 + 0.2 * rng.unit())) as u64 * MS)
            .collect()
    };
    let mut now = 0;
    for _ in 0..60 {
        let rtts = noisy(100.0);
        now = window(&mut a, now, |i| rtts[i]);
    }
    let before = a.limit();
    assert!(before >= 20, "{before}");
    // Prompts get longer: every call now takes twice as long, at any load.
    let mut seen = Vec::new();
    for _ in 0..80 {
        let rtts = noisy(200.0);
        now = window(&mut a, now, |i| rtts[i]);
        seen.push(a.limit());
    }
    // The limit gives way while the baseline learns the new latency, then
    // climbs back instead of staying low.
    let (lo, _, _) = summary(&seen);
    assert!((8..=before / 2).contains(&lo), "{seen:?}");
    assert!(a.limit() >= before, "{seen:?}");
}

#[test]
fn stays_within_min_and_max() {
    // Capacity far above max: the limit climbs to max and stops there.
    let mut a = Aimd::new(AimdConfig::up_to(12));
    let (limits, peak) = simulate(&mut a, &Service::new(100, 0.05), 2_000, 7);
    let (lo, hi, _) = summary(&limits);
    assert_eq!((lo, hi, peak), (4, 12, 12));
    assert_eq!(a.limit(), 12);

    // A service that rejects everything past one call: down to min, never below.
    let mut a = Aimd::new(AimdConfig {
        initial: 30,
        min: 3,
        ..AimdConfig::up_to(40)
    });
    let hostile = Service {
        rejects_early: true,
        ..Service::new(1, 0.0)
    };
    let (limits, _) = simulate(&mut a, &hostile, 2_000, 7);
    assert_eq!(*limits.iter().min().unwrap(), 3);
    assert_eq!(a.limit(), 3);
}
