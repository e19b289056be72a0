//! The engine: reads a batch, sends it through the limiters, records every
//! outcome durably and resumes where a previous run stopped.

mod calls;
mod error;
mod export;
mod input;
mod inputs;
mod job;
mod lifecycle;
mod limiter;
mod live;
mod progress;
mod quick;
mod shared_limits;
mod steps;
mod tokens;
#[allow(dead_code)] // Wired into the job runner separately.
mod webhook;
mod worker;
mod writer;

pub use error::{Error, Result};
pub use export::{export_run, ExportFormat};
pub use input::InputSource;
pub use job::{plan, run_job, JobConfig, Offload, Plan, ProviderPlan, StepPlan, DEFAULT_LEASE};
pub use live::{Rates, BEAT_PERIOD, BEAT_STALE};
pub use progress::{Progress, Snapshot};
pub use quick::{now_ms, run_quick, BreakerReport, QuickConfig, RunReport};
pub use worker::{run_worker, WorkerConfig, WorkerEvent};
