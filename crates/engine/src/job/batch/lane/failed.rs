//! A batch the provider failed as a whole (OpenAI `status: "failed"`), read
//! by its error codes instead of failing every request in it:
//!
//! - `token_limit_exceeded`: the model's enqueued prompt tokens were over
//!   the organisation's limit ("Please try again once some in_progress
//!   batches have been completed", openai-python #2084). Nothing ran: the
//!   limit the message states is learned, and the batch is created again
//!   from the same file once earlier batches finished (or after a wait that
//!   grows) — or, if it alone is over the limit, its requests are regrouped
//!   into batches under it.
//! - validation errors naming lines (`errors.data[].line`, from 1, with
//!   `code` and `message`): those requests fail with the provider's words,
//!   the others go into a new batch.
//! - anything else: every request fails with the errors (as refused).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::poll::Ended;
use super::{LaneBatcher, Waiter};
use crate::clock::now_ms;
use crate::item_error::ItemError;
use crate::job::batch::api::BatchError;
use crate::job::batch::enqueued::announced_limit;
use crate::job::batch::state::{BatchRecord, LineResult, SPLIT, SUBMITTING};

/// Longest wait before a batch refused for the enqueued-token limit is
/// created again when none of this run's batches of its model is pending
/// (the queue is held by others).
const MAX_REQUEUE_WAIT: Duration = Duration::from_secs(15 * 60);

impl LaneBatcher {
    /// Keeps the errors a status check reported for batch `seq`.
    pub(super) fn set_errors(&self, seq: u64, errors: Vec<BatchError>) {
        if let Some(e) = self.lock().entries.get_mut(&seq) {
            e.errors = errors;
        }
    }

    /// What to do with batch `seq`, which the provider just ended.
    pub(super) async fn on_ended(self: &Arc<Self>, seq: u64, record: &BatchRecord) -> Ended {
        if record.state != "failed" {
            return Ended::Results;
        }
        let mut errors = self
            .lock()
            .entries
            .get(&seq)
            .map(|e| e.errors.clone())
            .unwrap_or_default();
        if errors.is_empty() {
            // Taken up by a rerun: the errors are read again.
            if let Some(id) = &record.id {
                if let Ok(status) = self.remote.status(id).await {
                    errors = status.errors;
                }
            }
        }
        if errors.iter().any(|e| e.code == "token_limit_exceeded") {
            return self.over_token_limit(seq, record, &errors).await;
        }
        let order = self
            .lock()
            .entries
            .get(&seq)
            .map(|e| e.order.clone())
            .unwrap_or_default();
        let batch = record.id.as_deref().unwrap_or("?");
        let bad: HashMap<String, ItemError> = errors
            .iter()
            .filter_map(|e| {
                let line = e.line.filter(|&n| n >= 1)?;
                let id = order.get(usize::try_from(line - 1).ok()?)?;
                let message = format!(
                    "{} (line {line} of batch {batch}; the provider refused it before running the batch)",
                    e.message
                );
                Some((id.clone(), ItemError::new(e.code.clone(), message)))
            })
            .collect();
        if bad.is_empty() {
            return Ended::Results;
        }
        let why = format!(
            "the provider refused {} of its {} lines; the others went into a new batch",
            bad.len(),
            order.len()
        );
        self.split(seq, &bad, &why);
        Ended::Done
    }

    /// The batch failed for its model's enqueued-token limit: learn it, wait
    /// for room, create it again (or regroup it when it alone is too large).
    async fn over_token_limit(
        self: &Arc<Self>,
        seq: u64,
        record: &BatchRecord,
        errors: &[BatchError],
    ) -> Ended {
        let model = record.model.clone().unwrap_or_default();
        if let Some(limit) = errors.iter().find_map(|e| announced_limit(&e.message)) {
            self.enqueued.learn(&model, limit);
        }
        if self
            .enqueued
            .limit(&model)
            .is_some_and(|l| record.tokens > l)
        {
            let why = format!(
                "its ~{} prompt tokens are over the enqueued-token limit of {model:?}; its requests were regrouped under it",
                record.tokens
            );
            self.split(seq, &HashMap::new(), &why);
            return Ended::Done;
        }
        let doublings = record.creates.clamp(1, 8) - 1;
        let wait = (self.spec.poll * 2u32.pow(doublings)).min(MAX_REQUEUE_WAIT);
        tracing::info!(provider = %self.remote.provider, "batch {seq} ({}) was refused for the enqueued-token limit of {model:?}; creating it again once earlier batches finish (at most {wait:?})", record.id.as_deref().unwrap_or("?"));
        let mut again = record.clone();
        again.id = None;
        again.state = SUBMITTING.into();
        again.output_file_id = None;
        again.error_file_id = None;
        again.ended_at = None;
        again.create_sent_at = None;
        again.updated_at = now_ms();
        self.set_errors(seq, Vec::new());
        self.save(&again);
        tokio::select! {
            _ = self.enqueued.wait(wait) => Ended::Again,
            _ = self.stop.wait() => Ended::Done,
        }
    }

    /// Batch `seq` is dissolved before anything of it ran: requests in
    /// `bad` fail with their reason, the others go into new batches (their
    /// attempts unchanged: they never ran).
    pub(super) fn split(self: &Arc<Self>, seq: u64, bad: &HashMap<String, ItemError>, why: &str) {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&seq) else {
            return;
        };
        entry.busy = false;
        entry.record.state = SPLIT.into();
        entry.record.error = Some(why.to_string());
        entry.record.updated_at = now_ms();
        let record = entry.record.clone();
        let order = entry.order.clone();
        let mut kept = HashMap::new();
        for id in order {
            if inner.index.get(&id) != Some(&seq) {
                continue;
            }
            let waiter = inner.waiters.remove(&id);
            match (bad.get(&id), waiter) {
                (Some(reason), waiter) => {
                    let result = LineResult::Err {
                        status: None,
                        error: reason.clone(),
                        retryable: false,
                    };
                    match waiter {
                        Some(w) => self.settle(&mut inner, w, result),
                        None => {
                            kept.insert(id, result);
                        }
                    }
                }
                (None, Some(w)) => {
                    inner.index.remove(&id);
                    let (request, attempt) = (w.request.clone(), w.attempt);
                    inner.waiters.insert(id, Waiter { ..w });
                    self.enqueue(&mut inner, &request, attempt);
                }
                // Its unit has not come yet: it starts a new batch when it does.
                (None, None) => {
                    inner.index.remove(&id);
                }
            }
        }
        if let Some(entry) = inner.entries.get_mut(&seq) {
            entry.results = Some(kept);
        }
        drop(inner);
        self.persist(&record);
    }
}
