//! A provider's API dialect (`api`), how its model calls go out (`mode`: live,
//! through the provider's batch API, or `auto` by a `deadline`) and its
//! `batch` settings; and the step rules that depend on them.

use std::time::Duration;

use toml::Spanned;

use crate::ctx::Ctx;
use crate::model::Provider;
use crate::raw::{RawBatch, RawProvider, RawStep};

/// `api = "openai" | "anthropic"`: the shape of requests, answers, auth and
/// rate-limit headers — the one dialect enum, `sluice_dialect::Dialect`.
pub use sluice_dialect::Dialect;

/// `mode = "live" | "batch" | "auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every call is sent at once, under the provider's limits.
    #[default]
    Live,
    /// Chat, embed and conversation calls go through the provider's batch API.
    Batch,
    /// Batch when the deadline leaves the batch API its completion window (or
    /// live would take longer anyway), else live.
    Auto {
        /// How long the whole run may take, from its first start.
        deadline: Duration,
    },
}

impl Mode {
    /// The `mode = "..."` spelling.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Batch => "batch",
            Mode::Auto { .. } => "auto",
        }
    }

    /// Whether calls may go through the batch API.
    pub fn may_batch(&self) -> bool {
        !matches!(self, Mode::Live)
    }
}

/// What to do with a batched request that expired or failed with a
/// retryable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchRetry {
    /// Put it into a later batch (at the batch price).
    #[default]
    Batch,
    /// Send it as a live call, under the provider's limits.
    Live,
}

/// The only completion window the batch APIs offer: OpenAI accepts only
/// `"24h"`, and Anthropic's batches expire 24 hours after creation.
pub const COMPLETION_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// `batch = { size, window, poll, waiting, retry, completion_window,
/// max_enqueued_tokens }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSpec {
    /// Requests per submitted batch at most (the API's own limits split it
    /// further: 50,000 requests, 200 MB or 50,000 embedding inputs for
    /// OpenAI, 100,000 requests or 256 MB for Anthropic).
    pub size: usize,
    /// How long an open batch waits for more requests after its first.
    pub window: Duration,
    /// Time between status checks of a submitted batch.
    pub poll: Duration,
    /// Units waiting for batch results at most (they stay in memory).
    pub waiting: usize,
    /// Expired or retryably failed requests: a later batch or a live call.
    pub retry: BatchRetry,
    /// The time the batch API is given (OpenAI's `completion_window`; only
    /// [`COMPLETION_WINDOW`] is accepted); `auto` batches only when the
    /// deadline leaves this much.
    pub completion_window: Duration,
    /// Prompt tokens this provider may have waiting in unfinished batches
    /// per model (OpenAI's enqueued-token limit), if told; a limit the
    /// provider announces in a failed batch is learned at run time.
    pub max_enqueued_tokens: Option<u64>,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            size: 10_000,
            window: Duration::from_secs(10),
            poll: Duration::from_secs(30),
            waiting: 50_000,
            retry: BatchRetry::Batch,
            completion_window: COMPLETION_WINDOW,
            max_enqueued_tokens: None,
        }
    }
}

/// `api`, `mode`, `deadline` and `batch` of one provider (`--set` wins over the file).
pub(crate) fn provider(raw: &RawProvider, ctx_name: &str, provider: &mut Provider, ctx: &mut Ctx) {
    let name = provider.name.clone();
    if let Some(api) = ctx.sets.word(&name, "api") {
        provider.api = Dialect::parse(api).unwrap_or_default();
    } else if let Some(api) = &raw.api {
        match Dialect::parse(api.get_ref()) {
            Some(a) => provider.api = a,
            None => ctx.diags.at(
                api.span(),
                format!(
                    "{ctx_name} api {:?} is not known; use \"openai\" (OpenAI-compatible, the \
                     default) or \"anthropic\" (the Messages API)",
                    api.get_ref()
                ),
            ),
        }
    }
    let deadline = match ctx.sets.word(&name, "deadline") {
        Some(d) => humantime::parse_duration(d).ok(),
        None => raw
            .deadline
            .as_ref()
            .and_then(|d| ctx.nonzero(d, "deadline")),
    };
    let set_mode = ctx.sets.word(&name, "mode").map(str::to_string);
    let mode = match (&set_mode, &raw.mode) {
        (Some(m), _) => Some(m.clone()),
        (None, Some(m)) => Some(m.get_ref().clone()),
        (None, None) => None,
    };
    provider.mode = match mode.as_deref() {
        None | Some("live") => Mode::Live,
        Some("batch") => Mode::Batch,
        Some("auto") => match deadline {
            Some(deadline) => Mode::Auto { deadline },
            None => {
                let message = format!(
                    "{ctx_name} mode = \"auto\" needs deadline = \"6h\" (how long the run may \
                     take): it decides between live calls and the batch API by it"
                );
                match (&set_mode, &raw.mode) {
                    (None, Some(m)) => ctx.diags.at(m.span(), message),
                    _ => ctx
                        .diags
                        .set(format!("providers.{name}.mode=auto: {message}")),
                }
                Mode::Live
            }
        },
        Some(other) => {
            if let Some(m) = raw.mode.as_ref().filter(|_| set_mode.is_none()) {
                let message = format!(
                    "{ctx_name} mode {other:?} is not known; use \"live\" (the default), \
                     \"batch\" (the provider's batch API) or \"auto\" (with a deadline)"
                );
                ctx.diags.at(m.span(), message);
            }
            Mode::Live
        }
    };
    if let (Some(d), None, Some(m)) = (&raw.deadline, &set_mode, &raw.mode) {
        if m.get_ref() != "auto" {
            let message = format!(
                "{ctx_name} deadline only applies with mode = \"auto\" (mode is {:?}); \
                 remove it or set mode = \"auto\"",
                m.get_ref()
            );
            ctx.diags.at(d.span(), message);
        }
    }
    if let Some(b) = &raw.batch {
        provider.batch = batch(b, ctx_name, ctx);
    }
}

fn batch(raw: &Spanned<RawBatch>, ctx_name: &str, ctx: &mut Ctx) -> BatchSpec {
    let mut out = BatchSpec::default();
    let b = raw.get_ref();
    let what = format!("{ctx_name} batch");
    let count = |n: &Option<Spanned<u64>>, key: &str, ctx: &mut Ctx| {
        n.as_ref()
            .and_then(|n| ctx.positive(n, &format!("{what}.{key}")))
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    if let Some(n) = count(&b.size, "size", ctx) {
        out.size = n;
    }
    if let Some(n) = count(&b.waiting, "waiting", ctx) {
        out.waiting = n;
    }
    if let Some(d) = b
        .window
        .as_ref()
        .and_then(|w| ctx.duration(w, "batch.window"))
    {
        out.window = d;
    }
    if let Some(d) = b.poll.as_ref().and_then(|p| ctx.nonzero(p, "batch.poll")) {
        out.poll = d;
    }
    if let Some(c) = &b.completion_window {
        match ctx.nonzero(c, "batch.completion_window") {
            Some(d) if d != COMPLETION_WINDOW => {
                let message = format!(
                    "{what}.completion_window {:?} is not offered: OpenAI accepts only \"24h\" \
                     and Anthropic's batches always expire after 24 hours; remove it or write \"24h\"",
                    c.get_ref()
                );
                ctx.diags.at(c.span(), message);
            }
            Some(d) => out.completion_window = d,
            None => {}
        }
    }
    if let Some(n) = b
        .max_enqueued_tokens
        .as_ref()
        .and_then(|n| ctx.positive(n, &format!("{what}.max_enqueued_tokens")))
    {
        out.max_enqueued_tokens = Some(n);
    }
    if let Some(r) = &b.retry {
        out.retry = match r.get_ref().as_str() {
            "batch" => BatchRetry::Batch,
            "live" => BatchRetry::Live,
            other => {
                let message = format!(
                    "{what}.retry {other:?} is not known; use \"batch\" (expired or failed \
                     requests go into a later batch) or \"live\" (they are sent as live calls)"
                );
                ctx.diags.at(r.span(), message);
                BatchRetry::Batch
            }
        };
    }
    out
}

/// Rules a step obeys because of its provider's dialect and mode.
pub(crate) fn step(
    raw: &RawStep,
    kind: Option<&str>,
    label: &str,
    provider: &Provider,
    ctx: &mut Ctx,
) {
    if kind == Some("embed") && provider.api == Dialect::Anthropic {
        if let Some(p) = &raw.provider {
            let message = format!(
                "{label}: embed steps need an OpenAI-compatible provider; provider {:?} has \
                 api = \"anthropic\", which has no embeddings API",
                provider.name
            );
            ctx.diags.at(p.span(), message);
        }
    }
    if matches!(kind, Some("chat" | "conversation")) && provider.api == Dialect::Anthropic {
        crate::dialect_params::anthropic(raw, label, &provider.name, ctx);
    }
    if let Some(s) = raw.stream.as_ref().filter(|s| *s.get_ref()) {
        if provider.mode.may_batch() {
            let message = format!(
                "{label}: stream = true reads a live answer as it is generated, but provider \
                 {:?} has mode = {:?} (its calls may go through the batch API, which does not \
                 stream); remove stream or use mode = \"live\"",
                provider.name,
                provider.mode.name()
            );
            ctx.diags.at(s.span(), message);
        }
    }
}
