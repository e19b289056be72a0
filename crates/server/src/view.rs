//! One run as the API and the dashboard show it: what the store holds
//! (state, counts, workers, the control asked of it) plus the live detail —
//! from the engine directly for runs executed here, from the workers'
//! heartbeats for runs started elsewhere (the CLI against the same store) —
//! and the advice derived from it.

use serde_json::{json, Value as Json};
use sluice_engine::{
    read_control, shown_state, worker_state, RunState, StoredControl, WorkerState,
};
use sluice_store::{RunCounts, RunMeta, Store, WorkerBeat};

use crate::advice::{advise, Advice};
use crate::error::ApiResult;
use crate::figures::{Counts, Live, LiveRates};
use crate::live_run::LiveRun;

/// The live detail of a run executed here.
pub(crate) fn live_here(run: &LiveRun) -> Live {
    let (snapshot, rates) = run.sample();
    let ewma = run
        .progress
        .latency_ewma_us
        .load(std::sync::atomic::Ordering::Relaxed) as f64
        / 1e3;
    Live {
        source: "server".into(),
        counters: serde_json::to_value(snapshot).unwrap_or(Json::Null),
        rates: LiveRates {
            calls_per_sec: rates.calls_per_sec,
            items_per_sec: rates.items_per_sec,
            tokens_per_min: rates.tokens_per_min,
            throttled_per_sec: rates.throttled_per_sec,
        },
        latency_ewma_ms: ewma,
        eta_secs: snapshot.eta().map(|d| d.as_secs_f64()),
        stats: run.progress.stats.report(),
        control: Some(run.control.state().as_str().to_owned()),
    }
}

/// The run's public state: for a run executed here its own control's
/// (`running`, `paused`, `cancelling`: it applies at once in this process);
/// otherwise as every surface
/// shows it ([`shown_state`]: `pausing` until each process executing it
/// applied a pause, `interrupted (process gone)` when none is left).
fn state(
    run: &RunMeta,
    here: Option<&LiveRun>,
    control: Option<&StoredControl>,
    beats: &[WorkerBeat],
) -> RunState {
    match here {
        // Executed here: its own control tells at once, as `status` tells
        // from the heartbeats (a cancel shows `cancelling` on both).
        Some(r) if !r.is_finished() => RunState::here(&r.control),
        _ => shown_state(run, control, beats, sluice_engine::now_ms()),
    }
}

/// The stored control of a run still running, for [`state`] and the view
/// (`None` for ended runs: nothing left to steer).
pub(crate) fn control_of(store: &mut dyn Store, run: &RunMeta) -> ApiResult<Option<StoredControl>> {
    if run.state != sluice_store::STATE_RUNNING {
        return Ok(None);
    }
    Ok(read_control(store, &run.id)?)
}

/// The heartbeats of a run still running, for [`state`] (none for ended
/// runs: their state is the stored one).
pub(crate) fn beats_of(store: &mut dyn Store, run: &RunMeta) -> ApiResult<Vec<WorkerBeat>> {
    if run.state != sluice_store::STATE_RUNNING {
        return Ok(Vec::new());
    }
    Ok(store.workers(&run.id)?)
}

/// Builds the view of `run` (store reads: call on a blocking thread).
pub(crate) fn view(
    store: &mut dyn Store,
    run: &RunMeta,
    here: Option<&LiveRun>,
    top_errors: bool,
) -> ApiResult<Json> {
    // A run whose thread here has ended recorded its final state first:
    // `run`, read before, may still say `running` (the end event showed it).
    let reread;
    let run = match here {
        Some(r) if r.is_finished() => {
            reread = store.find_run(&run.id)?.unwrap_or_else(|| run.clone());
            &reread
        }
        _ => run,
    };
    let counts = Counts::new(run, &store.counts(&run.id)?);
    let beats = store.workers(&run.id)?;
    let control = control_of(store, run)?;
    let now = sluice_engine::now_ms();
    let live = match here.filter(|r| !r.is_finished()) {
        Some(r) => Some(live_here(r)),
        None => beats
            .iter()
            .find(|w| worker_state(w, now) == WorkerState::Running)
            .and_then(|w| serde_json::from_value::<Live>(w.live.clone()).ok())
            .map(|mut l| {
                l.source = "worker".into();
                l
            }),
    };
    // A run nobody works on now opens with its final figures.
    let summary = match (&live, top_errors) {
        (None, true) => {
            let sessions = crate::history::sessions(store, &run.id, None)?;
            (!sessions.is_empty()).then(|| crate::history::summary(&sessions))
        }
        _ => None,
    };
    let errors = if top_errors {
        store.top_errors(&run.id, 5)?
    } else {
        Vec::new()
    };
    // The same failures by cause (step, code, message without reply text
    // and ids), with counts and an example item.
    let groups = if top_errors {
        sluice_engine::group_errors(store, &run.id, 10)?
    } else {
        Vec::new()
    };
    // Advice names the most common cause, not one item's exact message.
    let causes: Vec<(String, u64)> = groups
        .iter()
        .map(|g| (format!("{}: {}", g.key.code, g.key.cause), g.count))
        .collect();
    let advice: Vec<Advice> = advise(live.as_ref(), &counts, &causes);
    let notices: Vec<String> = store
        .run_state(&run.id, crate::policy::NOTICES)?
        .into_iter()
        .next()
        .and_then(|(_, v)| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let mode = sluice_engine::RunMode::of(&run.settings).as_str();
    Ok(json!({
        "id": run.id,
        "name": run.name,
        "state": state(run, here, control.as_ref(), &beats),
        "control": control,
        "mode": mode,
        "executed_here": here.is_some_and(|r| !r.is_finished()),
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "finished_at": run.finished_at,
        "counts": counts,
        "live": live,
        // Listed as `status --json` lists them (one view of a worker).
        "workers": beats.iter().map(|w| sluice_engine::worker_view(w, now)).collect::<Vec<_>>(),
        "top_errors": errors.iter().map(|(m, n)| json!({"error": m, "count": n})).collect::<Vec<_>>(),
        "error_groups": groups,
        "summary": summary,
        "recommendations": advice,
        "notices": notices,
    }))
}

/// A run in the list of runs (`control`, `beats`: see [`control_of`],
/// [`beats_of`]).
pub(crate) fn summary(
    run: &RunMeta,
    counts: &RunCounts,
    here: Option<&LiveRun>,
    control: Option<&StoredControl>,
    beats: &[WorkerBeat],
) -> Json {
    json!({
        "id": run.id,
        "name": run.name,
        "state": state(run, here, control, beats),
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "counts": Counts::new(run, counts),
    })
}
