//! `sluice run`: quick mode over a JSONL file, with progress and a summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use sluice_engine::{
    run_quick, run_quick_with, ExportFormat, ExportOptions, InputSource, Progress, QuickConfig,
    RunHooks, RunReport,
};
use sluice_limit::Backoff;
use sluice_store::{Store, StoreLocation};

use super::UsageError;
use crate::cli::RunArgs;
use crate::display::{self, ProgressDisplay};

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if let Some(problem) = args.name.as_deref().and_then(sluice_spec::name_problem) {
        let name = args.name.as_deref().unwrap_or_default();
        return Err(UsageError(format!("--name {name:?} {problem}")).into());
    }
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
    let conventions = super::openai::Conventions::resolve(&args)?;
    let url = conventions.url.clone();
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
        api_key_env: conventions.api_key_env.clone(),
        store: args.store.store.clone(),
        fresh: args.fresh,
        skip_bad: args.skip_bad,
        name: args.name.clone(),
        backoff: Backoff {
            base_ms: args.backoff_base.as_millis() as u64,
            cap_ms: args.backoff_cap.as_millis() as u64,
        },
        limit: args.limit,
        early_stop: !args.no_early_stop,
    };
    check_include_item(&args, args.out.as_deref())?;
    let out = results_target(args.out.as_deref(), args.include_item)?;
    if let Some(line) = conventions.announcement() {
        eprintln!("{line}");
    }
    let (report, code, ending) = watched(
        Summary::of(&args),
        args.progress_interval,
        args.include_item,
        |p, hooks| run_quick_with(&config, p, hooks),
    )?;
    deliver(&args.store.store, &report, out, ending)?;
    Ok(code)
}

/// How the end of a run is told on stdout, as the flags ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Summary {
    /// A summary for people on stderr; results on stdout unless --out.
    Text,
    /// `--json`: the summary as one JSON object on stdout.
    Json,
    /// `--events`: the run's events on stdout, the summary as the `end` event.
    Events,
}

impl Summary {
    pub(crate) fn of(args: &RunArgs) -> Summary {
        if args.events {
            Summary::Events
        } else if args.json {
            Summary::Json
        } else {
            Summary::Text
        }
    }
}

/// What [`deliver`] ends a run with.
pub(crate) enum Ending {
    Text,
    Json,
    /// The event stream, to be ended with the summary.
    Events(crate::events::EventStream),
}

/// Runs `work` with progress on stderr and, for `Summary::Events`, its
/// events on stdout, which [`deliver`] ends.
pub(crate) fn watched(
    summary: Summary,
    progress_interval: f64,
    include_item: bool,
    work: impl FnOnce(Arc<Progress>, RunHooks) -> sluice_engine::Result<RunReport>,
) -> anyhow::Result<(RunReport, ExitCode, Ending)> {
    match summary {
        Summary::Text | Summary::Json => {
            let text = summary == Summary::Text;
            let (report, code) =
                with_progress(progress_interval, text, |p| work(p, RunHooks::default()))?;
            let ending = if text { Ending::Text } else { Ending::Json };
            Ok((report, code, ending))
        }
        Summary::Events => {
            let interval = std::time::Duration::from_secs_f64(progress_interval.max(0.0));
            let mut stream = None;
            // Plain progress lines would only repeat the events on stderr.
            let (report, code) = with_progress(0.0, false, |p| {
                let events = crate::events::EventStream::start(p.clone(), interval);
                let hooks = events.hooks(include_item);
                stream = Some(events);
                work(p, hooks)
            })?;
            let ending = stream.map_or(Ending::Json, Ending::Events);
            Ok((report, code, ending))
        }
    }
}

/// Where and how a run's results go at its end: a file and its format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResultsFile<'a> {
    pub(crate) path: &'a Path,
    pub(crate) options: ExportOptions,
}

/// `--include-item` needs somewhere to carry the fields to.
pub(crate) fn check_include_item(args: &RunArgs, out: Option<&Path>) -> anyhow::Result<()> {
    if args.include_item && out.is_none() && !args.events {
        return Err(UsageError(
            "--include-item applies to the --out file and to --events; give --out results.jsonl|.csv|.parquet, or use `sluice export RUN --include-item`".into(),
        )
        .into());
    }
    Ok(())
}

/// Checks `--out` before anything is sent: its extension must name a format.
pub(crate) fn results_target(
    out: Option<&Path>,
    include_item: bool,
) -> anyhow::Result<Option<ResultsFile<'_>>> {
    let Some(path) = out else {
        return Ok(None);
    };
    let format = ExportFormat::from_path(path).map_err(UsageError)?;
    Ok(Some(ResultsFile {
        path,
        options: ExportOptions {
            format,
            include_item,
            flat: false,
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
    ending: Ending,
) -> anyhow::Result<()> {
    let json = !matches!(ending, Ending::Text);
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
        sluice_engine::export_run(
            &mut *store,
            &report.run_id,
            ExportFormat::Jsonl,
            &mut stdout,
        )?;
        std::io::Write::flush(&mut stdout).context("writing results to stdout")?;
    }
    if json {
        let counts = store.counts(&report.run_id)?;
        let value = serde_json::json!({
            "run": report.run_id,
            "resumed": report.resumed,
            "interrupted": report.interrupted,
            "this_run": report.progress,
            "breakers": report.breakers,
            "recorded": counts,
            "notes": report.notes,
            "out": out.map(|f| f.path.display().to_string()),
        });
        match ending {
            Ending::Events(events) => events.finish(value),
            _ => println!("{value}"),
        }
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
