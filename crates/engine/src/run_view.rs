//! One view of a run, shared by every surface that shows it: `sluice status
//! --json` and the server's `/v1/runs/{id}` (and so the dashboard). Built
//! from the store — state, control, counts, heartbeats, errors, queue,
//! batches — plus, for a run executed in the caller's own process, the
//! figures the caller holds live.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value as Json;
use sluice_store::{RunCounts, RunMeta, Store, WorkerBeat};

use crate::control::{read_control, StoredControl};
use crate::errors::{group_errors, ErrorGroup};
use crate::heartbeat::LiveFigures;
use crate::identity::{worker_state, WorkerState};
use crate::settings::{KeptWithRun, Offload, RunMode};
use crate::shown::{shown_state, worker_view, RunState, WorkerView};

/// The most frequent error messages listed (`top_errors`).
pub const TOP_ERRORS: usize = 5;
/// The most frequent error causes listed (`error_groups`).
pub const ERROR_GROUPS: usize = 10;

/// What the caller knows of a run it executes in its own process (the
/// server): its state from its own control (applied at once, where other
/// processes show it a heartbeat later) and its figures now.
#[derive(Debug, Clone)]
pub struct ExecutedHere {
    /// [`RunState::here`] of the run's control.
    pub state: RunState,
    /// [`LiveFigures::of`] the run's progress.
    pub live: LiveFigures,
}

/// Which parts of the view to read (the errors cost two queries more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewParts {
    /// Read `top_errors` and `error_groups` (else both are empty).
    pub errors: bool,
}

/// A run's totals as every surface shows them: the stored counts, with the
/// run's total and the items still pending.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ViewCounts {
    /// Items in the input, when known.
    pub total: Option<u64>,
    /// Items done.
    pub done: u64,
    /// Items failed.
    pub failed: u64,
    /// Items of the input with no recorded outcome (when `total` is known).
    pub pending: Option<u64>,
    /// Attempts over all recorded items.
    pub attempts: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    /// Attempts answered with 429.
    pub throttled: u64,
    /// Sum of prompt tokens.
    pub prompt_tokens: u64,
    /// Sum of completion tokens.
    pub completion_tokens: u64,
    /// Sum of last-attempt latencies (divide by `done + failed`).
    pub latency_ms_sum: u64,
    /// Earliest start of an item, unix ms.
    pub first_started_at: Option<i64>,
    /// Latest end of an item, unix ms.
    pub last_finished_at: Option<i64>,
}

impl ViewCounts {
    /// The counts of `run` from its stored `counts`.
    pub fn new(run: &RunMeta, c: &RunCounts) -> ViewCounts {
        ViewCounts {
            total: run.total,
            done: c.done,
            failed: c.failed,
            pending: pending(run, c),
            attempts: c.attempts,
            retries: c.retries,
            throttled: c.throttled,
            prompt_tokens: c.prompt_tokens,
            completion_tokens: c.completion_tokens,
            latency_ms_sum: c.latency_ms_sum,
            first_started_at: c.first_started_at,
            last_finished_at: c.last_finished_at,
        }
    }
}

/// Items of `run`'s input with no recorded outcome, when its total is known.
pub fn pending(run: &RunMeta, counts: &RunCounts) -> Option<u64> {
    run.total
        .map(|t| t.saturating_sub(counts.done + counts.failed))
}

/// A frequent error message and how many items failed with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopError {
    /// The message as recorded.
    pub error: String,
    /// Items that failed with it.
    pub count: u64,
}

/// A shared run's queue (PostgreSQL): units waiting and leased to workers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueView {
    /// Waiting to be claimed.
    pub queued: u64,
    /// Leased to a worker (expired leases included).
    pub leased: u64,
    /// Leases past their expiry.
    pub expired_leases: u64,
    /// With an item record.
    pub done: u64,
    /// Every unit has been enqueued.
    pub ready: bool,
}

/// One run as `sluice status --json` and the server show it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    /// The run's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its state as every surface shows it (see [`shown_state`]).
    pub state: RunState,
    /// What `sluice pause|resume|cancel` (or a server) last asked of it.
    pub control: Option<StoredControl>,
    /// `quick` or `job`.
    pub mode: RunMode,
    /// Whether the viewing process executes it now.
    pub executed_here: bool,
    /// Created, unix ms.
    pub created_at: i64,
    /// Last changed, unix ms.
    pub updated_at: i64,
    /// Ended, unix ms.
    pub finished_at: Option<i64>,
    /// Its totals.
    pub counts: ViewCounts,
    /// Items with no recorded outcome (as `counts.pending`).
    pub pending: Option<u64>,
    /// Live figures of a running run: the viewer's own (`source: server`)
    /// or the heartbeat of a process executing it (`source: worker`).
    pub live: Option<LiveFigures>,
    /// The processes executing it, by their heartbeats ([`worker_view`]).
    pub workers: Vec<WorkerView>,
    /// The most frequent error messages (empty unless asked for).
    pub top_errors: Vec<TopError>,
    /// The failures by cause (empty unless asked for).
    pub error_groups: Vec<ErrorGroup>,
    /// A shared run's queue.
    pub queue: Option<QueueView>,
    /// Batches submitted to providers' batch APIs (run state `batch:*`).
    pub batches: Vec<Json>,
    /// How each provider's calls were sent: live or through its batch API
    /// (and why), for a job run.
    pub offload: Option<BTreeMap<String, Offload>>,
}

/// The state of `run` as shown: the caller's own if it executes it,
/// otherwise from its stored state, control and heartbeats.
pub fn view_state(
    run: &RunMeta,
    here: Option<&RunState>,
    control: Option<&StoredControl>,
    beats: &[WorkerBeat],
    now: i64,
) -> RunState {
    match here {
        Some(state) => state.clone(),
        None => shown_state(run, control, beats, now),
    }
}

/// Builds the view of `run` from `store` (blocking store reads), `now`
/// unix ms. `here`: the caller executes the run and has its figures.
pub fn run_view(
    store: &mut dyn Store,
    run: &RunMeta,
    here: Option<ExecutedHere>,
    parts: ViewParts,
    now: i64,
) -> sluice_store::Result<RunView> {
    let stored = store.counts(&run.id)?;
    let beats = store.workers(&run.id)?;
    let control = read_control(store, &run.id)?;
    let executed_here = here.is_some();
    let (state, live) = match here {
        Some(h) => (
            h.state,
            Some(LiveFigures {
                source: "server".into(),
                ..h.live
            }),
        ),
        None => (
            shown_state(run, control.as_ref(), &beats, now),
            worker_live(&beats, now),
        ),
    };
    let (top_errors, error_groups) = if parts.errors {
        let top = store
            .top_errors(&run.id, TOP_ERRORS)?
            .into_iter()
            .map(|(error, count)| TopError { error, count })
            .collect();
        (top, group_errors(store, &run.id, ERROR_GROUPS)?)
    } else {
        (Vec::new(), Vec::new())
    };
    let queue = match store.shared() {
        Some(shared) => match shared.job_def(&run.id)? {
            Some(_) => {
                let q = shared.queue_counts(&run.id)?;
                Some(QueueView {
                    queued: q.queued,
                    leased: q.leased,
                    expired_leases: q.expired,
                    done: q.done,
                    ready: q.ready,
                })
            }
            None => None,
        },
        None => None,
    };
    let batches = store
        .run_state(&run.id, "batch:")?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    Ok(RunView {
        id: run.id.clone(),
        name: run.name.clone(),
        state,
        control,
        mode: RunMode::of(&run.settings),
        executed_here,
        created_at: run.created_at,
        updated_at: run.updated_at,
        finished_at: run.finished_at,
        counts: ViewCounts::new(run, &stored),
        pending: pending(run, &stored),
        live,
        workers: beats.iter().map(|w| worker_view(w, now)).collect(),
        top_errors,
        error_groups,
        queue,
        batches,
        offload: KeptWithRun::of(&run.settings).offload,
    })
}

/// The figures of the first process still executing the run, from its
/// heartbeat.
fn worker_live(beats: &[WorkerBeat], now: i64) -> Option<LiveFigures> {
    beats
        .iter()
        .find(|w| worker_state(w, now) == WorkerState::Running)
        .and_then(|w| serde_json::from_value::<LiveFigures>(w.live.clone()).ok())
        .map(|l| LiveFigures {
            source: "worker".into(),
            ..l
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{write_control, ControlState};
    use crate::identity::process;
    use sluice_store::{ItemRecord, ItemStatus, NewRun, SqliteStore};

    fn record(i: u64, status: ItemStatus, error: Option<&str>) -> ItemRecord {
        ItemRecord {
            item_id: format!("q{i}"),
            idx: i,
            hash: 0,
            status,
            attempts: 2,
            throttled: 1,
            status_code: Some(200),
            response: None,
            error: error.map(str::to_owned),
            prompt_tokens: Some(3),
            completion_tokens: Some(4),
            latency_ms: 10,
            started_at: 1_000 + i as i64,
            finished_at: 2_000 + i as i64,
            metadata: None,
            custom_id: None,
        }
    }

    fn beat(run: &str, live: Json) -> WorkerBeat {
        let me = process();
        WorkerBeat {
            run_id: run.into(),
            worker_id: format!("{}:{}:0", me.host, me.pid),
            host: me.host.clone(),
            pid: me.pid,
            started_at: 0,
            beat_at: crate::clock::now_ms(),
            state: "running".into(),
            in_flight: 1,
            live,
        }
    }

    #[test]
    fn the_view_reads_counts_control_errors_and_a_workers_figures() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let run = store
            .create_run(&NewRun {
                name: "r".into(),
                source: "s".into(),
                settings: serde_json::json!({"mode": "job", "offload": {"p": {
                    "mode": "live", "configured": "live", "reason": "r"}}}),
            })
            .unwrap();
        store.set_total(&run.id, 5).unwrap();
        let batch = [
            record(0, ItemStatus::Done, None),
            record(1, ItemStatus::Failed, Some("server_error: HTTP 500: boom")),
        ];
        store.write_batch(&run.id, &batch).unwrap();
        write_control(&mut store, &run.id, ControlState::Pause, "test").unwrap();
        let live = serde_json::json!({"counters": {"done": 1}, "control": "run",
            "rates": {"calls_per_sec": 2.5}, "eta_secs": 3.0});
        store.heartbeat(&beat(&run.id, live)).unwrap();
        let run = store.find_run(&run.id).unwrap().unwrap();
        let now = crate::clock::now_ms();

        let view = run_view(&mut store, &run, None, ViewParts { errors: true }, now).unwrap();
        // A pause not yet applied by the one process executing it.
        assert_eq!(view.state, RunState::Pausing);
        assert_eq!(
            view.control.as_ref().map(|c| c.state),
            Some(ControlState::Pause)
        );
        assert_eq!(view.mode, RunMode::Job);
        assert!(!view.executed_here);
        let c = &view.counts;
        assert_eq!(
            (c.total, c.done, c.failed, c.pending),
            (Some(5), 1, 1, Some(3))
        );
        assert_eq!((c.attempts, c.retries, c.throttled), (4, 2, 2));
        assert_eq!(
            (c.first_started_at, c.last_finished_at),
            (Some(1_000), Some(2_001))
        );
        assert_eq!(view.pending, Some(3));
        let live = view.live.as_ref().expect("a running worker's figures");
        assert_eq!(live.source, "worker");
        assert_eq!(live.rates.calls_per_sec, 2.5);
        assert_eq!(view.workers.len(), 1);
        assert_eq!(view.top_errors[0].count, 1);
        assert_eq!(view.error_groups[0].key.code, "server_error");
        assert!(view.queue.is_none() && view.batches.is_empty());
        assert!(!view.offload.as_ref().unwrap()["p"].batched());

        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["state"], "pausing");
        assert_eq!(json["mode"], "job");
        assert_eq!(json["live"]["source"], "worker");

        // Without the errors; executed here: the caller's state and figures.
        let here = ExecutedHere {
            state: RunState::Paused,
            live: LiveFigures {
                eta_secs: Some(1.0),
                ..LiveFigures::default()
            },
        };
        let view = run_view(
            &mut store,
            &run,
            Some(here),
            ViewParts { errors: false },
            now,
        )
        .unwrap();
        assert_eq!(view.state, RunState::Paused);
        assert!(view.executed_here);
        let live = view.live.unwrap();
        assert_eq!((live.source.as_str(), live.eta_secs), ("server", Some(1.0)));
        assert!(view.top_errors.is_empty() && view.error_groups.is_empty());
    }

    #[test]
    fn a_heartbeat_carries_live_figures_without_a_source() {
        let figures = LiveFigures {
            control: Some("pause".into()),
            ..LiveFigures::default()
        };
        let json = serde_json::to_value(&figures).unwrap();
        assert!(json.get("source").is_none(), "{json}");
        assert_eq!(json["control"], "pause");
        let back: LiveFigures = serde_json::from_value(json).unwrap();
        assert_eq!(back.control.as_deref(), Some("pause"));
    }
}
