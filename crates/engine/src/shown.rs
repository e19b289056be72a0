//! A run's state as every surface shows it (`sluice status`, the server's
//! views, the dashboard), from what the store holds: its state, its control
//! and the heartbeats of the processes executing it.

use sluice_store::{RunMeta, WorkerBeat, STATE_RUNNING};

use crate::control::{ControlState, StoredControl};
use crate::identity::worker_state;

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
) -> String {
    if run.state != STATE_RUNNING {
        return run.state.clone();
    }
    let live: Vec<&WorkerBeat> = beats
        .iter()
        .filter(|b| worker_state(b, now) == "running")
        .collect();
    if live.is_empty() && beats.iter().any(|b| b.state == "running") {
        return STATE_PROCESS_GONE.into();
    }
    match control.map(|c| c.state) {
        Some(ControlState::Pause) => {
            let applied = live.iter().all(|b| {
                b.live.get("control").and_then(|v| v.as_str()) == Some(ControlState::Pause.as_str())
            });
            if applied { "paused" } else { "pausing" }.into()
        }
        Some(ControlState::Cancel) => "cancelling".into(),
        _ => run.state.clone(),
    }
}

/// How a `running` run whose executing processes are all gone is shown.
pub const STATE_PROCESS_GONE: &str = "interrupted (process gone)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now_ms;
    use crate::identity::identity;

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
        let here = &identity().host;
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
        assert_eq!(worker_state(&dead, now), "lost");
        assert_eq!(worker_state(&alive, now), "running");
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
