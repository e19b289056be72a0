//! Rate-limit arithmetic for sluice: GCRA, token estimates and retry backoff.
//!
//! Pure logic with the clock passed in (nanoseconds since an origin the caller
//! picks), so every limiter is tested deterministically and the same code can
//! later run against state kept in a shared store.

mod backoff;
mod gcra;
mod tokens;

pub use backoff::Backoff;
pub use gcra::{Gcra, Rejection};
pub use tokens::{estimate_text_tokens, DEFAULT_COMPLETION_ESTIMATE};
