//! A run's state as every surface shows it (`sluice status`, the server's
//! views, the dashboard), from what the store holds: its state, its control
//! and the heartbeats of the processes executing it.

use sluice_store::{RunMeta, WorkerBeat, STATE_FINISHED, STATE_INTERRUPTED, STATE_RUNNING};

use crate::control::{ControlState, RunControl, StoredControl};
use crate::identity::{worker_state, WorkerState};

/// A run's state as every surface shows it. Serialized (and displayed) as
/// the text the store and the API have always used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Some process executes it.
    Running,
    /// A pause is asked; not every process executing it has applied it yet.
    Pausing,
    /// Paused: nothing new starts anywhere.
    Paused,
    /// A cancel is asked; calls on the wire are finishing.
    Cancelling,
    /// Every process that was executing it is gone (killed, machine lost).
    ProcessGone,
    /// Ended: every item has its outcome.
    Finished,
    /// Ended before every item had its outcome (a signal, a cancel, a stop).
    Interrupted,
    /// A stored state this version does not know, shown as stored.
    Other(String),
}

impl RunState {
    /// The state as stored (`running`, `finished`, `interrupted`).
    pub fn stored(state: &str) -> RunState {
        match state {
            STATE_RUNNING => RunState::Running,
            STATE_FINISHED => RunState::Finished,
            STATE_INTERRUPTED => RunState::Interrupted,
            other => RunState::Other(other.to_owned()),
        }
    }

    /// The text shown: `running`, `pausing`, `paused`, `cancelling`,
    /// `interrupted (process gone)`, `finished`, `interrupted`.
    pub fn as_str(&self) -> &str {
        match self {
            RunState::Running => STATE_RUNNING,
            RunState::Pausing => "pausing",
            RunState::Paused => "paused",
            RunState::Cancelling => "cancelling",
            RunState::ProcessGone => STATE_PROCESS_GONE,
            RunState::Finished => STATE_FINISHED,
            RunState::Interrupted => STATE_INTERRUPTED,
            RunState::Other(s) => s,
        }
    }

    /// The state of a run this process executes: its own control tells at
    /// once (there is no heartbeat of another process to wait for).
    pub fn here(control: &RunControl) -> RunState {
        match control.state() {
            ControlState::Run => RunState::Running,
            ControlState::Pause => RunState::Paused,
            ControlState::Cancel => RunState::Cancelling,
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for RunState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for RunState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A run's state as every surface shows it (`sluice status`, the server's
/// views, the dashboard): the stored state, except for a `running` run —
/// `interrupted (process gone)` when every process that was executing it
/// is gone (killed, its machine lost); `pausing` while its control asks
/// for a pause that not every process executing it has applied yet, then
/// `paused` (nothing new starts anywhere); `cancelling` while a cancel is
/// asked. `beats` are the run's heartbeats, `now` unix ms.
pub fn shown_state(
    run: &RunMeta,
    control: Option<&StoredControl>,
    beats: &[WorkerBeat],
    now: i64,
) -> RunState {
    if run.state != STATE_RUNNING {
        return RunState::stored(&run.state);
    }
    let live: Vec<&WorkerBeat> = beats
        .iter()
        .filter(|b| worker_state(b, now) == WorkerState::Running)
        .collect();
    if live.is_empty() && beats.iter().any(|b| b.state == "running") {
        return RunState::ProcessGone;
    }
    match control.map(|c| c.state) {
        Some(ControlState::Pause) => {
            let applied = live.iter().all(|b| {
                b.live.get("control").and_then(|v| v.as_str()) == Some(ControlState::Pause.as_str())
            });
            if applied {
                RunState::Paused
            } else {
                RunState::Pausing
            }
        }
        Some(ControlState::Cancel) => RunState::Cancelling,
        _ => RunState::Running,
    }
}

/// A process executing a run (its heartbeat), as every surface lists it —
/// `sluice status` and the server's run view alike.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerView {
    /// Its worker id (`host:pid:start`).
    pub worker_id: String,
    /// Its host.
    pub host: String,
    /// Its pid.
    pub pid: u32,
    /// Its state as of the view.
    pub state: WorkerState,
    /// Calls it has on the wire.
    pub in_flight: u64,
    /// When it joined the run, unix ms.
    pub started_at: i64,
    /// Its last heartbeat, unix ms.
    pub last_beat_at: i64,
    /// Its heartbeat's live figures (counters, rates, stats, control) as
    /// written, kept whole.
    pub live: serde_json::Value,
}

impl WorkerView {
    /// The control it applies now (`run`, `pause`, `cancel`), per its beat.
    pub fn applied_control(&self) -> Option<&str> {
        self.live.get("control").and_then(|v| v.as_str())
    }
}

/// The view of heartbeat `w` as of `now` (unix ms).
pub fn worker_view(w: &WorkerBeat, now: i64) -> WorkerView {
    WorkerView {
        worker_id: w.worker_id.clone(),
        host: w.host.clone(),
        pid: w.pid,
        state: worker_state(w, now),
        in_flight: w.in_flight,
        started_at: w.started_at,
        last_beat_at: w.beat_at,
        live: w.live.clone(),
    }
}

/// How a `running` run whose executing processes are all gone is shown.
pub const STATE_PROCESS_GONE: &str = "interrupted (process gone)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now_ms;
    use crate::identity::process;

    fn beat_of(host: &str, pid: u32, beat_at: i64, control: &str) -> WorkerBeat {
        WorkerBeat {
            run_id: "r".into(),
            worker_id: format!("{host}:{pid}:0"),
            host: host.into(),
            pid,
            started_at: 0,
            beat_at,
            state: "running".into(),
            in_flight: 0,
            live: serde_json::json!({ "control": control }),
        }
    }

    #[test]
    fn a_run_executed_here_shows_its_own_control_at_once() {
        let control = RunControl::new();
        assert_eq!(RunState::here(&control), RunState::Running);
        control.pause();
        assert_eq!(RunState::here(&control), "paused");
        // A cancel is shown as `status` shows it from the stored control.
        control.cancel();
        assert_eq!(RunState::here(&control), RunState::Cancelling);
        let cancel = StoredControl {
            state: ControlState::Cancel,
            by: "t".into(),
            at: 0,
        };
        let run = RunMeta {
            id: "r-1".into(),
            name: "r".into(),
            source: "s".into(),
            created_at: 0,
            updated_at: 0,
            finished_at: None,
            total: None,
            settings: serde_json::json!({}),
            state: STATE_RUNNING.into(),
        };
        assert_eq!(
            shown_state(&run, Some(&cancel), &[], now_ms()),
            RunState::here(&control)
        );
        assert_eq!(
            serde_json::to_value(RunState::Cancelling).unwrap(),
            "cancelling"
        );
    }

    #[test]
    fn a_run_shows_process_gone_pausing_and_paused_from_its_beats() {
        let now = now_ms();
        let run = RunMeta {
            id: "r-1".into(),
            name: "r".into(),
            source: "s".into(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            total: None,
            settings: serde_json::json!({}),
            state: STATE_RUNNING.into(),
        };
        let me = std::process::id();
        let here = &process().host;
        let pause = StoredControl {
            state: ControlState::Pause,
            by: "t".into(),
            at: now,
        };
        // This process runs; a pid far past pid_max does not.
        let alive = beat_of(here, me, now, "run");
        let dead = beat_of(here, 4_999_999, now, "run");
        let stale = beat_of("elsewhere", 7, now - 60_000, "run");
        let far = beat_of("elsewhere", 7, now, "pause");
        assert_eq!(worker_state(&dead, now), WorkerState::Lost);
        assert_eq!(worker_state(&alive, now), WorkerState::Running);
        assert_eq!(
            shown_state(&run, None, std::slice::from_ref(&alive), now),
            "running"
        );
        for gone in [vec![dead.clone()], vec![stale.clone(), dead.clone()]] {
            assert_eq!(shown_state(&run, None, &gone, now), STATE_PROCESS_GONE);
        }
        // No beat yet (or a queued shared run nobody works on): not gone.
        assert_eq!(shown_state(&run, None, &[], now), "running");
        let both = [alive.clone(), far.clone()];
        assert_eq!(shown_state(&run, Some(&pause), &both, now), "pausing");
        let applied = [beat_of(here, me, now, "pause"), far, dead];
        assert_eq!(shown_state(&run, Some(&pause), &applied, now), "paused");
        let finished = RunMeta {
            state: "finished".into(),
            ..run
        };
        assert_eq!(shown_state(&finished, None, &[stale], now), "finished");
    }
}
