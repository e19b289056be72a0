//! HTTP calls to API providers: one pooled client, and every response sorted into
//! done, retry or fail — expected outcomes are values, not errors.

mod client;
pub mod dialect;
mod outcome;
mod signals;
mod stream;
mod wire;

pub use client::{CallOptions, Client, ClientError, Downloaded, Endpoint};
pub use dialect::Dialect;
pub use outcome::{classify, Attempt, Failure, FailureKind, Success};
pub use signals::{parse_reset_duration, rfc3339_unix, RateSignals};
pub use stream::StreamStats;
