//! `sluice pause|resume|cancel RUN`: steer a run wherever it executes. The
//! request is kept in the store (run state `control`); every process
//! executing the run — `sluice run`, `sluice worker`s, a server — reads it
//! with its heartbeat and applies it within about a second.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;
use sluice_engine::{executing, read_control, requester, write_control, ControlState};
use sluice_store::{RunMeta, Store, STATE_FINISHED};

use super::UsageError;
use crate::cli::ControlArgs;
use crate::display::fmt_count;

/// How long `sluice cancel` waits for the processes to stop (they give the
/// calls on the wire a grace period of a few seconds).
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// The run named on the command line, refused if it has finished.
fn open(args: &ControlArgs, verb: &str) -> anyhow::Result<(Box<dyn Store>, RunMeta)> {
    let location = super::existing_store(&args.store)?;
    let mut store = location.open()?;
    let Some(run) = store.find_run(&args.run)? else {
        return Err(UsageError(format!(
            "no run {:?} in {location}; list runs with `sluice runs`",
            args.run
        ))
        .into());
    };
    if run.state == STATE_FINISHED {
        bail!(
            "run {} has finished, so there is nothing to {verb}; `sluice retry {}` re-runs its failed items",
            run.id,
            run.id
        );
    }
    Ok((store, run))
}

/// "the process executing it starts" / "the 3 processes executing it start".
fn processes(n: usize, verb: &str) -> String {
    match n {
        1 => format!("the process executing it {verb}s"),
        n => format!("the {n} processes executing it {verb}"),
    }
}

fn not_executing(run: &RunMeta, verb: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "run {} is not executing (state {}; no process is working on it), so there is nothing to {verb}; `sluice resume {}` says how to continue it",
        run.id,
        run.state,
        run.id
    )
}

pub(crate) fn pause(args: ControlArgs) -> anyhow::Result<ExitCode> {
    let (mut store, run) = open(&args, "pause")?;
    let working = executing(&mut *store, &run.id)?;
    if working.is_empty() {
        return Err(not_executing(&run, "pause"));
    }
    match read_control(&mut *store, &run.id)?.map(|c| (c.state, c.by)) {
        Some((ControlState::Cancel, by)) => {
            bail!(
                "run {} is being cancelled (by {by}); nothing to pause",
                run.id
            )
        }
        Some((ControlState::Pause, by)) => {
            eprintln!("sluice pause: run {} is already paused (by {by})", run.id);
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    write_control(
        &mut *store,
        &run.id,
        ControlState::Pause,
        &requester("sluice pause"),
    )?;
    eprintln!(
        "sluice pause: run {} paused: {} no new call within about a second \
         (calls on the wire finish and are recorded); `sluice resume {}` continues it",
        run.id,
        processes(working.len(), "start"),
        run.id
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn resume(args: ControlArgs) -> anyhow::Result<ExitCode> {
    let (mut store, run) = open(&args, "resume")?;
    let working = executing(&mut *store, &run.id)?;
    let control = read_control(&mut *store, &run.id)?;
    let held = control
        .as_ref()
        .is_some_and(|c| c.state != ControlState::Run);
    if working.is_empty() {
        // Nothing to un-pause here; what is recorded lets workers join it
        // again and a rerun start unpaused.
        if held {
            write_control(
                &mut *store,
                &run.id,
                ControlState::Run,
                &requester("sluice resume"),
            )?;
        }
        let how = how_to_continue(&mut *store, &run)?;
        eprintln!(
            "sluice resume: run {} is not executing (state {}); {how}",
            run.id, run.state
        );
        return Ok(ExitCode::SUCCESS);
    }
    match control {
        Some(c) if c.state == ControlState::Cancel => bail!(
            "run {} is being cancelled (by {}); once it has stopped, `sluice resume {}` says how to continue it",
            run.id,
            c.by,
            run.id
        ),
        Some(c) if c.state == ControlState::Pause => {}
        _ => {
            eprintln!("sluice resume: run {} is not paused; nothing to do", run.id);
            return Ok(ExitCode::SUCCESS);
        }
    }
    write_control(
        &mut *store,
        &run.id,
        ControlState::Run,
        &requester("sluice resume"),
    )?;
    eprintln!(
        "sluice resume: run {} resumed: {} within about a second",
        run.id,
        processes(working.len(), "continue")
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn cancel(args: ControlArgs) -> anyhow::Result<ExitCode> {
    let (mut store, run) = open(&args, "cancel")?;
    let working = executing(&mut *store, &run.id)?;
    if working.is_empty() {
        return Err(not_executing(&run, "cancel"));
    }
    write_control(
        &mut *store,
        &run.id,
        ControlState::Cancel,
        &requester("sluice cancel"),
    )?;
    eprintln!(
        "sluice cancel: run {}: cancel recorded; {} within about a second; waiting",
        run.id,
        processes(working.len(), "stop")
    );
    let started = Instant::now();
    let mut left = working.len();
    while started.elapsed() < CANCEL_WAIT {
        std::thread::sleep(Duration::from_millis(200));
        left = executing(&mut *store, &run.id)?.len();
        if left == 0 {
            break;
        }
    }
    if left > 0 {
        eprintln!(
            "sluice cancel: run {}: {left} process(es) still stopping after {} s; `sluice status {}` shows when they are done",
            run.id,
            CANCEL_WAIT.as_secs(),
            run.id
        );
        return Ok(ExitCode::SUCCESS);
    }
    let now = store.find_run(&run.id)?.unwrap_or(run);
    let counts = store.counts(&now.id)?;
    let pending = now
        .total
        .map(|t| fmt_count(t.saturating_sub(counts.done + counts.failed)))
        .unwrap_or_else(|| "?".into());
    eprintln!(
        "sluice cancel: run {} stopped ({}): {} done · {} failed · {pending} pending; `sluice resume {}` says how to finish it",
        now.id,
        now.state,
        fmt_count(counts.done),
        fmt_count(counts.failed),
        now.id
    );
    Ok(ExitCode::SUCCESS)
}

/// How a run nobody executes is started again: the command that ran it,
/// workers for a shared run, or the server that keeps its job.
fn how_to_continue(store: &mut dyn Store, run: &RunMeta) -> anyhow::Result<String> {
    let setting = |key: &str| run.settings.get(key).and_then(Value::as_str);
    if !store.run_state(&run.id, "server.job")?.is_empty() {
        return Ok(format!(
            "it was submitted to `sluice serve`: continue it with `POST /v1/runs/{}/resume` on a server over this store",
            run.id
        ));
    }
    let shared = match store.shared() {
        Some(shared) => shared.job_def(&run.id)?.is_some(),
        None => false,
    };
    let job = (sluice_engine::RunMode::of(&run.settings) == sluice_engine::RunMode::Job)
        .then(|| setting("job"))
        .flatten();
    Ok(match job {
        Some(job) => {
            let sets: String = run
                .settings
                .get("sets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|s| format!(" --set {s}"))
                .collect();
            if shared {
                format!(
                    "`sluice worker` processes on this store pick it up now (start one with `sluice worker`), or rerun `sluice run {job}{sets}`"
                )
            } else {
                format!("rerun `sluice run {job}{sets}` to finish it")
            }
        }
        _ => {
            let input = setting("input").unwrap_or("REQUESTS.jsonl");
            let url = setting("url").unwrap_or("URL");
            format!("rerun `sluice run {input} --url {url}` (with the same flags) to finish it")
        }
    })
}
