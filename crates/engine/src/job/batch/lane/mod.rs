//! One provider's batches while a run goes: requests gathered into open
//! batches (by API path and model, up to every documented per-batch limit
//! and the enqueued-token limit), each sealed batch stored then submitted,
//! polled and its results handed to the units waiting for them — or kept
//! until they arrive, on a resumed run.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use sluice_spec::BatchSpec;
use sluice_store::Store;
use tokio::sync::{oneshot, Semaphore};

mod failed;
mod poll;

use super::api::{BatchError, Remote};
use super::enqueued::Enqueued;
use super::limits::{BatchLimits, Weight};
use super::state::{self, BatchRecord, LineResult, Requests, ABANDONED, SPLIT, SUBMITTING};
use super::{BatchEnd, BatchRequest};
use crate::clock::now_ms;
use crate::item_error::ItemError;
use crate::job::runner::Unit;
use crate::stopping::Stopping;

/// A batch being filled.
struct Open {
    seq: u64,
    path: String,
    model: String,
    lines: Vec<String>,
    ids: Requests,
    /// What its requests add up to.
    weight: Weight,
}

/// A unit waiting for its request's result.
struct Waiter {
    tx: oneshot::Sender<BatchEnd>,
    request: BatchRequest,
    /// Batch attempts so far, this one included.
    attempt: u32,
    since: Instant,
}

/// A sealed batch.
struct Entry {
    record: BatchRecord,
    /// Attempt number of each request in it.
    attempts: HashMap<String, u32>,
    /// Its custom ids in the order of its lines (a provider's validation
    /// errors name lines).
    order: Vec<String>,
    /// Results not yet handed to a unit; `None` until fetched.
    results: Option<HashMap<String, LineResult>>,
    /// A task submits, polls or fetches it.
    busy: bool,
    /// Its tokens count as enqueued at the provider.
    enqueued: bool,
    /// Requests whose result was handed out while its files were read.
    handed: HashSet<String>,
    /// Why the provider failed it as a whole (OpenAI `errors.data`).
    errors: Vec<BatchError>,
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    /// Open batches by API path and model.
    open: HashMap<(String, String), Open>,
    entries: HashMap<u64, Entry>,
    /// The latest batch holding each request.
    index: HashMap<String, u64>,
    waiters: HashMap<String, Waiter>,
}

/// One provider's batch offload.
pub(crate) struct LaneBatcher {
    remote: Remote,
    spec: BatchSpec,
    run_id: String,
    /// What one batch may hold (the API's limits, `batch.size`).
    limits: BatchLimits,
    /// Prompt tokens in unfinished batches, per model, and their limits.
    enqueued: Enqueued,
    /// Where result files are downloaded (each removed once read).
    downloads: PathBuf,
    /// Further batch attempts of an expired or retryably failed request.
    retries: u32,
    inner: Mutex<Inner>,
    store: Arc<Mutex<Box<dyn Store>>>,
    /// Units waiting for results at most (`batch.waiting`).
    waiting: Arc<Semaphore>,
    stop: Arc<Stopping>,
}

impl LaneBatcher {
    /// A batcher that knows the batches earlier runs of `run_id` stored;
    /// the unfinished ones are polled again at once. Result files are
    /// downloaded under `downloads`.
    pub(crate) fn start(
        remote: Remote,
        spec: BatchSpec,
        retries: u32,
        run_id: &str,
        downloads: PathBuf,
        store: Arc<Mutex<Box<dyn Store>>>,
        stop: Arc<Stopping>,
    ) -> sluice_store::Result<Arc<LaneBatcher>> {
        let mut limits = BatchLimits::of(remote.dialect);
        limits.requests = limits.requests.min(spec.size.max(1));
        let prefix = format!("batch:{}:", remote.provider);
        let stored = lock(&store).run_state(run_id, &prefix)?;
        let batcher = Arc::new(LaneBatcher {
            limits,
            enqueued: Enqueued::new(spec.max_enqueued_tokens),
            downloads,
            waiting: Arc::new(Semaphore::new(spec.waiting.max(1))),
            remote,
            spec,
            run_id: run_id.to_string(),
            retries,
            inner: Mutex::new(Inner {
                next_seq: 1,
                ..Inner::default()
            }),
            store,
            stop,
        });
        for (_, value) in stored {
            let Ok(record) = serde_json::from_value::<BatchRecord>(value) else {
                continue;
            };
            batcher.resume(record)?;
        }
        Ok(batcher)
    }

    /// Takes up a batch an earlier run stored.
    fn resume(self: &Arc<Self>, record: BatchRecord) -> sluice_store::Result<()> {
        let mut inner = self.lock();
        inner.next_seq = inner.next_seq.max(record.seq + 1);
        if record.collected || record.state == ABANDONED || record.state == SPLIT {
            return Ok(());
        }
        if record.id.is_none() && record.input_file_id.is_none() && record.create_sent_at.is_none()
        {
            // Stopped before any of it reached the provider: its requests
            // are submitted again as their units arrive.
            let mut record = record;
            record.state = ABANDONED.into();
            self.persist(&record);
            return Ok(());
        }
        let key = state::requests_key(&self.remote.provider, record.seq);
        let requests: Requests = lock(&self.store)
            .run_state(&self.run_id, &key)?
            .into_iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let seq = record.seq;
        for (id, _) in &requests {
            inner.index.insert(id.clone(), seq);
        }
        // A batch at the provider and not ended holds its tokens there.
        let enqueued = record.id.is_some() && !record.ended();
        if enqueued {
            self.enqueued
                .hold(record.model.as_deref().unwrap_or(""), record.tokens);
        }
        inner.entries.insert(
            seq,
            Entry {
                record,
                order: requests.iter().map(|(id, _)| id.clone()).collect(),
                attempts: requests.into_iter().collect(),
                results: None,
                busy: true,
                enqueued,
                handed: HashSet::new(),
                errors: Vec::new(),
            },
        );
        drop(inner);
        let this = self.clone();
        tokio::spawn(async move { this.run_batch(seq, None).await });
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `request` through a batch and waits for its result. `unit`
    /// leaves the window of units in progress while it waits.
    pub(crate) async fn call(self: &Arc<Self>, unit: &Unit, request: BatchRequest) -> BatchEnd {
        let _waiting = tokio::select! {
            permit = self.waiting.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return BatchEnd::Stopped,
            },
            _ = self.stop.wait() => return BatchEnd::Stopped,
        };
        if let Some(place) = &unit.place {
            place.float();
        }
        let rx = self.register(request);
        tokio::select! {
            end = rx => end.unwrap_or(BatchEnd::Stopped),
            _ = self.stop.wait() => BatchEnd::Stopped,
        }
    }

    fn register(self: &Arc<Self>, request: BatchRequest) -> oneshot::Receiver<BatchEnd> {
        let (tx, rx) = oneshot::channel();
        let id = request.custom_id.clone();
        let mut inner = self.lock();
        let since = Instant::now();
        let Some(seq) = inner.index.get(&id).copied() else {
            // Waiting first: a request that cannot be batched fails its waiter.
            let waiter = Waiter {
                tx,
                request: request.clone(),
                attempt: 1,
                since,
            };
            inner.waiters.insert(id, waiter);
            self.enqueue(&mut inner, &request, 1);
            return rx;
        };
        // Submitted by an earlier run (or earlier in this one).
        let Some(entry) = inner.entries.get_mut(&seq) else {
            return rx;
        };
        let attempt = entry.attempts.get(&id).copied().unwrap_or(1);
        let ready = entry.results.as_mut().and_then(|r| r.remove(&id));
        // Its result was handed out already (to a unit that gave up): it
        // cannot come again, so the request goes into a new batch.
        let spent = ready.is_none() && entry.results.is_some();
        let start = !entry.busy && ready.is_none() && entry.results.is_none();
        entry.busy |= start;
        let waiter = Waiter {
            tx,
            request: request.clone(),
            attempt: if spent { attempt + 1 } else { attempt },
            since,
        };
        match ready {
            Some(result) => self.settle(&mut inner, waiter, result),
            None => {
                inner.waiters.insert(id, waiter);
                if spent {
                    self.enqueue(&mut inner, &request, attempt + 1);
                }
            }
        }
        drop(inner);
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.run_batch(seq, None).await });
        }
        rx
    }

    /// Why `weight` cannot go into any batch, if it cannot.
    fn too_large(&self, weight: &Weight, model: &str) -> Option<ItemError> {
        let limits = &self.limits;
        let refused = |why: String| Some(ItemError::new("request_error", why));
        if weight.bytes > limits.bytes {
            return refused(format!(
                "the request is {} bytes, more than one batch may hold ({} bytes)",
                weight.bytes, limits.bytes
            ));
        }
        if weight.inputs > limits.embedding_inputs {
            return refused(format!(
                "the request has {} embedding inputs, more than one batch may hold ({})",
                weight.inputs, limits.embedding_inputs
            ));
        }
        match self.enqueued.limit(model) {
            Some(limit) if weight.tokens > limit => refused(format!(
                "the request's ~{} prompt tokens are more than the enqueued-token limit of model {model:?} at this provider ({limit})",
                weight.tokens
            )),
            _ => None,
        }
    }

    /// Adds a request to the open batch of its path and model, sealing it
    /// when full.
    fn enqueue(self: &Arc<Self>, inner: &mut Inner, request: &BatchRequest, attempt: u32) {
        let api_path = self.remote.api_path(&request.path);
        let model = request.body["model"].as_str().unwrap_or("").to_string();
        let line = self
            .remote
            .line(&request.custom_id, &api_path, &request.body);
        let weight = Weight::of(&api_path, &request.body, &line);
        if let Some(why) = self.too_large(&weight, &model) {
            if let Some(w) = inner.waiters.remove(&request.custom_id) {
                let _ = w.tx.send(BatchEnd::Failed {
                    error: why,
                    status: None,
                    attempts: attempt,
                });
            }
            return;
        }
        let key = (api_path.clone(), model.clone());
        let token_limit = self.enqueued.limit(&model);
        let full = inner.open.get(&key).is_some_and(|o| {
            o.weight.bytes + weight.bytes > self.limits.bytes
                || o.weight.inputs + weight.inputs > self.limits.embedding_inputs
                || token_limit.is_some_and(|l| o.weight.tokens + weight.tokens > l)
        });
        if full {
            self.seal(inner, &key);
        }
        if !inner.open.contains_key(&key) {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.open.insert(
                key.clone(),
                Open {
                    seq,
                    path: api_path,
                    model,
                    lines: Vec::new(),
                    ids: Vec::new(),
                    weight: Weight::default(),
                },
            );
            let (this, open_key, window) = (self.clone(), key.clone(), self.spec.window);
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                let mut inner = this.lock();
                if inner.open.get(&open_key).is_some_and(|o| o.seq == seq) {
                    this.seal(&mut inner, &open_key);
                }
            });
        }
        let Some(open) = inner.open.get_mut(&key) else {
            return;
        };
        open.weight.bytes += weight.bytes;
        open.weight.inputs += weight.inputs;
        open.weight.tokens += weight.tokens;
        open.lines.push(line);
        open.ids.push((request.custom_id.clone(), attempt));
        if open.lines.len() >= self.limits.requests {
            self.seal(inner, &key);
        }
    }

    /// Closes the open batch of `key`: stored first (so a crash cannot lose
    /// track of it), then submitted by its own task.
    fn seal(self: &Arc<Self>, inner: &mut Inner, key: &(String, String)) {
        let Some(open) = inner.open.remove(key) else {
            return;
        };
        let now = now_ms();
        let record = BatchRecord {
            provider: self.remote.provider.clone(),
            api: format!("{:?}", self.remote.dialect).to_lowercase(),
            seq: open.seq,
            path: open.path.clone(),
            state: SUBMITTING.into(),
            id: None,
            input_file_id: None,
            output_file_id: None,
            error_file_id: None,
            results_url: None,
            requests: open.ids.len() as u64,
            succeeded: 0,
            errored: 0,
            expired: 0,
            created_at: now,
            updated_at: now,
            ended_at: None,
            collected: false,
            error: None,
            key: format!("{}:{}:{}", self.run_id, self.remote.provider, open.seq),
            model: Some(open.model.clone()),
            tokens: open.weight.tokens,
            creates: 0,
            create_sent_at: None,
            adopted: false,
        };
        let requests_key = state::requests_key(&self.remote.provider, open.seq);
        let ids = serde_json::to_value(&open.ids).unwrap_or_default();
        if let Err(e) = lock(&self.store).put_run_state(&self.run_id, &requests_key, &ids) {
            tracing::warn!("could not store batch {}: {e}", open.seq);
        }
        self.persist(&record);
        for (id, _) in &open.ids {
            inner.index.insert(id.clone(), open.seq);
        }
        let seq = open.seq;
        inner.entries.insert(
            seq,
            Entry {
                record,
                order: open.ids.iter().map(|(id, _)| id.clone()).collect(),
                attempts: open.ids.into_iter().collect(),
                results: None,
                busy: true,
                enqueued: false,
                handed: HashSet::new(),
                errors: Vec::new(),
            },
        );
        let this = self.clone();
        let lines = open.lines;
        tokio::spawn(async move { this.run_batch(seq, Some(lines)).await });
    }
}

pub(super) fn lock(store: &Mutex<Box<dyn Store>>) -> MutexGuard<'_, Box<dyn Store>> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
