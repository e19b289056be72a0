//! Run control kept in the store (run state [`CONTROL_KEY`]), so a run
//! executing in one process can be paused, resumed and cancelled from
//! another: `sluice pause`, a server, any process with the store. Every
//! process executing the run reads the entry with its heartbeat (once a
//! second, on the writer thread: no store query per call) and applies what
//! changed to its in-process [`RunControl`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_store::{Store, WorkerBeat};

use super::RunControl;
use crate::clock::now_ms;
use crate::identity::WorkerState;

/// The run-state key of a run's control.
pub const CONTROL_KEY: &str = "control";

/// What a run's control asks of the processes executing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlState {
    /// Work (the default; also what a resume records).
    Run,
    /// No new call starts; calls on the wire finish and are recorded.
    Pause,
    /// Stop as on Ctrl-C: the run ends `interrupted`, its items stay pending.
    Cancel,
}

impl ControlState {
    /// `run`, `pause` or `cancel`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlState::Run => "run",
            ControlState::Pause => "pause",
            ControlState::Cancel => "cancel",
        }
    }
}

/// A run's control as kept in the store: what, who asked, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredControl {
    /// What is asked.
    pub state: ControlState,
    /// Who asked (command or server, host and pid), for `sluice status`.
    pub by: String,
    /// When it was asked (unix ms).
    pub at: i64,
}

/// The run's control, if one was ever recorded. An entry that does not
/// decode (written by another version) counts as none.
pub fn read_control(
    store: &mut dyn Store,
    run_id: &str,
) -> sluice_store::Result<Option<StoredControl>> {
    let entry = store
        .run_state(run_id, CONTROL_KEY)?
        .into_iter()
        .find(|(k, _)| k == CONTROL_KEY);
    Ok(entry.and_then(|(_, v)| match serde_json::from_value(v) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("run {run_id}: its stored control does not decode ({e}); ignored");
            None
        }
    }))
}

/// Records `state` as the run's control, asked by `by`.
pub fn write_control(
    store: &mut dyn Store,
    run_id: &str,
    state: ControlState,
    by: &str,
) -> sluice_store::Result<StoredControl> {
    let control = StoredControl {
        state,
        by: by.to_owned(),
        at: now_ms(),
    };
    let value = serde_json::to_value(&control).unwrap_or(serde_json::Value::Null);
    store.put_run_state(run_id, CONTROL_KEY, &value)?;
    Ok(control)
}

/// Who this process is, as a control's `by`: `sluice pause on HOST (pid N)`.
pub fn requester(what: &str) -> String {
    let id = crate::identity::process();
    format!("{what} on {} (pid {})", id.host, id.pid)
}

/// The processes executing the run now: heartbeats `running` and fresh.
pub fn executing(store: &mut dyn Store, run_id: &str) -> sluice_store::Result<Vec<WorkerBeat>> {
    let now = now_ms();
    Ok(store
        .workers(run_id)?
        .into_iter()
        .filter(|w| crate::identity::worker_state(w, now) == WorkerState::Running)
        .collect())
}

/// Takes the stored control when this process starts executing a run:
/// a pause holds (the run starts paused); a cancel ended an earlier
/// execution, so one started on purpose (`sluice run`, a server's resume)
/// records `run` in its place — once no other process still executes the
/// run (they may not have read the cancel yet, and would never see it) —
/// while a worker honours it and leaves.
/// Returns the control as this process has seen it.
pub(crate) fn attach(
    store: &mut dyn Store,
    run_id: &str,
    control: &RunControl,
    on_purpose: bool,
) -> sluice_store::Result<Option<StoredControl>> {
    let stored = read_control(store, run_id)?;
    match stored.as_ref().map(|c| c.state) {
        Some(ControlState::Cancel) if on_purpose && others_executing(store, run_id)? => {
            tracing::warn!(
                "run {run_id} is being cancelled and other processes are still stopping; run it again once `sluice status {run_id}` shows none executing it"
            );
            control.cancel();
        }
        Some(ControlState::Cancel) if on_purpose => {
            return write_control(store, run_id, ControlState::Run, &requester("sluice run"))
                .map(Some);
        }
        Some(ControlState::Cancel) => control.cancel(),
        Some(ControlState::Pause) => {
            if let Some(c) = &stored {
                tracing::warn!(
                    "run {run_id} is paused (by {}); nothing is sent until `sluice resume {run_id}`",
                    c.by
                );
            }
            control.pause();
        }
        Some(ControlState::Run) | None => {}
    }
    Ok(stored)
}

/// Whether a process other than this one executes the run now.
fn others_executing(store: &mut dyn Store, run_id: &str) -> sluice_store::Result<bool> {
    let me = crate::identity::process();
    Ok(executing(store, run_id)?
        .iter()
        .any(|w| w.host != me.host || w.pid != me.pid))
}

/// The writer thread's view of the stored control: applied to the run's
/// [`RunControl`] when it changes, so a pause or resume made in-process
/// (by an embedding caller) is not undone by an old entry.
pub(crate) struct Watch {
    control: Arc<RunControl>,
    seen: Option<StoredControl>,
}

impl Watch {
    /// Watches for changes after `seen` (what [`attach`] returned).
    pub(crate) fn new(control: Arc<RunControl>, seen: Option<StoredControl>) -> Watch {
        Watch { control, seen }
    }

    /// Reads the stored control (with a heartbeat) and applies a change.
    pub(crate) fn poll(&mut self, store: &mut dyn Store, run_id: &str) {
        let now = match read_control(store, run_id) {
            Ok(now) => now,
            Err(e) => {
                // A missed look is retried with the next beat.
                tracing::warn!("could not read the run's control: {e}");
                return;
            }
        };
        if now == self.seen {
            return;
        }
        if let Some(c) = &now {
            tracing::info!(run = run_id, by = %c.by, "control: {}", c.state.as_str());
            apply(&self.control, c.state);
        }
        self.seen = now;
    }
}

/// Makes `control` do what `state` asks.
pub(crate) fn apply(control: &RunControl, state: ControlState) {
    match state {
        ControlState::Run => control.resume(),
        ControlState::Pause => control.pause(),
        ControlState::Cancel => control.cancel(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_store::{NewRun, SqliteStore};

    fn store_with_run() -> (tempfile::TempDir, SqliteStore, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let run = store
            .create_run(&NewRun {
                name: "r".into(),
                source: "s".into(),
                settings: serde_json::json!({}),
            })
            .unwrap();
        (dir, store, run.id)
    }

    #[test]
    fn the_watch_applies_changes_only() {
        let (_dir, mut store, run) = store_with_run();
        let control = RunControl::new();
        let seen = attach(&mut store, &run, &control, true).unwrap();
        assert_eq!(seen, None);
        let mut watch = Watch::new(control.clone(), seen);
        watch.poll(&mut store, &run);
        assert!(!control.is_paused());
        write_control(&mut store, &run, ControlState::Pause, "test").unwrap();
        watch.poll(&mut store, &run);
        assert!(control.is_paused());
        // Resumed in-process: an unchanged entry does not pause it again.
        control.resume();
        watch.poll(&mut store, &run);
        assert!(!control.is_paused());
        write_control(&mut store, &run, ControlState::Cancel, "test").unwrap();
        watch.poll(&mut store, &run);
        assert!(control.is_cancelled());
    }

    #[test]
    fn starting_on_purpose_replaces_a_cancel_and_a_pause_holds() {
        let (_dir, mut store, run) = store_with_run();
        write_control(&mut store, &run, ControlState::Cancel, "earlier").unwrap();
        let worker = RunControl::new();
        attach(&mut store, &run, &worker, false).unwrap();
        assert!(worker.is_cancelled(), "a worker honours the cancel");
        let rerun = RunControl::new();
        let seen = attach(&mut store, &run, &rerun, true).unwrap().unwrap();
        assert_eq!(seen.state, ControlState::Run);
        assert!(!rerun.is_cancelled());
        assert_eq!(read_control(&mut store, &run).unwrap(), Some(seen));
        write_control(&mut store, &run, ControlState::Pause, "someone").unwrap();
        let paused = RunControl::new();
        attach(&mut store, &run, &paused, true).unwrap();
        assert!(paused.is_paused());
    }

    #[test]
    fn an_entry_that_does_not_decode_counts_as_none() {
        let (_dir, mut store, run) = store_with_run();
        store
            .put_run_state(&run, CONTROL_KEY, &serde_json::json!({"state": "hover"}))
            .unwrap();
        assert_eq!(read_control(&mut store, &run).unwrap(), None);
    }
}
