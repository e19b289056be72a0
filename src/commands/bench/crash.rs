//! `kill -9` at random points, then the same command again: every item
//! exactly once in the results, and only what was on the wire sent twice.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::data::fmt_int;
use super::harness::{arg, run, spawn, Ctx};
use super::report::{Figure, Scenario, Target};
use super::runs::Batch;

const KILLS: u64 = 3;

pub(super) fn crash_resume(ctx: &Ctx) -> anyhow::Result<Scenario> {
    let (n, latency_ms, concurrency) =
        (ctx.size(1_000, 6_000), ctx.size(20, 50), ctx.size(20, 100));
    let lat = latency_ms.to_string();
    let mock_args = ["--latency-ms", &lat, "--jitter-ms", &lat, "--seed", "4"];
    let batch = Batch::new(ctx, "crash-resume", n, &mock_args)?;
    let (dir, mock, input) = (&batch.dir, &batch.mock, &batch.input);
    let (store, out) = (dir.join("store.db"), dir.join("out.jsonl"));
    let url = mock.chat_url();
    let c = concurrency.to_string();
    // No --fresh: resuming is the default, the same command every time.
    let args = [
        "run",
        arg(input)?,
        "--url",
        &url,
        "--store",
        arg(&store)?,
        "--out",
        arg(&out)?,
        "--concurrency",
        &c,
        "--json",
    ];
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kill_points = Vec::new();
    for _ in 0..KILLS {
        let before = mock.stats()?.ok;
        // A random point: 5–25% of the items further in. Three kills leave at
        // least a quarter for the final run, so each lands mid-run.
        let target = before + rng.u64(n / 20..=n / 4);
        let mut child = spawn(ctx, dir, &args)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if child.poll()?.is_some() {
                break; // Finished before the kill: not counted as landed.
            }
            let ok = mock.stats()?.ok;
            if ok >= target {
                child.kill()?;
                kill_points.push(ok);
                break;
            }
            if Instant::now() > deadline {
                bail!("the run made no progress for 120 s ({ok} answers, waiting for {target})");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let sent_before_last = mock.stats()?.requests;
    let exit = run(ctx, dir, &args)?;
    let stats = mock.stats()?;
    let landed = kill_points.len() as u64;
    let mut s = Scenario::new(
        "crash-resume",
        format!(
            "{} calls, {latency_ms}–{} ms, --concurrency {concurrency}: kill -9 at {KILLS} random \
             points (seed {seed}), then the same command to the end",
            fmt_int(n),
            2 * latency_ms
        ),
    );
    s.check(
        format!("all {KILLS} kills landed mid-run ({landed} did)"),
        landed == KILLS && sent_before_last < n,
    );
    batch.check(&mut s, &exit)?;
    s.check(
        format!(
            "every request the mock answered twice is a resend (answered {} = {} items + {} twice)",
            fmt_int(stats.ok),
            fmt_int(n),
            stats.duplicate_requests
        ),
        stats.ok == n + stats.duplicate_requests,
    );
    s.figure(
        Figure::new(
            "requests sent twice",
            (landed.max(1) * concurrency) as f64,
            stats.duplicate_requests as f64,
            |v| format!("{v:.0}"),
            Target::RatioAtMost(1.0),
        )
        .bound_text(format!("{landed} kills × {concurrency}")),
    );
    s.note(format!(
        "killed after {} answers; {:.1} sent twice per kill",
        kill_points
            .iter()
            .map(|k| fmt_int(*k))
            .collect::<Vec<_>>()
            .join(", "),
        stats.duplicate_requests as f64 / landed.max(1) as f64
    ));
    Ok(s)
}
