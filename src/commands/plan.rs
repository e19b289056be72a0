//! `sluice plan`: a job file or a JSONL file checked against its data and
//! estimated — counts, tokens, cost, the unit window, the wall time and what
//! binds it — with the first requests shown as they would be sent; nothing is
//! sent unless `--probe` asks for a few calls to measure latency.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use sluice_engine::{Estimate, Plan, PlanOptions, QuickPlan, QuickPlanConfig, ShownRequest};

use super::UsageError;
use crate::cli::PlanArgs;
use crate::display::{fmt_count, fmt_duration};

pub(crate) fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    if !args.input.ends_with(".toml") {
        return quick(args);
    }
    let quick_only = [
        ("--url", args.url.is_some()),
        ("--rpm", args.rpm.is_some()),
        ("--tpm", args.tpm.is_some()),
        ("--concurrency", args.concurrency.is_some()),
        ("--api-key-env", args.api_key_env.is_some()),
        ("--prices", args.prices.is_some()),
    ];
    if let Some((flag, _)) = quick_only.iter().find(|(_, given)| *given) {
        return Err(UsageError(format!(
            "{flag} is for JSONL input; in a job file set it under [providers.NAME] \
             (or use --set providers.NAME.rpm=N, --set concurrency=N)"
        ))
        .into());
    }
    let job = sluice_spec::load(Path::new(&args.input), &args.sets)?;
    print_warnings(&job);
    let spool = std::env::temp_dir().join(format!("sluice-plan-{}", std::process::id()));
    let mut options = PlanOptions {
        limit: args.limit,
        show: args.show.unwrap_or(0),
        default_latency: args.assume_latency,
        ..PlanOptions::default()
    };
    if let Some(n) = args.probe {
        eprintln!("sluice: probing latency with {n} real call(s) per step (sent and paid for, not recorded)");
        options.measured = sluice_engine::probe(&job, &spool, n)?;
    }
    let plan = sluice_engine::plan(&job, &spool, &options);
    let _ = std::fs::remove_dir_all(&spool);
    let plan = plan?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        out!("{}", describe(&job, &plan, &args.input));
        out!("{}", show(&plan.shown));
    }
    Ok(ExitCode::SUCCESS)
}

/// The job's warnings (near-misses in `params`) on stderr, as `run` prints them.
pub(crate) fn print_warnings(job: &sluice_spec::Job) {
    for w in &job.warnings {
        if w.line == 0 {
            eprintln!("{}: warning: {}", w.path.display(), w.message);
        } else {
            eprintln!(
                "{}:{}:{}: warning: {}",
                w.path.display(),
                w.line,
                w.column,
                w.message
            );
        }
    }
}

fn quick(args: PlanArgs) -> anyhow::Result<ExitCode> {
    if !args.sets.is_empty() {
        return Err(UsageError(
            "--set applies to job files (.toml); with a JSONL input use the flags directly".into(),
        )
        .into());
    }
    let Some(url) = args.url.clone() else {
        return Err(UsageError(format!(
            "{} is not a job file (.toml): plan it as quick mode with --url, e.g. \
             `sluice plan {} --url http://127.0.0.1:8080/v1/chat/completions`",
            args.input, args.input
        ))
        .into());
    };
    if args.input == "-" {
        return Err(UsageError(
            "plan reads a file; save the requests to a file first (stdin can be read only once)"
                .into(),
        )
        .into());
    }
    let prices = match &args.prices {
        None => None,
        Some(text) => Some(parse_prices(text)?),
    };
    let mut cfg = QuickPlanConfig {
        input: PathBuf::from(&args.input),
        url,
        concurrency: args.concurrency,
        rpm: args.rpm,
        tpm: args.tpm,
        api_key_env: args.api_key_env.clone(),
        latency: args
            .assume_latency
            .map(|d| (d.as_secs_f64(), "--assume-latency".to_string())),
        prices,
        limit: args.limit,
        show: args.show.unwrap_or(0),
    };
    if let Some(n) = args.probe {
        eprintln!("sluice: probing latency with the first {n} request(s) (sent and paid for, not recorded)");
        cfg.latency = Some(sluice_engine::probe_quick(&cfg, n)?);
    }
    let plan = sluice_engine::quick_plan(&cfg)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        out!("{}", describe_quick(&plan, &cfg));
        out!("{}", show(&plan.shown));
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_prices(text: &str) -> anyhow::Result<(f64, f64)> {
    let bad = || {
        UsageError(format!(
            "--prices {text:?}: give USD per million prompt and completion tokens, e.g. --prices 2.5,10"
        ))
    };
    let (a, b) = text.split_once(',').ok_or_else(bad)?;
    let a: f64 = a.trim().parse().map_err(|_| bad())?;
    let b: f64 = b.trim().parse().map_err(|_| bad())?;
    if !(a >= 0.0 && b >= 0.0 && a.is_finite() && b.is_finite()) {
        return Err(bad().into());
    }
    Ok((a, b))
}

/// Dollars with cents, or four decimals below a cent.
fn usd_text(usd: f64) -> String {
    if usd > 0.0 && usd < 0.01 {
        format!("{usd:.4}")
    } else {
        format!("{usd:.2}")
    }
}

fn secs(s: f64) -> String {
    fmt_duration(Duration::from_secs_f64(s.max(0.0)))
}

/// The plan of a JSONL file for a person.
fn describe_quick(plan: &QuickPlan, cfg: &QuickPlanConfig) -> String {
    let mut text = format!("input      {}\n", plan.input);
    let limited = match cfg.limit {
        Some(n) => format!(
            "  (the first {n}: --limit {n}; `sluice run … --limit {n}` runs them as a run of their own)"
        ),
        None => String::new(),
    };
    text += &format!("requests   {}{limited}\n", fmt_count(plan.requests));
    for (path, n) in &plan.paths {
        text += &format!("  {path:<28} {}\n", fmt_count(*n));
    }
    text += &format!(
        "tokens     ~{} (prompts ~{} + completion caps {})\n",
        fmt_count(plan.tokens),
        fmt_count(plan.tokens - plan.completion_tokens),
        fmt_count(plan.completion_tokens)
    );
    match plan.cost_usd {
        Some(usd) => {
            text += &format!(
                "cost       ~${} (completions at their caps; a ceiling)\n",
                usd_text(usd)
            )
        }
        None => text += "cost       give --prices IN,OUT (USD per million tokens) to see it\n",
    }
    if let Some(e) = &plan.estimate {
        text += &estimate_lines(e, "; measure with --probe N or give --assume-latency");
    }
    text
}

/// The plan of a job file for a person.
fn describe(job: &sluice_spec::Job, plan: &Plan, shown_path: &str) -> String {
    let mut text = format!("job        {} ({shown_path})\n", plan.name);
    let items = match plan.items {
        Some(n) => fmt_count(n),
        None => "?".into(),
    };
    let note = plan
        .input_note
        .as_ref()
        .map(|n| format!("  ({n})"))
        .unwrap_or_default();
    text += &format!("items      {items}{note}\n");
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
    let units_note = match plan.limit {
        Some(n) => format!(
            "(the first {n}: --limit {n}; `sluice run {shown_path} --limit {n}` runs them as run {})",
            sluice_engine::limited_name(&plan.name, n)
        ),
        None => "(items × combinations)".into(),
    };
    text += &format!(
        "units      {}  {units_note}\n",
        plan.units.map(fmt_count).unwrap_or_else(|| "?".into()),
    );
    text += &format!(
        "window     {} units at once ({})\n",
        fmt_count(plan.window.units as u64),
        plan.window.from
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
        if s.images > 0 {
            let sized = s.images - s.images_unsized;
            text += &format!(
                "  {:<16} {} images: {} by OpenAI's tile rule from their size",
                "",
                fmt_count(s.images),
                fmt_count(sized),
            );
            if s.images_unsized > 0 {
                text += &format!(
                    "; {} of a size not known before sending (URLs): counted at the rule's largest, 1,445 tokens each (the API's usage corrects it)",
                    fmt_count(s.images_unsized)
                );
            }
            text += "\n";
        }
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
        text += &format!(
            "cost       ~${} (completions at their max_tokens; a ceiling)\n",
            usd_text(usd)
        );
    }
    if let Some(budget) = job.budget_usd {
        text += &format!("budget     ${budget:.2}: no new call starts once it is spent\n");
    }
    if !plan.providers.is_empty() {
        text += "providers  (lower bound on wall time from each provider's limits)\n";
        for p in &plan.providers {
            let bound = match (p.bound_seconds, p.binding.as_str()) {
                (Some(s), limit) => format!("≥ {} ({limit} binds)", secs(s)),
                (None, _) => "no rate limit: bound by latency × calls ÷ concurrency".into(),
            };
            let cost = p
                .cost_usd
                .map(|c| format!(" · ~${}", usd_text(c)))
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
    if let Some(e) = &plan.estimate {
        text += &estimate_lines(e, "; measure with --probe N or set assume_latency");
    }
    text
}

/// `time`, `latency` and `limits` lines.
fn estimate_lines(e: &Estimate, set_it: &str) -> String {
    let mut text = format!(
        "time       ~{} ({} binds) · one after another ~{} · {:.1}× faster\n",
        secs(e.seconds),
        e.binding,
        secs(e.sequential_seconds),
        e.speedup
    );
    let first = e.latencies.first();
    let same = first.is_some_and(|f| {
        e.latencies
            .iter()
            .all(|l| l.seconds == f.seconds && l.source == f.source)
    });
    let measure = if e.latencies.iter().any(|l| l.source.starts_with("default")) {
        set_it
    } else {
        ""
    };
    match (same, first) {
        (true, Some(l)) => {
            let every = if e.latencies.len() > 1 {
                " for every step"
            } else {
                ""
            };
            text += &format!(
                "latency    {} per call{every} ({}{measure})\n",
                secs(l.seconds),
                l.source
            );
        }
        _ => {
            let parts: Vec<String> = e
                .latencies
                .iter()
                .map(|l| format!("{} {} ({})", l.step, secs(l.seconds), l.source))
                .collect();
            text += &format!("latency    {}{measure}\n", parts.join(" · "));
        }
    }
    let limits: Vec<String> = e
        .bounds
        .iter()
        .take(4)
        .map(|b| format!("{} {}", b.limit, secs(b.seconds)))
        .collect();
    text += &format!("limits     {}\n", limits.join(" · "));
    if let Some(note) = &e.batch_note {
        text += &format!("           {note}\n");
    }
    text
}

/// `--show`: each request as it would go on the wire.
fn show(requests: &[ShownRequest]) -> String {
    if requests.is_empty() {
        return String::new();
    }
    let mut text = String::from("requests   as they would be sent (secrets masked)\n");
    for r in requests {
        let part = r
            .part
            .as_ref()
            .map(|p| format!(" · {p}"))
            .unwrap_or_default();
        text += &format!("── {} · {}{part}\n", r.unit, r.step);
        if let Some(note) = &r.note {
            text += &format!("({note})\n");
        }
        text += &format!("{} {}\n", r.method, r.url);
        for (name, value) in &r.headers {
            text += &format!("{name}: {value}\n");
        }
        let body = serde_json::to_string_pretty(&r.body).unwrap_or_default();
        text += &format!("\n{body}\n\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_two_numbers() {
        assert_eq!(parse_prices("2.5,10").unwrap(), (2.5, 10.0));
        assert!(parse_prices("2.5").is_err());
        assert!(parse_prices("a,b").is_err());
        assert!(parse_prices("-1,2").is_err());
    }
}
