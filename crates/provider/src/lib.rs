//! HTTP calls to API providers: one pooled client, and every response sorted into
//! done, retry or fail — expected outcomes are values, not errors.

mod client;
mod outcome;
#[cfg(test)]
mod props;
mod signals;
mod stream;
mod wire;

pub use client::{CallOptions, Client, ClientError, Downloaded, Endpoint};
pub use outcome::{classify, Attempt, Failure, FailureKind, Success};
pub use signals::{parse_reset_duration, rfc3339_unix, Budget, RateSignals, RETRY_AFTER_CAP};
/// Request and answer shapes per API family (the `sluice-dialect` crate).
pub use sluice_dialect as dialect;
pub use sluice_dialect::Dialect;
pub use stream::StreamStats;
