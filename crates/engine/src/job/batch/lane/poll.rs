//! A sealed batch's life after it is stored: submitted (or found again after
//! a crash), polled until the provider is done, its results handed out; and
//! what is stored about it along the way.

use std::collections::HashMap;
use std::sync::Arc;

use super::{lock, Inner, LaneBatcher, Waiter};
use crate::job::batch::state::{BatchRecord, LineResult, ABANDONED, SUBMITTING};
use crate::job::batch::BatchEnd;
use crate::quick::now_ms;
use sluice_spec::BatchRetry;

/// Status checks failing in a row (each already retried) before the batch's
/// units are failed; the batch stays stored, so a rerun polls it again.
const MAX_FAILED_POLLS: u32 = 10;

impl LaneBatcher {
    /// Submits (when `lines` are given, or an uploaded file waits to become
    /// a batch), polls until the provider is done, then hands out results.
    pub(super) async fn run_batch(self: Arc<Self>, seq: u64, lines: Option<Vec<String>>) {
        let Some(mut record) = self.record(seq) else {
            return;
        };
        if record.id.is_none() {
            if let Some(found) = self.find(&record).await {
                record.id = Some(found);
                record.state = "validating".into();
                self.save(&record);
            } else if lines.is_none() && record.input_file_id.is_none() {
                return self.abandon(seq, "nothing of it reached the provider");
            } else {
                let lines = lines.unwrap_or_default();
                let save = |r: &BatchRecord| self.save(r);
                if let Err(e) = self.remote.submit(&mut record, &lines, &save).await {
                    tracing::warn!(provider = %self.remote.provider, "batch {seq}: {e}");
                    return self.fail_all(seq, &format!("batch_error: could not submit it: {e}"));
                }
            }
        }
        let Some(id) = record.id.clone() else {
            return;
        };
        let mut failed_polls = 0;
        while !record.ended() {
            tokio::time::sleep(self.spec.poll).await;
            match self.remote.status(&id).await {
                Ok(status) => {
                    failed_polls = 0;
                    let changed = status.state != record.state
                        || (status.succeeded, status.errored, status.expired)
                            != (record.succeeded, record.errored, record.expired);
                    record.state = status.state;
                    record.succeeded = status.succeeded;
                    record.errored = status.errored;
                    record.expired = status.expired;
                    record.output_file_id = status.output_file_id.or(record.output_file_id);
                    record.error_file_id = status.error_file_id.or(record.error_file_id);
                    record.results_url = status.results_url.or(record.results_url);
                    record.error = status.error.or(record.error);
                    if record.ended() {
                        record.ended_at = Some(now_ms());
                    }
                    if changed {
                        record.updated_at = now_ms();
                        self.save(&record);
                    }
                }
                Err(e) => {
                    // Each check already retried; this many in a row means
                    // the batch cannot be read (gone, or the key revoked).
                    failed_polls += 1;
                    tracing::warn!(provider = %self.remote.provider, "batch {seq} status: {e}");
                    if failed_polls >= MAX_FAILED_POLLS {
                        let message = format!(
                            "batch_error: the status of batch {id} could not be read {failed_polls} times in a row ({e}); run again to keep polling it"
                        );
                        return self.fail_all(seq, &message);
                    }
                }
            }
        }
        let results = match self.remote.results(&record).await {
            Ok(r) => r,
            Err(e) => {
                // Not retried in a new batch (that would pay twice): a rerun
                // fetches the results again.
                let message =
                    format!("batch_error: could not fetch the results of batch {id}: {e}; run again to fetch them");
                return self.fail_all(seq, &message);
            }
        };
        self.deliver(seq, &record, results);
    }

    /// A batch created before a crash but whose id was not stored.
    pub(super) async fn find(&self, record: &BatchRecord) -> Option<String> {
        if record.state != SUBMITTING || record.input_file_id.is_none() {
            return None;
        }
        self.remote.find(&record.key).await.ok().flatten()
    }

    pub(super) fn record(&self, seq: u64) -> Option<BatchRecord> {
        self.lock().entries.get(&seq).map(|e| e.record.clone())
    }

    /// Stores `record` and keeps it as the entry's.
    pub(super) fn save(&self, record: &BatchRecord) {
        if let Some(entry) = self.lock().entries.get_mut(&record.seq) {
            entry.record = record.clone();
        }
        self.persist(record);
    }

    pub(super) fn persist(&self, record: &BatchRecord) {
        let value = serde_json::to_value(record).unwrap_or_default();
        if let Err(e) = lock(&self.store).put_run_state(&self.run_id, &record.store_key(), &value) {
            tracing::warn!("could not store the state of batch {}: {e}", record.seq);
        }
    }

    /// The results of an ended batch: to the units waiting for them now;
    /// the rest are kept for units still to come.
    pub(super) fn deliver(
        self: &Arc<Self>,
        seq: u64,
        record: &BatchRecord,
        results: Vec<(String, LineResult)>,
    ) {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&seq) else {
            return;
        };
        let mut map: HashMap<String, LineResult> = results
            .into_iter()
            .filter(|(id, _)| entry.attempts.contains_key(id))
            .collect();
        // A batch the provider refused as a whole (OpenAI's validation) would
        // be refused again; one that ended without some results may not.
        let refused = record.state == "failed";
        for id in entry.attempts.keys() {
            map.entry(id.clone()).or_insert_with(|| LineResult::Err {
                status: None,
                error: match (refused, &record.error) {
                    (true, Some(why)) => format!(
                        "batch_failed: the provider refused batch {}: {why}",
                        record.id.as_deref().unwrap_or("?")
                    ),
                    _ => format!(
                        "batch_expired: batch {} ended ({}) without a result for this request",
                        record.id.as_deref().unwrap_or("?"),
                        record.state
                    ),
                },
                retryable: !refused,
            });
        }
        let mut record = record.clone();
        record.succeeded = map
            .values()
            .filter(|r| matches!(r, LineResult::Ok { .. }))
            .count() as u64;
        let expired = map
            .values()
            .filter(|r| matches!(r, LineResult::Err { error, .. } if error.starts_with("batch_expired") || error.starts_with("batch_cancelled")))
            .count() as u64;
        record.expired = expired;
        record.errored = map.len() as u64 - record.succeeded - expired;
        record.updated_at = now_ms();
        entry.record = record.clone();
        entry.busy = false;
        let ids: Vec<String> = map.keys().cloned().collect();
        entry.results = Some(map);
        drop(inner);
        self.persist(&record);
        let mut inner = self.lock();
        for id in ids {
            if inner.index.get(&id) != Some(&seq) || !inner.waiters.contains_key(&id) {
                continue;
            }
            let result = inner
                .entries
                .get_mut(&seq)
                .and_then(|e| e.results.as_mut())
                .and_then(|r| r.remove(&id));
            let (Some(result), Some(waiter)) = (result, inner.waiters.remove(&id)) else {
                continue;
            };
            self.settle(&mut inner, waiter, result);
        }
    }

    /// Decides what a result means for its waiter: done, failed, or another
    /// attempt (a later batch, or live).
    pub(super) fn settle(self: &Arc<Self>, inner: &mut Inner, waiter: Waiter, result: LineResult) {
        let attempts = waiter.attempt;
        let end = match result {
            LineResult::Ok { status, body } => BatchEnd::Done {
                status,
                body,
                latency: waiter.since.elapsed(),
                attempts,
            },
            LineResult::Err {
                retryable: true, ..
            } if attempts <= self.retries => match self.spec.retry {
                BatchRetry::Live => BatchEnd::Live { attempts },
                BatchRetry::Batch => {
                    let request = waiter.request.clone();
                    let again = Waiter {
                        attempt: attempts + 1,
                        ..waiter
                    };
                    inner.waiters.insert(request.custom_id.clone(), again);
                    self.enqueue(inner, &request, attempts + 1);
                    return;
                }
            },
            LineResult::Err { status, error, .. } => BatchEnd::Failed {
                error: format!(
                    "{error} (after {attempts} batch attempt{})",
                    if attempts == 1 { "" } else { "s" }
                ),
                status,
                attempts,
            },
        };
        // A unit that gave up (its deadline) no longer listens.
        let _ = waiter.tx.send(end);
    }

    /// Fails every waiting request of batch `seq` (it could not be submitted
    /// or its results fetched); a failed submission is forgotten so that a
    /// rerun submits those requests again.
    pub(super) fn fail_all(&self, seq: u64, error: &str) {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&seq) else {
            return;
        };
        entry.busy = false;
        let submitted = entry.record.id.is_some();
        if !submitted {
            entry.record.state = ABANDONED.into();
            entry.record.error = Some(error.to_string());
        }
        let record = entry.record.clone();
        let ids: Vec<(String, u32)> = entry
            .attempts
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (id, attempt) in ids {
            if inner.index.get(&id) != Some(&seq) {
                continue;
            }
            if !submitted {
                inner.index.remove(&id);
            }
            if let Some(w) = inner.waiters.remove(&id) {
                let _ = w.tx.send(BatchEnd::Failed {
                    error: error.to_string(),
                    status: None,
                    attempts: attempt,
                });
            }
        }
        drop(inner);
        self.persist(&record);
    }

    pub(super) fn abandon(&self, seq: u64, why: &str) {
        self.fail_all(seq, &format!("batch_error: {why}"));
    }

    /// Batches whose every result went to a unit: once the run's records are
    /// committed they need not be fetched again.
    pub(crate) fn delivered(&self) -> Vec<BatchRecord> {
        let inner = self.lock();
        inner
            .entries
            .values()
            .filter(|e| e.results.as_ref().is_some_and(HashMap::is_empty))
            .map(|e| BatchRecord {
                collected: true,
                ..e.record.clone()
            })
            .collect()
    }

    /// Stores records (after the run's own records were committed).
    pub(crate) fn store_records(&self, records: &[BatchRecord]) {
        for r in records {
            self.persist(r);
        }
    }
}
