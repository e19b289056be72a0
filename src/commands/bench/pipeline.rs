//! A job file of 4 chat steps × 50 ms: streamed (an item enters step 2 as soon
//! as it leaves step 1) against the same steps run one after another.

use super::data::{fmt_int, write_items};
use super::harness::{Ctx, Mock};
use super::report::{Figure, Scenario, Target};
use super::runs::{check_exit, check_units, run_job, secs};

const JOB: &str = r#"
{units}
[input]
path = "items.jsonl"
[providers.mock]
base_url = "{url}"
{steps}
{output}
"#;

const STEP: &str = r#"
[[steps]]
name = "s{k}"
kind = "chat"
provider = "mock"
model = "m"
messages = [{ role = "user", content = "step {k} of {{ item.q }}" }]
params = { max_tokens = 8 }
concurrency = {concurrency}
"#;

/// The job; `units` sets its unit window (`None`: derived from the steps).
fn job(url: &str, units: Option<u64>, steps: &str, output: bool) -> String {
    let units = units.map_or(String::new(), |n| format!("concurrency = {n}"));
    JOB.replace("{units}", &units)
        .replace("{url}", url)
        .replace("{steps}", steps)
        .replace(
            "{output}",
            if output {
                "[output]\npath = \"results.jsonl\""
            } else {
                ""
            },
        )
}

fn step(k: u64, concurrency: u64) -> String {
    STEP.replace("{k}", &k.to_string())
        .replace("{concurrency}", &concurrency.to_string())
}

/// Bound: one step's share (N × latency ÷ concurrency) plus the pipeline's
/// fill, (steps − 1) × latency.
pub(super) fn pipeline(ctx: &Ctx) -> anyhow::Result<Scenario> {
    let (n, latency_ms, concurrency, steps) = (ctx.size(400, 2_000), 50u64, 50u64, 4u64);
    let dir = ctx.dir("pipeline")?;
    let mock = Mock::start(ctx, &["--latency-ms", &latency_ms.to_string()])?;
    write_items(&dir.join("items.jsonl"), n)?;
    let url = mock.url("/v1");
    let all: String = (0..steps).map(|k| step(k, concurrency)).collect();
    // No `concurrency`: the unit window is derived from the steps' caps
    // (4 × 50), as a user who sets only the steps' limits gets it.
    let streamed = run_job(ctx, &dir, &job(&url, None, &all, true))?;
    let mut s = Scenario::new(
        "pipeline",
        format!(
            "job file, {} items × {steps} chat steps × {latency_ms} ms, concurrency {concurrency} \
             per step, unit window derived (no `concurrency`); bound N × latency ÷ concurrency + \
             (steps − 1) × latency",
            fmt_int(n)
        ),
    );
    check_exit(&mut s, &streamed, &[0]);
    check_units(&mut s, &dir.join("results.jsonl"), n, true)?;
    let mut barriers = 0.0;
    let mut every_step_done = true;
    for k in 0..steps {
        let one = run_job(
            ctx,
            &dir,
            &job(&url, Some(concurrency), &step(k, concurrency), false),
        )?;
        barriers += one.wall.as_secs_f64();
        every_step_done &= one.code == Some(0) && one.recorded("done") == n;
    }
    s.check(
        format!("each one-step run finished all {} items", fmt_int(n)),
        every_step_done,
    );
    let latency = latency_ms as f64 / 1000.0;
    let bound = n as f64 * latency / concurrency as f64 + (steps - 1) as f64 * latency;
    let streaming = streamed.wall.as_secs_f64();
    s.figure(Figure::new(
        "streaming wall time",
        bound,
        streaming,
        secs,
        Target::RatioAtMost(1.15),
    ));
    s.figure(
        Figure::new(
            "steps one after another (barriers)",
            streaming,
            barriers,
            secs,
            Target::RatioAtLeast(3.0),
        )
        .bound_text(format!("streaming {}", secs(streaming))),
    );
    Ok(s)
}
