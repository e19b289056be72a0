//! `sluice bench`: every performance claim measured on this machine against
//! a local `sluice mock`, each as a ratio to its physical bound
//! (BENCHMARKS.md explains each bound).
//!
//! Correctness checks (nothing lost or doubled, no 429 where none is allowed,
//! no crash) fail the suite in every mode; speed targets fail it only in the
//! full run, since `--quick` is a smoke test for CI on loaded machines.

use std::process::ExitCode;
use std::time::Instant;

use super::UsageError;
use crate::cli::BenchArgs;

mod allowance;
mod crash;
mod data;
mod engine;
mod faults;
mod harness;
mod limits;
mod loadgen;
mod pipeline;
mod report;
mod runs;
mod scale;
mod server;
mod soak;

use harness::Ctx;
use report::{Report, Scenario};

type Measure = fn(&Ctx) -> anyhow::Result<Scenario>;

/// Every scenario, in the order they run and print.
const SCENARIOS: &[(&str, Measure)] = &[
    ("latency", limits::latency),
    ("rpm", limits::rpm),
    ("tpm", limits::tpm),
    ("overhead", engine::overhead),
    ("memory", engine::memory),
    ("pipeline", pipeline::pipeline),
    ("crash-resume", crash::crash_resume),
    ("scale-out", scale::scale_out),
    ("faults", faults::faults),
    ("unknown-rpm", limits::unknown_rpm),
    ("allowance-full", allowance::allowance_full),
    ("allowance-binds", allowance::allowance_binds),
    ("server", server::server),
];

/// Scenarios run only when named with `--only` (they take minutes).
const ON_REQUEST: &[&str] = &["soak"];

pub(crate) fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let mut names: Vec<&str> = SCENARIOS.iter().map(|(name, _)| *name).collect();
    names.extend(ON_REQUEST);
    if let Some(unknown) = args.only.iter().find(|o| !names.contains(&o.as_str())) {
        return Err(UsageError(format!(
            "--only {unknown}: no such scenario; choose from {}",
            names.join(", ")
        ))
        .into());
    }
    if cfg!(debug_assertions) {
        eprintln!("bench: this is a debug build; its figures say nothing about sluice's speed (use --release)");
    }
    let ctx = Ctx::new(args.quick)?;
    let started = Instant::now();
    let mut scenarios = Vec::new();
    for (name, measure) in SCENARIOS {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        eprintln!("bench: {name} …");
        let began = Instant::now();
        let mut scenario = measure(&ctx).unwrap_or_else(|e| Scenario::crashed(name, &e));
        scenario.seconds = began.elapsed().as_secs_f64();
        if harness::interrupted() {
            // The scenario's children have stopped: nothing writes there now.
            drop(ctx);
            return Ok(ExitCode::from(130));
        }
        ctx.clear();
        eprintln!(
            "bench: {name} {} in {:.1} s",
            match (scenario.status, scenario.correct, scenario.targets_met) {
                (report::Status::Skipped, ..) => "skipped",
                (_, false, _) => "BROKEN",
                (_, true, false) => "missed a target",
                (_, true, true) => "ok",
            },
            scenario.seconds
        );
        scenarios.push(scenario);
    }
    if args.only.iter().any(|o| o == "soak") && !harness::interrupted() {
        eprintln!("bench: soak for {} min …", args.minutes);
        let began = Instant::now();
        let mut scenario =
            soak::soak(&ctx, args.minutes).unwrap_or_else(|e| Scenario::crashed("soak", &e));
        scenario.seconds = began.elapsed().as_secs_f64();
        eprintln!(
            "bench: soak {} in {:.1} s",
            if scenario.correct { "ok" } else { "BROKEN" },
            scenario.seconds
        );
        scenarios.push(scenario);
    }
    let report = Report::new(args.quick, started.elapsed().as_secs_f64(), scenarios);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
