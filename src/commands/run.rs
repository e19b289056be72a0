//! `sluice run`: quick mode over a JSONL file, with progress and a summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sluice_engine::{
    run_quick_with, Engine, ExportFormat, ExportOptions, Progress, QuickConfig, QuickInput,
    RunHooks, RunReport, RunStart, StartHook,
};
use sluice_limit::Backoff;
use sluice_store::{Store, StoreLocation};

use super::UsageError;
use crate::cli::RunArgs;
use crate::display::{self, fmt_count, ProgressDisplay};

pub(crate) fn run(args: RunArgs, engine: &Engine) -> anyhow::Result<ExitCode> {
    if let Some(problem) = args.name.as_deref().and_then(sluice_spec::name_problem) {
        let name = args.name.as_deref().unwrap_or_default();
        return Err(UsageError(format!("--name {name:?} {problem}")).into());
    }
    if args.input.ends_with(".toml") {
        return super::job::run(args, engine);
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
    if args.backoff_base > args.backoff_cap {
        return Err(UsageError(format!(
            "--backoff-base {} is above --backoff-cap {}: the first retry delay cannot exceed the longest; lower the base or raise the cap",
            humantime::format_duration(args.backoff_base),
            humantime::format_duration(args.backoff_cap)
        ))
        .into());
    }
    if let Some(out) = &args.out {
        let input = (args.input != "-").then(|| Path::new(&args.input));
        check_out(out, false, input.as_slice())?;
    }
    let store = args.store.for_input(&args.input);
    let config = QuickConfig {
        input: if args.input == "-" {
            QuickInput::Stdin
        } else {
            QuickInput::Path(PathBuf::from(&args.input))
        },
        url,
        concurrency: args.concurrency.unwrap_or(64),
        grow_to_rate: args.concurrency.is_none(),
        rpm: args.rpm,
        tpm: args.tpm,
        retries: args.retries,
        timeout: args.timeout,
        api_key_env: conventions.api_key_env.clone(),
        store: store.clone(),
        fresh: args.fresh,
        skip_bad: args.skip_bad,
        name: args.name.clone(),
        backoff: Backoff {
            base_ms: args.backoff_base.as_millis() as u64,
            cap_ms: args.backoff_cap.as_millis() as u64,
        },
        lease: args.lease,
        limit: args.limit,
        early_stop: !args.no_early_stop,
    };
    check_include_item(&args, args.out.as_deref())?;
    let out = results_target(args.out.as_deref(), args.include_item)?;
    if let Some(line) = conventions.announcement() {
        eprintln!("{line}");
    }
    let (report, code, ending) = watched(
        engine,
        Summary::of(&args),
        args.progress_interval,
        args.include_item,
        &store,
        |p, hooks| run_quick_with(&config, p, hooks),
    )?;
    deliver(&store, &report, out, ending)?;
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
    engine: &Engine,
    summary: Summary,
    progress_interval: f64,
    include_item: bool,
    store: &StoreLocation,
    work: impl FnOnce(Arc<Progress>, RunHooks) -> sluice_engine::Result<RunReport>,
) -> anyhow::Result<(RunReport, ExitCode, Ending)> {
    match summary {
        Summary::Text | Summary::Json => {
            let text = summary == Summary::Text;
            let (report, code) =
                with_progress(engine, progress_interval, text, store, |p, on_start| {
                    work(p, started(on_start))
                })?;
            let ending = if text { Ending::Text } else { Ending::Json };
            Ok((report, code, ending))
        }
        Summary::Events => {
            let interval = std::time::Duration::from_secs_f64(progress_interval.max(0.0));
            let mut stream = None;
            // Plain progress lines would only repeat the events on stderr.
            let (report, code) = with_progress(engine, 0.0, false, store, |p, on_start| {
                let events = crate::events::EventStream::start(p.clone(), interval);
                let mut hooks = events.hooks(include_item);
                hooks.on_start = Some(on_start);
                stream = Some(events);
                work(p, hooks)
            })?;
            let ending = stream.map_or(Ending::Json, Ending::Events);
            Ok((report, code, ending))
        }
    }
}

/// Hooks that only tell `on_start` of the run.
pub(crate) fn started(on_start: StartHook) -> RunHooks {
    RunHooks {
        on_start: Some(on_start),
        ..RunHooks::default()
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
    engine: &Engine,
    config: &QuickConfig,
    progress_interval: f64,
    summary_on_stderr: bool,
) -> anyhow::Result<(RunReport, ExitCode)> {
    with_progress(
        engine,
        progress_interval,
        summary_on_stderr,
        &config.store,
        |p, on_start| run_quick_with(config, p, started(on_start)),
    )
}

/// Runs `work` with the start line and live progress on stderr, then prints
/// the summary and picks the exit code. `work` calls the hook it is given
/// once the run is open: it prints the start line and starts the progress
/// display (after the line, so a live bar does not garble it).
pub(crate) fn with_progress(
    engine: &Engine,
    progress_interval: f64,
    summary_on_stderr: bool,
    store: &StoreLocation,
    work: impl FnOnce(Arc<Progress>, StartHook) -> sluice_engine::Result<RunReport>,
) -> anyhow::Result<(RunReport, ExitCode)> {
    let progress = Arc::new(Progress::new(engine));
    let display: Arc<Mutex<Option<ProgressDisplay>>> = Arc::default();
    let on_start: StartHook = {
        let (progress, display, store) = (progress.clone(), display.clone(), store.clone());
        Box::new(move |start: &RunStart| {
            eprintln!("{}", start_line(start, &store));
            if start.total == 0 {
                eprintln!(
                    "sluice: warning: {} holds no items (is it empty?); nothing to send",
                    start.input
                );
            }
            let shown = ProgressDisplay::start(progress, progress_interval);
            *display.lock().unwrap_or_else(|e| e.into_inner()) = Some(shown);
        })
    };
    let result = work(progress, on_start);
    if let Some(shown) = display.lock().unwrap_or_else(|e| e.into_inner()).take() {
        shown.finish();
    }
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

/// `sluice: new run NAME · store PATH` or `sluice: resuming NAME: N done, M
/// to send · store PATH`.
pub(crate) fn start_line(start: &RunStart, store: &StoreLocation) -> String {
    let what = if start.resumed {
        format!(
            "resuming {}: {} done, {} to send",
            start.run_id,
            fmt_count(start.done),
            fmt_count(start.to_send())
        )
    } else {
        format!("new run {}", start.run_id)
    };
    let took_over = match &start.took_over {
        Some((host, pid)) => {
            format!(" · took it over from pid {pid} on {host}, which is gone")
        }
        None => String::new(),
    };
    format!("sluice: {what} · store {store}{took_over}")
}

/// Writes the results (to `out`, else stdout) and the JSON summary, if the
/// run reached its end: a run that did not leaves an existing `out` as it
/// was and says how to export what it has.
pub(crate) fn deliver(
    location: &StoreLocation,
    report: &RunReport,
    out: Option<ResultsFile<'_>>,
    ending: Ending,
) -> anyhow::Result<()> {
    let json = !matches!(ending, Ending::Text);
    let mut store = location.open()?;
    let counts = store.counts(&report.run_id)?;
    let total = store
        .find_run(&report.run_id)?
        .and_then(|r| r.total)
        .unwrap_or(0);
    let pending = total.saturating_sub(counts.done + counts.failed);
    let complete = !report.interrupted && pending == 0;
    let mut written = None;
    if !complete {
        if !json {
            let export = format!(
                "sluice export {}{}{}",
                report.run_id,
                out.map(|o| format!(" --out {}", o.path.display()))
                    .unwrap_or_default(),
                store_flag(location)
            );
            let kept = match out {
                Some(o) if o.path.exists() => format!("{} is left as it was", o.path.display()),
                Some(o) => format!("{} is not written", o.path.display()),
                None => "results are not printed".into(),
            };
            eprintln!(
                "  results    the run did not finish ({} pending): {kept}; run the same \
                 command again to finish it, or `{export}` for what is done so far",
                fmt_count(pending)
            );
        }
    } else if let Some(file) = out {
        let lines = write_atomically(&mut *store, &report.run_id, file.path, file.options)?;
        written = Some(file.path);
        if !json {
            let unit = match file.options.format {
                ExportFormat::Jsonl => "lines",
                ExportFormat::Csv | ExportFormat::Parquet => "rows",
            };
            eprintln!("  results    {lines} {unit} → {}", file.path.display());
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
        let value = serde_json::json!({
            "run": report.run_id,
            "resumed": report.resumed,
            "interrupted": report.interrupted,
            "this_run": report.progress,
            "breakers": report.breakers,
            "recorded": counts,
            "pending": pending,
            "notes": report.notes,
            "out": written.map(|p| p.display().to_string()),
        });
        match ending {
            Ending::Events(events) => events.finish(value),
            _ => outln!("{value}"),
        }
    }
    Ok(())
}

/// ` --store LOCATION`, unless the current directory finds that store by
/// itself.
pub(crate) fn store_flag(location: &StoreLocation) -> String {
    let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    match (location.sqlite_path(), crate::locate::nearest_here()) {
        (Some(path), Some(here)) if here.sqlite_path().is_some_and(|h| same(h, path)) => {
            String::new()
        }
        _ => format!(" --store {location}"),
    }
}

/// Refuses a results file that would replace an input, is a directory, or
/// whose extension names no format (unless `format_given`), before
/// anything is sent.
pub(crate) fn check_out(out: &Path, format_given: bool, inputs: &[&Path]) -> anyhow::Result<()> {
    let shown = out.display();
    let ends_in_slash = out.as_os_str().to_string_lossy().ends_with('/');
    if out.is_dir() || ends_in_slash {
        return Err(UsageError(format!(
            "--out {shown} is a directory; give a file name, e.g. {}",
            out.join("results.jsonl").display()
        ))
        .into());
    }
    if !format_given {
        ExportFormat::from_path(out).map_err(|e| UsageError(format!("--out {e}")))?;
    }
    let target = same_file_key(out);
    for input in inputs {
        if target.is_some() && same_file_key(input) == target {
            return Err(UsageError(format!(
                "--out {shown} is the input {}: writing results there would replace it; choose another file",
                input.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// A path's canonical form, for a file that may not exist yet (its
/// directory's canonical form and its name).
fn same_file_key(path: &Path) -> Option<PathBuf> {
    if let Ok(real) = std::fs::canonicalize(path) {
        return Some(real);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some(std::fs::canonicalize(dir).ok()?.join(path.file_name()?))
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
    let exported = sluice_engine::export_with(store, run_id, options, &mut writer)
        .map_err(anyhow::Error::from)
        .and_then(|n| {
            writer.into_inner().context("flushing results")?;
            Ok(n)
        });
    // No fsync: the store is the durable copy and `sluice export` rewrites this
    // file from it; the rename alone keeps a killed process from leaving half a file.
    let renamed = exported.and_then(|n| {
        std::fs::rename(&tmp, out).with_context(|| format!("renaming into {}", out.display()))?;
        Ok(n)
    });
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}
