use serde_json::json;

use super::*;

fn sample(t: i64, done: u64, attempts: u64, spent: f64) -> Sample {
    Sample {
        t,
        done,
        attempts,
        spent_usd: spent,
        on_wire: 2,
        ..Sample::default()
    }
}

fn session(start: i64, samples: Vec<Sample>, counters: Json) -> Session {
    Session {
        worker_id: format!("h:1:{start}"),
        host: "h".into(),
        pid: 1,
        started_at: start,
        updated_at: samples.last().map_or(start, |s| s.t),
        ended: true,
        stride_secs: 1,
        counters,
        stats: StatsReport::default(),
        samples,
    }
}

#[test]
fn rates_come_from_counter_differences_and_a_resume_leaves_a_gap() {
    // 10 items a second for 3 s; then, 60 s later, a resume doing 5 a second.
    let first = session(
        0,
        (1..=3)
            .map(|i| sample(i * 1000, i as u64 * 10, i as u64 * 12, 0.1 * i as f64))
            .collect(),
        json!({"done": 30, "attempts": 36, "spent_usd": 0.3}),
    );
    let second = session(
        63_000,
        (1..=2)
            .map(|i| {
                sample(
                    63_000 + i * 1000,
                    i as u64 * 5,
                    i as u64 * 5,
                    0.05 * i as f64,
                )
            })
            .collect(),
        json!({"done": 10, "attempts": 10, "spent_usd": 0.1}),
    );
    let p = points(&[first, second]);
    assert_eq!(p.len(), 5, "{p:#?}");
    assert_eq!(p[0].done_per_min, 600.0);
    assert_eq!(p[0].calls_per_sec, 12.0);
    assert_eq!(p[0].success, Some(1.0));
    assert_eq!(p[3].done_per_min, 300.0);
    // Time runs on: the resume's points come 60 s after the first ones.
    assert!(p[3].t - p[2].t >= 60_000, "{p:#?}");
    // Spend adds up over sessions.
    assert!((p[2].spent_usd - 0.3).abs() < 1e-9, "{p:#?}");
    assert!((p[4].spent_usd - 0.4).abs() < 1e-9, "{p:#?}");
}

#[test]
fn sessions_running_at_once_are_summed() {
    let a = session(
        0,
        (1..=4)
            .map(|i| sample(i * 1000, i as u64 * 3, 0, 0.0))
            .collect(),
        json!({}),
    );
    let b = session(
        0,
        (1..=4)
            .map(|i| sample(i * 1000, i as u64 * 7, 0, 0.0))
            .collect(),
        json!({}),
    );
    let p = points(&[a, b]);
    assert_eq!(p.len(), 4);
    for x in &p {
        assert_eq!(x.done_per_min, 600.0, "{x:?}");
        assert_eq!(x.on_wire, 4.0, "{x:?}");
    }
}

#[test]
fn a_long_run_is_sent_in_at_most_max_points() {
    let samples: Vec<Sample> = (1..=10_000)
        .map(|i| sample(i * 1000, i as u64, i as u64, 0.0))
        .collect();
    let p = points(&[session(0, samples, json!({}))]);
    assert!(
        p.len() <= MAX_POINTS && p.len() > MAX_POINTS / 2,
        "{}",
        p.len()
    );
    // Wider buckets keep the rate, not the count.
    assert!(
        p.iter().all(|x| (x.done_per_min - 60.0).abs() < 1e-6),
        "{:?}",
        &p[..3]
    );
}

#[test]
fn the_summary_adds_up_every_session() {
    let step = |attempts: u64, mean: f64| StepReport {
        step: "ask".into(),
        provider: "p".into(),
        by_status: vec![("200".into(), attempts - 1), ("429".into(), 1)],
        attempts,
        ok: attempts - 1,
        retries: 1,
        throttled: 1,
        tokens: 10 * attempts,
        in_flight: 0,
        latency_ms: Latency {
            p50: Some(mean),
            p90: Some(mean),
            p99: Some(mean),
            mean: Some(mean),
        },
        place_waits: (1, 0.5),
        rate_waits: (2, 1.0),
    };
    let mut a = session(
        0,
        vec![sample(1000, 5, 11, 0.0)],
        json!({
            "done": 5, "failed": 1, "attempts": 11, "retries": 1, "throttled": 1, "tokens": 110,
            "cache_hits": 2, "spent_usd": 0.25, "breaker_openings": 1, "elapsed_secs": 10.0, "paused_secs": 2.0
        }),
    );
    a.stats.steps.push(step(11, 100.0));
    let mut b = session(
        20_000,
        vec![sample(21_000, 1, 1, 0.0)],
        json!({
            "done": 1, "attempts": 1, "spent_usd": 0.05, "elapsed_secs": 2.0
        }),
    );
    b.stats.steps.push(step(2, 400.0));
    let s = summary(&[a, b]);
    assert_eq!((s.sessions, s.done, s.failed, s.attempts), (2, 6, 1, 12));
    assert_eq!((s.cache_hits, s.breaker_openings), (2, 1));
    assert!((s.spent_usd - 0.3).abs() < 1e-9);
    assert_eq!(s.active_secs, 10.0);
    assert_eq!(s.steps.len(), 1);
    assert_eq!(s.steps[0].attempts, 13);
    assert_eq!(
        s.steps[0].by_status,
        vec![("200".into(), 11), ("429".into(), 2)]
    );
    // Weighted by answered calls: 10 at 100 ms, 1 at 400 ms.
    let mean = s.steps[0].latency_ms.mean.unwrap();
    assert!((mean - 1400.0 / 11.0).abs() < 1e-6, "{mean}");
    assert_eq!(s.workers.len(), 2);
}

#[test]
fn a_live_view_gives_the_sample_it_shows() {
    let live = json!({
        "counters": {"done": 4, "failed": 1, "attempts": 9, "in_flight": 3, "spent_usd": 0.5},
        "latency_ewma_ms": 80.0,
        "stats": {"steps": [], "providers": [], "recent_errors": []},
    });
    let s = sample_of_live(7, &live).unwrap();
    assert_eq!(
        (s.t, s.done, s.failed, s.attempts, s.on_wire),
        (7, 4, 1, 9, 3)
    );
    assert_eq!(s.latency_ms, 80.0);
    assert!(sample_of_live(7, &json!(null)).is_none());
    let later = Sample {
        t: 1007,
        done: 6,
        ..s
    };
    let p = point_between(&s, &later, 0.5).unwrap();
    assert_eq!(p.done_per_min, 120.0);
}

#[test]
fn the_processes_on_a_shared_run_are_summed() {
    let now = sluice_engine::now_ms();
    let beat = |worker: &str, done: u64, state: &str| sluice_store::WorkerBeat {
        run_id: "r".into(),
        worker_id: worker.into(),
        host: "elsewhere".into(),
        pid: 1,
        started_at: now,
        beat_at: now,
        state: state.into(),
        in_flight: 1,
        live: json!({"counters": {"done": done, "attempts": done, "in_flight": 1}, "latency_ewma_ms": 10.0 * done as f64}),
    };
    let beats = [
        beat("a", 3, "running"),
        beat("b", 5, "running"),
        beat("c", 100, "stopped"),
    ];
    let s = sample_of_beats(now, &beats).unwrap();
    assert_eq!((s.done, s.attempts, s.on_wire), (8, 8, 2));
    assert_eq!(s.latency_ms, 40.0);
    assert!(sample_of_beats(now, &beats[2..]).is_none());
}
