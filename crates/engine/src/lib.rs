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
mod progress;
mod quick;
mod steps;
mod tokens;
#[allow(dead_code)] // Wired into the job runner separately.
mod webhook;
mod writer;

pub use error::{Error, Result};
pub use export::{export_run, ExportFormat};
pub use input::InputSource;
pub use job::{plan, run_job, JobConfig, Plan, ProviderPlan, StepPlan};
pub use progress::{Progress, Snapshot};
pub use quick::{run_quick, BreakerReport, QuickConfig, RunReport};
