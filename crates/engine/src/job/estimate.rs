//! How long a job will take, before it runs: every limit turned into the
//! time it needs for the calls it governs (a provider's rates and
//! concurrency, a step's concurrency, the unit window, local CPUs, one
//! unit's own chain of calls), the longest of them plus the pipeline's fill,
//! the same calls made one after another, and the speedup between the two.

use std::collections::HashMap;

use serde::Serialize;
use sluice_spec::{Job, Step};

use super::kinds::{self, Transport};

use super::window::UnitWindow;

/// Where a step's latency comes from, and what it is.
#[derive(Debug, Clone, Serialize)]
pub struct StepLatency {
    /// The step.
    pub step: String,
    /// Seconds per call.
    pub seconds: f64,
    /// `probe`, `assume_latency`, or the default for its kind.
    pub source: String,
}

/// One limit and the time it alone needs.
#[derive(Debug, Clone, Serialize)]
pub struct Bound {
    /// E.g. `provider openai rpm (120)`, `step grade concurrency (50)`.
    pub limit: String,
    /// Seconds.
    pub seconds: f64,
}

/// The wall-time estimate of the live calls.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// Estimated wall time, seconds.
    pub seconds: f64,
    /// The limit that sets it.
    pub binding: String,
    /// Every limit's time, longest first.
    pub bounds: Vec<Bound>,
    /// The same calls made one after another (under the same rates).
    pub sequential_seconds: f64,
    /// `sequential_seconds ÷ seconds`.
    pub speedup: f64,
    /// Per step: the latency used.
    pub latencies: Vec<StepLatency>,
    /// Calls that go through a batch API are not in the estimate: their
    /// results come within the API's completion window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_note: Option<String>,
}

/// A measured latency for a step (`plan --probe`).
#[derive(Debug, Clone)]
pub struct Measured {
    /// Seconds per call (the median of the probe's calls).
    pub seconds: f64,
    /// Calls measured.
    pub calls: usize,
}

/// Seconds to the microsecond, so that equal bounds compare equal.
fn round(seconds: f64) -> f64 {
    (seconds * 1e6).round() / 1e6
}

/// The latency used for `step`: measured, else `assume_latency` (the
/// step's, then its provider's), else the kind's default.
pub(crate) fn latency(
    job: &Job,
    step: &Step,
    measured: &HashMap<String, Measured>,
    default: Option<std::time::Duration>,
) -> StepLatency {
    let provider = step.provider.as_deref().and_then(|p| job.provider(p));
    let (seconds, source) = if let Some(m) = measured.get(&step.name) {
        (
            m.seconds,
            format!(
                "probe ({} call{})",
                m.calls,
                if m.calls == 1 { "" } else { "s" }
            ),
        )
    } else if let Some(d) = step.assume_latency {
        (d.as_secs_f64(), "assume_latency".to_string())
    } else if let Some(d) = provider.and_then(|p| p.assume_latency) {
        (
            d.as_secs_f64(),
            format!(
                "assume_latency of provider {}",
                provider.map_or("", |p| &p.name)
            ),
        )
    } else if let Some(d) = default {
        (d.as_secs_f64(), "--assume-latency".to_string())
    } else {
        (
            kinds::of(&step.kind).default_latency(),
            format!("default for {} steps", step.kind.name()),
        )
    };
    StepLatency {
        step: step.name.clone(),
        seconds,
        source,
    }
}

/// One step's calls over the run.
pub(crate) struct StepCalls {
    pub(crate) calls: u64,
}

/// What one provider's rate limits alone make the run take.
pub(crate) struct ProviderBound {
    pub(crate) name: String,
    /// Its calls go through the batch API.
    pub(crate) batched: bool,
    /// Seconds its binding rate limit needs, if it has one.
    pub(crate) bound_seconds: Option<f64>,
    /// `rps`, `rpm`, … (the limit that sets `bound_seconds`).
    pub(crate) binding: String,
}

/// What the estimate is made from.
pub(crate) struct Inputs<'a> {
    pub(crate) job: &'a Job,
    /// By step, in job order.
    pub(crate) steps: &'a [StepCalls],
    pub(crate) providers: &'a [ProviderBound],
    pub(crate) units: u64,
    pub(crate) window: &'a UnitWindow,
    pub(crate) measured: &'a HashMap<String, Measured>,
    pub(crate) default_latency: Option<std::time::Duration>,
}

/// The estimate; `None` when there are no units.
pub(crate) fn estimate(i: &Inputs<'_>) -> Option<Estimate> {
    if i.units == 0 {
        return None;
    }
    let batched = |s: &Step| {
        let name = s.provider.as_deref();
        i.providers
            .iter()
            .any(|p| Some(p.name.as_str()) == name && p.batched)
    };
    let latencies: Vec<StepLatency> = i
        .job
        .steps
        .iter()
        .map(|s| latency(i.job, s, i.measured, i.default_latency))
        .collect();
    let mut bounds: Vec<Bound> = Vec::new();
    // One unit's calls in order: its latency, and each part of it.
    let mut parts: Vec<f64> = Vec::new();
    let mut sequential = 0.0;
    let mut command_work = 0.0;
    let mut provider_work: HashMap<&str, f64> = HashMap::new();
    for ((step, plan), lat) in i.job.steps.iter().zip(i.steps).zip(&latencies) {
        if batched(step) {
            continue;
        }
        let work = plan.calls as f64 * lat.seconds;
        sequential += work;
        let per_unit = plan.calls as f64 / i.units as f64;
        let rounds = match (&step.for_each, &step.kind) {
            (Some(_), _) => (per_unit / step.concurrency.unwrap_or(4).max(1) as f64).ceil(),
            // One call after another: a conversation's turns, else one.
            (None, _) => kinds::of(&step.kind).calls_per_unit() as f64,
        };
        parts.push(rounds * lat.seconds);
        if let (None, Some(k)) = (&step.for_each, step.concurrency) {
            bounds.push(Bound {
                limit: format!("step {} concurrency ({k})", step.name),
                seconds: work / k as f64,
            });
        }
        if kinds::of(&step.kind).transport() == Transport::Command {
            command_work += work;
        }
        if let Some(p) = step.provider.as_deref() {
            *provider_work.entry(p).or_default() += work;
        }
    }
    let unit_latency: f64 = parts.iter().sum();
    let longest_part = parts.iter().copied().fold(0.0, f64::max);
    bounds.push(Bound {
        limit: format!("unit window ({} units)", i.window.units),
        seconds: i.units as f64 * unit_latency / i.window.units.max(1) as f64,
    });
    bounds.push(Bound {
        limit: "one unit's calls in order".into(),
        seconds: unit_latency,
    });
    if command_work > 0.0 {
        let cpus = super::window::cpus();
        bounds.push(Bound {
            limit: format!("local programs ({cpus} CPUs)"),
            seconds: command_work / cpus as f64,
        });
    }
    let mut rate_floor: f64 = 0.0;
    for p in i.providers {
        if p.batched {
            continue;
        }
        let provider = i.job.provider(&p.name);
        let work = provider_work.get(p.name.as_str()).copied().unwrap_or(0.0);
        match provider.map(|q| (q.concurrency, q.adaptive)) {
            Some((Some(n), _)) => bounds.push(Bound {
                limit: format!("provider {} concurrency ({n})", p.name),
                seconds: work / n as f64,
            }),
            Some((None, Some(max))) => bounds.push(Bound {
                limit: format!("provider {} concurrency (auto, up to {max})", p.name),
                seconds: work / max as f64,
            }),
            _ => {}
        }
        if let (Some(secs), Some(provider)) = (p.bound_seconds, provider) {
            let limit = match p.binding.as_str() {
                "rps" => provider.rps,
                "rpm" => provider.rpm,
                "rph" => provider.rph,
                "rpd" => provider.rpd,
                "tpm" => provider.tpm,
                "tpd" => provider.tpd,
                _ => None,
            };
            let amount = limit.map(|l| format!(" ({l})")).unwrap_or_default();
            bounds.push(Bound {
                limit: format!("provider {} {}{amount}", p.name, p.binding),
                seconds: secs,
            });
            rate_floor = rate_floor.max(secs);
        }
    }
    // Longest first; on a tie (a derived window equals the caps it was
    // derived from) the limit the user can change comes first.
    let window = |b: &Bound| b.limit.starts_with("unit window");
    bounds.sort_by(|a, b| {
        let (x, y) = (round(b.seconds), round(a.seconds));
        x.total_cmp(&y).then(window(a).cmp(&window(b)))
    });
    let top = bounds.first()?;
    // Streaming overlaps the steps; what the binding limit leaves out is the
    // pipeline filling and draining: one unit's other parts.
    let fill = if top.limit.starts_with("one unit") {
        0.0
    } else {
        (unit_latency - longest_part).max(0.0)
    };
    let seconds = (top.seconds + fill).max(f64::MIN_POSITIVE);
    let sequential_seconds = sequential.max(rate_floor);
    let batch_note = i
        .providers
        .iter()
        .filter(|p| p.batched)
        .map(|p| p.name.clone())
        .reduce(|a, b| format!("{a}, {b}"))
        .map(|names| {
            format!(
                "calls to {names} go through the batch API: their results come within its \
                 completion window (up to 24h), not included above"
            )
        });
    Some(Estimate {
        seconds,
        binding: top.limit.clone(),
        sequential_seconds,
        speedup: sequential_seconds / seconds,
        latencies,
        batch_note,
        bounds,
    })
}
