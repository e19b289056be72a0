//! One module per verb; `dispatch` picks it.

use std::process::ExitCode;

use sluice_store::StoreLocation;

use crate::cli::{Cli, Command, StoreArg};

mod bench;
mod control;
mod demo;
mod export;
mod job;
mod mock;
mod openai;
mod plan;
mod run;
mod serve;
mod shell;
mod status;
mod worker;

/// A command line that is wrong in a way clap cannot see (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// The store of a command about an existing run, or why there is none.
pub(crate) fn existing_store(arg: &StoreArg) -> anyhow::Result<StoreLocation> {
    arg.existing().ok_or_else(|| {
        UsageError(
            "no store here: no .sluice/sluice.db in this directory or any above it. A run \
             keeps its store next to its job or input file (its first line names it): cd \
             there, or pass --store PATH"
                .into(),
        )
        .into()
    })
}

/// Runs the chosen command; `Ok` carries the exit code.
pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    // The process's one engine: the runs it starts share its providers.
    let engine = sluice_engine::Engine::new();
    match cli.command {
        Command::Run(args) => run::run(args, &engine),
        Command::Plan(args) => plan::plan(args),
        Command::Retry(args) => job::retry(args, &engine),
        Command::Status(args) => status::status(args),
        Command::Runs(args) => status::runs(args),
        Command::Export(args) => export::export(args),
        Command::Pause(args) => control::pause(args),
        Command::Resume(args) => control::resume(args),
        Command::Cancel(args) => control::cancel(args),
        Command::Mock(args) => mock::mock(args),
        Command::Demo(args) => demo::demo(args, &engine),
        Command::Worker(args) => worker::worker(args, &engine),
        Command::Bench(args) => bench::bench(args),
        Command::Serve(args) => serve::serve(args),
        Command::Completions(args) => shell::completions(args),
        Command::Man(args) => shell::man(args),
    }
}
