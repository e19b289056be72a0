//! Quick mode's executor: a fixed set of workers pulling requests from a
//! short queue. A worker that gets a response sends its next request in the
//! same poll, so requests and responses interleave instead of alternating in
//! waves (a task per request left the server idle half the time at zero
//! latency). Workers start as requests are queued, up to the window: memory
//! follows the calls actually made, never the flag (100,000 workers started
//! for 2 items took 387 MB).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex, Notify};

use super::lines::Routed;
use super::{call, CallState};
use crate::dispatch::Executor;
use crate::writer::Message;

/// Requests read ahead of the workers at most, per worker up to this many
/// workers (bodies wait in memory there).
const MAX_QUEUE: usize = 2_048;

/// The workers and their queue.
pub(super) struct Pool {
    shared: Arc<CallState>,
    writer: mpsc::Sender<Message>,
    queue: mpsc::Sender<Routed>,
    taken: Arc<Mutex<mpsc::Receiver<Routed>>>,
    workers: Arc<Workers>,
    spawned: usize,
    /// Workers at most (the window).
    size: usize,
}

impl Pool {
    pub(super) fn new(
        shared: Arc<CallState>,
        writer: mpsc::Sender<Message>,
        concurrency: usize,
    ) -> Pool {
        let (queue, taken) = mpsc::channel(concurrency.clamp(32, MAX_QUEUE) * 2);
        Pool {
            shared,
            writer,
            queue,
            taken: Arc::new(Mutex::new(taken)),
            workers: Arc::new(Workers::default()),
            spawned: 0,
            size: concurrency,
        }
    }

    fn spawn(&mut self) {
        let (shared, tx, rx) = (self.shared.clone(), self.writer.clone(), self.taken.clone());
        let guard = WorkerGuard::enter(self.workers.clone());
        self.spawned += 1;
        tokio::spawn(async move {
            let _guard = guard;
            loop {
                let next = rx.lock().await.recv().await;
                let Some((endpoint, request)) = next else {
                    break;
                };
                if shared.stopping.is_set() {
                    break;
                }
                if let Some(record) = call(&shared, &endpoint, request).await {
                    // A send error means the writer died; its error is reported at the end.
                    let _ = tx.send(Message::Record(record)).await;
                }
            }
        });
    }
}

impl Executor for Pool {
    type Work = Routed;
    type Room = mpsc::OwnedPermit<Routed>;

    async fn room(&mut self) -> Option<Self::Room> {
        if self.spawned < self.size {
            self.spawn();
        }
        self.queue.clone().reserve_owned().await.ok()
    }

    fn start(&mut self, work: Routed, room: Self::Room) {
        room.send(work);
    }

    fn grow(&mut self, size: usize) {
        self.size = self.size.max(size);
    }

    fn in_progress(&self) -> usize {
        self.workers.live.load(Relaxed)
    }

    /// Everything queued: the workers drain the queue and stop.
    async fn drained(self) {
        let Pool { queue, workers, .. } = self;
        drop(queue);
        workers.all_done().await;
    }
}

/// Live worker tasks, so the end of the run can wait for all of them.
#[derive(Default)]
struct Workers {
    live: AtomicUsize,
    gone: Notify,
}

impl Workers {
    async fn all_done(&self) {
        loop {
            let gone = self.gone.notified();
            if self.live.load(Relaxed) == 0 {
                return;
            }
            gone.await;
        }
    }
}

/// Counts one worker while it lives.
struct WorkerGuard(Arc<Workers>);

impl WorkerGuard {
    fn enter(workers: Arc<Workers>) -> WorkerGuard {
        workers.live.fetch_add(1, Relaxed);
        WorkerGuard(workers)
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Relaxed);
        self.0.gone.notify_waiters();
    }
}
