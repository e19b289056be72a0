//! Job files: `sluice run JOB.toml`, `sluice plan JOB.toml`, `sluice retry RUN`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sluice_engine::{run_job_with, Engine, JobConfig, RunHooks, RunStart};

use super::UsageError;
use crate::cli::{RetryArgs, RunArgs};

pub(crate) fn run(args: RunArgs, engine: &Engine) -> anyhow::Result<ExitCode> {
    let quick_only = [
        ("--url", args.url.is_some()),
        ("--rpm", args.rpm.is_some()),
        ("--tpm", args.tpm.is_some()),
        ("--api-key-env", args.api_key_env.is_some()),
        ("--no-api-key", args.no_api_key),
    ];
    if let Some((flag, _)) = quick_only.iter().find(|(_, given)| *given) {
        return Err(UsageError(format!(
            "{flag} is for JSONL input; in a job file set it under [providers.NAME] (or use --set providers.NAME.rpm=N)"
        ))
        .into());
    }
    let mut job = sluice_spec::load(Path::new(&args.input), &args.sets)?;
    if let Some(name) = &args.name {
        // The name of a new run, as in quick mode (checked by `run`): a
        // resumed run keeps the name it was created with.
        job.name = name.clone();
    }
    super::plan::print_warnings(&job);
    // A trial of the first units never replaces the job's results file.
    let out = match args.limit {
        Some(_) => args.out.clone(),
        None => args.out.clone().or_else(|| job.output.path.clone()),
    };
    if let Some(out) = &out {
        let mut inputs = vec![job.path.as_path()];
        if let sluice_spec::InputSource::File { path, .. } = &job.input.source {
            inputs.push(path.as_path());
        }
        super::run::check_out(out, false, &inputs)?;
    }
    let store = args.store.for_input(&args.input);
    let config = JobConfig {
        store: store.clone(),
        fresh: args.fresh,
        skip_bad: args.skip_bad,
        sets: args.sets.clone(),
        lease: args.lease,
        queue_only: args.queue_only,
        limit: args.limit,
        early_stop: !args.no_early_stop,
    };
    if args.queue_only && !store.is_shared() {
        return Err(UsageError(
            "--queue-only needs a store workers can share: --store postgres://…".into(),
        )
        .into());
    }
    if args.queue_only {
        let shown = store.clone();
        let hooks = RunHooks {
            on_start: Some(Box::new(move |start: &RunStart| {
                eprintln!("{}", super::run::start_line(start, &shown));
            })),
            ..RunHooks::default()
        };
        let report = run_job_with(
            &job,
            &config,
            std::sync::Arc::new(sluice_engine::Progress::new(engine)),
            hooks,
        )?;
        eprintln!(
            "sluice: run {} queued ({} units already done); start `sluice worker --store {store}` to work it",
            report.run_id, report.progress.skipped
        );
        if args.json {
            outln!(
                "{}",
                serde_json::json!({"run": report.run_id, "queued": true})
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    super::run::check_include_item(&args, out.as_deref())?;
    let results = super::run::results_target(out.as_deref(), args.include_item)?;
    let (report, code, ending) = super::run::watched(
        engine,
        super::run::Summary::of(&args),
        args.progress_interval,
        args.include_item,
        &store,
        |p, hooks| run_job_with(&job, &config, p, hooks),
    )?;
    super::run::deliver(&store, &report, results, ending)?;
    Ok(code)
}

/// Hooks that only announce the run's start.
pub(crate) fn retry(args: RetryArgs, engine: &Engine) -> anyhow::Result<ExitCode> {
    let location = super::existing_store(&args.store)?;
    let mut store = location.open()?;
    let Some(run) = store.find_run(&args.run)? else {
        return Err(UsageError(format!(
            "no run {:?}; list runs with `sluice runs`",
            args.run
        ))
        .into());
    };
    let job = sluice_engine::RunMode::of(&run.settings) == sluice_engine::RunMode::Job;
    // Before anything is re-queued: a URL kept without its credentials
    // cannot be called again.
    if !job && run.settings.get("url_redacted").and_then(|v| v.as_bool()) == Some(true) {
        let get = |key: &str| {
            run.settings
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
        };
        return Err(UsageError(format!(
            "the run's URL carried credentials, which are not kept ({}); rerun `sluice run {} --url <the URL>`: it sends the failed items again",
            get("url"),
            get("input")
        ))
        .into());
    }
    let reopened = match (&args.step, job) {
        (_, true) => store.reset_failed_steps(&run.id, args.step.as_deref())?,
        (Some(_), _) => {
            return Err(
                UsageError("--step applies to job runs; this run has no steps".into()).into(),
            )
        }
        (None, _) => store.reset_failed(&run.id)?,
    };
    // A run submitted to `sluice serve` keeps its job in the store.
    let cwd = std::env::current_dir().unwrap_or_default();
    let submitted = sluice_server::submitted_job(&mut *store, &run.id, &cwd)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    drop(store);
    eprintln!("sluice: {reopened} failed item(s) of {} re-queued", run.id);
    let setting = |key: &str| {
        run.settings
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    if job {
        let job_path = setting("job")
            .ok_or_else(|| UsageError("the run does not say which job file it ran".into()))?;
        let sets: Vec<String> = run
            .settings
            .get("sets")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let job = match submitted {
            Some(job) => job,
            None => sluice_spec::load(Path::new(&job_path), &sets)?,
        };
        let config = JobConfig {
            store: location.clone(),
            fresh: false,
            skip_bad: run
                .settings
                .get("skip_bad")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            sets,
            lease: sluice_engine::DEFAULT_LEASE,
            queue_only: false,
            limit: run.settings.get("limit").and_then(|v| v.as_u64()),
            early_stop: !args.no_early_stop,
        };
        // A trial run of the first units (--limit) never writes the job's results file.
        let out = job
            .output
            .path
            .as_deref()
            .filter(|_| config.limit.is_none());
        let results = super::run::results_target(out, false)?;
        let (report, code) =
            super::run::with_progress(engine, 5.0, !args.json, &location, |p, s| {
                run_job_with(&job, &config, p, super::run::started(s))
            })?;
        super::run::deliver(&location, &report, results, ending(args.json))?;
        return Ok(code);
    }
    let input = setting("input")
        .ok_or_else(|| UsageError("the run does not say which input it read".into()))?;
    let url = setting("url")
        .ok_or_else(|| UsageError("the run does not say which URL it used".into()))?;

    let number = |key: &str| run.settings.get(key).and_then(|v| v.as_u64());
    let config = sluice_engine::QuickConfig {
        input: sluice_engine::QuickInput::Path(PathBuf::from(input)),
        url,
        concurrency: number("concurrency").unwrap_or(64) as usize,
        grow_to_rate: false,
        rpm: number("rpm"),
        tpm: number("tpm"),
        retries: number("retries").unwrap_or(5) as u32,
        timeout: std::time::Duration::from_millis(number("timeout_ms").unwrap_or(60_000)),
        api_key_env: setting("api_key_env"),
        store: location.clone(),
        fresh: false,
        skip_bad: run
            .settings
            .get("skip_bad")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        name: None,
        backoff: sluice_limit::Backoff {
            base_ms: 500,
            cap_ms: 60_000,
        },
        limit: number("limit"),
        early_stop: !args.no_early_stop,
        lease: sluice_engine::DEFAULT_LEASE,
    };
    let (report, code) = super::run::execute(engine, &config, 5.0, !args.json)?;
    super::run::deliver(&location, &report, None, ending(args.json))?;
    Ok(code)
}

fn ending(json: bool) -> super::run::Ending {
    if json {
        super::run::Ending::Json
    } else {
        super::run::Ending::Text
    }
}
