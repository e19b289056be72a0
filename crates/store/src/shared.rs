//! What a store offers when several processes work one run together
//! (PostgreSQL): the run's units as a queue with leases and fencing tokens,
//! the job definition kept with the run, and limiter state shared by every
//! worker. A store that serves one process only (SQLite) has none of it.

use std::time::Duration;

use crate::{ItemRecord, NewRun, Result, RunMeta, StepRecord};

/// One unit put on a shared run's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedUnit {
    /// The unit's id (its item record gets the same id).
    pub unit_id: String,
    /// Export position.
    pub idx: u64,
    /// Hash of the unit's request; a unit done with the same hash is not queued again.
    pub hash: u64,
    /// JSON text: everything a worker needs to run the unit (no secrets).
    pub body: String,
}

/// A unit leased to one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The queued unit.
    pub unit: QueuedUnit,
    /// The lease's fencing token: its result is accepted only with it.
    pub token: i64,
    /// Times the unit has been claimed, this claim included: more than one
    /// means an earlier lease was lost or released (its worker may have
    /// recorded some of the unit's steps).
    pub claims: u64,
}

/// Where a shared run's units stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Waiting to be claimed.
    pub queued: u64,
    /// Leased to a worker (including expired leases not yet taken over).
    pub leased: u64,
    /// Leases past their expiry: their worker stopped renewing them.
    pub expired: u64,
    /// With an item record.
    pub done: u64,
    /// Every unit has been enqueued (the creator finished its pass).
    pub ready: bool,
}

impl QueueCounts {
    /// Nothing left to claim now or later: the run is complete.
    pub fn complete(&self) -> bool {
        self.ready && self.queued == 0 && self.leased == 0
    }
}

/// The job a shared run executes, kept with the run for workers elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDef {
    /// The job file's path where the run was created.
    pub path: String,
    /// The job file's text.
    pub text: String,
    /// The `--set` overrides it was loaded with.
    pub sets: Vec<String>,
}

/// A change to one piece of shared state: given the stored value (`None`
/// the first time) and the database clock (unix microseconds), returns the
/// value to store and the value to hand back to the caller. Runs while the
/// state is locked, so it must be quick and must not call the store.
pub type SharedUpdate = Box<
    dyn FnOnce(Option<serde_json::Value>, i64) -> (serde_json::Value, serde_json::Value) + Send,
>;

/// The shared-run operations of a store several processes can use at once.
pub trait SharedRuns {
    /// The latest run of `new.source` (resumed, `true`) unless `fresh`, else a
    /// new one; atomic, so two processes starting the same job at once get
    /// the same run.
    fn open_shared_run(&mut self, new: &NewRun, fresh: bool) -> Result<(RunMeta, bool)>;
    /// Stores the job definition and starts a new enqueueing pass: units
    /// still queued are dropped (the pass queues again what the input still
    /// has) and the run is not `ready` until [`SharedRuns::finish_enqueue`].
    fn put_job(&mut self, run_id: &str, job: &JobDef) -> Result<()>;
    /// The run's job definition, if it is a shared job run.
    fn job_def(&mut self, run_id: &str) -> Result<Option<JobDef>>;
    /// Queues units (one transaction). A unit whose item is already done
    /// with the same hash stays done, and one leased with the same hash
    /// stays leased; returns how many of `units` were already done.
    fn enqueue(&mut self, run_id: &str, units: &[QueuedUnit]) -> Result<u64>;
    /// Ends the enqueueing pass: recorded items take their new positions
    /// and the run becomes `ready`.
    fn finish_enqueue(&mut self, run_id: &str) -> Result<()>;
    /// Leases up to `max` claimable units (queued, or with an expired lease)
    /// in input order to `worker_id` for `lease`, skipping rows other
    /// workers are claiming at the same moment.
    fn claim(
        &mut self,
        run_id: &str,
        worker_id: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>>;
    /// Returns leased units to the queue at once (a worker stopping).
    fn release(&mut self, run_id: &str, tokens: &[i64]) -> Result<u64>;
    /// Records `steps` (as [`crate::Store::write_steps`]) and the outcomes of
    /// leased units in one transaction, each outcome only if its token is
    /// still the unit's lease; returns the ids accepted. A result whose lease
    /// was lost (expired and taken over) is dropped, so no unit is counted
    /// twice. (Step records are kept either way: the same request's output,
    /// reused by whichever worker finishes the unit.)
    fn complete(
        &mut self,
        run_id: &str,
        steps: &[StepRecord],
        records: &[(ItemRecord, i64)],
    ) -> Result<Vec<String>>;
    /// Where the run's units stand.
    fn queue_counts(&mut self, run_id: &str) -> Result<QueueCounts>;
    /// Shared job runs, not finished, with a unit to claim now; oldest first.
    fn runnable_runs(&mut self) -> Result<Vec<RunMeta>>;
    /// Changes the shared state under `key` atomically (see [`SharedUpdate`])
    /// and returns what the update handed back.
    fn update_shared(&mut self, key: &str, update: SharedUpdate) -> Result<serde_json::Value>;
}
