//! Whether the store keeps up with the answers: the writer marks each store
//! call it makes, and one that takes longer than [`STALL`] (a lost database
//! connection being made again, a disk that stopped answering) holds every
//! call not yet on the wire until the store answers again — no call is made
//! whose result may not be kept. Calls on the wire finish meanwhile; their
//! answers wait in the writer's queue.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long one store call may take before new calls wait for it: far above
/// a commit's milliseconds, so a busy disk never holds calls back.
pub(crate) const STALL: Duration = Duration::from_secs(1);

/// How often a held call looks again (the writer also wakes it).
const RECHECK: Duration = Duration::from_millis(100);

/// The writer's store calls, as the calls see them.
#[derive(Debug)]
pub(crate) struct Recording {
    origin: Instant,
    /// Milliseconds since `origin` when the current store call began, plus
    /// one (0: none in progress).
    busy_since: AtomicU64,
    /// Woken when a store call ends.
    done: Notify,
}

impl Default for Recording {
    fn default() -> Recording {
        Recording {
            origin: Instant::now(),
            busy_since: AtomicU64::new(0),
            done: Notify::new(),
        }
    }
}

/// A store call in progress; ending it (drop) releases held calls.
pub(crate) struct Busy<'a>(&'a Recording);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy_since.store(0, Relaxed);
        self.0.done.notify_waiters();
    }
}

impl Recording {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Marks a store call until the guard is dropped.
    pub(crate) fn busy(&self) -> Busy<'_> {
        self.busy_since.store(self.now_ms() + 1, Relaxed);
        Busy(self)
    }

    /// Whether the current store call has taken longer than [`STALL`].
    pub(crate) fn stalled(&self) -> bool {
        match self.busy_since.load(Relaxed) {
            0 => false,
            since => self.now_ms() + 1 - since > STALL.as_millis() as u64,
        }
    }

    /// Resolves once the store is no longer stalled.
    pub(crate) async fn caught_up(&self) {
        loop {
            let done = self.done.notified();
            if !self.stalled() {
                return;
            }
            tracing::debug!("the store is not answering: new calls wait");
            tokio::select! {
                () = done => {}
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_long_store_call_holds_new_calls_until_it_ends() {
        let recording = std::sync::Arc::new(Recording::default());
        assert!(!recording.stalled());
        {
            let _quick = recording.busy();
            assert!(!recording.stalled(), "a short call holds nothing");
        }
        let busy = recording.busy();
        recording.busy_since.store(1, Relaxed);
        // Started at the origin: stalled once STALL has passed.
        tokio::time::sleep(STALL + Duration::from_millis(20)).await;
        assert!(recording.stalled());
        let waiter = tokio::spawn({
            let r = recording.clone();
            async move { r.caught_up().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(busy);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released when the store call ended")
            .unwrap();
    }
}
