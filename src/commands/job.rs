//! Job files: `sluice run JOB.toml`, `sluice plan JOB.toml`, `sluice retry RUN`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sluice_engine::{run_job_with, JobConfig, Plan, RunHooks, RunStart, StartHook};

use super::UsageError;
use crate::cli::{PlanArgs, RetryArgs, RunArgs};
use crate::display::fmt_count;

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let quick_only = [
        ("--url", args.url.is_some()),
        ("--rpm", args.rpm.is_some()),
        ("--tpm", args.tpm.is_some()),
        ("--api-key-env", args.api_key_env.is_some()),
    ];
    if let Some((flag, _)) = quick_only.iter().find(|(_, given)| *given) {
        return Err(UsageError(format!(
            "{flag} is for JSONL input; in a job file set it under [providers.NAME] (or use --set providers.NAME.rpm=N)"
        ))
        .into());
    }
    let job = sluice_spec::load(Path::new(&args.input), &args.sets)?;
    if let Some(out) = args.out.as_ref().or(job.output.path.as_ref()) {
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
            std::sync::Arc::new(sluice_engine::Progress::default()),
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
    let (report, code) =
        super::run::with_progress(args.progress_interval, !args.json, &store, |p, on_start| {
            run_job_with(&job, &config, p, started(on_start))
        })?;
    let out = args.out.clone().or_else(|| job.output.path.clone());
    super::run::deliver(&store, &report, out.as_deref(), args.json)?;
    Ok(code)
}

pub(crate) fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let job = sluice_spec::load(&args.job, &args.sets)?;
    let spool = std::env::temp_dir().join(format!("sluice-plan-{}", std::process::id()));
    let plan = sluice_engine::plan(&job, &spool);
    let _ = std::fs::remove_dir_all(&spool);
    let plan = plan?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        out!("{}", describe(&job, &plan));
    }
    Ok(ExitCode::SUCCESS)
}

/// The plan for a person.
fn describe(job: &sluice_spec::Job, plan: &Plan) -> String {
    let mut text = format!("job        {} ({})\n", plan.name, job.path.display());
    let unknown = || "? (url input: fetched when the run starts)".to_string();
    text += &format!(
        "items      {}\n",
        plan.items.map(fmt_count).unwrap_or_else(unknown)
    );
    if !job.matrix.is_empty() {
        let axes: Vec<String> = job
            .matrix
            .iter()
            .map(|a| format!("{} ({})", a.name, a.values.len()))
            .collect();
        text += &format!(
            "matrix     {} = {} combinations\n",
            axes.join(" × "),
            plan.combinations
        );
    }
    text += &format!(
        "units      {}  (items × combinations; {} at once)\n",
        plan.units.map(fmt_count).unwrap_or_else(|| "?".into()),
        job.concurrency
    );
    text += "steps\n";
    for s in &plan.steps {
        let calls = format!(
            "{}{} calls",
            if s.calls_at_least { "≥ " } else { "" },
            fmt_count(s.calls)
        );
        let tokens = match s.tokens {
            Some(t) => format!(
                " · {}{} tokens",
                if s.tokens_partial { "≥ " } else { "~" },
                fmt_count(t)
            ),
            None => String::new(),
        };
        text += &format!(
            "  {:<16} {:<13} {:<12} {calls}{tokens}\n",
            s.name,
            s.kind,
            s.provider.as_deref().unwrap_or("-"),
        );
    }
    // Each provider at the price of the path it takes.
    let total: Option<f64> = plan
        .providers
        .iter()
        .filter_map(|p| {
            if p.offload.batched() {
                p.batch_cost_usd
            } else {
                p.cost_usd
            }
        })
        .reduce(|a, b| a + b);
    if let Some(usd) = total {
        text += &format!("cost       ~${usd:.2} (completions at their max_tokens; a ceiling)\n");
    }
    if let Some(budget) = job.budget_usd {
        text += &format!("budget     ${budget:.2}: no new call starts once it is spent\n");
    }
    if !plan.providers.is_empty() {
        text += "providers  (lower bound on wall time from each provider's limits)\n";
        for p in &plan.providers {
            let bound = match (p.bound_seconds, p.binding.as_str()) {
                (Some(s), limit) => format!(
                    "≥ {} ({limit} binds)",
                    crate::display::fmt_duration(std::time::Duration::from_secs_f64(s))
                ),
                (None, _) => "no rate limit: bound by latency × calls ÷ concurrency".into(),
            };
            let cost = p
                .cost_usd
                .map(|c| format!(" · ~${c:.2}"))
                .unwrap_or_default();
            text += &format!(
                "  {:<16} {} calls · {} tokens{cost} → {bound}\n",
                p.name,
                fmt_count(p.calls),
                fmt_count(p.tokens)
            );
            if p.offload.configured != "live" {
                let prices = match (p.cost_usd, p.batch_cost_usd) {
                    (Some(live), Some(batch)) => {
                        format!(" (~${live:.2} live, ~${batch:.2} batch)")
                    }
                    _ => String::new(),
                };
                let enqueued = p
                    .max_enqueued_tokens
                    .map(|n| format!(" · at most {} enqueued tokens per model", fmt_count(n)))
                    .unwrap_or_default();
                text += &format!(
                    "  {:<16} {}: {}{prices}{enqueued}\n",
                    "",
                    match p.offload.configured.as_str() {
                        "auto" => format!("auto → {}", p.offload.mode),
                        _ => "batch API".to_string(),
                    },
                    p.offload.reason
                );
            }
        }
    }
    text
}

/// Hooks that only announce the run's start.
fn started(on_start: StartHook) -> RunHooks {
    RunHooks {
        on_start: Some(on_start),
        ..RunHooks::default()
    }
}

pub(crate) fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let location = super::existing_store(&args.store)?;
    let mut store = location.open()?;
    let Some(run) = store.find_run(&args.run)? else {
        return Err(UsageError(format!(
            "no run {:?}; list runs with `sluice runs`",
            args.run
        ))
        .into());
    };
    let mode = run
        .settings
        .get("mode")
        .and_then(|m| m.as_str())
        .unwrap_or("quick");
    // Before anything is re-queued: a URL kept without its credentials
    // cannot be called again.
    if mode != "job" && run.settings.get("url_redacted").and_then(|v| v.as_bool()) == Some(true) {
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
    let reopened = match (&args.step, mode) {
        (_, "job") => store.reset_failed_steps(&run.id, args.step.as_deref())?,
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
    if mode == "job" {
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
            early_stop: !args.no_early_stop,
        };
        let (report, code) = super::run::with_progress(5.0, !args.json, &location, |p, s| {
            run_job_with(&job, &config, p, started(s))
        })?;
        super::run::deliver(&location, &report, job.output.path.as_deref(), args.json)?;
        return Ok(code);
    }
    let input = setting("input")
        .ok_or_else(|| UsageError("the run does not say which input it read".into()))?;
    let url = setting("url")
        .ok_or_else(|| UsageError("the run does not say which URL it used".into()))?;

    let number = |key: &str| run.settings.get(key).and_then(|v| v.as_u64());
    let config = sluice_engine::QuickConfig {
        input: sluice_engine::InputSource::Path(PathBuf::from(input)),
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
        lease: sluice_engine::DEFAULT_LEASE,
        early_stop: !args.no_early_stop,
    };
    let (report, code) = super::run::execute(&config, 5.0, !args.json)?;
    super::run::deliver(&location, &report, None, args.json)?;
    Ok(code)
}
