//! `sluice completions SHELL` and `sluice man`: generated from the same clap
//! definitions as the parser, so they never drift from it.

use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};

pub(crate) fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    let mut stdout = std::io::stdout();
    clap_complete::generate(args.shell, &mut command, "sluice", &mut stdout);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let command = Cli::command();
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            eprintln!("man pages written to {}", dir.display());
        }
        None => {
            let mut stdout = std::io::stdout();
            match clap_mangen::Man::new(command).render(&mut stdout) {
                // `sluice man | head` is fine.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.context("writing the man page to stdout")?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
