//! The "this run is stopping" flag (a signal, a cancel, the budget, a store
//! that cannot record, a systematic failure), with a wake-up for everything
//! that waits: a call waiting for a place, a rate slot or its backoff, and a
//! unit waiting for a batch, give up at once instead of holding the run's
//! exit until the grace period ends.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::OnceLock;

use tokio::sync::Notify;

/// Why a run stopped sending on its own (not a signal, a cancel or the
/// budget): the run ends with an error instead of a summary of success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Halt {
    /// A commit failed: nothing more can be recorded, so nothing more may
    /// be sent (the writer reports the store's own error).
    Store,
    /// The first calls all failed the same way no retry can fix
    /// ([`crate::early_stop`]); the message says how and what to do.
    Systematic(String),
}

/// Set once, never cleared: a run that stops is over for this process.
#[derive(Debug, Default)]
pub(crate) struct Stopping {
    flag: AtomicBool,
    notify: Notify,
    /// The first halt, if the run stopped on its own.
    halted: OnceLock<Halt>,
}

impl Stopping {
    /// Marks the run as stopping and wakes every waiter.
    pub(crate) fn set(&self) {
        self.flag.store(true, SeqCst);
        self.notify.notify_waiters();
    }

    /// Stops the run for `why` (the first reason given is kept).
    pub(crate) fn halt(&self, why: Halt) {
        let _ = self.halted.set(why);
        self.set();
    }

    /// Why the run stopped on its own, if it did.
    pub(crate) fn halted(&self) -> Option<&Halt> {
        self.halted.get()
    }

    /// Whether the run is stopping.
    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(SeqCst)
    }

    /// Resolves once the run is stopping (at once if it already is).
    pub(crate) async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read, so a `set` in between wakes it.
        notified.as_mut().enable();
        if self.is_set() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_wake_when_set_and_later_waits_return_at_once() {
        let stopping = Arc::new(Stopping::default());
        let waiter = tokio::spawn({
            let stopping = stopping.clone();
            async move { stopping.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        stopping.set();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter woke")
            .unwrap();
        assert!(stopping.is_set());
        tokio::time::timeout(Duration::from_millis(100), stopping.wait())
            .await
            .expect("a wait after set returns at once");
    }
}
