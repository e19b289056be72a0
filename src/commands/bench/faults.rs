//! A pool of three endpoints — one flaky (500s, resets, truncated JSON,
//! hangs), one healthy, one down — must lose nothing and run near the
//! capacity the healthy work needs.

use std::path::Path;

use anyhow::Context;
use sluice_store::{SqliteStore, Store};

use super::data::{ask_job, fmt_int, write_items};
use super::harness::{Ctx, Mock};
use super::report::{Figure, Scenario, Target};
use super::runs::{check_exit, check_units, run_job, secs};

/// Calls the provider has in flight at most.
const SLOTS: u64 = 64;
/// The job's per-attempt time-out, which cuts every hang.
const TIMEOUT_SECS: f64 = 1.0;

/// Bound: every call the servers answered at the latency, plus each hang held
/// for its time-out, over the provider's slots, to 95% of the units (the
/// last few wait out late hangs and backoffs, a tail that says nothing about
/// the sustained rate).
pub(super) fn faults(ctx: &Ctx) -> anyhow::Result<Scenario> {
    let (n, latency_ms) = (ctx.size(500, 3_000), 50u64);
    let dir = ctx.dir("faults")?;
    let lat = latency_ms.to_string();
    let flaky = Mock::start(
        ctx,
        &[
            "--latency-ms",
            &lat,
            "--fail-rate",
            "0.05",
            "--reset-rate",
            "0.05",
            "--truncate-rate",
            "0.05",
            "--hang-rate",
            "0.01",
            "--seed",
            "3",
        ],
    )?;
    let healthy = Mock::start(ctx, &["--latency-ms", &lat])?;
    let dead = {
        // A port nobody listens on: bound, read, released.
        let socket = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        socket.local_addr().context("finding a free port")?.port()
    };
    write_items(&dir.join("items.jsonl"), n)?;
    let urls = [
        flaky.url("/v1"),
        healthy.url("/v1"),
        format!("http://127.0.0.1:{dead}/v1"),
    ]
    .map(|u| format!("\"{u}\""))
    .join(", ");
    let provider = format!(
        "urls = [{urls}]\nconcurrency = {SLOTS}\ntimeout = \"1s\"\n\
         retries = {{ max = 20, base = \"20ms\", cap = \"200ms\" }}\n\
         circuit_breaker = {{ failures = 5, cooldown = \"2s\" }}"
    );
    let toml = ask_job("concurrency = 256", &provider, true);
    let exit = run_job(ctx, &dir, &toml)?;
    let (f, h) = (flaky.stats()?, healthy.stats()?);
    let mut s = Scenario::new(
        "faults",
        format!(
            "{} calls, {latency_ms} ms, over a pool of 3 (flaky: 5% 500s, 5% resets, 5% truncated, \
             1% hangs; healthy; down), {SLOTS} slots; time to 95% of the units",
            fmt_int(n)
        ),
    );
    // 1: some units may fail for good; each must then say why.
    check_exit(&mut s, &exit, &[0, 1]);
    check_units(&mut s, &dir.join("results.jsonl"), n, false)?;
    let summary = exit.summary()?;
    let run = summary["run"]
        .as_str()
        .context("the summary names no run")?;
    let latency = latency_ms as f64 / 1000.0;
    let answered = (f.requests + h.requests).saturating_sub(f.hangs);
    let bound = 0.95 * (answered as f64 * latency + f.hangs as f64 * TIMEOUT_SECS) / SLOTS as f64;
    let t95 = time_to_share(&dir.join("store.db"), run, 0.95)?;
    s.figure(Figure::new(
        "time to 95% of units",
        bound,
        t95,
        secs,
        Target::RatioAtMost(1.1),
    ));
    s.note(format!(
        "{} done, {} failed; flaky got {} calls ({} hangs, {} resets, {} truncated, {} × 500), healthy {}",
        exit.recorded("done"),
        exit.recorded("failed"),
        fmt_int(f.requests),
        f.hangs,
        f.resets,
        f.truncated,
        f.server_errors,
        fmt_int(h.requests)
    ));
    s.note(format!(
        "the whole run took {} including the tail; without faults the bound would be {}",
        secs(exit.wall.as_secs_f64()),
        secs(0.95 * n as f64 * latency / SLOTS as f64)
    ));
    Ok(s)
}

/// Seconds from the first unit's start until `share` of the units had finished.
fn time_to_share(store: &Path, run: &str, share: f64) -> anyhow::Result<f64> {
    let mut store = SqliteStore::open(store)?;
    let (mut started, mut finished) = (i64::MAX, Vec::new());
    store.for_each_item(run, &mut |item| {
        started = started.min(item.started_at);
        finished.push(item.finished_at);
        Ok(())
    })?;
    finished.sort_unstable();
    let index = ((finished.len() as f64 * share) as usize).saturating_sub(1);
    let at = finished.get(index).context("the run recorded no units")?;
    Ok((at - started) as f64 / 1000.0)
}
