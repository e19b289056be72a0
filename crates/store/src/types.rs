//! The values the store keeps: runs, item outcomes, and the summaries read back from them.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::Error;

/// How an item ended. An item with no record at all is still pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// The item got a successful response.
    Done,
    /// The item failed after its retries; `error` says why.
    Failed,
}

impl ItemStatus {
    /// The spelling stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Done => "done",
            ItemStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for ItemStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ItemStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "done" => Ok(ItemStatus::Done),
            "failed" => Ok(ItemStatus::Failed),
            other => Err(Error::UnknownStatus(other.to_owned())),
        }
    }
}

/// A run in state `running`: the engine is (or was, until a crash) working on it.
pub const STATE_RUNNING: &str = "running";
/// A run in state `finished`: every item reached an outcome.
pub const STATE_FINISHED: &str = "finished";
/// A run in state `interrupted`: stopped early (Ctrl-C, limit); resumable.
pub const STATE_INTERRUPTED: &str = "interrupted";
/// Every state a run may be in; `set_state` refuses anything else.
pub const RUN_STATES: [&str; 3] = [STATE_RUNNING, STATE_FINISHED, STATE_INTERRUPTED];

/// What the engine knows when it starts a run.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// The job's name; the run id becomes `<name>-<seq>`.
    pub name: String,
    /// The key a later invocation uses to find this run to resume (e.g. the canonical input path).
    pub source: String,
    /// The flags or job the run was started with, so `sluice status` can show them.
    /// Must not contain secrets: the store writes it as is.
    pub settings: serde_json::Value,
}

impl NewRun {
    /// The run as created: number `seq` of its name, running since `now`.
    pub(crate) fn created(&self, seq: i64, now: i64) -> RunMeta {
        RunMeta {
            id: format!("{}-{seq}", self.name),
            name: self.name.clone(),
            source: self.source.clone(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            total: None,
            settings: self.settings.clone(),
            state: STATE_RUNNING.to_owned(),
        }
    }
}

/// One run as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunMeta {
    /// Human-readable unique id, `<name>-<seq>` (e.g. `requests-2`).
    pub id: String,
    /// The job's name, shared by all runs of the same job.
    pub name: String,
    /// The resume key given in [`NewRun::source`].
    pub source: String,
    /// When the run was created, unix milliseconds.
    pub created_at: i64,
    /// Last time anything about the run (or its items) was written, unix milliseconds.
    pub updated_at: i64,
    /// When the run reached `finished`, unix milliseconds.
    pub finished_at: Option<i64>,
    /// Number of input items, once the input has been read to its end.
    pub total: Option<u64>,
    /// The settings given at creation or by `update_settings`.
    pub settings: serde_json::Value,
    /// One of [`RUN_STATES`].
    pub state: String,
}

/// The outcome of one item, as written by the engine and read back by exports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemRecord {
    /// The item's identity within the run: its custom_id, the job's id template, or `line-N`.
    pub item_id: String,
    /// Position in the input, so exports keep input order.
    pub idx: u64,
    /// Hash of the rendered request; a changed request no longer matches and is sent again.
    pub hash: u64,
    /// Done or failed.
    pub status: ItemStatus,
    /// Attempts made, including the last one (so at least 1 for a sent item).
    pub attempts: u32,
    /// How many of those attempts were answered with 429.
    pub throttled: u32,
    /// HTTP status of the last attempt, if one was received.
    pub status_code: Option<u16>,
    /// The raw response body (JSON text) of the last attempt.
    pub response: Option<String>,
    /// Why the item failed, in words a user can act on.
    pub error: Option<String>,
    /// Prompt tokens reported by the API's `usage`.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens reported by the API's `usage`.
    pub completion_tokens: Option<u64>,
    /// Duration of the last attempt, milliseconds.
    pub latency_ms: u64,
    /// When the first attempt started, unix milliseconds.
    pub started_at: i64,
    /// When the outcome was reached, unix milliseconds.
    pub finished_at: i64,
    /// The input line's `metadata` as raw JSON text, passed through to exports.
    pub metadata: Option<String>,
    /// The input line's `custom_id`, when it had one (exports echo it back).
    pub custom_id: Option<String>,
}

impl ItemRecord {
    /// The record of an item that failed before any call (a bad input line,
    /// a unit that cannot be built): no attempt, no answer, `error` as given,
    /// started and finished at `now_ms`.
    pub fn failed_before_sending(
        item_id: String,
        idx: u64,
        hash: u64,
        error: String,
        now_ms: i64,
    ) -> ItemRecord {
        ItemRecord {
            item_id,
            idx,
            hash,
            status: ItemStatus::Failed,
            attempts: 0,
            throttled: 0,
            status_code: None,
            response: None,
            error: Some(error),
            prompt_tokens: None,
            completion_tokens: None,
            latency_ms: 0,
            started_at: now_ms,
            finished_at: now_ms,
            metadata: None,
            custom_id: None,
        }
    }
}

/// What the store already holds for an item id (for resume).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedItem {
    /// The item id looked up.
    pub item_id: String,
    /// Hash of the request that produced the stored outcome.
    pub hash: u64,
    /// The stored outcome.
    pub status: ItemStatus,
    /// The stored input position (compare to detect a shifted input file).
    pub idx: u64,
}

/// Totals over a run's recorded items, for progress, `sluice status` and summaries.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunCounts {
    /// Items done.
    pub done: u64,
    /// Items failed.
    pub failed: u64,
    /// Attempts over all recorded items.
    pub attempts: u64,
    /// Attempts beyond the first: sum of `attempts - 1`.
    pub retries: u64,
    /// Attempts answered with 429.
    pub throttled: u64,
    /// Sum of prompt tokens.
    pub prompt_tokens: u64,
    /// Sum of completion tokens.
    pub completion_tokens: u64,
    /// Sum of last-attempt latencies; divide by `done + failed` for a mean.
    pub latency_ms_sum: u64,
    /// Earliest `started_at`, unix milliseconds.
    pub first_started_at: Option<i64>,
    /// Latest `finished_at`, unix milliseconds.
    pub last_finished_at: Option<i64>,
}

/// A run together with its counts, as listed by `sluice runs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run.
    pub run: RunMeta,
    /// Its items' totals.
    pub counts: RunCounts,
}

/// The outcome of one step (or one fan-out element, or one conversation turn)
/// of one pipeline unit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepRecord {
    /// The unit: an input item × one matrix combination.
    pub unit_id: String,
    /// The step's name.
    pub step: String,
    /// -1 for a whole step; the element or turn index otherwise.
    pub part: i64,
    /// Hash of the rendered request.
    pub hash: u64,
    /// Done or failed.
    pub status: ItemStatus,
    /// Attempts made.
    pub attempts: u32,
    /// 429s seen.
    pub throttled: u32,
    /// HTTP status or exit code of the last attempt.
    pub status_code: Option<u16>,
    /// Usage reported.
    pub prompt_tokens: Option<u64>,
    /// Usage reported.
    pub completion_tokens: Option<u64>,
    /// Last attempt's latency.
    pub latency_ms: u64,
    /// First attempt (unix ms).
    pub started_at: i64,
    /// Outcome known (unix ms).
    pub finished_at: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// The step's output as JSON text.
    pub output: Option<String>,
}

/// One process's live state in one run, written every second or so while it
/// works: what `sluice status` lists per worker and what the server streams
/// for runs started elsewhere (e.g. from the CLI against the same store).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerBeat {
    /// The run being worked on.
    pub run_id: String,
    /// Unique per process and run: `<host>:<pid>:<started_at>`.
    pub worker_id: String,
    /// Host name of the process.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When the process joined the run, unix milliseconds.
    pub started_at: i64,
    /// When this beat was written, unix milliseconds; a beat much older than
    /// its period means the process died.
    pub beat_at: i64,
    /// `running` while working, `stopped` once it left the run (finished,
    /// interrupted, or shut down).
    pub state: String,
    /// Calls the process had on the wire at the beat.
    pub in_flight: u64,
    /// The engine's live counters and rates (free-form JSON, no secrets).
    pub live: serde_json::Value,
}

/// One distinct error message of a run's failed items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorMessage {
    /// The message as recorded (`(no error message)` for none).
    pub message: String,
    /// Failed items with exactly this message.
    pub count: u64,
    /// One of them (the least item id), to look at.
    pub example: String,
}
