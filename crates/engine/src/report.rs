//! What a finished run reports, whichever front end ran it: the run's id, its
//! counters, the breakers that opened and the failures by cause. A type both
//! the front ends (quick, job, worker) and the lifecycle below them use.

use crate::progress::Snapshot;

/// How a run ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    /// The run's id in the store.
    pub run_id: String,
    /// Whether an earlier run of the same input was continued.
    pub resumed: bool,
    /// Whether the run was stopped by a signal before finishing.
    pub interrupted: bool,
    /// Final counters.
    pub progress: Snapshot,
    /// Endpoints whose circuit breaker opened in this run (job runs).
    pub breakers: Vec<BreakerReport>,
    /// Things the run decided that the summary should say (e.g. live or
    /// batch, and why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The run's failures by cause, most frequent first (the top few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<crate::errors::ErrorGroup>,
}

/// One endpoint whose circuit breaker opened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BreakerReport {
    /// The `[providers.NAME]` it belongs to.
    pub provider: String,
    /// Its base URL.
    pub url: String,
    /// Times it opened.
    pub openings: u64,
}
