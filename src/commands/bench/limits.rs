//! Scenarios bound by time or by a limit: latency, requests/minute,
//! tokens/minute, and a requests/minute limit the client is not told.

use super::data::{ask_job, fmt_int, write_items};
use super::harness::{Ctx, Mock};
use super::report::{Figure, Scenario, Target};
use super::runs::{
    check_exit, check_no_429, check_units, rate, run_job, span_seconds, wall_figure, Batch,
};

/// 20,000 calls × 100 ms at concurrency 200: bound N × latency ÷ concurrency.
pub(super) fn latency(ctx: &Ctx) -> anyhow::Result<Scenario> {
    let (n, latency_ms, concurrency) = (ctx.size(2_000, 20_000), 100, 200);
    let batch = Batch::new(
        ctx,
        "latency",
        n,
        &["--latency-ms", &latency_ms.to_string()],
    )?;
    let exit = batch.run(ctx, &["--concurrency", &concurrency.to_string()])?;
    let bound = (n * latency_ms) as f64 / 1000.0 / concurrency as f64;
    let mut s = Scenario::new(
        "latency",
        format!(
            "{} calls, {latency_ms} ms each, --concurrency {concurrency}; bound N × latency ÷ concurrency; \
             measured: the whole process, validation to results file",
            fmt_int(n)
        ),
    );
    s.figure(wall_figure(bound, &exit, Target::RatioAtMost(1.03)));
    batch.check(&mut s, &exit)?;
    Ok(s)
}

/// 600 calls under `--rpm 1200`, the mock enforcing 1,200/min: bound N ÷ R.
pub(super) fn rpm(ctx: &Ctx) -> anyhow::Result<Scenario> {
    let (n, rpm) = (ctx.size(40, 600), 1_200u64);
    let batch = Batch::new(ctx, "rpm", n, &["--rpm", &rpm.to_string()])?;
    let exit = batch.run(ctx, &["--rpm", &rpm.to_string()])?;
    let stats = batch.mock.stats()?;
    let mut s = Scenario::new(
        "rpm",
        format!(
            "{} calls at --rpm {rpm}, the mock enforcing {rpm}/min (its referee: an exact sliding-window log, burst of one); bound N ÷ R",
            fmt_int(n)
        ),
    );
    s.figure(wall_figure(
        n as f64 / rpm as f64 * 60.0,
        &exit,
        Target::RatioAtMost(1.05),
    ));
    check_no_429(&mut s, &stats);
    s.note(format!(
        "the mock's busiest 60 s window held {} requests",
        stats.max_requests_per_minute
    ));
    batch.check(&mut s, &exit)?;
    Ok(s)
}

/// Tokens per minute bind: prompts of 100–900 tokens under `--tpm`, the mock
/// enforcing it; bound = the tokens the mock charged ÷ tpm.
pub(super) fn tpm(ctx: &Ctx) -> anyhow::Result<Scenario> {
    // 2,000 tokens/s. The smallest request (~100 tokens) is a 50 ms slot, so
    // the mock's slack (half a slot, at most 25 ms) absorbs loopback jitter;
    // smaller requests would draw 429s from a strict GCRA on a loaded machine.
    let (n, tpm) = (ctx.size(8, 120), 120_000u64);
    // 400–3,600 filler characters, spread over the range in a fixed shuffle;
    // 32 tokens reserved per reply, 16 used (the mock's reply length): the
    // reservation is corrected by `usage`.
    let batch = Batch::with_prompts(
        ctx,
        "tpm",
        n,
        &["--tpm", &tpm.to_string(), "--latency-ms", "20"],
        &|i| 400 + (i * 1_237 % 3_200) as usize,
        32,
    )?;
    let exit = batch.run(ctx, &["--tpm", &tpm.to_string()])?;
    let stats = batch.mock.stats()?;
    let used = exit.recorded("prompt_tokens") + exit.recorded("completion_tokens");
    let mut s = Scenario::new(
        "tpm",
        format!(
            "{} calls of 100–900 prompt tokens at --tpm {}, the mock enforcing it; bound = tokens charged ÷ tpm",
            fmt_int(n),
            fmt_int(tpm)
        ),
    );
    s.figure(wall_figure(
        stats.tokens_charged as f64 / tpm as f64 * 60.0,
        &exit,
        Target::RatioAtMost(1.05),
    ));
    check_no_429(&mut s, &stats);
    s.check(
        format!(
            "the client's usage total equals the mock's charge ({} vs {})",
            fmt_int(used),
            fmt_int(stats.tokens_charged)
        ),
        used == stats.tokens_charged,
    );
    s.note(format!(
        "{} tokens in all; the mock's busiest 60 s window held {}",
        fmt_int(stats.tokens_charged),
        fmt_int(stats.max_tokens_per_minute)
    ));
    batch.check(&mut s, &exit)?;
    Ok(s)
}

/// The mock enforces R requests/minute and the job says nothing about it:
/// adaptive concurrency and the provider's headers must find it.
pub(super) fn unknown_rpm(ctx: &Ctx) -> anyhow::Result<Scenario> {
    let (n, rpm) = (ctx.size(40, 1_200), 1_200u64);
    let dir = ctx.dir("unknown-rpm")?;
    let mock = Mock::start(ctx, &["--rpm", &rpm.to_string(), "--latency-ms", "20"])?;
    write_items(&dir.join("items.jsonl"), n)?;
    let exit = run_job(ctx, &dir, &auto_job(&mock.url("/v1")))?;
    let stats = mock.stats()?;
    let sustained = stats.ok.saturating_sub(1) as f64 / span_seconds(&stats) * 60.0;
    let share_429 = stats.rate_limited as f64 / stats.requests.max(1) as f64;
    let mut s = Scenario::new(
        "unknown-rpm",
        format!(
            "{} calls, the mock enforcing {rpm}/min, the job not told (concurrency = \"auto\")",
            fmt_int(n)
        ),
    );
    s.figure(Figure::new(
        "sustained rate",
        rpm as f64,
        sustained,
        |v| rate(v, "/min"),
        Target::RatioAtLeast(0.9),
    ));
    s.figure(Figure::absolute(
        "share of 429s",
        share_429 * 100.0,
        format!("{:.1}% of {}", share_429 * 100.0, fmt_int(stats.requests)),
        Target::Below(2.0, "%"),
    ));
    check_exit(&mut s, &exit, &[0]);
    check_units(&mut s, &dir.join("results.jsonl"), n, true)?;
    Ok(s)
}

/// No limit given: the provider's concurrency adapts, its headers tell the rest.
fn auto_job(url: &str) -> String {
    let provider = format!("base_url = \"{url}\"\nconcurrency = \"auto\"\nmax_concurrency = 64");
    ask_job("", &provider, true)
}
