//! Providers shared by the runs of one process (the server runs many at once):
//! runs whose provider has the same base URLs, key variable and limits hold
//! one limiter, one concurrency gate and one endpoint pool, so together they
//! stay within the provider's limits, and the gate and limiter let the runs
//! in by turns, so one huge run cannot starve a small one.

use std::sync::{Arc, Mutex, Weak};

use sluice_limit::BreakerState;
use sluice_spec::Provider;
use tokio::time::Instant;

use super::lanes::{new_share, Base, Gate};
use crate::limiter::Limiter;
use crate::stats::EndpointReport;

/// What runs using one provider share.
pub(crate) struct ProviderShare {
    /// The provider's name in the run that created the share.
    pub(crate) name: String,
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

type Registry = Mutex<Vec<(String, Weak<ProviderShare>)>>;

fn registry() -> &'static Registry {
    static SHARES: Registry = Mutex::new(Vec::new());
    &SHARES
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

/// The share of `provider`: the one a live run already holds, else a new one.
pub(super) fn share(provider: &Provider) -> Arc<ProviderShare> {
    let key = key(provider);
    let mut shares = registry().lock().unwrap_or_else(|e| e.into_inner());
    shares.retain(|(_, weak)| weak.strong_count() > 0);
    if let Some(existing) = shares
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        return existing;
    }
    let share = Arc::new(new_share(provider));
    shares.push((key, Arc::downgrade(&share)));
    share
}

/// Every provider share some run of this process holds now.
pub(crate) fn live_shares() -> Vec<Arc<ProviderShare>> {
    let shares = registry().lock().unwrap_or_else(|e| e.into_inner());
    shares.iter().filter_map(|(_, w)| w.upgrade()).collect()
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
        let a = share(&provider("http://127.0.0.1:1/v1", Some(60)));
        let b = share(&provider("http://127.0.0.1:1/v1", Some(60)));
        assert!(Arc::ptr_eq(&a, &b));
        let other_limit = share(&provider("http://127.0.0.1:1/v1", Some(120)));
        assert!(!Arc::ptr_eq(&a, &other_limit));
        let other_url = share(&provider("http://127.0.0.1:2/v1", Some(60)));
        assert!(!Arc::ptr_eq(&a, &other_url));
        assert!(live_shares().iter().any(|s| Arc::ptr_eq(s, &a)));
        drop((a, b));
        // Once no run holds it, the next run starts afresh.
        let again = share(&provider("http://127.0.0.1:1/v1", Some(60)));
        assert_eq!(again.gate.in_flight(), 0);
    }
}
