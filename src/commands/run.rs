//! `sluice run`: quick mode over a JSONL file, with progress and a summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use sluice_engine::{
    run_quick, ExportFormat, ExportOptions, InputSource, Progress, QuickConfig, RunReport,
};
use sluice_limit::Backoff;
use sluice_store::{Store, StoreLocation};

use super::UsageError;
use crate::cli::RunArgs;
use crate::display::{self, ProgressDisplay};

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.input.ends_with(".toml") {
        return super::job::run(args);
    }
    if args.queue_only {
        return Err(UsageError(
            "--queue-only applies to job files (.toml); quick-mode runs are worked by the process that starts them".into(),
        )
        .into());
    }
    if !args.sets.is_empty() {
        return Err(UsageError(
            "--set applies to job files (.toml); with a JSONL input use the flags directly".into(),
        )
        .into());
    }
    let Some(url) = args.url.clone() else {
        return Err(UsageError(
            "--url is required with a JSONL input, e.g. --url http://127.0.0.1:8080/v1/chat/completions".into(),
        )
        .into());
    };
    let config = QuickConfig {
        input: if args.input == "-" {
            InputSource::Stdin
        } else {
            InputSource::Path(PathBuf::from(&args.input))
        },
        url,
        concurrency: args.concurrency.unwrap_or(64),
        grow_to_rate: args.concurrency.is_none(),
        rpm: args.rpm,
        tpm: args.tpm,
        retries: args.retries,
        timeout: args.timeout,
        api_key_env: args.api_key_env.clone(),
        store: args.store.store.clone(),
        fresh: args.fresh,
        skip_bad: args.skip_bad,
        name: args.name.clone(),
        backoff: Backoff {
            base_ms: args.backoff_base.as_millis() as u64,
            cap_ms: args.backoff_cap.as_millis() as u64,
        },
    };
    let out = results_target(args.out.as_deref(), args.include_item)?;
    let (report, code) = execute(&config, args.progress_interval, !args.json)?;
    deliver(&args.store.store, &report, out, args.json)?;
    Ok(code)
}

/// Where and how a run's results go at its end: a file and its format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResultsFile<'a> {
    pub(crate) path: &'a Path,
    pub(crate) options: ExportOptions,
}

/// Checks `--out` before anything is sent: its extension must name a format.
pub(crate) fn results_target(
    out: Option<&Path>,
    include_item: bool,
) -> anyhow::Result<Option<ResultsFile<'_>>> {
    let Some(path) = out else {
        if include_item {
            return Err(UsageError(
                "--include-item applies to the --out file; give --out results.jsonl|.csv|.parquet, or use `sluice export RUN --include-item`".into(),
            )
            .into());
        }
        return Ok(None);
    };
    let format = ExportFormat::from_path(path).map_err(UsageError)?;
    Ok(Some(ResultsFile {
        path,
        options: ExportOptions {
            format,
            include_item,
        },
    }))
}

/// Runs `config` with live progress on stderr and the summary after it.
pub(crate) fn execute(
    config: &QuickConfig,
    progress_interval: f64,
    summary_on_stderr: bool,
) -> anyhow::Result<(RunReport, ExitCode)> {
    with_progress(progress_interval, summary_on_stderr, |p| {
        run_quick(config, p)
    })
}

/// Runs `work` with live progress on stderr, then prints the summary and
/// picks the exit code.
pub(crate) fn with_progress(
    progress_interval: f64,
    summary_on_stderr: bool,
    work: impl FnOnce(Arc<Progress>) -> sluice_engine::Result<RunReport>,
) -> anyhow::Result<(RunReport, ExitCode)> {
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(progress.clone(), progress_interval);
    let result = work(progress);
    display.finish();
    let report = result?;
    if summary_on_stderr {
        eprint!("{}", display::summary(&report));
    }
    let code = if report.interrupted {
        ExitCode::from(130)
    } else if report.progress.failed > 0 || report.progress.budget_reached {
        // A spent budget leaves items pending: not every item succeeded.
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    };
    Ok((report, code))
}

/// Writes the results (to `out`, else stdout) and the JSON summary.
pub(crate) fn deliver(
    location: &StoreLocation,
    report: &RunReport,
    out: Option<ResultsFile<'_>>,
    json: bool,
) -> anyhow::Result<()> {
    let mut store = location.open()?;
    if let Some(file) = out {
        let written = write_atomically(&mut *store, &report.run_id, file.path, file.options)?;
        if !json {
            let unit = match file.options.format {
                ExportFormat::Jsonl => "lines",
                ExportFormat::Csv | ExportFormat::Parquet => "rows",
            };
            eprintln!("  results    {written} {unit} → {}", file.path.display());
        }
    } else if !json {
        let mut stdout = std::io::BufWriter::new(std::io::stdout());
        sluice_engine::export_run(&mut *store, &report.run_id, ExportFormat::Jsonl, &mut stdout)?;
        std::io::Write::flush(&mut stdout).context("writing results to stdout")?;
    }
    if json {
        let counts = store.counts(&report.run_id)?;
        let summary = serde_json::json!({
            "run": report.run_id,
            "resumed": report.resumed,
            "interrupted": report.interrupted,
            "this_run": report.progress,
            "breakers": report.breakers,
            "recorded": counts,
            "notes": report.notes,
            "out": out.map(|f| f.path.display().to_string()),
        });
        println!("{summary}");
    }
    Ok(())
}

/// Exports to a temporary file beside `out` and renames it into place, so a
/// killed process never leaves a half-written results file.
pub(crate) fn write_atomically(
    store: &mut dyn Store,
    run_id: &str,
    out: &Path,
    options: ExportOptions,
) -> anyhow::Result<u64> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.partial",
        out.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("results")
    ));
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let written = sluice_engine::export_with(store, run_id, options, &mut writer)?;
    // No fsync: the store is the durable copy and `sluice export` rewrites this
    // file from it; the rename alone keeps a killed process from leaving half a file.
    writer.into_inner().context("flushing results")?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming into {}", out.display()))?;
    Ok(written)
}
