//! Advice from made-up numbers: each rule fires on its case and stays quiet otherwise.

use sluice_engine::{EndpointReport, Latency, Limits, ProviderReport, StatsReport, StepReport};

use super::*;

fn provider(
    rpm: Option<u64>,
    used_rpm: f64,
    concurrency: Option<u64>,
    in_flight: u64,
) -> ProviderReport {
    ProviderReport {
        name: "openai".into(),
        in_flight,
        on_wire: in_flight,
        concurrency,
        limits: Limits {
            rpm,
            ..Limits::default()
        },
        announced: vec![],
        used_rpm,
        used_tpm: 0.0,
        rate_waiting: false,
        endpoints: vec![],
    }
}

fn step(attempts: u64, throttled: u64, p50: f64, p99: f64) -> StepReport {
    StepReport {
        step: "analyse".into(),
        provider: "openai".into(),
        by_status: vec![],
        attempts,
        ok: attempts - throttled,
        retries: throttled,
        throttled,
        tokens: 0,
        in_flight: 0,
        latency_ms: Latency {
            p50: Some(p50),
            p90: Some(p50),
            p99: Some(p99),
            mean: Some(p50),
        },
        place_waits: (0, 0.0),
        rate_waits: (0, 0.0),
    }
}

fn live(p: ProviderReport, s: StepReport) -> LiveFigures {
    LiveFigures {
        stats: StatsReport {
            steps: vec![s],
            providers: vec![p],
            recent_errors: vec![],
        },
        ..LiveFigures::default()
    }
}

fn messages(advice: &[Advice]) -> Vec<String> {
    advice.iter().map(|a| a.message.clone()).collect()
}

#[test]
fn a_rate_limit_near_full_is_binding_and_latency_is_not() {
    let l = live(
        provider(Some(600), 588.0, Some(100), 12),
        step(500, 0, 80.0, 120.0),
    );
    let a = advise(Some(&l), &ViewCounts::default(), &[]);
    assert_eq!(a[0].level, "limit");
    assert!(
        a[0].message.starts_with(
            "requests/min limit of openai is binding: 98% used (588 of 600), latency is not"
        ),
        "{:?}",
        messages(&a)
    );
    // The concurrency cap is not blamed while the rate binds.
    assert!(!messages(&a).iter().any(|m| m.contains("concurrency of")));
}

#[test]
fn a_full_concurrency_cap_is_binding_with_a_suggested_size() {
    // 8 slots, 1,200 rpm = 20/s at 1 s latency needs ~24.
    let l = live(
        provider(Some(1_200), 480.0, Some(8), 8),
        step(100, 0, 1_000.0, 1_200.0),
    );
    let a = advise(Some(&l), &ViewCounts::default(), &[]);
    let m = messages(&a);
    assert!(
        m[0].starts_with(
            "concurrency of openai is binding: 8 of 8 slots busy, requests/min 40% used"
        ),
        "{m:?}"
    );
    assert!(m[0].contains("about 24 would reach"), "{m:?}");
}

#[test]
fn neither_binding_means_latency_sets_the_pace() {
    let l = live(
        provider(Some(6_000), 600.0, Some(100), 10),
        step(100, 0, 50.0, 60.0),
    );
    let a = advise(Some(&l), &ViewCounts::default(), &[]);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].level, "info");
    assert!(
        a[0].message.contains("no limit of openai is binding"),
        "{:?}",
        messages(&a)
    );
}

#[test]
fn many_429s_and_an_open_breaker_are_warnings() {
    let mut p = provider(None, 0.0, None, 0);
    p.endpoints = vec![
        EndpointReport {
            url: "http://a".into(),
            in_flight: 0,
            breaker: "closed".into(),
            openings: 0,
        },
        EndpointReport {
            url: "http://b".into(),
            in_flight: 0,
            breaker: "closed".into(),
            openings: 0,
        },
        EndpointReport {
            url: "http://c".into(),
            in_flight: 0,
            breaker: "open".into(),
            openings: 2,
        },
    ];
    let l = live(p, step(200, 10, 50.0, 60.0));
    let m = messages(&advise(Some(&l), &ViewCounts::default(), &[]));
    assert!(
        m.iter().any(|m| m.contains("answered 429 to 5% of calls")),
        "{m:?}"
    );
    assert!(
        m.iter().any(|m| m.starts_with("errors from endpoint 3 of openai (http://c) opened its breaker (2 times); calls go to the other 2")),
        "{m:?}"
    );
}

#[test]
fn failures_and_slow_tails_are_named() {
    let l = live(provider(None, 0.0, None, 0), step(100, 0, 100.0, 2_000.0));
    let counts = ViewCounts {
        done: 80,
        failed: 20,
        ..ViewCounts::default()
    };
    let errors = vec![("timeout: no answer".to_string(), 15)];
    let m = messages(&advise(Some(&l), &counts, &errors));
    assert!(
        m.iter()
            .any(|m| m.starts_with("step analyse has a slow tail: p99 2000 ms is 20×")),
        "{m:?}"
    );
    assert!(
        m.iter().any(|m| m
            .starts_with("20% of finished items failed (20 of 100); most common (15×): timeout")),
        "{m:?}"
    );
    // A healthy finished run gets no warning.
    let fine = ViewCounts {
        done: 100,
        ..ViewCounts::default()
    };
    assert!(advise(None, &fine, &[]).is_empty());
}
