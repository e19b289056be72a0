//! Limits the client is not told but the provider announces (`x-ratelimit-*`:
//! limit, remaining, reset), held the way OpenAI and Anthropic hold them — a
//! bucket of a whole minute's allowance (`sluice mock --allowance`). The
//! ideal is burst then refill: what remains goes at once, the rest at the
//! announced rate.

use super::data::fmt_int;
use super::report::{Figure, Scenario, Target};
use super::runs::{wall_figure, Batch};

const LATENCY_MS: u64 = 200;
const CONCURRENCY: u64 = 64;

/// The allowance is still full: nothing binds but latency and concurrency.
pub(super) fn allowance_full(ctx: &super::harness::Ctx) -> anyhow::Result<Scenario> {
    let (n, rpm) = (ctx.size(120, 600), 1_200u64);
    measure(ctx, "allowance-full", n, rpm)
}

/// The allowance binds: the first `rpm` go at once, the rest at `rpm`/min.
pub(super) fn allowance_binds(ctx: &super::harness::Ctx) -> anyhow::Result<Scenario> {
    let (n, rpm) = (ctx.size(260, 600), ctx.size(240, 400));
    measure(ctx, "allowance-binds", n, rpm)
}

/// Burst then refill: `n` calls of `LATENCY_MS` at `CONCURRENCY` against an
/// allowance of `rpm`, full at the start. The calls beyond the allowance wait
/// for it to refill at `rpm`/min; the last of them then takes its latency.
fn ideal_seconds(n: u64, rpm: u64) -> f64 {
    let latency = LATENCY_MS as f64 / 1000.0;
    let waves = n.min(rpm).div_ceil(CONCURRENCY) as f64 * latency;
    let refill = n.saturating_sub(rpm) as f64 / rpm as f64 * 60.0;
    if refill > 0.0 {
        refill + latency
    } else {
        waves
    }
}

fn measure(
    ctx: &super::harness::Ctx,
    name: &'static str,
    n: u64,
    rpm: u64,
) -> anyhow::Result<Scenario> {
    let mock_args = [
        "--rpm",
        &rpm.to_string(),
        "--allowance",
        "--latency-ms",
        &LATENCY_MS.to_string(),
    ]
    .map(str::to_string);
    let mock_args: Vec<&str> = mock_args.iter().map(String::as_str).collect();
    let batch = Batch::new(ctx, name, n, &mock_args)?;
    let exit = batch.run(ctx, &["--concurrency", &CONCURRENCY.to_string()])?;
    let stats = batch.mock.stats()?;
    let mut s = Scenario::new(
        name,
        format!(
            "{} calls of {LATENCY_MS} ms at --concurrency {CONCURRENCY}, no --rpm; the mock \
             announces a full allowance of {}/min (--allowance); ideal = burst then refill",
            fmt_int(n),
            fmt_int(rpm)
        ),
    );
    s.figure(wall_figure(
        ideal_seconds(n, rpm),
        &exit,
        Target::RatioAtMost(1.25),
    ));
    s.figure(Figure::absolute(
        "429s",
        stats.rate_limited as f64,
        format!("{} of {}", stats.rate_limited, fmt_int(stats.requests)),
        Target::AtMost(5.0, ""),
    ));
    s.note(format!(
        "the mock's busiest 60 s window held {} requests",
        stats.max_requests_per_minute
    ));
    batch.check(&mut s, &exit)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ideal_is_burst_then_refill() {
        // 600 under 1,200: ten waves of 64 (the last short) at 0.2 s.
        assert!((ideal_seconds(600, 1_200) - 2.0).abs() < 1e-9);
        // 600 under 400: 200 wait for 30 s of refill, then their latency.
        assert!((ideal_seconds(600, 400) - 30.2).abs() < 1e-9);
    }
}
