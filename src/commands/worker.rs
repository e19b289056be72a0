//! `sluice worker --store postgres://…`: join shared runs and work their units.

use std::process::ExitCode;

use sluice_engine::{run_worker, Engine, WorkerConfig, WorkerEvent};

use crate::cli::WorkerArgs;
use crate::display::fmt_count;

pub(crate) fn worker(args: WorkerArgs, engine: &Engine) -> anyhow::Result<ExitCode> {
    let cfg = WorkerConfig {
        store: args.store.here(),
        run: args.run.clone(),
        exit_when_idle: args.exit_when_idle,
        lease: args.lease,
        poll: args.poll,
        early_stop: !args.no_early_stop,
        engine: engine.clone(),
    };
    eprintln!("sluice worker: looking for runs in {}", cfg.store);
    let stopped = run_worker(&cfg, &mut |event| match event {
        WorkerEvent::Joined(run) => eprintln!("sluice worker: joined {}", run.id),
        WorkerEvent::Left(report) => eprintln!(
            "sluice worker: left {}{}: {} done · {} failed by this worker · {} calls",
            report.run_id,
            if report.interrupted {
                " (stopping)"
            } else {
                ""
            },
            fmt_count(report.progress.done),
            fmt_count(report.progress.failed),
            fmt_count(report.progress.attempts),
        ),
        WorkerEvent::Skipped { run_id, error } => {
            eprintln!(
                "sluice worker: cannot work on {run_id} here: {error:#}; leaving it to others"
            )
        }
    })?;
    if stopped {
        eprintln!("sluice worker: stopped; its unfinished units are back in the queue");
    } else {
        eprintln!("sluice worker: no run has units left to claim");
    }
    // Told to stop is how a worker is meant to end: not a failure.
    Ok(ExitCode::SUCCESS)
}
