//! The figures of a run that the view shows and the advice reads: its
//! totals, and the live detail of a running run (what a heartbeat carries).

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sluice_engine::StatsReport;
use sluice_store::{RunCounts, RunMeta};

/// Rates as in a heartbeat.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct LiveRates {
    #[serde(default)]
    pub(crate) calls_per_sec: f64,
    #[serde(default)]
    pub(crate) items_per_sec: f64,
    #[serde(default)]
    pub(crate) tokens_per_min: f64,
    #[serde(default)]
    pub(crate) throttled_per_sec: f64,
}

/// The live detail of a running run (a heartbeat's `live` has this shape).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Live {
    /// `server` (executed here) or `worker` (from a heartbeat).
    #[serde(default)]
    pub(crate) source: String,
    #[serde(default)]
    pub(crate) counters: Json,
    #[serde(default)]
    pub(crate) rates: LiveRates,
    #[serde(default)]
    pub(crate) latency_ewma_ms: f64,
    #[serde(default)]
    pub(crate) eta_secs: Option<f64>,
    #[serde(default)]
    pub(crate) stats: StatsReport,
    /// What the process executing the run applies now: `run`, `pause` or
    /// `cancel` (lags a stored control by up to a heartbeat).
    #[serde(default)]
    pub(crate) control: Option<String>,
}

/// Totals the API reports for a run.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Counts {
    pub(crate) total: Option<u64>,
    pub(crate) done: u64,
    pub(crate) failed: u64,
    pub(crate) pending: Option<u64>,
    pub(crate) attempts: u64,
    pub(crate) retries: u64,
    pub(crate) throttled: u64,
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
}

impl Counts {
    pub(crate) fn new(run: &RunMeta, c: &RunCounts) -> Counts {
        Counts {
            total: run.total,
            done: c.done,
            failed: c.failed,
            pending: run.total.map(|t| t.saturating_sub(c.done + c.failed)),
            attempts: c.attempts,
            retries: c.retries,
            throttled: c.throttled,
            prompt_tokens: c.prompt_tokens,
            completion_tokens: c.completion_tokens,
        }
    }
}
