//! How a run begins and ends: found or created in the store, stopped on a
//! signal with a grace period, and closed with its final state.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sluice_store::{NewRun, RunMeta, Store, StoreLocation};
use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::control::RunControl;
use crate::error::Result;
use crate::progress::Progress;
use crate::report::RunReport;
use crate::settings::KeptWithRun;
use crate::stopping::Stopping;

/// How long calls on the wire may finish after a stop signal.
const GRACE: Duration = Duration::from_secs(5);

/// What a run says when it opens, before anything is sent: `new run NAME`
/// or `resuming NAME: N done, M to send`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunStart {
    /// The run's id.
    pub run_id: String,
    /// The input, as named in messages (a file, a glob, a URL, `-`).
    pub input: String,
    /// An earlier execution of the run is continued.
    pub resumed: bool,
    /// Items (units) in the input.
    pub total: u64,
    /// Of them, already done with the same request: skipped.
    pub done: u64,
    /// The process this one took the run over from, gone without giving it
    /// up (host, pid).
    pub took_over: Option<(String, u32)>,
}

impl RunStart {
    pub(crate) fn new(
        run: &RunMeta,
        input: String,
        resumed: bool,
        total: u64,
        done: u64,
        took_over: Option<(String, u32)>,
    ) -> RunStart {
        RunStart {
            run_id: run.id.clone(),
            input,
            resumed,
            total,
            done,
            took_over,
        }
    }

    /// Items left to send (failed ones included).
    pub fn to_send(&self) -> u64 {
        self.total.saturating_sub(self.done)
    }
}

/// The latest run of `source` (resumed, `true`) unless `fresh`, else a new one.
pub(crate) fn open_run(
    store: &mut dyn Store,
    fresh: bool,
    source: String,
    name: String,
    settings: serde_json::Value,
) -> Result<(RunMeta, bool)> {
    let previous = if fresh {
        None
    } else {
        store.latest_run_for_source(&source)?
    };
    Ok(match previous {
        Some(run) => {
            let mut settings = settings;
            // Totals kept with the run survive the new settings.
            if let Some(spent) = KeptWithRun::of(&run.settings).spent_usd {
                KeptWithRun::put_spent_usd(&mut settings, spent);
            }
            store.update_settings(&run.id, &settings)?;
            (run, true)
        }
        None => (
            store.create_run(&NewRun {
                name,
                source,
                settings,
            })?,
            false,
        ),
    })
}

/// Records the run's final state and reports it.
pub(crate) fn close_run(
    location: &StoreLocation,
    run: RunMeta,
    resumed: bool,
    interrupted: bool,
    progress: &Progress,
) -> Result<RunReport> {
    let mut store = location.open()?;
    keep_story(&mut *store, &run.id, progress);
    let state = if interrupted {
        "interrupted"
    } else {
        "finished"
    };
    store.set_state(&run.id, state, (!interrupted).then(now_ms))?;
    last_beat(&mut *store, run, resumed, interrupted, progress)
}

/// Leaves a shared run: `finished` once its queue is empty; `interrupted`
/// if it was `cancelled` (every process on it is stopping), or else only if
/// no other worker is still on it (their beats are fresh); the last
/// `stopped` beat returns any unit this process still holds to the queue.
pub(crate) fn close_shared_run(
    location: &StoreLocation,
    run: RunMeta,
    resumed: bool,
    (interrupted, cancelled): (bool, bool),
    progress: &Progress,
) -> Result<RunReport> {
    let mut store = location.open()?;
    keep_story(&mut *store, &run.id, progress);
    // Cancelled for every process only when the store says so: a server
    // shutting down cancels just its own execution, and the workers on the
    // run go on.
    let cancelled = cancelled
        && crate::control::read_control(&mut *store, &run.id)?
            .is_some_and(|c| c.state == crate::control::ControlState::Cancel);
    if interrupted && cancelled {
        store.set_state(&run.id, "interrupted", None)?;
    } else if interrupted {
        let me = &progress.engine().identity().worker_id;
        let stale = crate::identity::BEAT_STALE.as_millis() as i64;
        let now = now_ms();
        let others = store
            .workers(&run.id)?
            .into_iter()
            .any(|w| &w.worker_id != me && w.state == "running" && now - w.beat_at < stale);
        if !others {
            store.set_state(&run.id, "interrupted", None)?;
        }
    } else {
        let complete = match store.shared() {
            Some(shared) => shared.queue_counts(&run.id)?.complete(),
            None => true,
        };
        if complete {
            store.set_state(&run.id, "finished", Some(now_ms()))?;
        }
    }
    last_beat(&mut *store, run, resumed, interrupted, progress)
}

/// Writes the session's story with its final figures (charts and summaries
/// of the run), before the run's state says it ended: whoever sees it ended
/// finds them.
fn keep_story(store: &mut dyn Store, run_id: &str, progress: &Progress) {
    let (key, story) = crate::heartbeat::final_story(progress);
    if let Err(e) = store.put_run_state(run_id, &key, &story) {
        tracing::warn!("could not keep the run's history: {e}");
    }
}

/// Causes of failure the run summary names.
const SUMMARY_GROUPS: usize = 3;

/// Writes this process's last (`stopped`) beat and reports the run.
fn last_beat(
    store: &mut dyn Store,
    run: RunMeta,
    resumed: bool,
    interrupted: bool,
    progress: &Progress,
) -> Result<RunReport> {
    let (last_beat, _) = crate::heartbeat::beat(&run.id, "stopped", progress, None, None);
    if let Err(e) = store.heartbeat(&last_beat) {
        tracing::warn!("could not record this worker's last heartbeat: {e}");
    }
    // The session's story with its final figures, for charts and summaries.
    let snapshot = progress.snapshot();
    let errors = if snapshot.failed > 0 {
        crate::errors::group_errors(store, &run.id, SUMMARY_GROUPS)?
    } else {
        Vec::new()
    };
    Ok(RunReport {
        run_id: run.id,
        resumed,
        interrupted,
        progress: snapshot,
        breakers: Vec::new(),
        notes: Vec::new(),
        errors,
    })
}

/// Waits for `all_done`. On a stop signal (already seen: `interrupted`, or
/// while waiting) sets `stopping`, so no retry starts, and gives the calls
/// on the wire a grace period; a second signal ends it at once. Returns
/// whether the run was interrupted.
pub(crate) async fn drain(
    all_done: impl Future<Output = ()>,
    stop: &Notify,
    stopping: &Stopping,
    mut interrupted: bool,
) -> bool {
    tokio::pin!(all_done);
    if !interrupted {
        tokio::select! {
            _ = &mut all_done => {}
            _ = stop.notified() => interrupted = true,
        }
    }
    if interrupted {
        // `watch_signals` wakes the tasks waiting and also stores a permit
        // for the next one (so a signal is not lost while nobody waits).
        // Whoever saw this signal was woken, so a permit left now is the same
        // signal, not a second one: without this, one Ctrl-C skipped the
        // grace period and calls already answered were never recorded.
        let _ = futures_util::FutureExt::now_or_never(stop.notified());
        stopping.set();
        tokio::select! {
            _ = &mut all_done => {}
            _ = tokio::time::sleep(GRACE) => {}
            _ = stop.notified() => {}
        }
    }
    interrupted
}

/// [`drain`] for a dispatcher that may have been halted (the store failed,
/// or the first answers all failed alike): a halt gives the calls on the
/// wire the grace period, as a signal does, and the run ends interrupted,
/// its rest pending — also when the halt came while the last units ran.
pub(crate) async fn drain_halted(
    all_done: impl Future<Output = ()>,
    stop: &Notify,
    stopping: &Stopping,
    interrupted: bool,
) -> bool {
    let halted = stopping.halted().is_some();
    drain(all_done, stop, stopping, interrupted || halted).await || stopping.halted().is_some()
}

/// Keeps `progress` told whether `control` holds the run paused, so the
/// views stop the run's clock (and its ETA) while it is. Ends with the
/// run's runtime.
pub(crate) async fn mirror_pause(control: Arc<RunControl>, progress: Arc<Progress>) {
    loop {
        let changed = control.on_change();
        tokio::pin!(changed);
        // Registered before the state is read, so no change is missed.
        changed.as_mut().enable();
        progress.set_paused(control.is_paused());
        changed.await;
    }
}

/// What ends a dispatch early: SIGINT/SIGTERM or a cancel of the run, both
/// waking `stop`. The watchers end with it, on an early return too.
pub(crate) struct StopSignals {
    pub(crate) stop: Arc<Notify>,
    watchers: [tokio::task::JoinHandle<()>; 2],
}

impl StopSignals {
    /// Starts watching for signals and for a cancel of `control`.
    pub(crate) fn watch(control: Arc<RunControl>) -> StopSignals {
        let stop = Arc::new(Notify::new());
        let watchers = [
            tokio::spawn(watch_signals(stop.clone())),
            tokio::spawn(crate::control::stop_on_cancel(control, stop.clone())),
        ];
        StopSignals { stop, watchers }
    }

    /// Waits while `control` is paused: `false` when a cancel or a signal
    /// ended the wait (no new unit starts meanwhile).
    pub(crate) async fn proceed(&self, control: &RunControl) -> bool {
        tokio::select! {
            go = control.proceed() => go,
            _ = self.stop.notified() => false,
        }
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for watcher in &self.watchers {
            watcher.abort();
        }
    }
}

/// Notifies on the first SIGINT/SIGTERM, and again on every further one.
pub(crate) async fn watch_signals(stop: Arc<Notify>) {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        #[cfg(unix)]
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminated = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
        stop.notify_waiters();
        stop.notify_one();
    }
}

/// The name of a run of the first `n` units of `name` (`--limit`):
/// `NAME-firstN`, the name shortened to keep it within the longest name.
pub fn limited_name(name: &str, n: u64) -> String {
    let suffix = format!("-first{n}");
    let keep = sluice_spec::MAX_NAME.saturating_sub(suffix.len());
    let base: String = name.chars().take(keep).collect();
    format!("{base}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limited_run_is_named_after_its_job_within_the_longest_name() {
        assert_eq!(super::limited_name("eval", 5), "eval-first5");
        let long = "x".repeat(64);
        let name = super::limited_name(&long, 100);
        assert_eq!(name.len(), sluice_spec::MAX_NAME);
        assert!(name.ends_with("-first100"), "{name}");
    }

    /// What `watch_signals` does for one signal.
    fn signal(stop: &Notify) {
        stop.notify_waiters();
        stop.notify_one();
    }

    #[test]
    fn leaving_a_shared_run_marks_it_interrupted_only_for_a_stored_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::from(dir.path().join("s.db"));
        let mut store = location.open().unwrap();
        let run = store
            .create_run(&NewRun {
                name: "r".into(),
                source: "src".into(),
                settings: serde_json::json!({}),
            })
            .unwrap();
        // Another process still works the run.
        let other = sluice_store::WorkerBeat {
            run_id: run.id.clone(),
            worker_id: "elsewhere:1:0".into(),
            host: "elsewhere".into(),
            pid: 1,
            started_at: now_ms(),
            beat_at: now_ms(),
            state: "running".into(),
            in_flight: 0,
            live: serde_json::json!({}),
        };
        store.heartbeat(&other).unwrap();
        let state = |store: &mut Box<dyn Store>| store.find_run(&run.id).unwrap().unwrap().state;
        // Cancelled in-process only (a server shutting down): the others go on.
        close_shared_run(
            &location,
            run.clone(),
            false,
            (true, true),
            &Progress::new(&crate::engine::Engine::new()),
        )
        .unwrap();
        assert_eq!(state(&mut store), "running");
        // A cancel held in the store stops everyone: the run ends interrupted.
        crate::control::write_control(
            &mut *store,
            &run.id,
            crate::control::ControlState::Cancel,
            "t",
        )
        .unwrap();
        close_shared_run(
            &location,
            run.clone(),
            false,
            (true, true),
            &Progress::new(&crate::engine::Engine::new()),
        )
        .unwrap();
        assert_eq!(state(&mut store), "interrupted");
    }

    #[tokio::test(start_paused = true)]
    async fn one_signal_seen_by_the_dispatcher_still_gets_the_grace_period() {
        let stop = Notify::new();
        let stopping = Stopping::default();
        // The dispatcher waits for a unit slot or a signal, and sees it.
        let waiting = stop.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        signal(&stop);
        waiting.await;
        let started = tokio::time::Instant::now();
        let calls_finish = tokio::time::sleep(Duration::from_secs(2));
        assert!(drain(calls_finish, &stop, &stopping, true).await);
        assert!(stopping.is_set());
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(2),
            "waited for the calls"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_signal_ends_the_grace_period_and_calls_get_at_most_grace() {
        let stop = Arc::new(Notify::new());
        let stopping = Stopping::default();
        let started = tokio::time::Instant::now();
        let signals = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            signal(&signals);
            tokio::time::sleep(Duration::from_secs(1)).await;
            signal(&signals);
        });
        let never = std::future::pending::<()>();
        assert!(drain(never, &stop, &stopping, false).await);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let started = tokio::time::Instant::now();
        let slow = tokio::time::sleep(GRACE * 2);
        assert!(drain(slow, &Notify::new(), &stopping, true).await);
        assert_eq!(started.elapsed(), GRACE);
    }
}
