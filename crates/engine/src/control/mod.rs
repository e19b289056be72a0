//! Steering and watching a run from the outside: pause (no new call starts;
//! calls on the wire finish), resume, cancel (the run ends `interrupted`,
//! its items stay pending for a later resume) — in-process, or from another
//! process through the store (`stored`) — and hooks that see the run open
//! and each batch of outcomes once it is committed.

mod stored;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use sluice_store::{ItemRecord, RunMeta};
use tokio::sync::Notify;

pub(crate) use stored::{attach, Watch};
pub use stored::{
    executing, read_control, requester, write_control, ControlState, StoredControl, CONTROL_KEY,
};

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

    /// What the run does now, as a stored control would say it.
    pub fn state(&self) -> ControlState {
        if self.is_cancelled() {
            ControlState::Cancel
        } else if self.is_paused() {
            ControlState::Pause
        } else {
            ControlState::Run
        }
    }

    /// Waits while paused; `false` once cancelled (the caller stops).
    pub(crate) async fn proceed(&self) -> bool {
        // Called before every attempt: the common case is two loads.
        if !self.paused.load(Relaxed) && !self.is_cancelled() {
            return true;
        }
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

    /// Resolves once the run is paused or cancelled (at once if it is):
    /// a call waiting for its place or rate slot then goes back to wait in
    /// [`RunControl::proceed`] instead of going out.
    pub(crate) async fn held(&self) {
        loop {
            let changed = self.changed.notified();
            if self.paused.load(Relaxed) || self.is_cancelled() {
                return;
            }
            changed.await;
        }
    }

    /// A wake-up for the next pause, resume or cancel (registered when
    /// enabled or first polled).
    pub(crate) fn on_change(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
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

/// Notifies `stop` as a signal would once `control` is cancelled: a cancel
/// from outside stops the run as Ctrl-C does.
pub(crate) async fn stop_on_cancel(control: Arc<RunControl>, stop: Arc<Notify>) {
    control.cancelled().await;
    stop.notify_waiters();
    stop.notify_one();
}

/// Called with the run once it is found or created in the store (before any
/// call is sent).
pub type OpenHook = Box<dyn FnOnce(&RunMeta) + Send>;

/// Called once the run is open, before anything is sent: which run it is and
/// what is left to send.
pub type StartHook = Box<dyn FnOnce(&crate::RunStart) + Send>;

/// Called by the writer thread with each batch of unit outcomes right after
/// the batch is committed: what it is given is durable. It runs on the
/// writer thread, so it must be quick (hand the records on, do not block).
pub type CommitHook = Arc<dyn Fn(&[ItemRecord]) + Send + Sync>;

/// What an embedding caller (the server) attaches to a run; the CLI leaves
/// it empty. A run without a control gets one of its own, which the
/// control kept in the store steers.
#[derive(Default)]
pub struct RunHooks {
    /// Pause, resume, cancel.
    pub control: Option<Arc<RunControl>>,
    /// The run is open.
    pub on_open: Option<OpenHook>,
    /// The run is open and knows what is left to send.
    pub on_start: Option<StartHook>,
    /// Outcomes were committed.
    pub on_commit: Option<CommitHook>,
    /// Where files named at run time (an upload's `file`) may be read from;
    /// `None`: anywhere (the user's own job). A server sets it for the jobs
    /// submitted to it.
    pub files: Option<Arc<crate::FileAccess>>,
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
