//! `/metrics` in the Prometheus text format: attempts by provider, step and
//! outcome, latency histograms, retries, 429s, tokens, waits for a place and
//! a rate slot (cumulative over every run of this process), and live gauges
//! per provider: calls in flight, concurrency cap, limits and their use,
//! breaker state per endpoint.
//!
//! A small hand-written exporter over the engine's own atomics (no metrics
//! crate): the engine counts each attempt with a few relaxed atomic adds,
//! and this renders them on request.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use sluice_engine::{Engine, LATENCY_BUCKETS_MS};

use crate::state::AppState;

/// One number of a step's counters.
type Read = fn(&sluice_engine::CallCounts) -> f64;

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole exposition of `engine`'s figures.
pub(crate) fn render(engine: &Engine, active_runs: usize) -> String {
    let calls = engine.process_calls();
    let mut out = String::new();
    header(
        &mut out,
        "sluice_calls_total",
        "counter",
        "Attempts by provider, step and outcome (HTTP status or failure kind).",
    );
    for (p, s, c) in &calls {
        for (status, n) in &c.by_status {
            let _ = writeln!(
                out,
                "sluice_calls_total{{provider=\"{}\",step=\"{}\",status=\"{}\"}} {n}",
                esc(p),
                esc(s),
                esc(status)
            );
        }
    }
    header(
        &mut out,
        "sluice_call_latency_seconds",
        "histogram",
        "Latency of answered attempts.",
    );
    for (p, s, c) in &calls {
        let labels = format!("provider=\"{}\",step=\"{}\"", esc(p), esc(s));
        let mut cumulative = 0;
        for (i, n) in c.latency_buckets.iter().enumerate() {
            cumulative += n;
            let le = match LATENCY_BUCKETS_MS.get(i) {
                Some(ms) => format!("{}", *ms as f64 / 1e3),
                None => "+Inf".into(),
            };
            let _ = writeln!(
                out,
                "sluice_call_latency_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "sluice_call_latency_seconds_sum{{{labels}}} {}",
            c.latency_sum_secs
        );
        let _ = writeln!(
            out,
            "sluice_call_latency_seconds_count{{{labels}}} {cumulative}"
        );
    }
    let per_step: [(&str, &str, Read); 7] = [
        ("sluice_retries_total", "Attempts that were retries.", |c| {
            c.retries as f64
        }),
        ("sluice_throttled_total", "Attempts answered 429.", |c| {
            c.throttled as f64
        }),
        ("sluice_in_flight_calls", "Attempts on the wire now.", |c| {
            c.in_flight as f64
        }),
        (
            "sluice_place_waits_total",
            "Attempts that waited for a place (provider concurrency, a free endpoint).",
            |c| c.place_waits.0 as f64,
        ),
        (
            "sluice_place_wait_seconds_total",
            "Time attempts waited for a place.",
            |c| c.place_waits.1,
        ),
        (
            "sluice_limiter_waits_total",
            "Attempts that waited for a rate slot.",
            |c| c.rate_waits.0 as f64,
        ),
        (
            "sluice_limiter_wait_seconds_total",
            "Time attempts waited for a rate slot.",
            |c| c.rate_waits.1,
        ),
    ];
    for (name, help, value) in per_step {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        header(&mut out, name, kind, help);
        for (p, s, c) in &calls {
            let _ = writeln!(
                out,
                "{name}{{provider=\"{}\",step=\"{}\"}} {}",
                esc(p),
                esc(s),
                value(c)
            );
        }
    }
    header(
        &mut out,
        "sluice_tokens_total",
        "counter",
        "Tokens reported by answers.",
    );
    for (p, s, c) in &calls {
        for (kind, n) in [
            ("prompt", c.prompt_tokens),
            ("completion", c.completion_tokens),
        ] {
            let _ = writeln!(
                out,
                "sluice_tokens_total{{provider=\"{}\",step=\"{}\",kind=\"{kind}\"}} {n}",
                esc(p),
                esc(s)
            );
        }
    }
    let providers = engine.process_providers();
    header(
        &mut out,
        "sluice_provider_in_flight",
        "gauge",
        "Calls in flight to a provider (every run).",
    );
    for p in &providers {
        let _ = writeln!(
            out,
            "sluice_provider_in_flight{{provider=\"{}\"}} {}",
            esc(&p.name),
            p.in_flight
        );
    }
    header(
        &mut out,
        "sluice_provider_concurrency",
        "gauge",
        "A provider's concurrency cap now (absent: none).",
    );
    for p in &providers {
        if let Some(c) = p.concurrency {
            let _ = writeln!(
                out,
                "sluice_provider_concurrency{{provider=\"{}\"}} {c}",
                esc(&p.name)
            );
        }
    }
    header(
        &mut out,
        "sluice_provider_limit",
        "gauge",
        "Rate limits held per provider (configured or announced).",
    );
    for p in &providers {
        let l = p.limits;
        for (name, v) in [
            ("rps", l.rps),
            ("rpm", l.rpm),
            ("rph", l.rph),
            ("rpd", l.rpd),
            ("tpm", l.tpm),
            ("tpd", l.tpd),
        ] {
            if let Some(v) = v {
                let _ = writeln!(
                    out,
                    "sluice_provider_limit{{provider=\"{}\",limit=\"{name}\"}} {v}",
                    esc(&p.name)
                );
            }
        }
    }
    header(
        &mut out,
        "sluice_provider_used_per_minute",
        "gauge",
        "Requests and tokens a provider took over the last minute.",
    );
    for p in &providers {
        let _ = writeln!(
            out,
            "sluice_provider_used_per_minute{{provider=\"{}\",kind=\"requests\"}} {}",
            esc(&p.name),
            p.used_rpm
        );
        let _ = writeln!(
            out,
            "sluice_provider_used_per_minute{{provider=\"{}\",kind=\"tokens\"}} {}",
            esc(&p.name),
            p.used_tpm
        );
    }
    header(
        &mut out,
        "sluice_breaker_state",
        "gauge",
        "Endpoint circuit breaker: 0 closed, 0.5 half-open, 1 open.",
    );
    header(
        &mut out,
        "sluice_breaker_openings_total",
        "counter",
        "Times an endpoint's breaker opened.",
    );
    for p in &providers {
        for e in &p.endpoints {
            let v = match e.breaker.as_str() {
                "open" => 1.0,
                "half_open" => 0.5,
                "closed" => 0.0,
                _ => continue,
            };
            let labels = format!("provider=\"{}\",endpoint=\"{}\"", esc(&p.name), esc(&e.url));
            let _ = writeln!(out, "sluice_breaker_state{{{labels}}} {v}");
            let _ = writeln!(
                out,
                "sluice_breaker_openings_total{{{labels}}} {}",
                e.openings
            );
        }
    }
    header(
        &mut out,
        "sluice_server_runs_active",
        "gauge",
        "Runs this server is executing now.",
    );
    let _ = writeln!(out, "sluice_server_runs_active {active_runs}");
    out
}

/// The `/metrics` handler.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let active = state.active_runs().len();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        render(&state.inner.engine, active),
    )
}
