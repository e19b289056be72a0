//! Per-provider runtime state: its client (with its key), limiter, concurrency
//! gate (fixed or adaptive), and pool of base URLs with a circuit breaker each.
//! The limiter, gate and pool are shared by every run of this process that
//! uses the same provider (`sharing.rs`); the gate lets runs in by turns.
//! On a shared store, [`Lanes::share`] ties the limiter, the fixed
//! concurrency and the breakers to the other processes' (`shared_limits.rs`).

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use sluice_limit::Backoff;
use sluice_provider::{Client, Dialect, Endpoint};
use sluice_spec::{Job, Price, Provider, Retries, Step};

use super::sharing::{self, Gate, GateGuard, ProviderShare};
use crate::calls::{Report, Route};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fair::Tenant;
use crate::item_error::ItemError;
use crate::limiter::Limiter;
use crate::shared_limits::{SharedLimits, SharedStore};

/// How often a caller waiting on a full per-URL concurrency looks again.
const POLL: Duration = Duration::from_millis(5);

/// One provider while a job runs.
pub(crate) struct Lane {
    pub(crate) name: String,
    pub(crate) client: Client,
    /// Limiter, concurrency gate and endpoint pool, shared with other runs of
    /// this process that use the same provider.
    pub(crate) share: Arc<ProviderShare>,
    /// This run, in the shared gate's and limiter's turns.
    pub(crate) tenant: Tenant,
    /// Provider headers, rendered once (they may only use `env`).
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) retries: Retries,
    pub(crate) timeout: Duration,
    pub(crate) prices: Vec<Price>,
    /// The API's shape (requests, answers, auth and rate headers).
    pub(crate) dialect: Dialect,
    /// Breaker openings of each endpoint of the shared pool when this run began.
    openings_before: Vec<u64>,
    /// How long a breaker stays open (told to other processes).
    cooldown: Duration,
    shared: Option<Arc<SharedLimits>>,
}

impl Lane {
    fn new(
        engine: &Engine,
        provider: &Provider,
        env: &minijinja::Value,
        tenant: Tenant,
    ) -> Result<Lane> {
        let key = match &provider.api_key_env {
            Some(var) => match std::env::var(var) {
                Ok(k) if !k.trim().is_empty() => Some((var.clone(), k.trim().to_string())),
                _ => {
                    return Err(Error::Config(format!(
                        "provider {:?} reads its API key from ${var}, which is not set; export {var}=<key> first",
                        provider.name
                    )))
                }
            },
            None => None,
        };
        let dialect = provider.api;
        let client = Client::for_dialect(
            dialect,
            provider.concurrency.or(provider.adaptive).unwrap_or(256),
            key.as_ref().map(|(v, k)| (v.as_str(), k.as_str())),
        )
        .map_err(|e| Error::Config(e.to_string()))?
        .with_connect_timeout(provider.connect_timeout);
        if provider.base_urls.is_empty() {
            return Err(Error::Config(format!(
                "provider {:?} has no base_url or urls",
                provider.name
            )));
        }
        let mut headers = Vec::new();
        for (name, template) in &provider.headers {
            let value = template
                .render(env)
                .map_err(|e| Error::Config(e.to_string()))?;
            headers.push((name.clone(), value));
        }
        if dialect == Dialect::Anthropic
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("anthropic-version"))
        {
            headers.push((
                "anthropic-version".into(),
                sluice_provider::dialect::ANTHROPIC_VERSION.into(),
            ));
        }
        let share = sharing::share(engine, provider);
        let openings_before = share.breaker_openings();
        Ok(Lane {
            name: provider.name.clone(),
            client,
            share,
            tenant,
            headers,
            retries: provider.retries,
            timeout: provider.timeout,
            prices: provider.prices.clone(),
            openings_before,
            dialect,
            cooldown: provider
                .breaker
                .as_ref()
                .map_or(Duration::ZERO, |b| b.cooldown),
            shared: None,
        })
    }

    fn now(&self) -> u64 {
        self.share.now()
    }

    /// The provider's rate limiter.
    pub(crate) fn limiter(&self) -> &Limiter {
        &self.share.limiter
    }

    /// The provider's concurrency gate.
    pub(crate) fn gate(&self) -> &Gate {
        &self.share.gate
    }

    /// Every base URL.
    pub(crate) fn base_urls(&self) -> impl Iterator<Item = &str> {
        self.share.bases.iter().map(|b| b.url.as_str())
    }

    /// The pool member `url` starts with (its index), and the path after it:
    /// a step's `url` naming one of the pool's hosts goes to that host,
    /// under its breaker and `url_concurrency`.
    pub(crate) fn member_of<'u>(&self, url: &'u str) -> Option<(usize, &'u str)> {
        self.share.bases.iter().enumerate().find_map(|(i, b)| {
            url.strip_prefix(b.url.trim_end_matches('/'))
                .filter(|rest| rest.starts_with('/'))
                .map(|rest| (i, rest))
        })
    }

    /// The first base URL (to build a request whose path is then re-based).
    pub(crate) fn first_base(&self) -> &str {
        self.share
            .bases
            .first()
            .map(|b| b.url.as_str())
            .unwrap_or("")
    }

    /// The base URLs of this provider whose breaker opened since this run
    /// began (the pool is shared with other runs of the process), with how often.
    pub(crate) fn breaker_openings(&self) -> Vec<crate::BreakerReport> {
        self.share
            .bases
            .iter()
            .zip(&self.openings_before)
            .filter_map(|(b, before)| {
                let breaker = b.breaker.as_ref()?;
                let openings = breaker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .opened_count()
                    .saturating_sub(*before);
                (openings > 0).then(|| crate::BreakerReport {
                    provider: self.name.clone(),
                    url: sluice_store::redact_url(&b.url),
                    openings,
                })
            })
            .collect()
    }

    /// The least busy base URL whose breaker lets a call through; waits while
    /// none does (waiting is not an attempt, so items do not burn retries).
    /// With `fail_when_open`, returns `None` instead of waiting when every
    /// breaker is open (a step with a fallback takes it rather than wait).
    /// With `pinned`, only that endpoint will do: the call waits for it.
    async fn pick(
        &self,
        fail_when_open: bool,
        affinity: Option<(u64, bool)>,
        pinned: Option<usize>,
    ) -> Option<usize> {
        loop {
            let now = self.now();
            let mut best: Option<usize> = None;
            let mut all_open = true;
            let mut wake = now + POLL.as_nanos() as u64;
            let bases = &self.share.bases;
            let order: Vec<usize> = match (pinned, affinity) {
                (Some(i), _) => vec![i],
                (None, Some((key, failover))) => {
                    let order =
                        crate::job::affinity::order(key, bases.iter().map(|b| b.url.as_str()));
                    // Without failover only its own endpoint will do: wait for it.
                    order
                        .into_iter()
                        .take(if failover { usize::MAX } else { 1 })
                        .collect()
                }
                (None, None) => {
                    let mut order: Vec<usize> = (0..bases.len()).collect();
                    order.sort_by_key(|&i| bases[i].in_flight.load(Relaxed));
                    order
                }
            };
            for i in order {
                let base = &bases[i];
                if self
                    .share
                    .url_concurrency
                    .is_some_and(|cap| base.in_flight.load(Relaxed) >= cap)
                {
                    // Busy, not failing: a place frees soon.
                    all_open = false;
                    continue;
                }
                if self
                    .shared
                    .as_ref()
                    .is_some_and(|s| s.open_elsewhere(&base.url, now))
                {
                    // Another process found it failing; its cooldown is not over.
                    continue;
                }
                let admitted = match &base.breaker {
                    Some(b) => {
                        let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
                        let ok = b.try_acquire(now);
                        if !ok {
                            wake = wake.min(b.retry_at(now));
                        } else {
                            all_open = false;
                        }
                        ok
                    }
                    None => {
                        all_open = false;
                        true
                    }
                };
                if admitted {
                    best = Some(i);
                    break;
                }
            }
            if let Some(i) = best {
                bases[i].in_flight.fetch_add(1, Relaxed);
                return Some(i);
            }
            if fail_when_open && all_open {
                return None;
            }
            let wait = wake.saturating_sub(now).max(1_000_000);
            tokio::time::sleep(Duration::from_nanos(wait)).await;
        }
    }

    fn done(&self, index: usize, report: Report) {
        let Some(base) = self.share.bases.get(index) else {
            return;
        };
        base.in_flight.fetch_sub(1, Relaxed);
        let now = self.now();
        if let Some(b) = &base.breaker {
            let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
            let opened = b.opened_count();
            match report {
                Report::Success(_) => b.on_success(now),
                Report::Failure {
                    retryable: true, ..
                } => b.on_failure(now),
                Report::Failure { .. } => {}
            }
            if let Some(shared) = self.shared.as_ref().filter(|_| b.opened_count() > opened) {
                shared.publish_open(&base.url, self.cooldown);
            }
        }
        if let Some(aimd) = &self.share.gate.adaptive {
            let mut aimd = aimd.lock().unwrap_or_else(|e| e.into_inner());
            match report {
                Report::Success(rtt) => aimd.on_response(now, rtt.as_nanos() as u64),
                Report::Failure {
                    backpressure: true, ..
                } => aimd.on_backpressure(now),
                Report::Failure { .. } => {}
            }
        }
    }

    /// The retry policy and time-out for `step` on this provider.
    pub(crate) fn policy(&self, step: &Step) -> (u32, Backoff, Duration) {
        let retries = step.retries.unwrap_or(self.retries);
        (
            retries.max,
            Backoff {
                base_ms: retries.base.as_millis() as u64,
                cap_ms: retries.cap.as_millis() as u64,
            },
            step.timeout.unwrap_or(self.timeout),
        )
    }

    /// USD for `usage` of `model` (exact price, else `*`), if priced; at the
    /// batch API's prices when `batch`.
    pub(crate) fn cost(
        &self,
        model: Option<&str>,
        prompt: u64,
        completion: u64,
        batch: bool,
    ) -> Option<f64> {
        let price = self
            .prices
            .iter()
            .find(|p| Some(p.model.as_str()) == model)
            .or_else(|| self.prices.iter().find(|p| p.model == "*"))?;
        let (input, output) = if batch {
            (price.batch_input_per_mtok, price.batch_output_per_mtok)
        } else {
            (price.input_per_mtok, price.output_per_mtok)
        };
        Some(prompt as f64 * input / 1e6 + completion as f64 * output / 1e6)
    }
}

/// Each attempt of a call to a lane goes to the least busy healthy base URL,
/// `path` appended.
pub(crate) struct LaneRoute<'a> {
    pub(crate) lane: &'a Lane,
    pub(crate) path: String,
    pub(crate) method: Method,
    /// Fail at once while every endpoint's breaker is open (the step has a fallback).
    pub(crate) fail_when_open: bool,
    /// `affinity`: the call's key, and whether it may go to the next
    /// endpoint while its own is down (else it waits for it).
    pub(crate) affinity: Option<(u64, bool)>,
    /// The endpoint a step's `url` named (index in the pool), if any.
    pub(crate) pinned: Option<usize>,
}

/// An attempt's place in the provider's concurrency and on a base URL;
/// freed when the attempt ends or is abandoned, so a call waiting to retry
/// holds neither.
pub(crate) struct Ticket<'a> {
    lane: &'a Lane,
    index: usize,
    reported: bool,
    _place: GateGuard<'a>,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.reported {
            // Cut off (time-out of the unit, stop): free the place, blame no one.
            if let Some(base) = self.lane.share.bases.get(self.index) {
                base.in_flight.fetch_sub(1, Relaxed);
            }
        }
    }
}

impl<'a> Route for LaneRoute<'a> {
    type Ticket = Ticket<'a>;

    async fn pick(&self) -> std::result::Result<(Cow<'_, Endpoint>, Ticket<'a>), ItemError> {
        let place = self.lane.gate().enter(self.lane.tenant).await;
        let Some(index) = self
            .lane
            .pick(self.fail_when_open, self.affinity, self.pinned)
            .await
        else {
            return Err(ItemError::new(
                "circuit_open",
                format!(
                    "every endpoint of provider {} is failing (its circuit breakers are open)",
                    self.lane.name
                ),
            ));
        };
        let ticket = Ticket {
            lane: self.lane,
            index,
            reported: false,
            _place: place,
        };
        let url = format!("{}{}", self.lane.share.bases[index].url, self.path);
        let endpoint = Endpoint::parse(&url, self.method.clone())
            .map_err(|e| ItemError::new("request_error", e.to_string()))?;
        Ok((Cow::Owned(endpoint), ticket))
    }

    fn report(&self, mut ticket: Ticket<'a>, report: Report) {
        ticket.reported = true;
        self.lane.done(ticket.index, report);
    }
}

/// Every provider of a job, by name.
pub(crate) struct Lanes {
    lanes: Vec<Lane>,
    /// For http steps without a provider: no limits, default retries.
    direct: Lane,
}

impl Lanes {
    /// Builds a lane per provider for the run `tenant` of `engine` (sharing
    /// providers with its other runs); fails when a key variable is missing.
    pub(crate) fn new(
        engine: &Engine,
        job: &Job,
        env: &minijinja::Value,
        tenant: Tenant,
    ) -> Result<Lanes> {
        let lanes = job
            .providers
            .iter()
            .map(|p| Lane::new(engine, p, env, tenant))
            .collect::<Result<Vec<_>>>()?;
        let direct = Lane::new(
            engine,
            &Provider {
                name: "(direct)".into(),
                base_urls: vec!["http://127.0.0.1".into()],
                breaker: None,
                ..Provider::default()
            },
            env,
            tenant,
        )?;
        Ok(Lanes { lanes, direct })
    }

    /// The lane named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Lane> {
        self.lanes.iter().find(|l| l.name == name)
    }

    /// Every lane.
    pub(crate) fn all(&self) -> &[Lane] {
        &self.lanes
    }

    /// Holds every provider's rates, fixed concurrency and breakers together
    /// with the other processes using `store`; returns the shared limits this
    /// run must keep in sync (run their sync loops and leave at the end). A
    /// provider another run of this process already shares keeps that run's.
    pub(crate) fn share(&mut self, store: &SharedStore, process: &str) -> Vec<Arc<SharedLimits>> {
        let mut created = Vec::new();
        for lane in &mut self.lanes {
            if let Some(existing) = lane.share.limiter.shared() {
                lane.shared = Some(existing);
                continue;
            }
            let urls: Vec<String> = lane.share.bases.iter().map(|b| b.url.clone()).collect();
            let shared = Arc::new(SharedLimits::new(
                store.clone(),
                &urls,
                process,
                lane.share.limiter.origin(),
                lane.share.gate.fixed,
            ));
            lane.share.limiter.share(shared.clone());
            let _ = lane.share.gate.shared.set(shared.clone());
            lane.shared = Some(shared.clone());
            created.push(shared);
        }
        created
    }

    /// The lane of http steps that name no provider.
    pub(crate) fn direct(&self) -> &Lane {
        &self.direct
    }
}
