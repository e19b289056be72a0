//! `sluice status` and `sluice runs`: what the store knows about runs.

use std::process::ExitCode;

use sluice_engine::{ControlState, KeptWithRun, RunView, ViewParts};

use super::UsageError;
use crate::cli::{RunsArgs, StatusArgs};
use crate::display::{fmt_count, fmt_duration, fmt_time};
use sluice_engine::{WorkerState, WorkerView};

pub(crate) fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let location = super::existing_store(&args.store)?;
    let mut store = location.open()?;
    let run = match &args.run {
        Some(key) => store
            .find_run(key)?
            .ok_or_else(|| UsageError(format!("no run {key:?}; list runs with `sluice runs`")))?,
        None => match store.list_runs()?.into_iter().next() {
            Some(summary) => summary.run,
            None => {
                return Err(UsageError(format!(
                    "no runs in {location} yet; start one with `sluice run`"
                ))
                .into())
            }
        },
    };
    let now = sluice_engine::now_ms();
    let parts = ViewParts { errors: true };
    // The one view of a run, as the server shows it too.
    let view = sluice_engine::run_view(&mut *store, &run, None, parts, now)?;
    if args.json {
        let mut value = serde_json::to_value(&view)?;
        if let Some(fields) = value.as_object_mut() {
            // The stored record with its settings: the CLI reads the store it
            // owns (the server keeps its host's paths to itself).
            fields.insert("run".into(), serde_json::to_value(&run)?);
        }
        outln!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    let RunView {
        state: shown,
        control,
        counts,
        pending,
        workers,
        error_groups: groups,
        queue,
        batches,
        offload,
        ..
    } = view;
    outln!("run        {} ({shown})", run.id);
    if let Some(c) = control.as_ref().filter(|c| c.state != ControlState::Run) {
        let asked = match c.state {
            ControlState::Pause => "paused",
            _ => "cancelled",
        };
        // Processes apply it with their next heartbeat: say how many have.
        let live: Vec<_> = workers
            .iter()
            .filter(|w| w.state == WorkerState::Running)
            .collect();
        let applied = live
            .iter()
            .filter(|w| w.applied_control() == Some(c.state.as_str()))
            .count();
        let how_far = if live.is_empty() {
            String::new()
        } else {
            format!(
                " · applied by {applied} of {} processes executing it",
                live.len()
            )
        };
        outln!(
            "control    {asked} by {} at {}{how_far}",
            c.by,
            fmt_time(c.at)
        );
    }
    if let Some(input) = run.settings.get("input").and_then(|v| v.as_str()) {
        outln!("input      {input}");
    }
    if let Some(url) = run.settings.get("url").and_then(|v| v.as_str()) {
        outln!("url        {url}");
    }
    outln!("created    {}", fmt_time(run.created_at));
    outln!(
        "items      {} total · {} done · {} failed · {} pending",
        run.total.map(fmt_count).unwrap_or_else(|| "?".into()),
        fmt_count(counts.done),
        fmt_count(counts.failed),
        pending.map(fmt_count).unwrap_or_else(|| "?".into()),
    );
    outln!(
        "calls      {} attempts · {} retries · {} × 429",
        fmt_count(counts.attempts),
        fmt_count(counts.retries),
        fmt_count(counts.throttled)
    );
    outln!(
        "tokens     {} prompt · {} completion",
        fmt_count(counts.prompt_tokens),
        fmt_count(counts.completion_tokens)
    );
    if let Some(usd) = KeptWithRun::of(&run.settings).spent_usd {
        outln!("spent      ${usd:.4} (priced providers)");
    }
    if let (Some(first), Some(last)) = (counts.first_started_at, counts.last_finished_at) {
        let span = (last - first).max(1) as f64 / 1000.0;
        let finished = counts.done + counts.failed;
        outln!(
            "rate       {:.1} items/s over {} · mean latency {} ms",
            finished as f64 / span,
            fmt_duration(std::time::Duration::from_secs_f64(span)),
            counts.latency_ms_sum / finished.max(1)
        );
    }
    if let Some(q) = queue {
        outln!(
            "queue      {} queued · {} leased to workers{}{}",
            fmt_count(q.queued),
            fmt_count(q.leased),
            if q.expired_leases > 0 {
                format!(" ({} with an expired lease)", fmt_count(q.expired_leases))
            } else {
                String::new()
            },
            if q.ready {
                ""
            } else {
                " · still being queued"
            },
        );
    }
    for (name, o) in offload.iter().flatten() {
        match o.configured.as_str() {
            "live" => {}
            "auto" => outln!("offload    {name}: auto chose {}: {}", o.mode, o.reason),
            _ if !o.batched() => outln!("offload    {name}: live: {}", o.reason),
            _ => outln!("offload    {name}: batch API (mode = \"batch\")"),
        }
    }
    if !batches.is_empty() {
        outln!("batches");
        for b in &batches {
            let text = |k: &str| b.get(k).and_then(|v| v.as_str()).unwrap_or("-");
            let n = |k: &str| b.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            outln!(
                "  {} #{:<4} {:<28} {:<12} {} requests · {} succeeded · {} errored · {} expired",
                text("provider"),
                n("seq"),
                text("id"),
                text("state"),
                fmt_count(n("requests")),
                fmt_count(n("succeeded")),
                fmt_count(n("errored")),
                fmt_count(n("expired")),
            );
        }
    }
    // Limits as held by the processes working on the run: configured, and
    // those the provider announced, with the window read from their reset.
    for line in limit_lines(&workers) {
        println!("{line}");
    }
    if !workers.is_empty() {
        outln!("workers");
        for w in &workers {
            let ago = std::time::Duration::from_millis((now - w.last_beat_at).max(0) as u64);
            outln!(
                "  {}  pid {:<7} {:<8} {:>5} in flight · last beat {} ago",
                w.host,
                w.pid,
                w.state,
                fmt_count(w.in_flight),
                fmt_duration(ago)
            );
        }
    }
    if !groups.is_empty() {
        outln!("errors     by cause (step · code · message; reply text and ids left out)");
        for line in crate::display::error_group_lines(&groups, "") {
            out!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `limits     NAME: 1,200 requests/minute (burst 1,200) (announced) · …`
/// per provider, from the newest beat of a process still working, else the
/// last one written (what the run last held).
fn limit_lines(workers: &[WorkerView]) -> Vec<String> {
    let Some(beat) = workers
        .iter()
        .max_by_key(|w| (w.state == WorkerState::Running, w.last_beat_at))
    else {
        return Vec::new();
    };
    let Some(providers) = beat
        .live
        .pointer("/stats/providers")
        .and_then(|p| serde_json::from_value::<Vec<sluice_engine::ProviderReport>>(p.clone()).ok())
    else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for p in providers {
        let l = p.limits;
        let configured = [
            ("rps", l.rps),
            ("rpm", l.rpm),
            ("rph", l.rph),
            ("rpd", l.rpd),
            ("tpm", l.tpm),
            ("tpd", l.tpd),
            ("itpm", l.itpm),
            ("otpm", l.otpm),
        ];
        // Announced limits fill slots of `limits` too: shown once, as announced.
        let announced: Vec<String> = p
            .announced
            .iter()
            .map(|a| format!("{} (announced)", a.describe()))
            .collect();
        let mut parts: Vec<String> = configured
            .iter()
            .filter_map(|(name, v)| v.map(|v| (name, v)))
            .filter(|(_, v)| !p.announced.iter().any(|a| a.limit == *v))
            .map(|(name, v)| format!("{name} {}", fmt_count(v)))
            .collect();
        parts.extend(announced);
        if !parts.is_empty() {
            lines.push(format!("limits     {}: {}", p.name, parts.join(" · ")));
        }
    }
    lines
}

pub(crate) fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let location = super::existing_store(&args.store)?;
    let mut store = location.open()?;
    let runs = store.list_runs()?;
    if args.json {
        outln!("{}", serde_json::to_string(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        eprintln!("no runs in {location}");
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<28} {:<12} {:<20} {:>10} {:>10} {:>8} {:>10}",
        "RUN",
        "STATE",
        "CREATED",
        "TOTAL",
        "DONE",
        "FAILED",
        "PENDING"
    );
    for summary in runs {
        let pending = sluice_engine::pending(&summary.run, &summary.counts);
        outln!(
            "{:<28} {:<12} {:<20} {:>10} {:>10} {:>8} {:>10}",
            summary.run.id,
            summary.run.state,
            fmt_time(summary.run.created_at),
            summary
                .run
                .total
                .map(|t| t.to_string())
                .unwrap_or_else(|| "?".into()),
            summary.counts.done,
            summary.counts.failed,
            pending.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
        );
    }
    Ok(ExitCode::SUCCESS)
}
