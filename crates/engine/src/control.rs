//! Steering and watching a run from the outside (the server): pause (no new
//! call starts; calls on the wire finish), resume, cancel (the run ends
//! `interrupted`, its items stay pending for a later resume), and hooks that
//! see the run open and each batch of outcomes once it is committed.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use sluice_store::{ItemRecord, RunMeta};
use tokio::sync::Notify;

/// Pause, resume and cancel one run; shared between the run and its steerer.
#[derive(Debug, Default)]
pub struct RunControl {
    paused: AtomicBool,
    cancelled: AtomicBool,
    changed: Notify,
}

impl RunControl {
    /// A control for a run that is neither paused nor cancelled.
    pub fn new() -> Arc<RunControl> {
        Arc::new(RunControl::default())
    }

    /// No new unit or attempt starts until [`RunControl::resume`].
    pub fn pause(&self) {
        self.paused.store(true, Relaxed);
        self.changed.notify_waiters();
    }

    /// Undoes [`RunControl::pause`].
    pub fn resume(&self) {
        self.paused.store(false, Relaxed);
        self.changed.notify_waiters();
    }

    /// Stops the run as a Ctrl-C would: no new call starts, calls on the wire
    /// get the grace period, and the run ends `interrupted`.
    pub fn cancel(&self) {
        self.cancelled.store(true, Relaxed);
        self.changed.notify_waiters();
    }

    /// Whether the run is paused (and not cancelled).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Relaxed) && !self.is_cancelled()
    }

    /// Whether [`RunControl::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Relaxed)
    }

    /// Waits while paused; `false` once cancelled (the caller stops).
    pub(crate) async fn proceed(&self) -> bool {
        loop {
            let changed = self.changed.notified();
            if self.is_cancelled() {
                return false;
            }
            if !self.paused.load(Relaxed) {
                return true;
            }
            changed.await;
        }
    }

    /// Resolves once the run is cancelled.
    pub(crate) async fn cancelled(&self) {
        loop {
            let changed = self.changed.notified();
            if self.is_cancelled() {
                return;
            }
            changed.await;
        }
    }
}

/// Called with the run once it is found or created in the store (before any
/// call is sent).
pub type OpenHook = Box<dyn FnOnce(&RunMeta) + Send>;

/// Called by the writer thread with each batch of unit outcomes right after
/// the batch is committed: what it is given is durable. It runs on the
/// writer thread, so it must be quick (hand the records on, do not block).
pub type CommitHook = Arc<dyn Fn(&[ItemRecord]) + Send + Sync>;

/// What an embedding caller (the server) attaches to a run; the CLI leaves
/// it empty.
#[derive(Default)]
pub struct RunHooks {
    /// Pause, resume, cancel.
    pub control: Option<Arc<RunControl>>,
    /// The run is open.
    pub on_open: Option<OpenHook>,
    /// Outcomes were committed.
    pub on_commit: Option<CommitHook>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn pause_holds_until_resume_and_cancel_releases() {
        let control = RunControl::new();
        assert!(control.proceed().await);
        control.pause();
        let waiter = {
            let c = control.clone();
            tokio::spawn(async move { c.proceed().await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());
        control.resume();
        assert!(waiter.await.unwrap());
        control.pause();
        let waiter = {
            let c = control.clone();
            tokio::spawn(async move { c.proceed().await })
        };
        tokio::task::yield_now().await;
        control.cancel();
        assert!(!waiter.await.unwrap());
        assert!(!control.is_paused());
        control.cancelled().await;
    }
}
