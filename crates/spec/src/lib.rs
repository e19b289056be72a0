//! Job files for sluice: TOML parsed and validated into a [`Job`] (every error
//! with file, line and column), and the templates it renders per unit.

mod model;
mod template;

pub use model::{
    Input, InputFormat, InputSource, Job, MatrixAxis, Message, Output, Provider, Retries, Step,
    StepKind, Upload,
};
pub use template::{RenderError, TValue, Template};
