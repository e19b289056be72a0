//! Shared runs (a PostgreSQL store): the process that creates or joins a run
//! puts its units on the store's queue with the job definition; every
//! process working on the run — that one and any `sluice worker` — claims
//! units in batches under a lease, runs them like any other unit, and
//! records each result under its lease token.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value as Json};
use sluice_spec::Job;
use sluice_store::{
    Claimed, ItemRecord, JobDef, NewRun, QueuedUnit, RunMeta, Store, StoreLocation,
};

use super::runner::{Unit, UnitContext};
use super::tasks::Started;
use super::units::{Combos, UnitIds};
use super::{bad_item_record, JobConfig};
use crate::dispatch::{self, Next};
use crate::error::{Error, Result};
use crate::inputs::Prepared;
use crate::progress::Progress;
use crate::writer::Message;

/// How long a claimed unit stays leased unless its worker's heartbeat (every
/// second) renews it: a killed worker's units go back to the queue after this.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Units queued per transaction.
const ENQUEUE_CHUNK: usize = 1_000;
/// Units claimed at once at most.
const CLAIM_MAX: usize = 1_024;
/// How often a worker with nothing to claim looks again (other workers'
/// leases may expire, or the creator may still be queueing).
const POLL: Duration = Duration::from_millis(200);

/// Units claimed but not yet calling that a process keeps at least (more
/// when it finishes more than this in half a second).
const MIN_BACKLOG: usize = 8;

/// How fast this process finishes units, so it claims about half a second
/// of work ahead: a unit waiting here under lease is one the other workers
/// cannot run (with a shared rate, each process sends only in its slices).
struct Pace {
    /// On the runtime's clock (paused in tests).
    at: tokio::time::Instant,
    count: u64,
    per_sec: f64,
}

impl Pace {
    fn new(progress: &Progress) -> Pace {
        Pace {
            at: tokio::time::Instant::now(),
            count: finished(progress),
            per_sec: 0.0,
        }
    }

    /// Units that may wait here, claimed but not calling yet: about half a
    /// second of this process's pace.
    fn backlog(&mut self, progress: &Progress) -> usize {
        let elapsed = self.at.elapsed().as_secs_f64();
        if elapsed >= 0.2 {
            let count = finished(progress);
            let rate = count.saturating_sub(self.count) as f64 / elapsed;
            self.per_sec = if self.per_sec == 0.0 {
                rate
            } else {
                0.5 * self.per_sec + 0.5 * rate
            };
            (self.at, self.count) = (tokio::time::Instant::now(), count);
        }
        ((self.per_sec * 0.5).ceil() as usize).max(MIN_BACKLOG)
    }
}

fn finished(progress: &Progress) -> u64 {
    progress.done.load(Relaxed) + progress.failed.load(Relaxed)
}

/// What the creating process knows about the run's input.
pub(crate) struct Source<'a> {
    pub(crate) key: String,
    pub(crate) settings: Json,
    pub(crate) prepared: &'a Prepared,
    pub(crate) ids: &'a UnitIds,
    pub(crate) combos: &'a Combos,
}

fn shared_store(store: &mut dyn Store) -> Result<&mut dyn sluice_store::SharedRuns> {
    store.shared().ok_or_else(|| {
        Error::Config("this store cannot share a run between processes (use PostgreSQL)".into())
    })
}

/// Opens the job's run (the latest of its source, or a new one), stores the
/// job definition and queues every unit not done yet; returns the run and
/// whether it was resumed.
pub(crate) fn create_or_join(
    store: &mut dyn Store,
    job: &Job,
    cfg: &JobConfig,
    source: Source<'_>,
    progress: &Progress,
) -> Result<(RunMeta, bool)> {
    let new = NewRun {
        name: job.name.clone(),
        source: source.key,
        settings: source.settings,
    };
    let (run, resumed) = shared_store(store)?.open_shared_run(&new, cfg.fresh)?;
    if resumed {
        let mut settings = new.settings.clone();
        // Totals kept with the run survive the new settings.
        if let Some(spent) = crate::settings::KeptWithRun::of(&run.settings).spent_usd {
            crate::settings::KeptWithRun::put_spent_usd(&mut settings, spent);
        }
        store.update_settings(&run.id, &settings)?;
    }
    let text = std::fs::read_to_string(&job.path).map_err(|e| Error::Read {
        path: job.path.clone(),
        source: e,
    })?;
    let def = JobDef {
        path: job.path.display().to_string(),
        text,
        sets: cfg.sets.clone(),
    };
    shared_store(store)?.put_job(&run.id, &def)?;
    let items = source
        .prepared
        .items()
        .map_err(|e| Error::Input(e.to_string()))?;
    let mut batch = Vec::with_capacity(ENQUEUE_CHUNK);
    let mut bad = Vec::new();
    for entry in items {
        match entry {
            Ok(item) => {
                for unit in source.ids.units(&item, source.combos) {
                    batch.push(queued(&unit));
                }
            }
            Err(b) => {
                for (unit_id, idx) in source.ids.bad_unit_ids(&b, source.combos) {
                    bad.push(bad_item_record(unit_id, idx, &b));
                }
            }
        }
        if batch.len() >= ENQUEUE_CHUNK {
            let done = shared_store(store)?.enqueue(&run.id, &batch)?;
            Progress::add(&progress.skipped, done);
            batch.clear();
        }
    }
    if !batch.is_empty() {
        let done = shared_store(store)?.enqueue(&run.id, &batch)?;
        Progress::add(&progress.skipped, done);
    }
    if !bad.is_empty() {
        // Bad entries are no units to claim: recorded failed at once.
        store.write_batch(&run.id, &bad)?;
        Progress::add(&progress.failed, bad.len() as u64);
    }
    shared_store(store)?.finish_enqueue(&run.id)?;
    Ok((run, resumed))
}

/// A unit as the queue keeps it: what any worker needs to run it.
fn queued(unit: &Unit) -> QueuedUnit {
    QueuedUnit {
        unit_id: unit.id.clone(),
        idx: unit.idx,
        hash: unit.hash,
        body: json!({
            "item_id": unit.item_id,
            "index": unit.index,
            "item": unit.item,
            "matrix": unit.matrix,
        })
        .to_string(),
    }
}

/// The unit of a claimed queue entry.
fn unit_of(claimed: &Claimed) -> std::result::Result<Unit, String> {
    let body: Json = serde_json::from_str(&claimed.unit.body)
        .map_err(|e| format!("the queued unit does not decode: {e}"))?;
    let matrix: Map<String, Json> = match body.get("matrix") {
        Some(Json::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    Ok(Unit {
        id: claimed.unit.unit_id.clone(),
        item_id: body
            .get("item_id")
            .and_then(Json::as_str)
            .unwrap_or(&claimed.unit.unit_id)
            .to_owned(),
        idx: claimed.unit.idx,
        index: body.get("index").and_then(Json::as_u64).unwrap_or(0),
        item: body.get("item").cloned().unwrap_or(Json::Null),
        matrix,
        hash: claimed.unit.hash,
        resume: claimed.claims > 1,
        place: None,
        in_flight: None,
    })
}

/// Runs `f` with the store on a blocking thread (the store is synchronous;
/// the runtime's one thread keeps serving calls meanwhile), handing the
/// store back with the result.
fn on_blocking<T: Send + 'static>(
    mut store: Box<dyn Store>,
    f: impl FnOnce(&mut dyn sluice_store::SharedRuns) -> sluice_store::Result<T> + Send + 'static,
) -> tokio::task::JoinHandle<(Box<dyn Store>, Result<T>)> {
    tokio::task::spawn_blocking(move || {
        let result = match store.shared() {
            Some(shared) => f(shared).map_err(Error::from),
            None => Err(Error::Config(
                "this store cannot share a run between processes".into(),
            )),
        };
        (store, result)
    })
}

/// A claim on its way: its result, when it is back.
type Pending = tokio::task::JoinHandle<(Box<dyn Store>, Result<Vec<Claimed>>)>;

/// Waits for the claim in flight, if any (never resolves without one).
async fn landed(pending: &mut Option<Pending>) -> (Box<dyn Store>, Result<Vec<Claimed>>) {
    match pending.as_mut() {
        Some(handle) => {
            let joined = handle.await;
            *pending = None;
            joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        }
        None => std::future::pending().await,
    }
}

/// Claims and runs the run's units until none is left to claim (or the run
/// stops); returns whether it was interrupted.
pub(crate) async fn dispatch(
    shared: Arc<UnitContext>,
    store: Box<dyn Store>,
    run_id: String,
    limit: usize,
    lease: Duration,
) -> Result<bool> {
    let claims = Claims::new(&shared.progress, store, run_id, lease);
    super::dispatch_units(shared, claims, limit).await
}

/// The run's units claimed from the shared queue, as a source of the
/// dispatch loop.
///
/// Claims run on a blocking thread while units run, so the next batch is
/// there when places free up; about half a second of work is kept claimed
/// ahead ([`Pace`]), no more: a unit waiting here under lease is one the
/// other workers cannot run.
pub(crate) struct Claims {
    progress: Arc<Progress>,
    run_id: String,
    worker: String,
    lease: Duration,
    /// The store connection, when no claim is on its way with it.
    store: Option<Box<dyn Store>>,
    pending: Option<Pending>,
    buffer: VecDeque<Claimed>,
    /// The last claim found nothing.
    dry: bool,
    pace: Pace,
}

impl Claims {
    pub(crate) fn new(
        progress: &Arc<Progress>,
        store: Box<dyn Store>,
        run_id: String,
        lease: Duration,
    ) -> Claims {
        Claims {
            progress: progress.clone(),
            run_id,
            worker: progress.engine().identity().worker_id.clone(),
            lease,
            store: Some(store),
            pending: None,
            buffer: VecDeque::new(),
            dry: false,
            pace: Pace::new(progress),
        }
    }

    /// Takes in a claim that came back.
    fn landed(&mut self, back: Box<dyn Store>, claimed: Result<Vec<Claimed>>) -> Result<()> {
        self.store = Some(back);
        let claimed = claimed?;
        self.dry = claimed.is_empty();
        self.buffer.extend(claimed);
        Ok(())
    }
}

impl dispatch::Source for Claims {
    type Work = Started;

    async fn next(&mut self, in_progress: usize) -> Result<Next<Started>> {
        if self.pending.as_ref().is_some_and(|p| p.is_finished()) {
            let (back, claimed) = landed(&mut self.pending).await;
            self.landed(back, claimed)?;
        }
        let backlog = self.pace.backlog(&self.progress);
        // Units here but not calling: the buffer, and those in progress
        // waiting for a place, a rate slot or between steps (roughly
        // those in progress less the calls on the wire).
        let calling = self.progress.in_flight.load(Relaxed) as usize;
        let waiting = in_progress.saturating_sub(calling);
        let want = backlog.saturating_sub(waiting + self.buffer.len());
        if self.pending.is_none()
            && !self.dry
            && want > 0
            && self.buffer.len() < backlog.div_ceil(2) + 1
        {
            if let Some(s) = self.store.take() {
                let (run, who, lease) = (self.run_id.clone(), self.worker.clone(), self.lease);
                let n = want.min(CLAIM_MAX);
                self.pending = Some(on_blocking(s, move |q| q.claim(&run, &who, n, lease)));
            }
        }
        if self.buffer.is_empty() && self.pending.is_none() {
            // Nothing claimed last time: done once the queue is
            // complete; otherwise other workers' leases may still expire.
            let Some(s) = self.store.take() else {
                return Err(Error::Runtime("the store connection was lost".into()));
            };
            let run = self.run_id.clone();
            let (back, counts) = on_blocking(s, move |q| q.queue_counts(&run))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            self.store = Some(back);
            if counts?.complete() {
                return Ok(Next::End);
            }
            tokio::time::sleep(POLL).await;
            self.dry = false;
            return Ok(Next::Wait);
        }
        if waiting < backlog {
            if let Some(entry) = self.buffer.pop_front() {
                return Ok(match unit_of(&entry) {
                    Ok(unit) => Next::Work(Started {
                        unit,
                        token: Some(entry.token),
                    }),
                    Err(message) => {
                        let record = failed_unit(&entry, message);
                        Next::Write(Message::Fenced(record, entry.token))
                    }
                });
            }
        }
        tokio::select! {
            (back, claimed) = landed(&mut self.pending) => self.landed(back, claimed)?,
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        // Units may have finished meanwhile: asked again with their count.
        Ok(Next::Wait)
    }

    /// A claim still on its way lands before the last (stopped) heartbeat
    /// gives this worker's units back; the buffer's units go back with it.
    async fn finish(&mut self) {
        if self.pending.is_some() {
            let _ = landed(&mut self.pending).await;
        }
    }
}

/// Holds a shared run that stopped early for every process: its stored
/// control says cancel (by "early stop"), so the other processes leave it
/// at their next heartbeat and no worker joins it until `sluice run`
/// starts it again or `sluice resume` releases it.
pub(crate) fn hold_stopped(location: &StoreLocation, run_id: &str, why: &str) -> Result<()> {
    let mut store = location.open()?;
    tracing::warn!("run {run_id}: held for every process: {why}");
    crate::control::write_control(
        &mut *store,
        run_id,
        crate::control::ControlState::Cancel,
        &crate::control::requester("early stop"),
    )?;
    Ok(())
}

fn failed_unit(entry: &Claimed, message: String) -> ItemRecord {
    let unit = &entry.unit;
    let error = format!("invalid_input: {message}");
    super::failed_record(unit.unit_id.clone(), unit.idx, unit.hash, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn claims_keep_about_half_a_second_of_this_process_pace_ahead() {
        let progress = Progress::new(&crate::engine::Engine::new());
        let mut pace = Pace::new(&progress);
        assert_eq!(pace.backlog(&progress), MIN_BACKLOG, "nothing finished yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        Progress::add(&progress.done, 150);
        Progress::add(&progress.failed, 50);
        // 200 a second: 100 in half a second.
        assert_eq!(pace.backlog(&progress), 100);
        tokio::time::advance(Duration::from_millis(100)).await;
        Progress::add(&progress.done, 1_000);
        assert_eq!(
            pace.backlog(&progress),
            100,
            "looked at less than 200 ms ago"
        );
        tokio::time::advance(Duration::from_millis(150)).await;
        // 1,000 in 250 ms is 4,000 a second, averaged with 200: 2,100.
        assert_eq!(pace.backlog(&progress), 1_050);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            pace.backlog(&progress),
            525,
            "idle: the pace halves per look"
        );
    }

    #[test]
    fn a_queued_unit_comes_back_as_the_same_unit() {
        let unit = Unit {
            id: "q1#model=a".into(),
            item_id: "q1".into(),
            idx: 7,
            index: 3,
            item: json!({"prompt": "hi", "n": [1, 2]}),
            matrix: json!({"model": "a"}).as_object().unwrap().clone(),
            hash: u64::MAX - 5,
            resume: false,
            place: None,
            in_flight: None,
        };
        let claimed = Claimed {
            unit: queued(&unit),
            token: 42,
            claims: 2,
        };
        let back = unit_of(&claimed).unwrap();
        assert_eq!(
            (&back.id, &back.item_id, back.idx, back.index, back.hash),
            (&unit.id, &unit.item_id, 7, 3, unit.hash)
        );
        assert_eq!((back.item, back.matrix), (unit.item, unit.matrix));
        assert!(back.resume, "claimed before: look for its recorded steps");
        let broken = Claimed {
            unit: QueuedUnit {
                body: "{".into(),
                ..claimed.unit.clone()
            },
            ..claimed
        };
        assert!(matches!(unit_of(&broken), Err(e) if e.contains("does not decode")));
    }
}
