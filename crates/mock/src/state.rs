//! The state one server shares across connections, and the per-request verdict.
//!
//! Everything a request's verdict depends on (counters, limiters, the fault RNG)
//! sits behind one mutex taken once per request and held only for arithmetic,
//! so verdicts are serialized in arrival order. The in-flight count and the OK
//! times are atomics, touched outside the lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::cms::Cms;
use crate::config::MockConfig;
use crate::faults::{Fault, Faults};
use crate::journal::Journal;
use crate::limits::{Limits, RateSnapshot, Throttle};
use crate::stats::{MockStats, Outcome, Recorder};

/// What happens to a request that parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Over the concurrency cap: 429 at once.
    Busy,
    Fault(Fault),
    Throttled(Throttle),
    /// Admitted and charged: a 200, the `id`-th since start.
    Accept {
        id: u64,
        truncate: bool,
    },
}

/// A verdict, the extra latency drawn for it, and the headers to send with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision {
    pub(crate) verdict: Verdict,
    pub(crate) jitter_ms: u64,
    pub(crate) rates: RateSnapshot,
}

/// The state of one server, shared by all its connections.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: MockConfig,
    /// `127.0.0.1:PORT`, named in stage answers so results show which host
    /// of a pool did the work.
    pub(crate) host: String,
    pub(crate) cms: Cms,
    pub(crate) journal: Journal,
    /// Time zero of the limiters and the sliding window.
    origin: Instant,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Unix ms of the first and last 200 sent; zero for none.
    first_ok_ms: AtomicU64,
    last_ok_ms: AtomicU64,
    locked: Mutex<Locked>,
    /// Files and batches of the batch APIs.
    pub(crate) offload: crate::batches::Offload,
}

#[derive(Debug)]
struct Locked {
    recorder: Recorder,
    limits: Limits,
    faults: Faults,
    next_id: u64,
    /// The latest time (ns since `origin`) a request was judged at: the
    /// limits see time only move forward.
    judged_at: u64,
}

impl Locked {
    fn new(cfg: &MockConfig) -> Locked {
        Locked {
            recorder: Recorder::default(),
            limits: Limits::new(cfg.rpm, cfg.tpm, cfg.slack_ms).with_allowance(cfg.allowance),
            faults: Faults::new(cfg),
            next_id: 0,
            judged_at: 0,
        }
    }
}

/// A request's place among those in flight; leaving it (response produced, or
/// the client gone and the request dropped) frees the place.
#[derive(Debug)]
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// A fresh server state listening as `host`; the limiters' clock starts
    /// now. Fails when the CMS directory cannot be read.
    pub(crate) fn new(cfg: MockConfig, host: String) -> std::io::Result<Shared> {
        Ok(Shared {
            locked: Mutex::new(Locked::new(&cfg)),
            cms: Cms::load(cfg.cms_dir.as_deref())?,
            journal: Journal::new(cfg.journal),
            host,
            cfg,
            origin: Instant::now(),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            first_ok_ms: AtomicU64::new(0),
            last_ok_ms: AtomicU64::new(0),
            offload: crate::batches::Offload::default(),
        })
    }

    /// Milliseconds since the server started.
    pub(crate) fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether `reject_rate` refuses the request whose content hashes to
    /// `hash`: a function of the two, so the answer never changes.
    /// Whether the JSON answer to request `hash`, answered as number `id`,
    /// is made invalid (`--json-invalid-rate`): drawn per answer, so a
    /// retry of the same request may get valid JSON.
    pub(crate) fn invalid_json(&self, hash: u64, id: u64) -> bool {
        if self.cfg.json_invalid_rate <= 0.0 {
            return false;
        }
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&hash.to_le_bytes());
        key[8..].copy_from_slice(&id.to_le_bytes());
        let draw = xxhash_rust::xxh3::xxh3_64_with_seed(&key, self.cfg.seed ^ 0x150);
        let share = (draw >> 11) as f64 / (1u64 << 53) as f64;
        share < self.cfg.json_invalid_rate
    }

    pub(crate) fn rejects(&self, hash: u64) -> bool {
        if self.cfg.reject_rate <= 0.0 {
            return false;
        }
        // Mixed again so the draw is independent of the reply text's seed.
        let draw = xxhash_rust::xxh3::xxh3_64_with_seed(&hash.to_le_bytes(), 0x5e1ec7);
        let share = (draw >> 11) as f64 / (1u64 << 53) as f64;
        share < self.cfg.reject_rate
    }

    /// Counts a request to a generic route and its status (`None`: none sent).
    pub(crate) fn count_route(&self, path: &str, status: Option<u16>) {
        self.lock().recorder.route(path, status);
    }

    /// Counts the images of a chat request that passed its checks.
    pub(crate) fn count_images(&self, images: crate::media::Images) {
        if images.count == 0 {
            return;
        }
        let stats = &mut self.lock().recorder.stats;
        stats.images += images.count;
        stats.image_bytes += images.bytes;
        stats.requests_with_images += 1;
    }

    /// Counts a webhook delivery and whether its signature was checked and good.
    pub(crate) fn count_hook(&self, verified: Option<bool>) {
        let hooks = &mut self.lock().recorder.stats.hooks;
        hooks.received += 1;
        match verified {
            Some(true) => hooks.verified += 1,
            Some(false) => hooks.refused += 1,
            None => {}
        }
    }

    fn lock(&self) -> MutexGuard<'_, Locked> {
        // The lock guards plain counters that are valid after any panic.
        self.locked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts a request answered before admission (401, 400, 405) and returns
    /// the headers to send with it.
    pub(crate) fn refuse(&self, outcome: Outcome) -> RateSnapshot {
        let mut locked = self.lock();
        locked.recorder.count(outcome);
        locked.limits.snapshot(self.now_nanos())
    }

    /// Takes a place in flight, or `None` when the concurrency cap is reached.
    pub(crate) fn enter(&self) -> Option<InFlight<'_>> {
        let cap = self.cfg.max_concurrency.map_or(u64::MAX, |c| c as u64);
        let before = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        self.max_in_flight.fetch_max(before + 1, Ordering::Relaxed);
        Some(InFlight(&self.in_flight))
    }

    /// Decides a parsed request costing `tokens`, with body hash `hash`,
    /// that `arrived` then; `entered` says whether it got a place in flight.
    ///
    /// The limits judge it at its arrival, not after the mock has read and
    /// counted it (the first count of a model builds its tokenizer's state:
    /// hundreds of milliseconds unoptimised), so the mock's own delays never
    /// bunch a client's well-paced requests; never before a request already
    /// judged, so time only moves forward.
    pub(crate) fn decide(
        &self,
        entered: bool,
        tokens: u64,
        hash: u64,
        arrived: Instant,
    ) -> Decision {
        let mut locked = self.lock();
        let arrival = u64::try_from(arrived.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        let now = arrival.max(locked.judged_at);
        locked.judged_at = now;
        let (verdict, jitter_ms) = if entered {
            let draws = locked.faults.draw();
            let verdict = match draws.fault {
                Some(fault) => {
                    locked.recorder.count(match fault {
                        Fault::Reset => Outcome::Reset,
                        Fault::Hang => Outcome::Hang,
                        Fault::ServerError => Outcome::ServerError,
                    });
                    Verdict::Fault(fault)
                }
                None => match locked.limits.admit(now, tokens) {
                    Err(throttle) => {
                        locked.recorder.count(Outcome::RateLimited);
                        Verdict::Throttled(throttle)
                    }
                    Ok(()) => {
                        locked.recorder.accept(now / 1_000_000, tokens, hash);
                        locked.recorder.admitted(now, tokens);
                        locked.recorder.count(if draws.truncate {
                            Outcome::Truncated
                        } else {
                            Outcome::Ok
                        });
                        locked.next_id += 1;
                        Verdict::Accept {
                            id: locked.next_id,
                            truncate: draws.truncate,
                        }
                    }
                },
            };
            (verdict, draws.jitter_ms)
        } else {
            locked.recorder.count(Outcome::RateLimited);
            (Verdict::Busy, 0)
        };
        Decision {
            verdict,
            jitter_ms,
            rates: locked.limits.snapshot(now),
        }
    }

    /// Notes that a 200 left now.
    pub(crate) fn sent_ok(&self) {
        let ms = unix_ms();
        let _ = self
            .first_ok_ms
            .compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed);
        self.last_ok_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// A snapshot of the stats.
    pub(crate) fn stats(&self) -> MockStats {
        let mut stats = self.lock().recorder.stats.clone();
        stats.max_in_flight = self.max_in_flight.load(Ordering::Relaxed);
        stats.in_flight = self.in_flight.load(Ordering::Acquire);
        let some = |ms: u64| (ms > 0).then_some(ms);
        stats.first_ok_unix_ms = some(self.first_ok_ms.load(Ordering::Relaxed));
        stats.last_ok_unix_ms = some(self.last_ok_ms.load(Ordering::Relaxed));
        stats
    }

    /// The accepted requests' rates over windows of `window_ms`.
    pub(crate) fn rates(&self, window_ms: u64) -> crate::WindowRates {
        self.lock().recorder.rates(window_ms)
    }

    /// Zeroes the stats and the journal and restarts the limiters, RNG and
    /// ids; requests in flight stay counted as in flight. The CMS keeps its
    /// items.
    pub(crate) fn reset(&self) {
        let mut locked = self.lock();
        *locked = Locked::new(&self.cfg);
        self.journal.clear();
        self.max_in_flight
            .store(self.in_flight.load(Ordering::Acquire), Ordering::Relaxed);
        self.first_ok_ms.store(0, Ordering::Relaxed);
        self.last_ok_ms.store(0, Ordering::Relaxed);
        self.offload.reset();
    }
}

/// Now in Unix milliseconds (zero if the clock is before 1970).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn requests_are_judged_at_their_arrival_and_time_never_goes_back() {
        // 600/min: one request per 100 ms, a slack of 25 ms.
        let cfg = MockConfig {
            rpm: Some(600),
            ..MockConfig::default()
        };
        let shared = Shared::new(cfg, "127.0.0.1:0".into()).expect("no CMS directory");
        let at = |ms: u64| shared.origin + Duration::from_millis(ms);
        let accepted = |d: Decision| matches!(d.verdict, Verdict::Accept { .. });
        // Decided one after the other now, whenever the mock gets to them:
        // what counts is that they arrived 100 ms apart.
        assert!(accepted(shared.decide(true, 1, 1, at(1_000))));
        assert!(accepted(shared.decide(true, 1, 2, at(1_100))));
        // One that arrived earlier but is judged later is judged at the
        // latest time already judged: 0 ms after the last, refused.
        let late = shared.decide(true, 1, 3, at(1_050));
        assert!(matches!(late.verdict, Verdict::Throttled(_)), "{late:?}");
        assert!(accepted(shared.decide(true, 1, 4, at(1_200))));
    }
}
