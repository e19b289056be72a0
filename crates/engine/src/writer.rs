//! The one writer thread: outcomes arrive on a channel and are committed in
//! batches, so recording never throttles sending (~2 µs per row, measured).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_store::{ItemRecord, ItemStatus, StepRecord, Store, WorkerBeat};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::control::Watch;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::recording::Recording;
use crate::stopping::{Halt, Stopping};

/// Outcomes waiting for the writer; bounded so memory is too.
const QUEUE: usize = 4_096;
/// Rows per transaction at most.
const BATCH: usize = 1_024;
/// How long the writer gathers outcomes before committing a partial batch.
///
/// Waking the thread per outcome costs a futex round trip and a commit per
/// row; gathering for a few milliseconds makes both per batch. Outcomes are
/// reported only after their commit, so this delays progress, never durability.
const GATHER: Duration = Duration::from_millis(4);
/// Poll period while gathering (the sender never has to wake this thread).
const POLL: Duration = Duration::from_millis(1);

/// What the writer thread is told.
pub(crate) enum Message {
    /// Record one outcome.
    Record(ItemRecord),
    /// Record the outcome of a unit leased from a shared run's queue, under
    /// its lease token: dropped if the lease was lost (another worker took
    /// the unit over), so no unit is counted twice.
    Fenced(ItemRecord, i64),
    /// Record one pipeline step's outcome (committed before the unit's own
    /// record in the same batch, so a finished unit always has its steps).
    Step(StepRecord),
    /// Move already-recorded items to new input positions.
    Moves(Vec<(String, u64)>),
    /// Remember a step output for `cache = { ttl }`: (request key, output JSON, unix ms).
    Cache(u64, String, i64),
    /// This process's live state, written at once (see [`crate::live`]);
    /// a `running` beat also reads the run's stored control.
    Beat(Box<WorkerBeat>),
    /// A piece of run state to keep (the session's story, see
    /// [`crate::history`]): key and value.
    State(String, Box<serde_json::Value>),
}

/// Handle to the writer thread.
pub(crate) struct Writer {
    pub(crate) tx: mpsc::Sender<Message>,
    handle: JoinHandle<Result<()>>,
}

impl Writer {
    /// Starts the thread; it owns `store`, counts committed outcomes into
    /// `progress`, hands each committed batch of outcomes to `on_commit`
    /// (after the commit, so it only ever sees durable outcomes) and, with
    /// each heartbeat, applies changes of the stored control through `watch`.
    ///
    /// A commit that fails halts the run through `stopping` at once (no call
    /// starts whose result could not be kept); the writer then only counts
    /// the outcomes still arriving, which are lost, and [`Writer::finish`]
    /// reports the store's error.
    pub(crate) fn start(
        mut store: Box<dyn Store>,
        run_id: String,
        progress: Arc<Progress>,
        on_commit: Option<crate::control::CommitHook>,
        mut watch: Option<Watch>,
        stopping: Arc<Stopping>,
        recording: Arc<Recording>,
    ) -> Writer {
        let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
        let handle = std::thread::Builder::new()
            .name("sluice-writer".into())
            .spawn(move || {
                let mut batch = Batch::default();
                let hooks = Hooks {
                    progress: &progress,
                    on_commit: on_commit.as_ref(),
                    recording: &recording,
                };
                let committed = commit_all(
                    &mut *store,
                    &run_id,
                    &mut rx,
                    &mut batch,
                    &hooks,
                    &mut watch,
                );
                let Err(error) = committed else {
                    return Ok(());
                };
                stopping.halt(Halt::Store);
                tracing::debug!("{error}: sending stopped");
                // Outcomes of calls that were on the wire still arrive: they
                // were paid for and cannot be kept, so they are counted.
                let mut lost = (batch.items.len() + batch.fenced.len()) as u64;
                while let Some(message) = rx.blocking_recv() {
                    if matches!(message, Message::Record(_) | Message::Fenced(..)) {
                        lost += 1;
                    }
                }
                Err(Error::StoreFailed { cause: error, lost })
            })
            .expect("spawning the writer thread");
        Writer { tx, handle }
    }

    /// Waits for every queued outcome to be committed. Every sender clone must
    /// be dropped first.
    pub(crate) fn finish(self) -> Result<()> {
        drop(self.tx);
        self.handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// What the writer tells about each commit.
struct Hooks<'a> {
    progress: &'a Progress,
    on_commit: Option<&'a crate::control::CommitHook>,
    /// Marks each store call, so one that hangs holds new calls.
    recording: &'a Recording,
}

/// Commits every message until the channel closes; the first store error
/// ends it (what `batch` still holds was not committed).
fn commit_all(
    store: &mut dyn Store,
    run_id: &str,
    rx: &mut mpsc::Receiver<Message>,
    batch: &mut Batch,
    hooks: &Hooks<'_>,
    watch: &mut Option<Watch>,
) -> sluice_store::Result<()> {
    let progress = hooks.progress;
    let mut open = true;
    while open {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        apply(store, run_id, first, batch, watch, hooks.recording)?;
        let deadline = Instant::now() + GATHER;
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(message) => apply(store, run_id, message, batch, watch, hooks.recording)?,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
                Err(TryRecvError::Empty) if Instant::now() >= deadline => break,
                Err(TryRecvError::Empty) => std::thread::sleep(POLL),
            }
        }
        if batch.is_empty() {
            continue;
        }
        let _busy = hooks.recording.busy();
        if !batch.cache.is_empty() {
            store.cache_put(&batch.cache)?;
            batch.cache.clear();
        }
        if !batch.fenced.is_empty() {
            // Steps and leased units' outcomes in one commit.
            let accepted = complete(store, run_id, &batch.steps, &mut batch.fenced)?;
            batch.fenced_done = accepted;
        } else if !batch.steps.is_empty() {
            store.write_steps(run_id, &batch.steps)?;
        }
        if !batch.steps.is_empty() {
            let tokens: u64 = batch.steps.iter().map(step_tokens).sum();
            Progress::add(&progress.tokens, tokens);
            Progress::add(&progress.steps, batch.steps.len() as u64);
            batch.steps.clear();
        }
        if !batch.items.is_empty() {
            store.write_batch(run_id, &batch.items)?;
        }
        batch.items.append(&mut batch.fenced_done);
        if batch.items.is_empty() {
            continue;
        }
        // Counted only once committed: what is reported is durable.
        let failed = batch
            .items
            .iter()
            .filter(|r| r.status == ItemStatus::Failed)
            .count();
        Progress::add(&progress.failed, failed as u64);
        Progress::add(&progress.done, (batch.items.len() - failed) as u64);
        if !batch.pipeline {
            // A pipeline's tokens were counted with its steps.
            let tokens: u64 = batch
                .items
                .iter()
                .map(|r| r.prompt_tokens.unwrap_or(0) + r.completion_tokens.unwrap_or(0))
                .sum();
            Progress::add(&progress.tokens, tokens);
        }
        if let Some(hook) = hooks.on_commit {
            hook(&batch.items);
        }
        batch.items.clear();
    }
    Ok(())
}

/// Outcomes gathered for one commit.
#[derive(Default)]
struct Batch {
    items: Vec<ItemRecord>,
    /// Leased units' outcomes with their lease tokens.
    fenced: Vec<(ItemRecord, i64)>,
    /// Those of them committed (their leases held), to count.
    fenced_done: Vec<ItemRecord>,
    steps: Vec<StepRecord>,
    cache: Vec<(u64, String, i64)>,
    /// Step records were seen: tokens are counted per step, not per unit.
    pipeline: bool,
}

impl Batch {
    fn len(&self) -> usize {
        self.items.len() + self.fenced.len() + self.steps.len() + self.cache.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Commits leased units' outcomes under their tokens; returns the records
/// accepted (a unit whose lease was lost is left to the worker that took it).
fn complete(
    store: &mut dyn Store,
    run_id: &str,
    steps: &[StepRecord],
    fenced: &mut Vec<(ItemRecord, i64)>,
) -> sluice_store::Result<Vec<ItemRecord>> {
    let Some(shared) = store.shared() else {
        return Err(sluice_store::Error::Unsupported(
            "a leased unit's outcome needs a shared store (PostgreSQL)".into(),
        ));
    };
    let accepted: std::collections::HashSet<String> = shared
        .complete(run_id, steps, fenced)?
        .into_iter()
        .collect();
    let lost = fenced.len() - accepted.len();
    if lost > 0 {
        tracing::info!(
            lost,
            "results dropped: their leases expired and other workers took the units over"
        );
    }
    Ok(fenced
        .drain(..)
        .map(|(r, _)| r)
        .filter(|r| accepted.contains(&r.item_id))
        .collect())
}

fn step_tokens(r: &StepRecord) -> u64 {
    r.prompt_tokens.unwrap_or(0) + r.completion_tokens.unwrap_or(0)
}

/// Queues a record into the batch, or applies position moves at once.
fn apply(
    store: &mut dyn Store,
    run_id: &str,
    message: Message,
    batch: &mut Batch,
    watch: &mut Option<Watch>,
    recording: &Recording,
) -> sluice_store::Result<()> {
    match message {
        Message::Record(record) => {
            batch.items.push(record);
            Ok(())
        }
        Message::Fenced(record, token) => {
            batch.fenced.push((record, token));
            Ok(())
        }
        Message::Step(record) => {
            batch.pipeline = true;
            batch.steps.push(record);
            Ok(())
        }
        Message::Moves(moves) => {
            let _busy = recording.busy();
            store.set_positions(run_id, &moves)
        }
        Message::Cache(key, output, at) => {
            batch.cache.push((key, output, at));
            Ok(())
        }
        Message::State(key, value) => {
            let _busy = recording.busy();
            // Like a beat: losing it only makes the story older.
            if let Err(e) = store.put_run_state(run_id, &key, &value) {
                tracing::warn!("could not keep the run's history: {e}");
            }
            Ok(())
        }
        Message::Beat(beat) => {
            let _busy = recording.busy();
            // A lost beat only makes the live view a second older; it must
            // never stop the recording of outcomes.
            if let Err(e) = store.heartbeat(&beat) {
                tracing::warn!("could not record this worker's heartbeat: {e}");
            }
            // With the beat, not per call: one look a second at what other
            // processes asked of the run.
            if let (Some(watch), "running") = (watch.as_mut(), beat.state.as_str()) {
                watch.poll(store, run_id);
            }
            Ok(())
        }
    }
}
