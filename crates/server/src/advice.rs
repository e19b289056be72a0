//! Plain-language advice from a run's numbers: which limit binds (a rate
//! limit near 100% used, the concurrency cap full, or neither — then latency
//! sets the pace), 429s, open breakers, failures and slow tails. Computed
//! here, not in the browser, so it is tested and the same for every client.

use serde::Serialize;
use sluice_engine::{LiveFigures, ProviderReport, StepReport, ViewCounts};

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Advice {
    /// `limit` (what holds the run back), `warning` (something is wrong), or `info`.
    pub(crate) level: &'static str,
    /// What the numbers say and what to do.
    pub(crate) message: String,
}

/// A rate limit counts as binding from this share used.
const BINDING: f64 = 0.9;

fn pct(x: f64) -> String {
    format!("{:.0}%", (x * 100.0).min(999.0))
}

fn median_ms(steps: &[StepReport], provider: &str) -> Option<f64> {
    steps
        .iter()
        .filter(|s| s.provider == provider)
        .filter_map(|s| s.latency_ms.p50)
        .reduce(f64::max)
}

/// Advice for the live detail `live` (if the run is running) and its totals.
pub(crate) fn advise(
    live: Option<&LiveFigures>,
    counts: &ViewCounts,
    top_errors: &[(String, u64)],
) -> Vec<Advice> {
    let mut out = Vec::new();
    if let Some(live) = live {
        for p in &live.stats.providers {
            provider_advice(p, &live.stats.steps, &mut out);
        }
        if live.stats.providers.is_empty() && live.rates.calls_per_sec > 0.0 {
            out.push(Advice {
                level: "info",
                message: format!(
                    "{:.0} calls/s at {:.0} ms mean latency; no provider limits are known for this run",
                    live.rates.calls_per_sec, live.latency_ewma_ms
                ),
            });
        }
        for s in &live.stats.steps {
            if let (Some(p50), Some(p99)) = (s.latency_ms.p50, s.latency_ms.p99) {
                if p99 >= 1_000.0 && p99 >= 5.0 * p50 {
                    out.push(Advice {
                        level: "info",
                        message: format!(
                            "step {} has a slow tail: p99 {p99:.0} ms is {:.0}× its median ({p50:.0} ms); a shorter timeout with retries may finish sooner",
                            s.step,
                            p99 / p50.max(1.0)
                        ),
                    });
                }
            }
        }
    }
    let finished = counts.done + counts.failed;
    if finished >= 20 && counts.failed as f64 / finished as f64 > 0.05 {
        let top = top_errors
            .first()
            .map(|(m, n)| format!("; most common ({n}×): {m}"))
            .unwrap_or_default();
        out.push(Advice {
            level: "warning",
            message: format!(
                "{} of finished items failed ({} of {finished}){top}; fix the cause, then retry the failed items",
                pct(counts.failed as f64 / finished as f64),
                counts.failed
            ),
        });
    }
    out
}

fn provider_advice(p: &ProviderReport, steps: &[StepReport], out: &mut Vec<Advice>) {
    let latency = median_ms(steps, &p.name);
    let latency_text = latency
        .map(|ms| format!(" (median latency {ms:.0} ms)"))
        .unwrap_or_default();
    let mut rate_binding = false;
    let uses = [
        ("requests/min", p.limits.rpm.map(|l| (p.used_rpm, l as f64))),
        ("tokens/min", p.limits.tpm.map(|l| (p.used_tpm, l as f64))),
        (
            "requests/s",
            p.limits.rps.map(|l| (p.used_rpm / 60.0, l as f64)),
        ),
    ];
    for (what, used) in uses {
        let Some((used, limit)) = used else { continue };
        let share = used / limit.max(1.0);
        if share >= BINDING {
            rate_binding = true;
            out.push(Advice {
                level: "limit",
                message: format!(
                    "{what} limit of {} is binding: {} used ({used:.0} of {limit:.0}), latency is not{latency_text}; more concurrency will not make it faster — a higher limit would",
                    p.name,
                    pct(share)
                ),
            });
        }
    }
    if let Some(cap) = p.concurrency {
        let full = p.in_flight as f64 >= cap as f64 * BINDING && p.in_flight > 0;
        if full && !rate_binding {
            let rpm_use = p
                .limits
                .rpm
                .map(|l| format!(", requests/min {} used", pct(p.used_rpm / l.max(1) as f64)))
                .unwrap_or_default();
            let suggest = match (p.limits.rpm, latency) {
                (Some(rpm), Some(ms)) => {
                    let need = (rpm as f64 / 60.0 * ms / 1e3 * 1.2).ceil() as u64;
                    if need > cap {
                        format!("; about {need} would reach the requests/min limit")
                    } else {
                        String::new()
                    }
                }
                _ => String::new(),
            };
            out.push(Advice {
                level: "limit",
                message: format!(
                    "concurrency of {} is binding: {} of {cap} slots busy{rpm_use}{latency_text}; raise its concurrency{suggest}",
                    p.name, p.in_flight
                ),
            });
        } else if !full && !rate_binding && p.in_flight > 0 {
            out.push(Advice {
                level: "info",
                message: format!(
                    "no limit of {} is binding ({} of {cap} slots busy): latency{latency_text} and the run's own concurrency set the pace",
                    p.name, p.in_flight
                ),
            });
        }
    } else if !rate_binding && p.in_flight > 0 {
        out.push(Advice {
            level: "info",
            message: format!(
                "no limit of {} is binding: latency{latency_text} and the run's concurrency set the pace ({} calls on the wire)",
                p.name, p.on_wire
            ),
        });
    }
    let (attempts, throttled): (u64, u64) = steps
        .iter()
        .filter(|s| s.provider == p.name)
        .fold((0, 0), |(a, t), s| (a + s.attempts, t + s.throttled));
    if attempts >= 20 && throttled as f64 / attempts as f64 > 0.01 {
        out.push(Advice {
            level: "warning",
            message: format!(
                "{} answered 429 to {} of calls ({throttled} of {attempts}): its real limit is below what is configured; lower rpm/tpm",
                p.name,
                pct(throttled as f64 / attempts as f64)
            ),
        });
    }
    let n = p.endpoints.len();
    let open: Vec<usize> = (0..n)
        .filter(|&i| p.endpoints[i].breaker != "closed" && p.endpoints[i].breaker != "none")
        .collect();
    for &i in &open {
        let e = &p.endpoints[i];
        let rest = if open.len() == n {
            "every endpoint is open: calls wait for a cooldown".to_string()
        } else {
            format!("calls go to the other {}", n - open.len())
        };
        out.push(Advice {
            level: "warning",
            message: format!(
                "errors from endpoint {} of {} ({}) opened its breaker ({} time{}); {rest}",
                i + 1,
                p.name,
                e.url,
                e.openings.max(1),
                if e.openings > 1 { "s" } else { "" }
            ),
        });
    }
}

#[cfg(test)]
mod tests;
