//! Job files for sluice: TOML parsed and validated into a [`Job`] (every error
//! with file, line and column), and the templates it renders per unit.

mod build;
mod calls_check;
mod content_parts;
mod ctx;
mod diag;
mod dialect_params;
mod document;
mod file_functions;
mod input;
mod kinds;
mod load;
mod model;
mod names;
mod offload;
mod params;
mod placeholder;
mod provider;
mod provider_choice;
mod raw;
mod sets;
mod step_keys;
mod steps;
mod suggest;
mod template;
mod templates_check;

#[cfg(test)]
mod tests;

pub use diag::{Diagnostic, SpecError};
pub use file_functions::FileScope;
pub use load::{load, parse_str};
pub use model::{
    BreakerSpec, Content, Fallback, Input, InputFormat, InputSource, Job, MatrixAxis, Message,
    Output, Price, Provider, Retries, Step, StepKind, Upload, Webhook, WebhookOn, MAX_CONCURRENCY,
};
pub use names::{name_from_stem, name_problem, MAX_NAME};
pub use offload::{BatchRetry, BatchSpec, Dialect, Mode, COMPLETION_WINDOW};
pub use placeholder::Placeholder;
pub use suggest::{closest, did_you_mean};
pub use template::{Failure, Origin, RenderError, TValue, Template};
