//! What the engine itself costs: calls/s against a raw load generator at zero
//! latency, CPU per call, and peak memory over a million input lines.

use super::data::fmt_int;
use super::harness::{own_rss_mb, Ctx};
use super::loadgen;
use super::report::{Figure, Scenario, Target};
use super::runs::{rate, span_seconds, Batch};

/// CPU per 10,000 calls of the Python asyncio + aiohttp script measured in
/// shared/PERFORMANCE.md (~570 µs per call); the target is 20× less.
const PYTHON_CPU_PER_10K: f64 = 5.7;

/// Best of each side over the rounds.
#[derive(Debug, Default)]
struct Best {
    raw_rate: f64,
    /// The generator's rate by its own clock (connections opened beforehand).
    raw_own_rate: f64,
    raw_cpu_10k: f64,
    sustained: f64,
    end_to_end: f64,
    cpu_10k: f64,
}

/// Zero latency, durable recording: sluice's sustained calls/s as a share of
/// the raw load generator's against the same mock, same bodies, same
/// concurrency.
pub(super) fn overhead(ctx: &Ctx) -> anyhow::Result<Scenario> {
    let (n, rounds, concurrency) = (ctx.size(5_000, 50_000), ctx.size(1, 3), 64usize);
    let batch = Batch::new(ctx, "overhead", n, &[])?;
    let mock = &batch.mock;
    let per_10k = |cpu: std::time::Duration| cpu.as_secs_f64() / n as f64 * 10_000.0;
    let mut best = Best {
        raw_cpu_10k: f64::INFINITY,
        cpu_10k: f64::INFINITY,
        ..Best::default()
    };
    let (mut raw_all_ok, mut exits_ok, mut last_exit) = (true, true, None);
    // Alternating rounds, best of each side: on a shared machine the rate
    // varies from second to second, and both sides get the same luck.
    for _ in 0..rounds {
        mock.reset()?;
        let load = loadgen::run(mock.addr, "/v1/chat/completions", &batch.input, concurrency)?;
        let stats = mock.stats()?;
        raw_all_ok &= load.ok == n && load.other == 0 && stats.ok == n;
        best.raw_rate = best.raw_rate.max(stats.ok as f64 / span_seconds(&stats));
        best.raw_own_rate = best.raw_own_rate.max(n as f64 / load.elapsed.as_secs_f64());
        best.raw_cpu_10k = best.raw_cpu_10k.min(per_10k(load.cpu));

        mock.reset()?;
        let exit = batch.run(ctx, &["--concurrency", &concurrency.to_string()])?;
        let stats = mock.stats()?;
        exits_ok &= exit.code == Some(0);
        // Sustained: what the server answered between its first and last
        // answer, i.e. the rate while the batch runs.
        best.sustained = best.sustained.max(stats.ok as f64 / span_seconds(&stats));
        best.end_to_end = best.end_to_end.max(n as f64 / exit.wall.as_secs_f64());
        best.cpu_10k = best.cpu_10k.min(per_10k(exit.cpu));
        last_exit = Some(exit);
    }
    let mut s = Scenario::new(
        "overhead",
        format!(
            "{} calls, zero latency, --concurrency {concurrency}, SQLite + --out, vs the raw \
             load generator (1 thread, {concurrency} kept-alive connections, same bodies); best of {rounds}",
            fmt_int(n)
        ),
    );
    s.figure(
        Figure::new(
            "sustained calls/s",
            best.raw_rate,
            best.sustained,
            |v| rate(v, "/s"),
            Target::RatioAtLeast(0.6),
        )
        .bound_text(format!("{} raw", rate(best.raw_rate, "/s"))),
    );
    s.figure(
        Figure::new(
            "CPU per 10,000 calls",
            best.raw_cpu_10k,
            best.cpu_10k,
            |v| format!("{v:.3} s"),
            Target::AtMost(PYTHON_CPU_PER_10K / 20.0, " s"),
        )
        .bound_text(format!("{:.3} s raw", best.raw_cpu_10k)),
    );
    s.note(format!(
        "the raw generator by its own clock: {} (the bound uses the mock's clock, as for sluice)",
        rate(best.raw_own_rate, "/s")
    ));
    s.note(format!(
        "end to end (validation pass, sending, recording, final export): {} = {:.2} of raw",
        rate(best.end_to_end, "/s"),
        best.end_to_end / best.raw_rate
    ));
    s.note(format!(
        "CPU: {:.1} µs per call, {:.0}× less than the Python asyncio script's ~570 µs",
        best.cpu_10k * 100.0,
        PYTHON_CPU_PER_10K / best.cpu_10k
    ));
    s.check(
        "the raw load generator got a 200 for every call",
        raw_all_ok,
    );
    s.check(format!("every round exited 0 ({rounds} rounds)"), exits_ok);
    if let Some(exit) = last_exit {
        batch.check(&mut s, &exit)?;
    }
    Ok(s)
}

/// Peak resident memory of `sluice run` over 1,000,000 input lines.
pub(super) fn memory(ctx: &Ctx) -> anyhow::Result<Scenario> {
    let n = ctx.size(10_000, 1_000_000);
    let batch = Batch::new(ctx, "memory", n, &[])?;
    let own = own_rss_mb();
    let exit = batch.run(ctx, &["--concurrency", "64"])?;
    let mut s = Scenario::new(
        "memory",
        format!(
            "{} input lines, zero latency, --concurrency 64, SQLite + --out; peak RSS by wait4",
            fmt_int(n)
        ),
    );
    s.figure(Figure::new(
        "peak RSS",
        64.0,
        exit.peak_rss_mb,
        |v| format!("{v:.1} MB"),
        Target::RatioBelow(1.0),
    ));
    s.note(format!(
        "ran in {:.1} s; the bench held {own:.1} MB when it forked the run \
         (a floor under the figure: Linux starts a forked child's peak there)",
        exit.wall.as_secs_f64()
    ));
    batch.check(&mut s, &exit)?;
    Ok(s)
}
