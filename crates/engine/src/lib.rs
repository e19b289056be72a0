//! The engine: reads a batch, sends it through the limiters, records every
//! outcome durably and resumes where a previous run stopped.

mod error;
mod export;
mod input;
mod limiter;
mod progress;
mod quick;
mod writer;

pub use error::{Error, Result};
pub use export::{export_run, ExportFormat};
pub use input::InputSource;
pub use progress::{Progress, Snapshot};
pub use quick::{run_quick, QuickConfig, RunReport};
