//! Scale-out: one run worked by 1 and by 3 `sluice worker` processes on
//! PostgreSQL; three must be ≥ 2× faster at zero latency, and under an rpm
//! enforced by the mock the three together must hold it.
//!
//! Skipped until `sluice worker` exists (issue 7), or without PostgreSQL or
//! `psql` (which makes each run a schema of its own).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::data::{ask_job, fmt_int, write_items};
use super::harness::{arg, run, spawn_as, Ctx, Mock};
use super::report::{Figure, Scenario, Target};
use super::runs::{check_no_429, check_units, rate, secs, span_seconds};

const ABOUT: &str = "1 vs 3 sluice workers on one PostgreSQL run; shared rpm";
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
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
/// `sluice worker` processes sharing a fresh schema of `postgres`, and exports
/// its results to `dir/results.jsonl`.
///
/// The run is queued with `sluice run job.toml --queue-only`, then worked only
/// by `sluice worker --exit-when-idle`; the time runs from the first worker's
/// start to the last one's exit (the protocol of issue 7's own benchmark).
fn run_on_workers(
    ctx: &Ctx,
    dir: &Path,
    postgres: &str,
    workers: usize,
) -> anyhow::Result<WorkersRun> {
    let schema = Schema::create(postgres, &format!("w{workers}"))?;
    let store = schema.url.as_str();
    let job = dir.join("job.toml");
    let queued = run(
        ctx,
        dir,
        &["run", arg(&job)?, "--queue-only", "--store", store],
    )?;
    anyhow::ensure!(
        queued.code == Some(0),
        "queueing the run failed: {}",
        queued.describe()
    );
    let started = Instant::now();
    let running = (0..workers)
        .map(|i| {
            let args = ["worker", "--store", store, "--exit-when-idle"];
            spawn_as(ctx, dir, &format!("worker-{i}"), &args)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut exits_ok = true;
    for worker in running {
        exits_ok &= worker.wait()?.code == Some(0);
    }
    let wall = started.elapsed();
    let results = dir.join("results.jsonl");
    let export = ["export", "job", "--store", store, "--out", arg(&results)?];
    let exported = run(ctx, dir, &export)?;
    anyhow::ensure!(
        exported.code == Some(0),
        "exporting the run failed: {}",
        exported.describe()
    );
    Ok(WorkersRun {
        wall,
        results,
        exits_ok,
    })
}

/// A schema of its own in the PostgreSQL database, dropped when this is.
pub(super) struct Schema {
    base: String,
    name: String,
    /// The store URL that works inside the schema.
    pub(super) url: String,
}

impl Schema {
    pub(super) fn create(base: &str, tag: &str) -> anyhow::Result<Schema> {
        let name = format!("sluice_bench_{tag}_{}", std::process::id());
        psql(
            base,
            &format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"),
        )?;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{name}");
        Ok(Schema {
            base: base.to_string(),
            name,
            url,
        })
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = psql(
            &self.base,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

/// Runs `sql` with the `psql` client (the bench links no PostgreSQL driver).
fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let out = Command::new("psql")
        .args(["-qAt", url, "-c", sql])
        .output()
        .context("running psql")?;
    anyhow::ensure!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The PostgreSQL URL to work on, or the scenario `name` skipped with the
/// reason (no `sluice worker`, no `psql`, no server) — except where
/// PostgreSQL is required (CI: SLUICE_REQUIRE_POSTGRES=1), where any of
/// them missing is an error.
pub(super) fn postgres_or_skip(
    ctx: &Ctx,
    name: &'static str,
    about: &'static str,
) -> anyhow::Result<Result<String, Scenario>> {
    let required = std::env::var("SLUICE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let skip = |reason: &str| -> anyhow::Result<Result<String, Scenario>> {
        anyhow::ensure!(
            !required,
            "{name}: {reason}, and PostgreSQL is required (SLUICE_REQUIRE_POSTGRES=1)"
        );
        Ok(Err(Scenario::skipped(name, about, reason)))
    };
    let has_worker = Command::new(&ctx.bin)
        .args(["worker", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_worker {
        return skip("needs sluice worker (issue 7)");
    }
    let has_psql = Command::new("psql")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_psql {
        return skip("needs psql (postgresql-client) to give each run a schema of its own");
    }
    let postgres = std::env::var("SLUICE_BENCH_POSTGRES").unwrap_or_else(|_| POSTGRES.into());
    if let Err(e) = psql(&postgres, "SELECT 1") {
        if required {
            return Err(e.context("PostgreSQL is required (SLUICE_REQUIRE_POSTGRES=1)"));
        }
        return skip("needs PostgreSQL at 127.0.0.1:5432 (or SLUICE_BENCH_POSTGRES)");
    }
    Ok(Ok(postgres))
}

pub(super) fn scale_out(ctx: &Ctx) -> anyhow::Result<Scenario> {
    let postgres = match postgres_or_skip(ctx, "scale-out", ABOUT)? {
        Ok(url) => url,
        Err(skipped) => return Ok(skipped),
    };
    let n = ctx.size(2_000, 30_000);
    let free = Mock::start(ctx, &[])?;
    let mut runs = Vec::new();
    for workers in [1, 3] {
        let dir = ctx.dir(&format!("scale-out-{workers}"))?;
        write_job(&dir, &free.url("/v1"), n, None)?;
        free.reset()?;
        let run = run_on_workers(ctx, &dir, &postgres, workers)?;
        let stats = free.stats()?;
        runs.push((run, stats.ok as f64 / span_seconds(&stats)));
    }
    let limited = Mock::start(ctx, &["--rpm", &RPM.to_string(), "--latency-ms", "20"])?;
    let held_n = ctx.size(60, 1_200);
    let dir = ctx.dir("scale-out-rpm")?;
    write_job(&dir, &limited.url("/v1"), held_n, Some(RPM))?;
    let held = run_on_workers(ctx, &dir, &postgres, 3)?;
    let stats = limited.stats()?;
    let mut s = Scenario::new(
        "scale-out",
        format!(
            "{} calls at zero latency on 1 and on 3 workers; {} at rpm {RPM} (the mock enforcing it) on 3",
            fmt_int(n),
            fmt_int(held_n)
        ),
    );
    let exits_ok = runs.iter().all(|(run, _)| run.exits_ok) && held.exits_ok;
    s.check("every worker exited 0 (1 + 3 + 3)", exits_ok);
    for (run, _) in &runs {
        check_units(&mut s, &run.results, n, true)?;
    }
    check_units(&mut s, &held.results, held_n, true)?;
    let (one, three) = (runs[0].1, runs[1].1);
    s.figure(
        Figure::new(
            "sustained calls/s, 3 workers vs 1",
            one,
            three,
            |v| rate(v, "/s"),
            Target::RatioAtLeast(2.0),
        )
        .bound_text(format!("1 worker {}", rate(one, "/s"))),
    );
    let shared = stats.ok.saturating_sub(1) as f64 / span_seconds(&stats) * 60.0;
    s.figure(Figure::new(
        "shared rate, 3 workers",
        RPM as f64,
        shared,
        |v| rate(v, "/min"),
        Target::RatioAtLeast(0.95),
    ));
    check_no_429(&mut s, &stats);
    s.note(format!(
        "the mock's busiest 60 s window under the shared rpm held {} requests",
        stats.max_requests_per_minute
    ));
    s.note(format!(
        "1 worker took {}, 3 workers {}",
        secs(runs[0].0.wall.as_secs_f64()),
        secs(runs[1].0.wall.as_secs_f64())
    ));
    Ok(s)
}

/// DIR/job.toml and DIR/items.jsonl: `n` chat calls to `url`, at `rpm` if given.
pub(super) fn write_job(dir: &Path, url: &str, n: u64, rpm: Option<u64>) -> anyhow::Result<()> {
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
