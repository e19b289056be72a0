//! What each step kind does for one unit: build its call, run it, turn the
//! answer into the step's output.

pub(crate) mod command;
pub(crate) mod http;
pub(crate) mod multipart;
