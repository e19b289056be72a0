//! Scale-out: one run worked by 1 and by 3 `sluice worker` processes on
//! PostgreSQL; three must be ≥ 2× faster at zero latency, and under an rpm
//! enforced by the mock the three together must hold it.
//!
//! Skipped until `sluice worker` exists (issue 7). [`run_on_workers`] is the
//! one function to fill in then; the rest of the scenario is written.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::data::{ask_job, fmt_int, write_items};
use super::harness::{Ctx, Mock};
use super::report::{Figure, Scenario, Target};
use super::runs::{check_units, rate, secs, span_seconds};

const ABOUT: &str = "1 vs 3 sluice workers on one PostgreSQL run; shared rpm";
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The skip once `sluice worker` exists but [`run_on_workers`] does not.
const UNWRITTEN: &str =
    "needs run_on_workers filled in (src/commands/bench/scale.rs) now that sluice worker exists";
/// The rate the mock enforces in the shared-limit part.
const RPM: u64 = 1_200;

/// What one run worked by several workers did.
struct WorkersRun {
    wall: Duration,
    /// The run's results, exported as JSONL (`{"id", "status", ...}` per unit).
    results: PathBuf,
    /// Every worker exited 0.
    exits_ok: bool,
}

/// Runs the job in `dir` (job.toml, items.jsonl) to its end on `workers`
/// `sluice worker --store <postgres>` processes, and exports its results to
/// `dir/results.jsonl`. `Ok(None)` while there is no way to do that.
///
/// To fill in once issue 7 lands: give the run a store of its own (a fresh
/// schema or database, dropped afterwards), create the run from
/// `dir/job.toml` without working it, start `workers` ×
/// `super::harness::spawn(ctx, dir, &["worker", "--store", url])`, time from
/// the first worker's start until the run is finished, then
/// `sluice export RUN --store url --out dir/results.jsonl`.
fn run_on_workers(
    ctx: &Ctx,
    dir: &Path,
    postgres: &str,
    workers: usize,
) -> anyhow::Result<Option<WorkersRun>> {
    let _ = (ctx, dir, postgres, workers);
    Ok(None)
}

pub(super) fn scale_out(ctx: &Ctx) -> anyhow::Result<Scenario> {
    let skip = |reason: &str| Ok(Scenario::skipped("scale-out", ABOUT, reason));
    let has_worker = Command::new(&ctx.bin)
        .args(["worker", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_worker {
        return skip("needs sluice worker (issue 7)");
    }
    let postgres = std::env::var("SLUICE_BENCH_POSTGRES").unwrap_or_else(|_| POSTGRES.into());
    let server: SocketAddr = ([127, 0, 0, 1], 5432).into();
    if TcpStream::connect_timeout(&server, Duration::from_secs(1)).is_err() {
        // CI sets this: there a missing server is a failure, not a skip.
        if std::env::var("SLUICE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
            anyhow::bail!("PostgreSQL is not reachable at {server} and SLUICE_REQUIRE_POSTGRES=1");
        }
        return skip("needs PostgreSQL at 127.0.0.1:5432 (or SLUICE_BENCH_POSTGRES)");
    }
    let n = ctx.size(2_000, 30_000);
    let free = Mock::start(ctx, &[])?;
    let mut runs = Vec::new();
    for workers in [1, 3] {
        let dir = ctx.dir(&format!("scale-out-{workers}"))?;
        write_job(&dir, &free.url("/v1"), n, None)?;
        match run_on_workers(ctx, &dir, &postgres, workers)? {
            Some(run) => runs.push(run),
            None => return skip(UNWRITTEN),
        }
    }
    let limited = Mock::start(ctx, &["--rpm", &RPM.to_string(), "--latency-ms", "20"])?;
    let held_n = ctx.size(60, 1_200);
    let dir = ctx.dir("scale-out-rpm")?;
    write_job(&dir, &limited.url("/v1"), held_n, Some(RPM))?;
    let Some(held) = run_on_workers(ctx, &dir, &postgres, 3)? else {
        return skip(UNWRITTEN);
    };
    let stats = limited.stats()?;
    let mut s = Scenario::new(
        "scale-out",
        format!(
            "{} calls at zero latency on 1 and on 3 workers; {} at rpm {RPM} (the mock enforcing it) on 3",
            fmt_int(n),
            fmt_int(held_n)
        ),
    );
    for run in runs.iter().chain([&held]) {
        s.check("every worker exited 0", run.exits_ok);
    }
    for run in &runs {
        check_units(&mut s, &run.results, n, true)?;
    }
    check_units(&mut s, &held.results, held_n, true)?;
    let per_second = |run: &WorkersRun| n as f64 / run.wall.as_secs_f64();
    s.figure(
        Figure::new(
            "calls/s, 3 workers vs 1",
            per_second(&runs[0]),
            per_second(&runs[1]),
            |v| rate(v, "/s"),
            Target::RatioAtLeast(2.0),
        )
        .bound_text(format!("1 worker {}", rate(per_second(&runs[0]), "/s"))),
    );
    let shared = stats.ok.saturating_sub(1) as f64 / span_seconds(&stats) * 60.0;
    s.figure(Figure::new(
        "shared rate, 3 workers",
        RPM as f64,
        shared,
        |v| rate(v, "/min"),
        Target::RatioAtLeast(0.95),
    ));
    s.check(
        format!("no 429 under the shared rpm ({} seen)", stats.rate_limited),
        stats.rate_limited == 0,
    );
    s.note(format!(
        "1 worker took {}, 3 workers {}",
        secs(runs[0].wall.as_secs_f64()),
        secs(runs[1].wall.as_secs_f64())
    ));
    Ok(s)
}

/// DIR/job.toml and DIR/items.jsonl: `n` chat calls to `url`, at `rpm` if given.
fn write_job(dir: &Path, url: &str, n: u64, rpm: Option<u64>) -> anyhow::Result<()> {
    write_items(&dir.join("items.jsonl"), n)?;
    let rpm = rpm.map_or(String::new(), |r| format!("\nrpm = {r}"));
    let provider = format!("base_url = \"{url}\"\nconcurrency = 64{rpm}");
    let toml = ask_job("", &provider, false);
    std::fs::write(dir.join("job.toml"), toml)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_out_jobs_are_valid_job_files() {
        let dir = std::env::temp_dir().join(format!("sluice-bench-scale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for rpm in [None, Some(RPM)] {
            write_job(&dir, "http://127.0.0.1:9/v1", 3, rpm).unwrap();
            let job = sluice_spec::load(&dir.join("job.toml"), &[]).unwrap();
            assert_eq!(job.steps.len(), 1);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
