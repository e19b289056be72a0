//! The `sluice` binary: parses the command line and dispatches to a command.

// The binary's stdout is its data channel (results, --json); the lint guards the libraries.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use clap::Parser;

#[macro_use]
mod output;
mod cli;
mod commands;
mod display;
mod events;
mod help;
mod locate;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging();
    match commands::dispatch(cli) {
        Ok(code) => code,
        // The reader of stdout went away (`| head`): nothing to report.
        Err(error) if output::closed_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", output::describe(&error));
            // Configuration and input: 2 (nothing was sent); the store and
            // the runtime: 1. The engine's error knows which it is.
            if let Some(engine) = error.downcast_ref::<sluice_engine::Error>() {
                return ExitCode::from(engine.exit_code());
            }
            let invalid = error.downcast_ref::<commands::UsageError>().is_some()
                || error.downcast_ref::<sluice_spec::SpecError>().is_some();
            ExitCode::from(if invalid { 2 } else { 1 })
        }
    }
}

/// Logs go to stderr, filtered by `SLUICE_LOG` (e.g. `SLUICE_LOG=debug`); warnings by default.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
