//! A run's live detail beyond its counters — calls, latency and waits per
//! step and provider, each provider's limits and how much of them is in use,
//! endpoint breakers, the latest errors — and the process-wide totals that
//! `/metrics` exports.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::meter::{quantile_ms, CallCounts, CallStats};

/// Errors kept for the live view.
const RECENT_ERRORS: usize = 20;

/// One step on one provider: its attempts in this run and in the process.
struct StepMeter {
    step: String,
    provider: String,
    run: Arc<CallStats>,
    global: Arc<CallStats>,
}

/// A provider as the live view shows it. The job runner's provider share
/// (`job/sharing.rs`) implements it and registers itself with the run, so
/// its figures are pushed up to the statistics, never pulled from a layer
/// above them.
pub(crate) trait ProviderView: Send + Sync {
    /// Its limits, use and endpoints now, under the run's `name` for it.
    fn report(&self, name: &str) -> ProviderReport;
}

/// The detail of one run, kept beside its [`crate::Progress`] counters.
#[derive(Default)]
pub struct RunStats {
    steps: Mutex<Vec<StepMeter>>,
    /// The providers the run uses (by its own names), while it runs.
    providers: Mutex<Vec<(String, Weak<dyn ProviderView>)>>,
    /// The providers as last seen, shown once the run let go of them.
    last_providers: Mutex<Vec<ProviderReport>>,
    errors: Mutex<VecDeque<RecentError>>,
    /// The engine's totals its calls count into as well.
    totals: Arc<ProcessTotals>,
}

impl std::fmt::Debug for RunStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunStats")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// (provider, step) → an engine's stats, cumulative across its runs (see
/// [`crate::Engine`]).
#[derive(Default)]
pub(crate) struct ProcessTotals(Mutex<Vec<(String, String, Arc<CallStats>)>>);

impl ProcessTotals {
    /// The stats of `step` on `provider` (created on first use).
    fn meter(&self, provider: &str, step: &str) -> Arc<CallStats> {
        let mut all = lock(&self.0);
        match all.iter().find(|(p, s, _)| p == provider && s == step) {
            Some((_, _, g)) => g.clone(),
            None => {
                let g = Arc::new(CallStats::default());
                all.push((provider.to_owned(), step.to_owned(), g.clone()));
                g
            }
        }
    }

    /// The totals per (provider, step).
    pub(crate) fn counts(&self) -> Vec<(String, String, CallCounts)> {
        lock(&self.0)
            .iter()
            .map(|(p, s, stats)| (p.clone(), s.clone(), stats.counts()))
            .collect()
    }
}

impl RunStats {
    /// A run's statistics, counting into `totals` as well (its engine's).
    pub(crate) fn counting_into(totals: Arc<ProcessTotals>) -> RunStats {
        RunStats {
            totals,
            ..RunStats::default()
        }
    }

    /// The run's and the process's stats of `step` on `provider` (created on
    /// first use; looked up once per call, not per attempt).
    pub(crate) fn meters(&self, step: &str, provider: &str) -> (Arc<CallStats>, Arc<CallStats>) {
        let mut steps = lock(&self.steps);
        if let Some(m) = steps
            .iter()
            .find(|m| m.step == step && m.provider == provider)
        {
            return (m.run.clone(), m.global.clone());
        }
        let global = self.totals.meter(provider, step);
        let run = Arc::new(CallStats::default());
        steps.push(StepMeter {
            step: step.to_owned(),
            provider: provider.to_owned(),
            run: run.clone(),
            global: global.clone(),
        });
        (run, global)
    }

    /// The run uses `share` as its provider `name`.
    pub(crate) fn add_provider<P: ProviderView + 'static>(&self, name: &str, share: &Arc<P>) {
        let share: Weak<dyn ProviderView> = Arc::<P>::downgrade(share);
        lock(&self.providers).push((name.to_owned(), share));
    }

    /// Keeps the providers' last state, before the run lets go of them.
    pub(crate) fn freeze_providers(&self) {
        let live = self.live_providers();
        if !live.is_empty() {
            *lock(&self.last_providers) = live;
        }
        lock(&self.providers).clear();
    }

    /// A step part failed.
    pub(crate) fn error(&self, unit: &str, step: &str, message: &str) {
        let mut errors = lock(&self.errors);
        if errors.len() == RECENT_ERRORS {
            errors.pop_front();
        }
        errors.push_back(RecentError {
            at: now_ms(),
            unit: unit.to_owned(),
            step: step.to_owned(),
            error: message.to_owned(),
        });
    }

    fn live_providers(&self) -> Vec<ProviderReport> {
        lock(&self.providers)
            .iter()
            .filter_map(|(name, w)| Some(w.upgrade()?.report(name)))
            .collect()
    }

    /// Everything, now.
    pub fn report(&self) -> StatsReport {
        let steps: Vec<StepReport> = lock(&self.steps)
            .iter()
            .map(|m| step_report(&m.step, &m.provider, m.run.counts()))
            .collect();
        let mut providers = self.live_providers();
        if providers.is_empty() {
            providers = lock(&self.last_providers).clone();
        }
        for p in &mut providers {
            p.on_wire = steps
                .iter()
                .filter(|s| s.provider == p.name)
                .map(|s| s.in_flight)
                .sum();
        }
        StatsReport {
            steps,
            providers,
            recent_errors: lock(&self.errors).iter().rev().cloned().collect(),
        }
    }
}

/// A run's detail at one moment (also carried in its heartbeats, so the
/// server can explain runs started elsewhere).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Per step and provider.
    pub steps: Vec<StepReport>,
    /// Per provider the run uses.
    pub providers: Vec<ProviderReport>,
    /// Latest failures first.
    pub recent_errors: Vec<RecentError>,
}

/// One step on one provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step's name.
    pub step: String,
    /// The provider its calls went to.
    pub provider: String,
    /// Attempts by outcome (`"200"`, `"429"`, `"timeout"`, …).
    pub by_status: Vec<(String, u64)>,
    /// Attempts made.
    pub attempts: u64,
    /// Attempts answered 2xx.
    pub ok: u64,
    /// Retries among them.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    /// Tokens reported.
    pub tokens: u64,
    /// Attempts on the wire now.
    pub in_flight: u64,
    /// Latency of answered attempts: `p50`, `p90`, `p99`, `mean` (ms).
    pub latency_ms: Latency,
    /// Attempts that waited for a place (concurrency, a free endpoint), and seconds waited.
    pub place_waits: (u64, f64),
    /// Attempts that waited for a rate slot, and seconds waited.
    pub rate_waits: (u64, f64),
}

/// Latency percentiles in milliseconds (`None`: nothing answered yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Mean.
    pub mean: Option<f64>,
}

/// A provider's limits and how much of them is in use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderReport {
    /// The provider's name in the job.
    pub name: String,
    /// Places held now (every run of the process): calls on the wire and
    /// calls that took their place and wait for a rate slot.
    pub in_flight: u64,
    /// Of this run's calls to it, those on the wire now.
    #[serde(default)]
    pub on_wire: u64,
    /// Its concurrency cap now (`None`: none; adaptive caps move).
    pub concurrency: Option<u64>,
    /// Limits held: `rps`, `rpm`, `rph`, `rpd`, `tpm`, `tpd`, `itpm`, `otpm`
    /// (configured or announced).
    pub limits: Limits,
    /// The limits the provider announced (its headers) and that are held,
    /// each with the window inferred from its reset.
    #[serde(default)]
    pub announced: Vec<AnnouncedLimit>,
    /// Requests per minute taken over the last minute.
    pub used_rpm: f64,
    /// Tokens per minute reserved over the last minute (corrected by usage).
    pub used_tpm: f64,
    /// Whether a call is waiting for a rate slot now.
    pub rate_waiting: bool,
    /// Its endpoints and their breakers.
    pub endpoints: Vec<EndpointReport>,
}

/// The limits of a provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Requests per second.
    pub rps: Option<u64>,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Requests per hour.
    pub rph: Option<u64>,
    /// Requests per day.
    pub rpd: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Tokens per day.
    pub tpd: Option<u64>,
    /// Input tokens per minute (Anthropic holds them apart from output).
    #[serde(default)]
    pub itpm: Option<u64>,
    /// Output tokens per minute.
    #[serde(default)]
    pub otpm: Option<u64>,
}

/// A limit a provider announced, as held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnouncedLimit {
    /// `requests`, `tokens`, `input tokens` or `output tokens`.
    pub what: String,
    /// Units per window.
    pub limit: u64,
    /// The window inferred from the reset: `minute`, `hour` or `day`.
    pub per: String,
    /// `continuous` (a bucket refilled at the rate) or `at_reset` (a quota
    /// that comes back whole at its reset).
    pub refill: String,
    /// Units the provider lets through at once (a continuous bucket).
    pub burst: u64,
}

impl AnnouncedLimit {
    /// `1,200 requests/minute (burst 1,200)`, `10,000 requests/day (a quota until its reset)`.
    pub fn describe(&self) -> String {
        let n = |v: u64| {
            let s = v.to_string();
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            out
        };
        let how = if self.refill == "at_reset" {
            "a quota until its reset".to_string()
        } else {
            format!("burst {}", n(self.burst))
        };
        format!("{} {}/{} ({how})", n(self.limit), self.what, self.per)
    }
}

/// One endpoint of a provider's pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    /// Its base URL.
    pub url: String,
    /// Calls on it now.
    pub in_flight: u64,
    /// `closed`, `open`, `half_open`, or `none`.
    pub breaker: String,
    /// Times its breaker opened.
    pub openings: u64,
}

/// A failure, as the live view lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentError {
    /// When (unix ms).
    pub at: i64,
    /// The unit.
    pub unit: String,
    /// The step.
    pub step: String,
    /// What went wrong (no secrets: the same text that is recorded).
    pub error: String,
}

fn step_report(step: &str, provider: &str, c: CallCounts) -> StepReport {
    let q = |p| quantile_ms(&c.latency_buckets, p);
    let answered: u64 = c.latency_buckets.iter().sum();
    StepReport {
        step: step.to_owned(),
        provider: provider.to_owned(),
        attempts: c.attempts,
        ok: c.ok,
        retries: c.retries,
        throttled: c.throttled,
        tokens: c.prompt_tokens + c.completion_tokens,
        in_flight: c.in_flight,
        latency_ms: Latency {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            mean: (answered > 0).then(|| c.latency_sum_secs * 1e3 / answered as f64),
        },
        place_waits: c.place_waits,
        rate_waits: c.rate_waits,
        by_status: c.by_status,
    }
}
