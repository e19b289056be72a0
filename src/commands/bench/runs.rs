//! Runs and checks the scenarios share: a quick-mode batch over plain chat
//! requests, a job file, and the correctness checks of what they recorded.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sluice_mock::MockStats;

use super::data::write_requests;
use super::harness::{arg, run, Ctx, Exit, Mock};
use super::report::{Figure, Scenario, Target};

/// The usual quick-mode scenario: a scratch directory, a mock, and `n` chat
/// requests in DIR/in.jsonl (ids `r0`…).
pub(super) struct Batch {
    pub(super) dir: PathBuf,
    pub(super) mock: Mock,
    pub(super) input: PathBuf,
    pub(super) n: u64,
}

impl Batch {
    /// `n` short requests (`q{i} ` + 40 characters, `max_tokens` 16).
    pub(super) fn new(ctx: &Ctx, name: &str, n: u64, mock_args: &[&str]) -> anyhow::Result<Batch> {
        Batch::with_prompts(ctx, name, n, mock_args, &|_| 40, 16)
    }

    /// `n` requests with `prompt_chars(i)` filler characters each.
    pub(super) fn with_prompts(
        ctx: &Ctx,
        name: &str,
        n: u64,
        mock_args: &[&str],
        prompt_chars: &dyn Fn(u64) -> usize,
        max_tokens: u64,
    ) -> anyhow::Result<Batch> {
        let dir = ctx.dir(name)?;
        let mock = Mock::start(ctx, mock_args)?;
        let input = dir.join("in.jsonl");
        write_requests(&input, n, prompt_chars, max_tokens)?;
        Ok(Batch {
            dir,
            mock,
            input,
            n,
        })
    }

    /// `sluice run in.jsonl --url MOCK --store DIR/store.db --out DIR/out.jsonl
    /// --fresh --json EXTRA...`.
    pub(super) fn run(&self, ctx: &Ctx, extra: &[&str]) -> anyhow::Result<Exit> {
        let (store, out) = (self.dir.join("store.db"), self.dir.join("out.jsonl"));
        let url = self.mock.chat_url();
        let mut args = vec![
            "run",
            arg(&self.input)?,
            "--url",
            &url,
            "--store",
            arg(&store)?,
        ];
        args.extend(["--out", arg(&out)?, "--fresh", "--json"]);
        args.extend(extra);
        run(ctx, &self.dir, &args)
    }

    /// The checks every quick-mode run must pass: a clean exit and DIR/out.jsonl
    /// holding each of the `n` items once, all answered 200.
    pub(super) fn check(&self, s: &mut Scenario, exit: &Exit) -> anyhow::Result<()> {
        check_batch(s, exit, &self.dir, self.n)
    }
}

/// [`Batch::check`] for a results file DIR/out.jsonl of `n` requests.
pub(super) fn check_batch(s: &mut Scenario, exit: &Exit, dir: &Path, n: u64) -> anyhow::Result<()> {
    check_exit(s, exit, &[0]);
    let out = dir.join("out.jsonl");
    if out.exists() {
        super::data::tally_batch(&out, n)?.check(s, n, true);
    } else {
        s.check("the results file was written", false);
    }
    Ok(())
}

/// Writes `toml` to DIR/job.toml and runs it: `sluice run DIR/job.toml --fresh --store
/// DIR/store.db --json`.
pub(super) fn run_job(ctx: &Ctx, dir: &Path, toml: &str) -> anyhow::Result<Exit> {
    let job = dir.join("job.toml");
    std::fs::write(&job, toml).with_context(|| format!("writing {}", job.display()))?;
    let store = dir.join("store.db");
    run(
        ctx,
        dir,
        &[
            "run",
            arg(&job)?,
            "--fresh",
            "--store",
            arg(&store)?,
            "--json",
        ],
    )
}

/// Checks that `exit` is one of `codes`.
pub(super) fn check_exit(s: &mut Scenario, exit: &Exit, codes: &[i32]) {
    let ok = exit.code.is_some_and(|c| codes.contains(&c));
    let expected = codes
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(" or ");
    let what = if ok {
        format!("the run exited {expected}")
    } else {
        format!("the run exited {expected} ({})", exit.describe())
    };
    s.check(what, ok);
}

/// The checks of a job's results file: each of the `n` units once and, with
/// `all_ok`, every one done (else every failure with its reason).
pub(super) fn check_units(
    s: &mut Scenario,
    results: &Path,
    n: u64,
    all_ok: bool,
) -> anyhow::Result<()> {
    if results.exists() {
        super::data::tally_units(results, n)?.check(s, n, all_ok);
    } else {
        s.check("the results file was written", false);
    }
    Ok(())
}

/// The check that the client, told the limit, drew no 429.
pub(super) fn check_no_429(s: &mut Scenario, stats: &MockStats) {
    s.check(
        format!("no 429 ({} seen)", stats.rate_limited),
        stats.rate_limited == 0,
    );
}

/// The whole process's wall time against `bound` seconds.
pub(super) fn wall_figure(bound: f64, exit: &Exit, target: Target) -> Figure {
    Figure::new("wall time", bound, exit.wall.as_secs_f64(), secs, target)
}

/// Seconds between the mock's first and its last 200 (at least 1 ms).
pub(super) fn span_seconds(stats: &MockStats) -> f64 {
    match (stats.first_ok_unix_ms, stats.last_ok_unix_ms) {
        (Some(first), Some(last)) => (last.saturating_sub(first).max(1)) as f64 / 1000.0,
        _ => f64::NAN,
    }
}

/// Seconds, as the table shows them.
pub(super) fn secs(v: f64) -> String {
    format!("{v:.2} s")
}

/// A rate, rounded, with thousands separators: `12,345/s`.
pub(super) fn rate(v: f64, unit: &str) -> String {
    if v.is_finite() {
        format!("{}{unit}", super::data::fmt_int(v.round() as u64))
    } else {
        format!("?{unit}")
    }
}
