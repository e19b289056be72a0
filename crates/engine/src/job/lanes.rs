//! Per-provider runtime state: its client (with its key), limiter, concurrency
//! and pool of base URLs.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use sluice_limit::Backoff;
use sluice_provider::Client;
use sluice_spec::{Job, Provider, Retries, Step};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::limiter::Limiter;

/// One provider while a job runs.
pub(crate) struct Lane {
    pub(crate) name: String,
    pub(crate) client: Client,
    pub(crate) limiter: Limiter,
    /// Calls in flight to this provider, across all steps.
    pub(crate) slots: Option<Arc<Semaphore>>,
    /// Base URLs with their calls in flight: each call goes to the least busy.
    bases: Vec<(String, AtomicUsize)>,
    /// Provider headers, rendered once (they may only use `env`).
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) retries: Retries,
    pub(crate) timeout: Duration,
}

/// A base URL chosen for one call; frees its place when dropped.
pub(crate) struct BaseGuard<'a> {
    pub(crate) url: &'a str,
    count: &'a AtomicUsize,
}

impl Drop for BaseGuard<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Relaxed);
    }
}

impl Lane {
    fn new(provider: &Provider, env: &minijinja::Value) -> Result<Lane> {
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
        let client = Client::new(
            provider.concurrency.unwrap_or(256),
            key.as_ref().map(|(v, k)| (v.as_str(), k.as_str())),
        )
        .map_err(|e| Error::Config(e.to_string()))?;
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
        Ok(Lane {
            name: provider.name.clone(),
            client,
            limiter: Limiter::new(provider.rpm, provider.tpm),
            slots: provider
                .concurrency
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
            bases: provider
                .base_urls
                .iter()
                .map(|u| (u.trim_end_matches('/').to_string(), AtomicUsize::new(0)))
                .collect(),
            headers,
            retries: provider.retries,
            timeout: provider.timeout,
        })
    }

    /// Every base URL.
    pub(crate) fn base_urls(&self) -> impl Iterator<Item = &str> {
        self.bases.iter().map(|(u, _)| u.as_str())
    }

    /// The least busy base URL.
    pub(crate) fn base(&self) -> BaseGuard<'_> {
        // `new` refuses a provider without base URLs, so there is a first.
        let (url, count) = self
            .bases
            .iter()
            .min_by_key(|(_, n)| n.load(Relaxed))
            .unwrap_or(&self.bases[0]);
        count.fetch_add(1, Relaxed);
        BaseGuard { url, count }
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
}

/// Every provider of a job, by name.
pub(crate) struct Lanes {
    lanes: Vec<Lane>,
    /// For http steps without a provider: no limits, default retries.
    direct: Lane,
}

impl Lanes {
    /// Builds a lane per provider; fails when a key variable is missing.
    pub(crate) fn new(job: &Job, env: &minijinja::Value) -> Result<Lanes> {
        let lanes = job
            .providers
            .iter()
            .map(|p| Lane::new(p, env))
            .collect::<Result<Vec<_>>>()?;
        let direct = Lane::new(
            &Provider {
                name: "(direct)".into(),
                base_urls: vec!["http://127.0.0.1".into()],
                api_key_env: None,
                concurrency: None,
                rpm: None,
                tpm: None,
                timeout: Duration::from_secs(60),
                retries: Retries::default(),
                headers: Vec::new(),
            },
            env,
        )?;
        Ok(Lanes { lanes, direct })
    }

    /// The lane of http steps that name no provider.
    pub(crate) fn direct(&self) -> &Lane {
        &self.direct
    }

    /// The lane named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Lane> {
        self.lanes.iter().find(|l| l.name == name)
    }

    /// Every lane.
    pub(crate) fn all(&self) -> &[Lane] {
        &self.lanes
    }
}
