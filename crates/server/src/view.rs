//! One run as the API and the dashboard show it: the engine's run view
//! ([`sluice_engine::run_view`], the same `sluice status --json` prints) with
//! the live figures of a run executed here, plus what only the server adds:
//! the final figures of a run nobody works on, advice and notices.

use serde_json::{json, Value as Json};
use sluice_engine::{
    read_control, view_state, ExecutedHere, LiveFigures, RunState, StoredControl, ViewCounts,
    ViewParts,
};
use sluice_store::{RunCounts, RunMeta, Store, WorkerBeat};

use crate::advice::{advise, Advice};
use crate::error::ApiResult;
use crate::live_run::LiveRun;

/// The live figures of a run executed here.
pub(crate) fn live_here(run: &LiveRun) -> LiveFigures {
    let (snapshot, rates) = run.sample();
    LiveFigures::of(&run.progress, &snapshot, rates, Some(&run.control))
}

/// What this process knows of a run it executes (none once it ended): its
/// own control tells the state at once (`running`, `paused`, `cancelling`),
/// where `status` tells it from the heartbeats.
fn executed_here(here: Option<&LiveRun>) -> Option<ExecutedHere> {
    here.filter(|r| !r.is_finished()).map(|r| ExecutedHere {
        state: RunState::here(&r.control),
        live: live_here(r),
    })
}

/// The stored control of a run still running, for the list's state (`None`
/// for ended runs: their state is the stored one).
pub(crate) fn control_of(store: &mut dyn Store, run: &RunMeta) -> ApiResult<Option<StoredControl>> {
    if run.state != sluice_store::STATE_RUNNING {
        return Ok(None);
    }
    Ok(read_control(store, &run.id)?)
}

/// The heartbeats of a run still running, for the list's state (none for
/// ended runs: their state is the stored one).
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
    let now = sluice_engine::now_ms();
    let parts = ViewParts { errors: top_errors };
    let shared = sluice_engine::run_view(store, run, executed_here(here), parts, now)?;
    // A run nobody works on now opens with its final figures.
    let summary = match (&shared.live, top_errors) {
        (None, true) => {
            let sessions = crate::history::sessions(store, &run.id, None)?;
            (!sessions.is_empty()).then(|| crate::history::summary(&sessions))
        }
        _ => None,
    };
    // Advice names the most common cause, not one item's exact message.
    let causes: Vec<(String, u64)> = shared
        .error_groups
        .iter()
        .map(|g| (format!("{}: {}", g.key.code, g.key.cause), g.count))
        .collect();
    let advice: Vec<Advice> = advise(shared.live.as_ref(), &shared.counts, &causes);
    let notices: Vec<String> = store
        .run_state(&run.id, crate::policy::NOTICES)?
        .into_iter()
        .next()
        .and_then(|(_, v)| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let mut view = serde_json::to_value(&shared).unwrap_or(Json::Null);
    if let Some(fields) = view.as_object_mut() {
        fields.insert("summary".into(), json!(summary));
        fields.insert("recommendations".into(), json!(advice));
        fields.insert("notices".into(), json!(notices));
    }
    Ok(view)
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
    let own = here
        .filter(|r| !r.is_finished())
        .map(|r| RunState::here(&r.control));
    json!({
        "id": run.id,
        "name": run.name,
        "state": view_state(run, own.as_ref(), control, beats, sluice_engine::now_ms()),
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "counts": ViewCounts::new(run, counts),
    })
}
