//! This process's heartbeat in a run: its live counters and rates (who it
//! is: `identity.rs`), written to the store every second so `sluice status`,
//! the server and other workers see runs that other processes are working on.

use std::sync::Arc;
use std::time::Instant;

use sluice_store::WorkerBeat;
use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::control::RunControl;
use crate::history::{Sample, FLUSH_BEATS};
use crate::identity::BEAT_PERIOD;
use crate::progress::{Progress, Snapshot};
use crate::writer::Message;

/// Rates over the interval between two snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Rates {
    /// Calls sent per second (retries included).
    pub calls_per_sec: f64,
    /// Items (units) finished per second.
    pub items_per_sec: f64,
    /// Tokens reported per minute.
    pub tokens_per_min: f64,
    /// 429s per second.
    pub throttled_per_sec: f64,
}

impl Rates {
    /// The rates from `before` to `after`, `secs` apart.
    pub fn between(before: &Snapshot, after: &Snapshot, secs: f64) -> Rates {
        if secs <= 0.0 {
            return Rates::default();
        }
        let per_sec = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        Rates {
            calls_per_sec: per_sec(after.attempts, before.attempts),
            items_per_sec: per_sec(after.done + after.failed, before.done + before.failed),
            tokens_per_min: per_sec(after.tokens, before.tokens) * 60.0,
            throttled_per_sec: per_sec(after.throttled, before.throttled),
        }
    }
}

/// The live figures of a process executing a run — what its heartbeat
/// carries as `live`, and what the run view shows as `live` (for a run
/// executed in the caller's own process, taken from its [`Progress`] at once).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LiveFigures {
    /// Where the view took them: `server` (executed in the viewing process)
    /// or `worker` (a heartbeat). Empty, and not written, in a heartbeat.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The counters ([`Snapshot`]) as JSON.
    pub counters: serde_json::Value,
    /// Rates since the previous sample.
    pub rates: Rates,
    /// Smoothed call latency, milliseconds.
    pub latency_ewma_ms: f64,
    /// Seconds left at the current rate, when known.
    pub eta_secs: Option<f64>,
    /// Per-step and per-provider statistics.
    pub stats: crate::stats::StatsReport,
    /// What the process applies now: `run`, `pause` or `cancel` (lags a
    /// stored control by up to a heartbeat).
    pub control: Option<String>,
}

impl LiveFigures {
    /// The figures of `progress` now: `snapshot` and `rates` as sampled by
    /// the caller, `control` the process's own (if it has one).
    pub fn of(
        progress: &Progress,
        snapshot: &Snapshot,
        rates: Rates,
        control: Option<&RunControl>,
    ) -> LiveFigures {
        LiveFigures {
            source: String::new(),
            counters: serde_json::to_value(snapshot).unwrap_or(serde_json::Value::Null),
            rates,
            latency_ewma_ms: progress
                .latency_ewma_us
                .load(std::sync::atomic::Ordering::Relaxed) as f64
                / 1e3,
            eta_secs: snapshot.eta().map(|d| d.as_secs_f64()),
            stats: progress.stats.report(),
            control: control.map(|c| c.state().as_str().to_owned()),
        }
    }
}

/// Builds one beat: the counters now, the rates since `previous`, and
/// whether this process has the run paused or cancelled (`control`).
pub(crate) fn beat(
    run_id: &str,
    state: &str,
    progress: &Progress,
    control: Option<&RunControl>,
    previous: Option<(Instant, Snapshot)>,
) -> (WorkerBeat, (Instant, Snapshot)) {
    let id = progress.engine().identity();
    let now = Instant::now();
    let snapshot = progress.snapshot();
    let rates = match previous {
        Some((at, before)) => Rates::between(&before, &snapshot, (now - at).as_secs_f64()),
        None => Rates::between(&Snapshot::default(), &snapshot, snapshot.elapsed_secs),
    };
    let figures = LiveFigures::of(progress, &snapshot, rates, control);
    let beat_at = now_ms();
    progress.history.record(
        sample(beat_at, &snapshot, &figures.stats, figures.latency_ewma_ms),
        state != "running",
    );
    let live = serde_json::to_value(&figures).unwrap_or(serde_json::Value::Null);
    let beat = WorkerBeat {
        run_id: run_id.to_owned(),
        worker_id: id.worker_id.clone(),
        host: id.host.clone(),
        pid: id.pid,
        started_at: id.started_at,
        beat_at,
        state: state.to_owned(),
        in_flight: snapshot.in_flight,
        live,
    };
    (beat, (now, snapshot))
}

/// Sends a `running` beat to the writer every [`BEAT_PERIOD`] until the
/// channel closes (or the task is dropped with its runtime).
pub(crate) async fn beat_loop(
    tx: mpsc::Sender<Message>,
    run_id: String,
    progress: Arc<Progress>,
    control: Arc<RunControl>,
) {
    let mut previous = None;
    let mut ticks = tokio::time::interval(BEAT_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats = 0u64;
    loop {
        ticks.tick().await;
        let (beat, now) = beat(&run_id, "running", &progress, Some(&control), previous);
        previous = Some(now);
        if tx.send(Message::Beat(Box::new(beat))).await.is_err() {
            return;
        }
        beats += 1;
        if beats.is_multiple_of(FLUSH_BEATS) {
            let story = session_story(&progress, false);
            if tx.send(story).await.is_err() {
                return;
            }
        }
    }
}

/// The message that keeps this session's story (see [`crate::history`]).
pub(crate) fn session_story(progress: &Progress, ended: bool) -> Message {
    let (key, entry) = session_entry(progress, ended);
    Message::State(key, Box::new(entry))
}

/// This process's session of the run `progress` counts, as kept in the
/// store: its run-state key and entry (see [`crate::history`]).
pub fn session_entry(progress: &Progress, ended: bool) -> (String, serde_json::Value) {
    let id = progress.engine().identity();
    let entry = progress.history.entry(
        (&id.worker_id, &id.host, id.pid),
        &progress.snapshot(),
        &progress.stats.report(),
        ended,
    );
    (progress.history.key(&id.worker_id), entry)
}

/// [`session_entry`] of a session that ends now, with its last sample.
pub(crate) fn final_story(progress: &Progress) -> (String, serde_json::Value) {
    let latency_ms = progress
        .latency_ewma_us
        .load(std::sync::atomic::Ordering::Relaxed) as f64
        / 1e3;
    let (snapshot, stats) = (progress.snapshot(), progress.stats.report());
    progress
        .history
        .record(sample(now_ms(), &snapshot, &stats, latency_ms), true);
    session_entry(progress, true)
}

/// The sample of one heartbeat: `snapshot`'s counters, the waits in `stats`.
fn sample(
    t: i64,
    snapshot: &Snapshot,
    stats: &crate::stats::StatsReport,
    latency_ms: f64,
) -> Sample {
    let (mut place, mut rate) = (0.0, 0.0);
    for s in &stats.steps {
        place += s.place_waits.1;
        rate += s.rate_waits.1;
    }
    Sample {
        t,
        done: snapshot.done,
        failed: snapshot.failed,
        attempts: snapshot.attempts,
        retries: snapshot.retries,
        throttled: snapshot.throttled,
        tokens: snapshot.tokens,
        cache_hits: snapshot.cache_hits,
        spent_usd: snapshot.spent_usd,
        on_wire: snapshot.in_flight,
        // Places held minus calls on the wire: those waiting for a slot.
        rate_waiting: stats
            .providers
            .iter()
            .map(|p| p.in_flight.saturating_sub(p.on_wire))
            .sum(),
        place_wait_secs: place,
        rate_wait_secs: rate,
        latency_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_differences_per_interval() {
        let before = Snapshot {
            attempts: 10,
            done: 4,
            tokens: 1_000,
            ..Snapshot::default()
        };
        let after = Snapshot {
            attempts: 30,
            done: 12,
            failed: 2,
            tokens: 1_500,
            throttled: 1,
            ..Snapshot::default()
        };
        let r = Rates::between(&before, &after, 2.0);
        assert_eq!(
            r,
            Rates {
                calls_per_sec: 10.0,
                items_per_sec: 5.0,
                tokens_per_min: 15_000.0,
                throttled_per_sec: 0.5,
            }
        );
        assert_eq!(Rates::between(&before, &after, 0.0), Rates::default());
    }

    #[test]
    fn beat_carries_identity_and_counters() {
        let progress = Progress::new(&crate::engine::Engine::new());
        Progress::add(&progress.done, 3);
        Progress::add(&progress.in_flight, 2);
        let control = RunControl::new();
        control.pause();
        let (b, _) = beat("run-1", "running", &progress, Some(&control), None);
        assert_eq!(b.run_id, "run-1");
        assert_eq!(b.pid, std::process::id());
        assert_eq!(b.in_flight, 2);
        assert_eq!(b.live["counters"]["done"], 3);
        assert_eq!(b.live["control"], "pause");
        assert!(b.worker_id.starts_with(&format!("{}:", b.host)));
        assert_eq!(progress.engine().identity().worker_id, b.worker_id);
    }
}
