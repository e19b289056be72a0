//! Rate-limit arithmetic for sluice: GCRA and the rate windows built from it,
//! token estimates, retry backoff, circuit breakers, adaptive concurrency,
//! and limits shared by several processes (slices of sending time,
//! concurrency shares).
//!
//! Pure logic with the clock passed in (nanoseconds since an origin the caller
//! picks), so every limiter is tested deterministically and the same code can
//! later run against state kept in a shared store.

mod aimd;
mod backoff;
mod breaker;
mod gcra;
mod learned;
mod shared;
mod tokens;
mod windows;

pub use aimd::{Aimd, AimdConfig};
pub use backoff::Backoff;
pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use gcra::{Gcra, Rejection};
pub use learned::{Learned, Refill, Span};
pub use shared::{Share, SharedLimitState, SliceGrant};
pub use tokens::{
    estimate_text_tokens, image_tokens, DEFAULT_COMPLETION_ESTIMATE, MESSAGE_OVERHEAD,
    REPLY_PRIMING, UNKNOWN_IMAGE_TOKENS,
};
pub use windows::{Announced, Cost, Dim, Report, WindowLimits, Windows};
