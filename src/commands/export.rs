//! `sluice export RUN`: a run's results in input order, JSONL or CSV.

use std::process::ExitCode;

use anyhow::Context;
use sluice_engine::{export_run, ExportFormat};

use super::UsageError;
use crate::cli::{ExportArgs, Format};

pub(crate) fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let location = super::existing_store(&args.store)?;
    let mut store = location.open()?;
    let Some(run) = store.find_run(&args.run)? else {
        return Err(UsageError(format!(
            "no run {:?} in {location}; list runs with `sluice runs`",
            args.run
        ))
        .into());
    };
    match &args.out {
        Some(out) => {
            super::run::check_out(out, args.format.is_some(), &[])?;
            let format = match args.format {
                Some(f) => to_format(f),
                None => ExportFormat::from_path(out),
            };
            let written = super::run::write_atomically(&mut *store, &run.id, out, format)?;
            eprintln!("{written} items of {} → {}", run.id, out.display());
        }
        None => {
            let format = args.format.map(to_format).unwrap_or(ExportFormat::Jsonl);
            let stdout = std::io::stdout();
            let mut writer = std::io::BufWriter::new(stdout.lock());
            export_run(&mut *store, &run.id, format, &mut writer)?;
            std::io::Write::flush(&mut writer).context("writing results to stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn to_format(format: Format) -> ExportFormat {
    match format {
        Format::Csv => ExportFormat::Csv,
        Format::Jsonl => ExportFormat::Jsonl,
    }
}
