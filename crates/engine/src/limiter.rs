//! One provider's rate limits held together: requests per second, minute,
//! hour and day and tokens per minute and day (GCRA windows), plus pauses the
//! provider asks for (`retry-after`, exhausted `x-ratelimit-remaining-*`).
//! Concurrency is held by the caller. On a shared store the limiter sends
//! only inside slices of sending time claimed for this process
//! ([`crate::shared_limits`]), so every process together holds the rates.
//! Waiting callers of several runs take turns (`fair.rs`); the last minute's
//! use is kept for the live view.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use sluice_limit::{Rejection, WindowLimits, Windows};
use sluice_provider::RateSignals;

use crate::fair::{FairTurn, Tenant};
use crate::meter::Rolling;
use crate::shared_limits::SharedLimits;

/// Timer lateness a waiter may recover (tokio's timer wakes up to ~1 ms late).
const CATCH_UP_NANOS: u64 = 2_000_000;

/// A request the limits can never admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge {
    pub(crate) tokens: u64,
    pub(crate) tpm: u64,
}

/// Shared by every call to one provider.
pub(crate) struct Limiter {
    origin: Instant,
    windows: Mutex<Windows>,
    /// Nothing is sent before this instant (nanoseconds since `origin`); read
    /// without the lock on the fast path.
    paused_until: AtomicU64,
    /// Callers wait in line, so one waiter sleeps at a time and a large
    /// request is not overtaken forever by small ones; runs take turns.
    queue: FairTurn,
    /// Requests and tokens taken over the last minute.
    used: Rolling,
    limited: std::sync::atomic::AtomicBool,
    /// What the job configured; the provider's own limits (headers) fill in
    /// what it left out.
    configured: WindowLimits,
    /// The per-minute limits learned from `x-ratelimit-limit-*` (0 = none).
    learned: [AtomicU64; 2],
    /// Limits held together with other processes (a shared store); set once
    /// (the limiter may already be shared by runs of this process).
    shared: OnceLock<Arc<SharedLimits>>,
}

/// What a caller must do before its request may go.
enum Take {
    /// Nothing: it was admitted.
    Now,
    /// Sleep this many nanoseconds and look again.
    Wait(u64),
    /// Claim a slice of shared sending time at least this long (ns).
    Slice(u64),
}

impl Limiter {
    pub(crate) fn new(limits: &WindowLimits) -> Limiter {
        let windows = Windows::new(limits, CATCH_UP_NANOS);
        Limiter {
            origin: Instant::now(),
            limited: std::sync::atomic::AtomicBool::new(windows.is_limited()),
            windows: Mutex::new(windows),
            configured: limits.clone(),
            learned: [AtomicU64::new(0), AtomicU64::new(0)],
            paused_until: AtomicU64::new(0),
            queue: FairTurn::default(),
            used: Rolling::default(),
            shared: OnceLock::new(),
        }
    }

    /// Holds the limits together with other processes from now on (the
    /// first call wins).
    pub(crate) fn share(&self, shared: Arc<SharedLimits>) {
        let _ = self.shared.set(shared);
    }

    /// The limits shared with other processes, if any.
    pub(crate) fn shared(&self) -> Option<Arc<SharedLimits>> {
        self.shared.get().cloned()
    }

    /// The clock origin (instants are nanoseconds since it).
    pub(crate) fn origin(&self) -> Instant {
        self.origin
    }

    /// Takes up what other processes published: their pauses and the
    /// limits their providers announced.
    fn take_up_shared(&self) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        self.paused_until
            .fetch_max(shared.paused_until.load(Relaxed), Relaxed);
        let rpm = shared.learned_shared[0].load(Relaxed);
        let tpm = shared.learned_shared[1].load(Relaxed);
        if (rpm > 0 && rpm != self.learned[0].load(Relaxed))
            || (tpm > 0 && tpm != self.learned[1].load(Relaxed))
        {
            self.observe(&RateSignals {
                limit_requests: (rpm > 0).then_some(rpm),
                limit_tokens: (tpm > 0).then_some(tpm),
                ..RateSignals::default()
            });
        }
    }

    /// Requests and tokens per minute only (quick mode).
    pub(crate) fn per_minute(rpm: Option<u64>, tpm: Option<u64>) -> Limiter {
        Limiter::new(&WindowLimits {
            rpm,
            tpm,
            ..WindowLimits::default()
        })
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Waits until one request of `tokens` conforms to every limit, and takes it.
    #[cfg(test)]
    pub(crate) async fn acquire(&self, tokens: u64) -> Result<(), TooLarge> {
        self.acquire_for(0, tokens).await
    }

    /// [`Limiter::acquire`] for a caller of run `tenant`: while callers wait,
    /// runs take turns.
    pub(crate) async fn acquire_for(&self, tenant: Tenant, tokens: u64) -> Result<(), TooLarge> {
        self.take_up_shared();
        let now = self.now();
        if !self.limited.load(Relaxed) && self.paused_until.load(Relaxed) <= now {
            self.used.add(now / 1_000_000_000, 1, tokens as i64);
            return Ok(());
        }
        let _turn = self.queue.take(tenant).await;
        loop {
            match self.try_take(tokens)? {
                Take::Now => {
                    self.used.add(self.now() / 1_000_000_000, 1, tokens as i64);
                    return Ok(());
                }
                Take::Wait(n) => tokio::time::sleep(Duration::from_nanos(n)).await,
                Take::Slice(len) => {
                    if let Some(shared) = self.shared.get() {
                        if let Some(wait) = shared.claim(len).await {
                            tokio::time::sleep(wait).await;
                        }
                        self.take_up_shared();
                    }
                }
            }
        }
    }

    /// The limits held now: the configured ones, and the per-minute ones the
    /// provider announced where none was configured.
    pub(crate) fn limits(&self) -> WindowLimits {
        let learned = |i: usize| Some(self.learned[i].load(Relaxed)).filter(|&n| n > 0);
        WindowLimits {
            rpm: self.configured.rpm.or(learned(0)),
            tpm: self.configured.tpm.or(learned(1)),
            ..self.configured.clone()
        }
    }

    /// Requests and tokens per minute taken over the last minute (or since
    /// its first request, if that is shorter).
    pub(crate) fn used_per_minute(&self) -> (f64, f64) {
        let now = self.now() / 1_000_000_000;
        self.used.per_minute(now, now)
    }

    /// Whether a caller is waiting for its rate slot now.
    pub(crate) fn is_waiting(&self) -> bool {
        !self.queue.is_idle()
    }

    /// Takes the request if it conforms now; otherwise what to do first.
    fn try_take(&self, tokens: u64) -> Result<Take, TooLarge> {
        let now = self.now();
        let paused = self.paused_until.load(Relaxed);
        if paused > now {
            return Ok(Take::Wait(paused - now));
        }
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cost, limit)) = w.too_large(tokens) {
            return Err(TooLarge {
                tokens: cost,
                tpm: limit,
            });
        }
        if let Some(shared) = self.shared.get().filter(|_| w.is_limited()) {
            // Only inside this process's slice, and only if the request's
            // spacing ends within it (the next owner starts at its end).
            let slice = *shared.slice.lock().unwrap_or_else(|e| e.into_inner());
            match slice {
                Some(s) if now < s.start => return Ok(Take::Wait(s.start - now)),
                Some(s) if w.fits_before(now, tokens, s.end) => {}
                _ => return Ok(Take::Slice(w.occupancy(tokens))),
            }
        }
        match w.try_acquire(now, tokens) {
            Ok(()) => Ok(Take::Now),
            Err(Rejection::Wait(n)) => Ok(Take::Wait(n.max(1))),
            Err(Rejection::TooLarge { cost, limit }) => Err(TooLarge {
                tokens: cost,
                tpm: limit,
            }),
        }
    }

    /// Corrects the token reservation once the real usage is known.
    pub(crate) fn settle(&self, reserved: u64, used: u64) {
        if reserved == used {
            return;
        }
        let now = self.now();
        self.used
            .add(now / 1_000_000_000, 0, used as i64 - reserved as i64);
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .settle(now, reserved, used);
    }

    /// Pauses every caller for `wait` (a provider's `retry-after`).
    pub(crate) fn pause(&self, wait: Duration) {
        let until = self.now() + wait.as_nanos() as u64;
        self.paused_until.fetch_max(until, Relaxed);
        if let Some(shared) = self.shared.get() {
            shared.publish_pause(until);
        }
    }

    /// Applies the provider's own view: a limit it reports as exhausted pauses
    /// sending until its reset, and a per-minute limit it announces
    /// (`x-ratelimit-limit-*`) is held from then on when the job set none,
    /// so a client that was not told the limit stops drawing 429s.
    pub(crate) fn observe(&self, signals: &RateSignals) {
        let rpm = signals
            .limit_requests
            .filter(|_| self.configured.rpm.is_none());
        let tpm = signals
            .limit_tokens
            .filter(|_| self.configured.tpm.is_none());
        let changed = [rpm, tpm]
            .iter()
            .zip(&self.learned)
            .any(|(new, old)| new.is_some_and(|n| n > 0 && n != old.load(Relaxed)));
        if changed {
            if let Some(r) = rpm {
                self.learned[0].store(r, Relaxed);
            }
            if let Some(t) = tpm {
                self.learned[1].store(t, Relaxed);
            }
            if let Some(shared) = self.shared.get() {
                shared.publish_learned(rpm, tpm);
            }
            let learned = |i: usize| Some(self.learned[i].load(Relaxed)).filter(|&n| n > 0);
            let limits = WindowLimits {
                rpm: self.configured.rpm.or(learned(0)),
                tpm: self.configured.tpm.or(learned(1)),
                ..self.configured.clone()
            };
            let mut windows = Windows::new(&limits, CATCH_UP_NANOS);
            // The request that brought this answer counts against the new
            // window, so the next one waits its turn instead of drawing a 429.
            let _ = windows.try_acquire(self.now(), 0);
            self.limited.store(windows.is_limited(), Relaxed);
            *self.windows.lock().unwrap_or_else(|e| e.into_inner()) = windows;
            tracing::debug!(?limits, "holding the limits the provider announced");
        }
        // An exhausted budget pauses everyone until its reset — unless that
        // limit is already held here (configured or learned): the GCRA paces
        // to it precisely, and the pause would only add lateness.
        let known = [
            self.configured.rpm.is_some() || self.learned[0].load(Relaxed) > 0,
            self.configured.tpm.is_some() || self.learned[1].load(Relaxed) > 0,
        ];
        for ((remaining, reset), known) in [
            (signals.remaining_requests, signals.reset_requests),
            (signals.remaining_tokens, signals.reset_tokens),
        ]
        .into_iter()
        .zip(known)
        {
            if let (Some(0), Some(reset), false) = (remaining, reset, known) {
                self.pause(reset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rpm_and_tpm_hold_together() {
        // 600 rpm = one per 100 ms; 6,000 tpm = 100 tokens per second.
        let limiter = Limiter::per_minute(Some(600), Some(6_000));
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            limiter.acquire(10).await.unwrap();
        }
        // Requests bind: 4 gaps of 100 ms.
        assert_eq!(start.elapsed().as_millis() / 10, 40);
        let start = tokio::time::Instant::now();
        limiter.acquire(300).await.unwrap();
        limiter.acquire(300).await.unwrap();
        // Tokens bind: the second 300 waits 3 s after the first (which itself
        // waited 100 ms for the 50 tokens taken before it).
        let ms = start.elapsed().as_millis();
        assert_eq!(ms, 3_100);
    }

    #[tokio::test(start_paused = true)]
    async fn too_large_fails_at_once() {
        let limiter = Limiter::per_minute(None, Some(1_000));
        assert_eq!(
            limiter.acquire(1_001).await,
            Err(TooLarge {
                tokens: 1_001,
                tpm: 1_000
            })
        );
        assert!(limiter.acquire(1_000).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn pause_holds_even_without_configured_limits() {
        let limiter = Limiter::per_minute(None, None);
        limiter.pause(Duration::from_millis(700));
        let start = tokio::time::Instant::now();
        limiter.acquire(1).await.unwrap();
        let ms = start.elapsed().as_millis();
        assert!((700..=710).contains(&ms), "{ms}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_announced_limit_is_held_when_none_was_configured() {
        let limiter = Limiter::per_minute(None, None);
        limiter.acquire(1).await.unwrap();
        limiter.observe(&RateSignals {
            limit_requests: Some(600),
            ..Default::default()
        });
        // The answered request counts: the next two wait 100 ms each.
        let start = tokio::time::Instant::now();
        limiter.acquire(1).await.unwrap();
        limiter.acquire(1).await.unwrap();
        let ms = start.elapsed().as_millis();
        assert!((195..=205).contains(&ms), "{ms}");
        // A configured limit is not replaced by the provider's.
        let configured = Limiter::per_minute(Some(60), None);
        configured.observe(&RateSignals {
            limit_requests: Some(6_000),
            ..Default::default()
        });
        configured.acquire(1).await.unwrap();
        let start = tokio::time::Instant::now();
        configured.acquire(1).await.unwrap();
        assert!(start.elapsed().as_millis() >= 990);
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_remaining_header_pauses_until_reset() {
        let limiter = Limiter::per_minute(None, None);
        limiter.observe(&RateSignals {
            remaining_requests: Some(0),
            reset_requests: Some(Duration::from_millis(250)),
            ..Default::default()
        });
        let start = tokio::time::Instant::now();
        limiter.acquire(1).await.unwrap();
        assert!(start.elapsed().as_millis() >= 250);
    }
}
