//! One provider's rate limits held together: requests per second, minute,
//! hour and day, tokens per minute and day, input and output tokens per
//! minute (GCRA windows), the limits the provider announces where the job set
//! none (mirrored from what it says is left, read against what was sent after
//! the request it answered: [`Admission`]), plus pauses it asks for
//! (`retry-after`, an exhausted `remaining`).
//! Concurrency is held by the caller. On a shared store the limiter sends
//! only inside slices of sending time claimed for this process
//! ([`crate::shared_limits`]), so every process together holds the rates.
//! Waiting callers of several runs take turns (`fair.rs`); the last minute's
//! use is kept for the live view.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use sluice_limit::{Announced, Cost, Dim, Rejection, Report, Span, WindowLimits, Windows};
use sluice_provider::{Budget, RateSignals};

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

/// A request the limiter let go: when, and how much had been let go up to
/// and including it (requests, input tokens, output tokens), so a provider's
/// report on it can be read against what was sent after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Admission {
    at: u64,
    upto: [u64; 3],
}

/// Shared by every call to one provider.
pub(crate) struct Limiter {
    /// Requests, input tokens and output tokens let go so far.
    admitted: [AtomicU64; 3],
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
    /// The per-minute request and token limits announced (0 = none), as
    /// published to other processes sharing the limits.
    learned: [AtomicU64; 2],
    /// Limits held together with other processes (a shared store); set once
    /// (the limiter may already be shared by runs of this process).
    shared: OnceLock<Arc<SharedLimits>>,
    /// Told when a settlement gave tokens back: the waiter sleeping on a
    /// wait computed before it looks again at once (else a run whose
    /// estimates exceed its usage paces by the estimates, ~60% of a tpm
    /// limit in `limits::tpm_limit_is_held_with_estimates_corrected_by_usage`).
    refunded: tokio::sync::Notify,
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
            admitted: Default::default(),
            origin: Instant::now(),
            limited: std::sync::atomic::AtomicBool::new(windows.is_limited()),
            windows: Mutex::new(windows),
            configured: limits.clone(),
            learned: [AtomicU64::new(0), AtomicU64::new(0)],
            paused_until: AtomicU64::new(0),
            queue: FairTurn::default(),
            used: Rolling::default(),
            shared: OnceLock::new(),
            refunded: tokio::sync::Notify::new(),
        }
    }

    /// Holds the limits together with other processes from now on (the
    /// first call wins). Announced limits are then paced evenly: processes
    /// send in slices of time, which need even spacing.
    pub(crate) fn share(&self, shared: Arc<SharedLimits>) {
        if self.shared.set(shared).is_ok() {
            let now = self.now();
            self.windows
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pace_evenly(now);
        }
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
            let limit = |n: u64| Budget {
                limit: (n > 0).then_some(n),
                ..Budget::default()
            };
            self.observe(
                &RateSignals {
                    requests: limit(rpm),
                    tokens: limit(tpm),
                    ..RateSignals::default()
                },
                None,
            );
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
    pub(crate) async fn acquire(&self, tokens: impl Into<Cost>) -> Result<Admission, TooLarge> {
        self.acquire_for(0, tokens.into()).await
    }

    /// [`Limiter::acquire`] for a caller of run `tenant`: while callers wait,
    /// runs take turns.
    pub(crate) async fn acquire_for(
        &self,
        tenant: Tenant,
        tokens: Cost,
    ) -> Result<Admission, TooLarge> {
        self.take_up_shared();
        let now = self.now();
        if !self.limited.load(Relaxed) && self.paused_until.load(Relaxed) <= now {
            return Ok(self.admit(now, tokens));
        }
        let _turn = self.queue.take(tenant).await;
        loop {
            // Registered before looking, so a refund made after the look
            // still ends the sleep.
            let refund = self.refunded.notified();
            tokio::pin!(refund);
            refund.as_mut().enable();
            match self.try_take(tokens)? {
                Take::Now => return Ok(self.admit(self.now(), tokens)),
                Take::Wait(n) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_nanos(n)) => {}
                        _ = refund => {}
                    }
                }
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

    /// Counts a request let go at `now`.
    fn admit(&self, now: u64, tokens: Cost) -> Admission {
        self.used.add(now / 1_000_000_000, 1, tokens.total() as i64);
        let add = |i: usize, n: u64| self.admitted[i].fetch_add(n, Relaxed).saturating_add(n);
        Admission {
            at: now,
            upto: [add(0, 1), add(1, tokens.input), add(2, tokens.output)],
        }
    }

    /// The limits held now: the configured ones, and those the provider
    /// announced where none was configured (by their inferred span).
    pub(crate) fn limits(&self) -> WindowLimits {
        let mut out = self.configured.clone();
        for a in self.announced() {
            let slot = match (a.dim, a.learned.span) {
                (Dim::Requests, Span::Minute) => &mut out.rpm,
                (Dim::Requests, Span::Hour) => &mut out.rph,
                (Dim::Requests, Span::Day) => &mut out.rpd,
                (Dim::Tokens, Span::Minute) => &mut out.tpm,
                (Dim::Tokens, _) => &mut out.tpd,
                (Dim::InputTokens, _) => &mut out.itpm,
                (Dim::OutputTokens, _) => &mut out.otpm,
            };
            slot.get_or_insert(a.learned.limit);
        }
        out
    }

    /// The limits the provider announced and that are held (the job set
    /// none of their kind), each with its inferred span and refill.
    pub(crate) fn announced(&self) -> Vec<Announced> {
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .announced()
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
    fn try_take(&self, tokens: Cost) -> Result<Take, TooLarge> {
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
                Some(s) => {
                    // Out of room: how late the slice's schedule ran sizes
                    // the room for lateness in the next.
                    let unit = w.occupancy(tokens);
                    shared.ran_out(&s, now, w.schedule_end(now, tokens), unit);
                    return Ok(Take::Slice(unit));
                }
                None => return Ok(Take::Slice(w.occupancy(tokens))),
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

    /// Corrects the token reservation of the request let go as `admission`
    /// once the real usage is known.
    pub(crate) fn settle(&self, admission: Admission, reserved: Cost, used: Cost) {
        if reserved == used {
            return;
        }
        let now = self.now();
        self.used.add(
            now / 1_000_000_000,
            0,
            used.total() as i64 - reserved.total() as i64,
        );
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .settle(now, admission.at, reserved, used);
        if used.input < reserved.input || used.output < reserved.output {
            self.refunded.notify_waiters();
        }
    }

    /// Pauses every caller for `wait` (a provider's `retry-after`).
    pub(crate) fn pause(&self, wait: Duration) {
        let until = self.now() + wait.as_nanos() as u64;
        self.paused_until.fetch_max(until, Relaxed);
        if let Some(shared) = self.shared.get() {
            shared.publish_pause(until);
        }
    }

    /// The provider answered 429: limits it announced are paced evenly from
    /// now on (it holds them over shorter periods than their capacity says).
    pub(crate) fn rate_limited(&self) {
        let now = self.now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.back_off(now) {
            tracing::info!("a 429 while bursting into an announced allowance: pacing evenly");
        }
    }

    /// Applies the provider's own view (see [`Windows::observe`]) of the
    /// request let go as `admission`: the limits it announces are held where
    /// the job set none of their kind, mirroring what it says is left (less
    /// what was sent since), and an exhausted one holds everything until the
    /// provider admits again, configured or not.
    pub(crate) fn observe(&self, signals: &RateSignals, admission: Option<Admission>) {
        let c = &self.configured;
        let requests = c.rps.or(c.rpm).or(c.rph).or(c.rpd).is_some();
        let all_tokens = c.tpm.or(c.tpd).is_some();
        let dims = [
            (Dim::Requests, signals.requests, requests),
            (
                Dim::Tokens,
                signals.tokens,
                all_tokens || c.itpm.or(c.otpm).is_some(),
            ),
            (
                Dim::InputTokens,
                signals.input_tokens,
                all_tokens || c.itpm.is_some(),
            ),
            (
                Dim::OutputTokens,
                signals.output_tokens,
                all_tokens || c.otpm.is_some(),
            ),
        ];
        if dims.iter().all(|(_, b, _)| *b == Budget::default()) {
            return;
        }
        let now = self.now();
        let since = |i: usize| {
            admission.map_or(0, |a| {
                self.admitted[i].load(Relaxed).saturating_sub(a.upto[i])
            })
        };
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        for (dim, budget, configured) in dims {
            if budget == Budget::default() {
                continue;
            }
            let sent_after = match dim {
                Dim::Requests => since(0),
                Dim::Tokens => since(1) + since(2),
                Dim::InputTokens => since(1),
                Dim::OutputTokens => since(2),
            };
            let report = Report {
                limit: budget.limit,
                remaining: budget.remaining,
                reset_nanos: budget.reset.map(|d| d.as_nanos() as u64),
                sent_at: admission.map(|a| a.at),
                sent_after,
            };
            tracing::trace!(?dim, ?report, now, "provider report");
            windows.observe(now, dim, report, configured);
        }
        self.limited.store(windows.is_limited(), Relaxed);
        // Per-minute request and token limits go to other processes sharing them.
        let minute = |dim: Dim| {
            windows
                .announced()
                .iter()
                .find(|a| a.dim == dim && a.learned.span == Span::Minute)
                .map(|a| a.learned.limit)
        };
        let (rpm, tpm) = (minute(Dim::Requests), minute(Dim::Tokens));
        drop(windows);
        let changed = [rpm, tpm]
            .iter()
            .zip(&self.learned)
            .any(|(new, old)| new.is_some_and(|n| n != old.load(Relaxed)));
        if changed {
            for (new, old) in [rpm, tpm].iter().zip(&self.learned) {
                if let Some(n) = new {
                    old.store(*n, Relaxed);
                }
            }
            if let Some(shared) = self.shared.get() {
                shared.publish_learned(rpm, tpm);
            }
            tracing::debug!(?rpm, ?tpm, "holding the limits the provider announced");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Limiter {
        /// A report that describes this moment.
        fn observe_now(&self, signals: &RateSignals) {
            self.observe(signals, None);
        }
    }

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
    async fn a_refund_wakes_the_waiter_at_once() {
        // 60,000 tpm = 1,000 tokens a second: a reservation of 1,000 holds
        // the next caller for a second, unless it comes back.
        let limiter = Arc::new(Limiter::per_minute(None, Some(60_000)));
        let first = limiter.acquire(1_000).await.unwrap();
        let start = tokio::time::Instant::now();
        let waiter = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move { limiter.acquire(100).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Answered after 100 ms having used 100 tokens: 900 come back.
        limiter.settle(first, Cost::from(1_000), Cost::from(100));
        waiter.await.unwrap().unwrap();
        assert_eq!(start.elapsed().as_millis(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn too_large_fails_at_once() {
        let limiter = Limiter::per_minute(None, Some(1_000));
        assert_eq!(
            limiter.acquire(1_001).await.map(|_| ()),
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
        limiter.observe_now(&RateSignals {
            requests: Budget {
                limit: Some(600),
                remaining: Some(0),
                reset: Some(Duration::from_millis(100)),
            },
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
        configured.observe_now(&RateSignals {
            requests: Budget {
                limit: Some(6_000),
                ..Budget::default()
            },
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
        limiter.observe_now(&RateSignals {
            requests: Budget {
                remaining: Some(0),
                reset: Some(Duration::from_millis(250)),
                ..Budget::default()
            },
            ..Default::default()
        });
        let start = tokio::time::Instant::now();
        limiter.acquire(1).await.unwrap();
        assert!(start.elapsed().as_millis() >= 250);
    }
}
