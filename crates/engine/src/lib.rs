//! The engine: reads a batch, sends it through the limiters, records every
//! outcome durably and resumes where a previous run stopped.

mod calls;
mod check_report;
mod clock;
mod control;
mod dispatch;
mod early_stop;
mod engine;
mod error;
mod errors;
mod export;
mod fair;
mod files;
mod heartbeat;
mod history;
mod identity;
mod input;
mod input_list;
#[cfg(test)]
mod input_props;
mod inputs;
mod item_error;
mod job;
mod lease;
mod lifecycle;
mod limiter;
mod meter;
mod nul;
mod preflight;
mod progress;
mod quick;
mod quick_plan;
mod recording;
mod report;
mod results;
mod retry_scope;
mod run_view;
mod settings;
mod shape;
mod shared_limits;
mod shown;
mod stats;
mod stopping;
mod tokens;
#[allow(dead_code)] // Wired into the job runner separately.
mod webhook;
mod worker;
mod writer;

pub use clock::now_ms;
pub use control::{
    executing, read_control, requester, write_control, CommitHook, ControlState, OpenHook,
    RunControl, RunHooks, StartHook, StoredControl, CONTROL_KEY,
};
pub use engine::Engine;
pub use error::{Busy, Error, Result};
pub use errors::{group_errors, normalise, ErrorExample, ErrorGroup, ErrorKey};
pub use export::{ExportFormat, ExportOptions};
pub use files::{FileAccess, FILE_ACCESS_STATE};
pub use heartbeat::{session_entry, LiveFigures, Rates};
pub use history::{Recorder, Sample, MAX_SAMPLES, SESSION_PREFIX};
pub use identity::{worker_state, WorkerState, BEAT_PERIOD, BEAT_STALE};
pub use input::QuickInput;
pub use item_error::ItemError;
pub use job::{
    plan, probe, run_job, run_job_with, unit_result, Bound, CheckReport, Estimate, JobConfig,
    Measured, Offload, Plan, PlanOptions, ProviderPlan, ShownRequest, StepLatency, StepPlan,
    TemplateProblem, UnitWindow, DEFAULT_LEASE,
};
pub use lifecycle::{limited_name, RunStart};
pub use meter::{quantile_ms, CallCounts, FAILURE_KINDS, LATENCY_BUCKETS_MS};
pub use progress::{Progress, Snapshot};
pub use quick::{run_quick, run_quick_with, QuickConfig};
pub use quick_plan::{probe_quick, quick_plan, QuickPlan, QuickPlanConfig};
pub use report::{BreakerReport, RunReport};
pub use results::{export_run, export_with, result_line};
pub use retry_scope::{keep_failed, KEEP_FAILED};
pub use run_view::{
    pending, run_view, view_state, ExecutedHere, QueueView, RunView, TopError, ViewCounts,
    ViewParts, ERROR_GROUPS, TOP_ERRORS,
};
pub use settings::{JobSettings, KeptWithRun, QuickSettings, RunMode, RunSettings};
pub use shape::is_base_url;
pub use shown::{shown_state, worker_view, RunState, WorkerView, STATE_PROCESS_GONE};
pub use stats::{
    AnnouncedLimit, EndpointReport, Latency, Limits, ProviderReport, RecentError, RunStats,
    StatsReport, StepReport,
};
pub use worker::{run_worker, WorkerConfig, WorkerEvent};
