//! `sluice export RUN`: a run's results in input order, JSONL, CSV or Parquet.

use std::process::ExitCode;

use anyhow::Context;
use sluice_engine::{export_with, ExportFormat, ExportOptions};

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
    let format = match (args.format, &args.out) {
        (Some(f), _) => to_format(f),
        (None, Some(out)) => ExportFormat::from_path(out).map_err(UsageError)?,
        (None, None) => ExportFormat::Jsonl,
    };
    if args.flat && format != ExportFormat::Jsonl {
        return Err(
            UsageError("--flat applies to JSONL; CSV and Parquet are flat already".into()).into(),
        );
    }
    let options = ExportOptions {
        format,
        include_item: args.include_item,
        flat: args.flat,
    };
    match &args.out {
        Some(out) => {
            super::run::check_out(out, args.format.is_some(), &[])?;
            let written = super::run::write_atomically(&mut *store, &run.id, out, options)?;
            eprintln!("{written} items of {} → {}", run.id, out.display());
        }
        None => {
            let mut writer = std::io::BufWriter::new(std::io::stdout());
            export_with(&mut *store, &run.id, options, &mut writer)?;
            std::io::Write::flush(&mut writer).context("writing results to stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn to_format(format: Format) -> ExportFormat {
    match format {
        Format::Csv => ExportFormat::Csv,
        Format::Jsonl => ExportFormat::Jsonl,
        Format::Parquet => ExportFormat::Parquet,
    }
}
