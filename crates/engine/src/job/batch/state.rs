//! What is kept in the store about each submitted batch (named run state,
//! `Store::put_run_state`): its provider-side id and status, and which
//! requests it holds, so that a rerun after a crash polls it instead of
//! submitting it again.
//!
//! Two entries per batch: `batch:PROVIDER:SEQ` (small, rewritten as its
//! status changes; read by `sluice status`) and `batch-requests:PROVIDER:SEQ`
//! (the custom ids and their attempt numbers, written once).

use serde::{Deserialize, Serialize};

/// A batch's state before the provider has accepted it.
pub(crate) const SUBMITTING: &str = "submitting";
/// A batch found never to have reached the provider (a crash while submitting).
pub(crate) const ABANDONED: &str = "abandoned";
/// A batch the provider refused before running anything (its enqueued-token
/// limit, or validation errors on some lines): its requests went into
/// later batches, the bad lines failed.
pub(crate) const SPLIT: &str = "split";

/// One batch as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BatchRecord {
    /// The provider's name in the job.
    pub(crate) provider: String,
    /// `openai` or `anthropic`.
    pub(crate) api: String,
    /// This run's batch number for the provider (from 1).
    pub(crate) seq: u64,
    /// The API path of its requests (`/v1/chat/completions`, `/v1/messages`).
    pub(crate) path: String,
    /// `submitting`, then the provider's own status (`validating`,
    /// `in_progress`, `finalizing`, `completed`, `expired`, `failed`,
    /// `cancelled`; Anthropic: `in_progress`, `canceling`, `ended`), or `abandoned`.
    pub(crate) state: String,
    /// The provider's batch id, once created.
    #[serde(default)]
    pub(crate) id: Option<String>,
    /// OpenAI: the uploaded JSONL file.
    #[serde(default)]
    pub(crate) input_file_id: Option<String>,
    /// OpenAI: the results file.
    #[serde(default)]
    pub(crate) output_file_id: Option<String>,
    /// OpenAI: the errors file.
    #[serde(default)]
    pub(crate) error_file_id: Option<String>,
    /// Anthropic: where the results are fetched.
    #[serde(default)]
    pub(crate) results_url: Option<String>,
    /// Requests in the batch.
    pub(crate) requests: u64,
    /// Requests the provider answered successfully so far.
    #[serde(default)]
    pub(crate) succeeded: u64,
    /// Requests that failed.
    #[serde(default)]
    pub(crate) errored: u64,
    /// Requests that expired (or were cancelled) before they ran.
    #[serde(default)]
    pub(crate) expired: u64,
    /// Unix ms.
    pub(crate) created_at: i64,
    /// Unix ms of the last status change.
    pub(crate) updated_at: i64,
    /// Unix ms the provider finished it.
    #[serde(default)]
    pub(crate) ended_at: Option<i64>,
    /// Every result was handed to its unit and recorded (set when a run
    /// ends): a rerun need not fetch it again.
    #[serde(default)]
    pub(crate) collected: bool,
    /// Why the whole batch failed (OpenAI validation errors), if it did.
    #[serde(default)]
    pub(crate) error: Option<String>,
    /// Identifies the batch at the provider (OpenAI `metadata`), to find it
    /// again after a crash between creating it and storing its id.
    pub(crate) key: String,
    /// The model of its requests (one per batch: OpenAI requires it, and
    /// enqueued tokens are counted per model).
    #[serde(default)]
    pub(crate) model: Option<String>,
    /// Estimated prompt tokens of its requests (what it enqueues).
    #[serde(default)]
    pub(crate) tokens: u64,
    /// Create calls sent so far; a re-creation after the provider refused
    /// the batch for its enqueued-token limit counts up (OpenAI `metadata`
    /// `sluice_try`), so a look-up never takes the refused one for it.
    #[serde(default)]
    pub(crate) creates: u32,
    /// Unix ms the latest create call was sent: from then until its id is
    /// stored the batch may exist at the provider, so it is looked up before
    /// any new create.
    #[serde(default)]
    pub(crate) create_sent_at: Option<i64>,
    /// Found by a look-up after an uncertain create (Anthropic: by its
    /// size and time), so its results are checked to hold our custom ids.
    #[serde(default)]
    pub(crate) adopted: bool,
}

impl BatchRecord {
    /// The store key of the record.
    pub(crate) fn store_key(&self) -> String {
        record_key(&self.provider, self.seq)
    }

    /// Whether the provider is done with it.
    pub(crate) fn ended(&self) -> bool {
        matches!(
            self.state.as_str(),
            "completed" | "expired" | "failed" | "cancelled" | "ended"
        )
    }
}

/// `batch:PROVIDER:SEQ` (zero-padded so keys sort by number).
pub(crate) fn record_key(provider: &str, seq: u64) -> String {
    format!("batch:{provider}:{seq:08}")
}

/// `batch-requests:PROVIDER:SEQ`.
pub(crate) fn requests_key(provider: &str, seq: u64) -> String {
    format!("batch-requests:{provider}:{seq:08}")
}

/// The requests of one batch: (custom id, attempt number from 1).
pub(crate) type Requests = Vec<(String, u32)>;

/// One request's result, from an output or error file (or its absence).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LineResult {
    /// A 2xx answer: the body a live call would have received.
    Ok { status: u16, body: bytes::Bytes },
    /// An error, expiry or cancellation.
    Err {
        status: Option<u16>,
        error: crate::item_error::ItemError,
        retryable: bool,
    },
}

/// Whether an HTTP status inside a batch result is worth another attempt.
pub(crate) fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429 | 500..=599)
}

/// The error code for a failed result's status (as live calls use).
pub(crate) fn status_code_name(status: u16) -> &'static str {
    match status {
        429 => "rate_limited",
        408 | 409 | 500..=599 => "server_error",
        _ => "request_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_keys_sort_by_number() {
        let r = BatchRecord {
            provider: "p".into(),
            api: "openai".into(),
            seq: 12,
            path: "/v1/chat/completions".into(),
            state: SUBMITTING.into(),
            id: None,
            input_file_id: Some("file-1".into()),
            output_file_id: None,
            error_file_id: None,
            results_url: None,
            requests: 3,
            succeeded: 0,
            errored: 0,
            expired: 0,
            created_at: 1,
            updated_at: 1,
            ended_at: None,
            collected: false,
            error: None,
            key: "run-1:p:12".into(),
            model: Some("m".into()),
            tokens: 120,
            creates: 1,
            create_sent_at: Some(5),
            adopted: false,
        };
        let back: BatchRecord = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(!r.ended());
        assert!(record_key("p", 9) < record_key("p", 10));
        assert_eq!(r.store_key(), "batch:p:00000012");
    }
}
