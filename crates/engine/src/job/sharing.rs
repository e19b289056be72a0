//! Providers shared by the runs of one process (the server runs many at once):
//! runs whose provider has the same base URLs, key variable and limits hold
//! one limiter, one concurrency gate and one endpoint pool, so together they
//! stay within the provider's limits, and the gate and limiter let the runs
//! in by turns, so one huge run cannot starve a small one.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sluice_limit::{Aimd, AimdConfig, Breaker, BreakerConfig, BreakerState, WindowLimits};
use sluice_spec::Provider;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::engine::Engine;
use crate::fair::{FairTurn, Tenant};
use crate::limiter::Limiter;
use crate::shared_limits::SharedLimits;
use crate::stats::{AnnouncedLimit, EndpointReport, Limits, ProviderReport, ProviderView};

/// How long a caller waiting for a place sleeps at most before looking again
/// (a shrinking adaptive or shared limit frees no place to be woken by).
const PLACE_POLL: Duration = Duration::from_millis(100);

/// What runs using one provider share.
pub(crate) struct ProviderShare {
    pub(crate) limiter: Limiter,
    pub(crate) gate: Gate,
    pub(super) bases: Vec<Base>,
    pub(super) url_concurrency: Option<usize>,
    pub(super) origin: Instant,
}

impl ProviderShare {
    /// Nanoseconds since the share was created (the breakers' clock).
    pub(super) fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Times each endpoint's breaker opened (0 without a breaker).
    pub(crate) fn breaker_openings(&self) -> Vec<u64> {
        self.bases
            .iter()
            .map(|b| {
                b.breaker
                    .as_ref()
                    .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).opened_count())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Each endpoint: its URL, calls in flight, breaker state and openings.
    pub(crate) fn endpoints(&self) -> Vec<EndpointReport> {
        let now = self.now();
        self.bases
            .iter()
            .map(|b| {
                let (state, openings) = match &b.breaker {
                    Some(m) => {
                        let br = m.lock().unwrap_or_else(|e| e.into_inner());
                        let state = match br.state() {
                            BreakerState::Closed => "closed",
                            BreakerState::Open { until } if until > now => "open",
                            // Past its cooldown: the next call probes it.
                            BreakerState::Open { .. } | BreakerState::HalfOpen => "half_open",
                        };
                        (state, br.opened_count())
                    }
                    None => ("none", 0),
                };
                EndpointReport {
                    url: sluice_store::redact_url(&b.url),
                    in_flight: b.in_flight.load(std::sync::atomic::Ordering::Relaxed) as u64,
                    breaker: state.to_owned(),
                    openings,
                }
            })
            .collect()
    }
}

/// One base URL of a provider's pool.
pub(super) struct Base {
    pub(super) url: String,
    pub(super) in_flight: AtomicUsize,
    pub(super) breaker: Option<Mutex<Breaker>>,
}

/// Calls in flight to a provider: a fixed cap, an adaptive one, or none.
pub(crate) struct Gate {
    in_flight: AtomicUsize,
    pub(super) fixed: Option<usize>,
    pub(super) adaptive: Option<Mutex<Aimd>>,
    freed: Notify,
    /// Runs waiting for a place take turns (one run's queue cannot starve another's).
    turns: FairTurn,
    /// Callers waiting for a place (reported with a shared concurrency share).
    waiting: AtomicUsize,
    /// This process's share of a concurrency limit held with other processes
    /// (set once, by the first run of the process on a shared store).
    pub(super) shared: OnceLock<Arc<SharedLimits>>,
}

/// A place inside a [`Gate`]; leaving it lets the next caller in.
pub(crate) struct GateGuard<'a>(&'a Gate);

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        let now = self.0.in_flight.fetch_sub(1, Relaxed) - 1;
        self.0.report(now);
        self.0.freed.notify_one();
    }
}

impl Gate {
    /// The cap now (`usize::MAX`: none).
    pub(crate) fn limit(&self) -> usize {
        match (&self.adaptive, self.fixed, self.shared.get()) {
            (Some(aimd), _, _) => aimd.lock().unwrap_or_else(|e| e.into_inner()).limit(),
            (None, Some(n), Some(shared)) => n.min(shared.granted.load(Relaxed)),
            (None, Some(n), None) => n,
            (None, None, _) => usize::MAX,
        }
    }

    /// Tells the shared share what this process has in flight and wants.
    fn report(&self, in_flight: usize) {
        if let Some(shared) = self.shared.get() {
            shared.in_flight.store(in_flight, Relaxed);
            // The most wanted since the last exchange, and one more to grow:
            // a share sized to the calls in flight at one instant would drop
            // to nothing between two calls.
            shared
                .wanted
                .fetch_max(in_flight + self.waiting.load(Relaxed) + 1, Relaxed);
        }
    }

    /// Calls inside now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// Takes a place if one is free under the limit.
    fn try_take(&self) -> Option<GateGuard<'_>> {
        let limit = self.limit();
        // Runs on other threads may share the gate: claim the place atomically.
        let now = self
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .ok()?;
        self.report(now + 1);
        if let Some(aimd) = &self.adaptive {
            aimd.lock()
                .unwrap_or_else(|e| e.into_inner())
                .on_start(now + 1);
        }
        Some(GateGuard(self))
    }

    /// Waits for a place under the current limit; while places are short,
    /// the waiting runs (`tenant`s) take turns.
    pub(crate) async fn enter(&self, tenant: Tenant) -> GateGuard<'_> {
        if self.turns.is_idle() {
            if let Some(guard) = self.try_take() {
                return guard;
            }
        }
        self.waiting.fetch_add(1, Relaxed);
        self.report(self.in_flight());
        if let Some(shared) = self.shared.get() {
            // Out of places: ask for a bigger share now, not in a second.
            shared.wake.notify_one();
        }
        let _turn = self.turns.take(tenant).await;
        loop {
            let notified = self.freed.notified();
            if let Some(guard) = self.try_take() {
                self.waiting.fetch_sub(1, Relaxed);
                return guard;
            }
            // A shrinking adaptive (or shared) limit frees no place: look again soon.
            let _ = tokio::time::timeout(PLACE_POLL, notified).await;
        }
    }
}

/// The shared part of a lane, built when no run of this process holds one.
fn new_share(provider: &Provider) -> ProviderShare {
    let breaker = |_: &String| {
        provider.breaker.as_ref().map(|b| {
            Mutex::new(Breaker::new(BreakerConfig {
                failures: b.failures,
                cooldown_nanos: b.cooldown.as_nanos() as u64,
                window: b.window,
                rate: b.rate,
            }))
        })
    };
    ProviderShare {
        limiter: Limiter::new(&WindowLimits {
            rps: provider.rps,
            rpm: provider.rpm,
            rph: provider.rph,
            rpd: provider.rpd,
            tpm: provider.tpm,
            tpd: provider.tpd,
            ..WindowLimits::default()
        }),
        gate: Gate {
            in_flight: AtomicUsize::new(0),
            fixed: provider.concurrency,
            adaptive: provider
                .adaptive
                .map(|max| Mutex::new(Aimd::new(AimdConfig::up_to(max)))),
            freed: Notify::new(),
            turns: FairTurn::default(),
            waiting: AtomicUsize::new(0),
            shared: OnceLock::new(),
        },
        bases: provider
            .base_urls
            .iter()
            .map(|u| Base {
                url: u.trim_end_matches('/').to_string(),
                in_flight: AtomicUsize::new(0),
                breaker: breaker(u),
            })
            .collect(),
        url_concurrency: provider.url_concurrency,
        origin: Instant::now(),
    }
}

impl ProviderView for ProviderShare {
    fn report(&self, name: &str) -> ProviderReport {
        provider_report(name, self)
    }
}

fn provider_report(name: &str, share: &ProviderShare) -> ProviderReport {
    let l = share.limiter.limits();
    let (used_rpm, used_tpm) = share.limiter.used_per_minute();
    let cap = share.gate.limit();
    ProviderReport {
        name: name.to_owned(),
        in_flight: share.gate.in_flight() as u64,
        // Filled in by `report` from the run's steps.
        on_wire: 0,
        concurrency: (cap != usize::MAX).then_some(cap as u64),
        limits: Limits {
            rps: l.rps,
            rpm: l.rpm,
            rph: l.rph,
            rpd: l.rpd,
            tpm: l.tpm,
            tpd: l.tpd,
            itpm: l.itpm,
            otpm: l.otpm,
        },
        announced: share
            .limiter
            .announced()
            .into_iter()
            .map(|a| AnnouncedLimit {
                what: a.dim.name().to_string(),
                limit: a.learned.limit,
                per: a.learned.span.name().to_string(),
                refill: match a.learned.refill {
                    sluice_limit::Refill::Continuous => "continuous",
                    sluice_limit::Refill::AtReset => "at_reset",
                }
                .to_string(),
                burst: a.learned.capacity,
            })
            .collect(),
        used_rpm,
        used_tpm,
        rate_waiting: share.limiter.is_waiting(),
        endpoints: share.endpoints(),
    }
}

/// What makes two runs' providers the same one: where calls go, with which
/// key, under which limits. (A changed limit makes a new share rather than
/// being ignored in favour of an older run's.)
fn key(p: &Provider) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        p.base_urls,
        p.api_key_env,
        p.concurrency,
        p.adaptive,
        p.rps,
        p.rpm,
        p.rph,
        p.rpd,
        p.tpm,
        p.tpd,
        p.url_concurrency,
        p.breaker,
    )
}

/// The share of `provider` in `engine`: the one a live run of it already
/// holds, else a new one.
pub(super) fn share(engine: &Engine, provider: &Provider) -> Arc<ProviderShare> {
    engine.share(key(provider), &provider.name, || new_share(provider))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(url: &str, rpm: Option<u64>) -> Provider {
        Provider {
            name: "p".into(),
            base_urls: vec![url.into()],
            rpm,
            ..Provider::default()
        }
    }

    #[test]
    fn same_provider_and_limits_share_one_limiter() {
        let engine = Engine::new();
        let a = share(&engine, &provider("http://127.0.0.1:1/v1", Some(60)));
        let b = share(&engine, &provider("http://127.0.0.1:1/v1", Some(60)));
        assert!(Arc::ptr_eq(&a, &b));
        let other_limit = share(&engine, &provider("http://127.0.0.1:1/v1", Some(120)));
        assert!(!Arc::ptr_eq(&a, &other_limit));
        let other_url = share(&engine, &provider("http://127.0.0.1:2/v1", Some(60)));
        assert!(!Arc::ptr_eq(&a, &other_url));
        assert_eq!(engine.process_providers().len(), 3);
        // Another engine of the same process holds providers of its own.
        let elsewhere = share(&Engine::new(), &provider("http://127.0.0.1:1/v1", Some(60)));
        assert!(!Arc::ptr_eq(&a, &elsewhere));
        drop((a, b));
        // Once no run holds it, the next run starts afresh.
        let again = share(&engine, &provider("http://127.0.0.1:1/v1", Some(60)));
        assert_eq!(again.gate.in_flight(), 0);
    }
}
