//! One provider's batches while a run goes: requests gathered into open
//! batches (by API path, up to the size, byte and time limits), each sealed
//! batch stored then submitted, polled and its results handed to the units
//! waiting for them — or kept until they arrive, on a resumed run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use sluice_spec::BatchSpec;
use sluice_store::Store;
use tokio::sync::{oneshot, Semaphore};

mod poll;

use super::api::Remote;
use super::state::{self, BatchRecord, LineResult, Requests, ABANDONED, SUBMITTING};
use super::{BatchEnd, BatchRequest};
use crate::job::runner::Unit;
use crate::quick::now_ms;
use crate::stopping::Stopping;

/// A batch being filled.
struct Open {
    seq: u64,
    lines: Vec<String>,
    ids: Requests,
    bytes: usize,
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
    /// Results not yet handed to a unit; `None` until fetched.
    results: Option<HashMap<String, LineResult>>,
    /// A task submits, polls or fetches it.
    busy: bool,
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    open: HashMap<String, Open>,
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
    /// Requests and bytes per batch at most.
    cap: (usize, usize),
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
    /// the unfinished ones are polled again at once.
    pub(crate) fn start(
        remote: Remote,
        spec: BatchSpec,
        retries: u32,
        run_id: &str,
        store: Arc<Mutex<Box<dyn Store>>>,
        stop: Arc<Stopping>,
    ) -> sluice_store::Result<Arc<LaneBatcher>> {
        let (api_requests, api_bytes) = remote.limits();
        let prefix = format!("batch:{}:", remote.provider);
        let stored = lock(&store).run_state(run_id, &prefix)?;
        let batcher = Arc::new(LaneBatcher {
            cap: (spec.size.clamp(1, api_requests), api_bytes),
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
        if record.collected || record.state == ABANDONED {
            return Ok(());
        }
        if record.id.is_none() && record.input_file_id.is_none() {
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
        inner.entries.insert(
            seq,
            Entry {
                record,
                attempts: requests.into_iter().collect(),
                results: None,
                busy: true,
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

    /// Adds a request to the open batch of its path, sealing it when full.
    fn enqueue(self: &Arc<Self>, inner: &mut Inner, request: &BatchRequest, attempt: u32) {
        let api_path = self.remote.api_path(&request.path);
        let line = self
            .remote
            .line(&request.custom_id, &api_path, &request.body);
        let (max_requests, max_bytes) = self.cap;
        if line.len() + 1 > max_bytes {
            if let Some(w) = inner.waiters.remove(&request.custom_id) {
                let _ = w.tx.send(BatchEnd::Failed {
                    error: format!(
                        "request_error: the request is larger than one batch may be ({} MB)",
                        max_bytes >> 20
                    ),
                    status: None,
                    attempts: attempt,
                });
            }
            return;
        }
        let full = inner
            .open
            .get(&api_path)
            .is_some_and(|o| o.bytes + line.len() + 1 > max_bytes);
        if full {
            self.seal(inner, &api_path);
        }
        if !inner.open.contains_key(&api_path) {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.open.insert(
                api_path.clone(),
                Open {
                    seq,
                    lines: Vec::new(),
                    ids: Vec::new(),
                    bytes: 0,
                },
            );
            let (this, path, window) = (self.clone(), api_path.clone(), self.spec.window);
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                let mut inner = this.lock();
                if inner.open.get(&path).is_some_and(|o| o.seq == seq) {
                    this.seal(&mut inner, &path);
                }
            });
        }
        let Some(open) = inner.open.get_mut(&api_path) else {
            return;
        };
        open.bytes += line.len() + 1;
        open.lines.push(line);
        open.ids.push((request.custom_id.clone(), attempt));
        if open.lines.len() >= max_requests {
            self.seal(inner, &api_path);
        }
    }

    /// Closes the open batch of `path`: stored first (so a crash cannot lose
    /// track of it), then submitted by its own task.
    fn seal(self: &Arc<Self>, inner: &mut Inner, path: &str) {
        let Some(open) = inner.open.remove(path) else {
            return;
        };
        let now = now_ms();
        let record = BatchRecord {
            provider: self.remote.provider.clone(),
            api: format!("{:?}", self.remote.dialect).to_lowercase(),
            seq: open.seq,
            path: path.to_string(),
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
        };
        let key = state::requests_key(&self.remote.provider, open.seq);
        let ids = serde_json::to_value(&open.ids).unwrap_or_default();
        if let Err(e) = lock(&self.store).put_run_state(&self.run_id, &key, &ids) {
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
                attempts: open.ids.into_iter().collect(),
                results: None,
                busy: true,
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
mod tests {
    use super::*;
    use crate::job::lanes::Lanes;
    use serde_json::json;

    /// A batcher of a provider nobody answers (nothing here awaits, so no
    /// submission runs), holding at most `cap` requests and bytes per batch.
    fn batcher(dir: &std::path::Path, cap: (usize, usize)) -> Arc<LaneBatcher> {
        let text = "[input]\npath = \"x.jsonl\"\n[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\nmode = \"batch\"\n[[steps]]\nname = \"a\"\nkind = \"chat\"\nprovider = \"p\"\nmodel = \"m\"\nmessages = [{ role = \"user\", content = \"hi\" }]\n";
        let job = sluice_spec::parse_str(text, &dir.join("job.toml"), &[]).unwrap();
        let env = minijinja::Value::from(minijinja::value::Serde(json!({"env": {}})));
        let lanes = Lanes::new(&job, &env, 0).unwrap();
        let lane = lanes.get("p").unwrap();
        let mut store = sluice_store::SqliteStore::open(&dir.join("s.db")).unwrap();
        let run = store
            .create_run(&sluice_store::NewRun {
                name: "t".into(),
                source: "t".into(),
                settings: json!({}),
            })
            .unwrap();
        let store: Arc<Mutex<Box<dyn Store>>> = Arc::new(Mutex::new(Box::new(store)));
        let spec = job.providers[0].batch;
        let remote = Remote::new(lane, &spec);
        let mut b = LaneBatcher::start(remote, spec, 2, &run.id, store, Arc::default()).unwrap();
        Arc::get_mut(&mut b).unwrap().cap = cap;
        b
    }

    fn request(i: usize, text_len: usize) -> BatchRequest {
        BatchRequest {
            custom_id: format!("r{i}"),
            path: "/chat/completions".into(),
            body: json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(text_len)}]}),
        }
    }

    fn sealed_sizes(b: &LaneBatcher) -> Vec<u64> {
        let inner = b.lock();
        let mut seqs: Vec<&u64> = inner.entries.keys().collect();
        seqs.sort();
        seqs.iter()
            .map(|s| inner.entries[s].record.requests)
            .collect()
    }

    #[tokio::test]
    async fn batches_split_at_the_request_count() {
        let dir = tempfile::tempdir().unwrap();
        let b = batcher(dir.path(), (3, 1 << 20));
        let _waiting: Vec<_> = (0..7).map(|i| b.register(request(i, 10))).collect();
        assert_eq!(sealed_sizes(&b), [3, 3]);
        let inner = b.lock();
        let open = &inner.open["/v1/chat/completions"];
        assert_eq!(
            open.ids.len(),
            1,
            "the seventh waits for more or its window"
        );
        // Sealed batches are stored before they are submitted.
        let stored = lock(&b.store).run_state(&b.run_id, "batch:p:").unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].1["state"], "submitting");
        assert_eq!(inner.index["r4"], 2);
    }

    #[tokio::test]
    async fn batches_split_before_a_line_would_pass_the_byte_limit() {
        let dir = tempfile::tempdir().unwrap();
        let b = batcher(dir.path(), (100, 1_000));
        let line = b
            .remote
            .line("r0", "/v1/chat/completions", &request(0, 200).body);
        let per = line.len() + 1;
        assert!(3 * per <= 1_000 && 4 * per > 1_000, "{per}");
        let _waiting: Vec<_> = (0..5).map(|i| b.register(request(i, 200))).collect();
        assert_eq!(sealed_sizes(&b), [3]);
        // One line larger than a whole batch fails at once.
        let mut rx = b.register(request(9, 2_000));
        match rx.try_recv() {
            Ok(BatchEnd::Failed { error, .. }) => {
                assert!(error.contains("larger than one batch"), "{error}")
            }
            other => panic!("{other:?}"),
        }
    }
}
