//! A sealed batch's life after it is stored: admitted under the enqueued-
//! token limit, submitted (or found again after a crash or a lost create
//! answer), polled until the provider is done, its result files downloaded
//! and read line by line into the waiting units; and what is stored about it
//! along the way.

use std::collections::{HashMap, HashSet};
use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::Arc;

use super::{lock, Inner, LaneBatcher, Waiter};
use crate::clock::now_ms;
use crate::item_error::ItemError;
use crate::job::batch::state::{BatchRecord, LineResult, ABANDONED};
use crate::job::batch::BatchEnd;
use sluice_spec::BatchRetry;

/// Status checks failing in a row (each already retried) before the batch's
/// units are failed; the batch stays stored, so a rerun polls it again.
const MAX_FAILED_POLLS: u32 = 10;

/// What happened to a batch the provider ended.
pub(super) enum Ended {
    /// Its results are to be read.
    Results,
    /// It is to be created again (it failed for the enqueued-token limit).
    Again,
    /// Dealt with (split, or its requests failed).
    Done,
}

impl LaneBatcher {
    /// Submits (when `lines` are given, or an uploaded file or a create
    /// call waits to become a batch), polls until the provider is done, then
    /// hands out results.
    pub(super) async fn run_batch(self: Arc<Self>, seq: u64, lines: Option<Vec<String>>) {
        let mut lines = lines;
        loop {
            let Some(record) = self.record(seq) else {
                return;
            };
            let Some(record) = self.ensure_submitted(seq, record, lines.as_deref()).await else {
                return;
            };
            let Some(record) = self.poll(seq, record).await else {
                return;
            };
            match self.on_ended(seq, &record).await {
                Ended::Results => return self.collect(seq, &record).await,
                Ended::Again => lines = None,
                Ended::Done => return,
            }
        }
    }

    /// The batch at the provider: found again (a create call was sent before
    /// a crash), or created now once its tokens fit the enqueued limit.
    /// `None` when it cannot be (its units were failed) or the run stops.
    async fn ensure_submitted(
        &self,
        seq: u64,
        mut record: BatchRecord,
        lines: Option<&[String]>,
    ) -> Option<BatchRecord> {
        if record.id.is_some() {
            return Some(record);
        }
        let known = self.known_ids();
        if lines.is_none() && record.create_sent_at.is_some() {
            if let Ok(Some(found)) = self.remote.find(&record, &known).await {
                self.adopt(&mut record, &found);
                self.mark_enqueued(seq);
                return Some(record);
            }
        }
        if lines.is_none() && record.input_file_id.is_none() {
            self.abandon(seq, "nothing of it reached the provider".into());
            return None;
        }
        if !self.admit(seq, &record).await {
            return None;
        }
        let save = |r: &BatchRecord| self.save(r);
        match self
            .remote
            .submit(&mut record, lines.unwrap_or_default(), &known, &save)
            .await
        {
            Ok(()) => Some(record),
            Err(e) => {
                tracing::warn!(provider = %self.remote.provider, "batch {seq}: {e}");
                self.release(seq);
                self.abandon(seq, format!("could not submit it: {e}"));
                None
            }
        }
    }

    /// Takes `found` (a batch object the look-up returned) as the record's.
    fn adopt(&self, record: &mut BatchRecord, found: &serde_json::Value) {
        let status = match self.remote.dialect {
            sluice_provider::Dialect::OpenAi => crate::job::batch::openai::read_status(found),
            sluice_provider::Dialect::Anthropic => crate::job::batch::anthropic::read_status(found),
        };
        record.id = found["id"].as_str().map(str::to_string);
        record.state = status.state;
        record.adopted = true;
        tracing::info!(provider = %self.remote.provider, "batch {} was created before its answer was lost: found it as {}", record.seq, record.id.as_deref().unwrap_or("?"));
        self.save(record);
    }

    /// Waits until the batch's prompt tokens fit under its model's enqueued
    /// limit, then counts them; `false` when the run stops first.
    async fn admit(&self, seq: u64, record: &BatchRecord) -> bool {
        let model = record.model.as_deref().unwrap_or("");
        loop {
            if self.enqueued.try_admit(model, record.tokens) {
                self.mark_enqueued(seq);
                return true;
            }
            tokio::select! {
                _ = self.enqueued.wait(self.spec.poll) => {}
                _ = self.stop.wait() => return false,
            }
        }
    }

    fn mark_enqueued(&self, seq: u64) {
        if let Some(e) = self.lock().entries.get_mut(&seq) {
            e.enqueued = true;
        }
    }

    /// The batch's tokens leave the enqueued count (it ended, or never got there).
    pub(super) fn release(&self, seq: u64) {
        let released = {
            let mut inner = self.lock();
            inner.entries.get_mut(&seq).and_then(|e| {
                std::mem::take(&mut e.enqueued)
                    .then(|| (e.record.model.clone().unwrap_or_default(), e.record.tokens))
            })
        };
        if let Some((model, tokens)) = released {
            self.enqueued.release(&model, tokens);
        }
    }

    /// Provider ids of this run's batches (a look-up must not take one of them).
    fn known_ids(&self) -> HashSet<String> {
        self.lock()
            .entries
            .values()
            .filter_map(|e| e.record.id.clone())
            .collect()
    }

    /// Polls until the provider is done with the batch; `None` when its
    /// status cannot be read (its units were failed; a rerun polls again).
    async fn poll(&self, seq: u64, mut record: BatchRecord) -> Option<BatchRecord> {
        let id = record.id.clone()?;
        let mut failed_polls = 0;
        // Read at least once: a batch found ended (a look-up, a rerun) still
        // needs its result files' ids.
        let mut read = false;
        while !(read && record.ended()) {
            if !record.ended() {
                tokio::time::sleep(self.spec.poll).await;
            }
            read = true;
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
                    if !status.errors.is_empty() {
                        self.set_errors(seq, status.errors.clone());
                        record.error = Some(
                            status
                                .errors
                                .iter()
                                .map(|e| format!("{}: {}", e.code, e.message))
                                .collect::<Vec<_>>()
                                .join("; "),
                        );
                    }
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
                            "the status of batch {id} could not be read {failed_polls} times in a row ({e}); run again to keep polling it"
                        );
                        self.abandon(seq, message);
                        return None;
                    }
                }
            }
        }
        self.release(seq);
        Some(record)
    }

    /// Downloads the batch's result files and hands their lines out.
    async fn collect(self: &Arc<Self>, seq: u64, record: &BatchRecord) {
        let dir = self.downloads.clone();
        let files = match std::fs::create_dir_all(&dir) {
            Ok(()) => self.remote.results(record, &dir).await,
            Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
        };
        let files = match files {
            Ok(f) => f,
            Err(e) => {
                // Not retried in a new batch (that would pay twice): a rerun
                // fetches the results again.
                let id = record.id.as_deref().unwrap_or("?");
                let message = format!(
                    "could not fetch the results of batch {id}: {e}; run again to fetch them"
                );
                return self.abandon(seq, message);
            }
        };
        self.deliver(seq, record, &files);
        for f in files {
            let _ = std::fs::remove_file(f);
        }
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

    /// Reads the result `files` of an ended batch: each line goes to its
    /// unit if it waits, else is kept for it; requests without a line get
    /// an error (retryable, unless the provider refused the whole batch).
    pub(super) fn deliver(self: &Arc<Self>, seq: u64, record: &BatchRecord, files: &[PathBuf]) {
        let ours: HashSet<String> = match self.lock().entries.get(&seq) {
            Some(e) => e.attempts.keys().cloned().collect(),
            None => return,
        };
        if record.adopted && !files.is_empty() && !self.holds_ours(files, &ours) {
            // A look-up took another client's batch of the same size for
            // ours: its results are not ours, our requests go out again.
            tracing::warn!(provider = %self.remote.provider, "batch {seq}: the batch found after a lost create answer holds none of our requests; sending them again");
            return self.split(seq, &HashMap::new(), "its requests were sent again");
        }
        let mut kept: HashMap<String, LineResult> = HashMap::new();
        let mut counts = (0u64, 0u64, 0u64);
        for file in files {
            let Ok(f) = std::fs::File::open(file) else {
                continue;
            };
            let mut reader = std::io::BufReader::with_capacity(1 << 20, f);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let Some((id, result)) = self.remote.parse_line(&line) else {
                    continue;
                };
                if !ours.contains(&id) {
                    continue;
                }
                tally(&mut counts, &result);
                if let Some(result) = self.hand(seq, &id, result) {
                    kept.insert(id, result);
                }
            }
        }
        // A batch the provider refused as a whole would be refused again;
        // one that ended without some results may not.
        let refused = record.state == "failed";
        let handed: HashSet<String> = self.handed(seq);
        for id in &ours {
            if kept.contains_key(id) || handed.contains(id) {
                continue;
            }
            let result = LineResult::Err {
                status: None,
                error: match (refused, &record.error) {
                    (true, Some(why)) => ItemError::new(
                        "batch_failed",
                        format!(
                            "the provider refused batch {}: {why}",
                            record.id.as_deref().unwrap_or("?")
                        ),
                    ),
                    _ => ItemError::new(
                        "batch_expired",
                        format!(
                            "batch {} ended ({}) without a result for this request",
                            record.id.as_deref().unwrap_or("?"),
                            record.state
                        ),
                    ),
                },
                retryable: !refused,
            };
            tally(&mut counts, &result);
            if let Some(result) = self.hand(seq, id, result) {
                kept.insert(id.clone(), result);
            }
        }
        let mut record = record.clone();
        (record.succeeded, record.errored, record.expired) = counts;
        record.updated_at = now_ms();
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&seq) else {
            return;
        };
        entry.record = record.clone();
        entry.busy = false;
        entry.handed.clear();
        entry.results = Some(HashMap::new());
        // Units that arrived while the files were read wait for lines kept.
        let mut still = HashMap::new();
        for (id, result) in kept {
            let waiter = (inner.index.get(&id) == Some(&seq))
                .then(|| inner.waiters.remove(&id))
                .flatten();
            match waiter {
                Some(w) => self.settle(&mut inner, w, result),
                None => {
                    still.insert(id, result);
                }
            }
        }
        if let Some(entry) = inner.entries.get_mut(&seq) {
            entry.results = Some(still);
        }
        drop(inner);
        self.persist(&record);
    }

    /// Whether any line of `files` is for one of `ours`.
    fn holds_ours(&self, files: &[PathBuf], ours: &HashSet<String>) -> bool {
        files.iter().any(|file| {
            let Ok(f) = std::fs::File::open(file) else {
                return false;
            };
            std::io::BufReader::new(f)
                .split(b'\n')
                .map_while(Result::ok)
                .filter_map(|l| self.remote.parse_line(&l))
                .any(|(id, _)| ours.contains(&id))
        })
    }

    /// Gives `result` to the unit waiting for `id` in batch `seq`; the result
    /// back when none waits.
    fn hand(self: &Arc<Self>, seq: u64, id: &str, result: LineResult) -> Option<LineResult> {
        let mut inner = self.lock();
        if inner.index.get(id) != Some(&seq) {
            return Some(result);
        }
        let waiter = inner.waiters.remove(id)?;
        if let Some(e) = inner.entries.get_mut(&seq) {
            e.handed.insert(id.to_string());
        }
        self.settle(&mut inner, waiter, result);
        None
    }

    fn handed(&self, seq: u64) -> HashSet<String> {
        self.lock()
            .entries
            .get(&seq)
            .map(|e| e.handed.clone())
            .unwrap_or_default()
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
                error: ItemError::new(
                    error.code,
                    format!(
                        "{} (after {attempts} batch attempt{})",
                        error.message,
                        if attempts == 1 { "" } else { "s" }
                    ),
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
    fn fail_all(&self, seq: u64, error: &ItemError) {
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
                    error: error.clone(),
                    status: None,
                    attempts: attempt,
                });
            }
        }
        drop(inner);
        self.persist(&record);
    }

    /// Fails every waiting request of batch `seq` with `batch_error: why`.
    pub(super) fn abandon(&self, seq: u64, why: String) {
        self.fail_all(seq, &ItemError::new("batch_error", why));
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

/// Counts `result` as (succeeded, errored, expired).
fn tally(counts: &mut (u64, u64, u64), result: &LineResult) {
    match result {
        LineResult::Ok { .. } => counts.0 += 1,
        LineResult::Err { error, .. }
            if error.code == "batch_expired" || error.code == "batch_cancelled" =>
        {
            counts.2 += 1
        }
        LineResult::Err { .. } => counts.1 += 1,
    }
}
