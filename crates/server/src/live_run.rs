//! A run this server executes (or executed): its counters, its control,
//! and how its thread ended; what the views, the streams and the control
//! calls hold on to (the runner starts it).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use sluice_engine::{Progress, Rates, RunControl, RunReport, Snapshot};
use tokio::sync::watch;

/// How a run's thread ended.
#[derive(Debug, Clone)]
pub(crate) enum Ending {
    /// Boxed: far larger than an error.
    Report(Box<RunReport>),
    Error(String),
}

/// Rates between the two latest looks at a run's counters.
struct Sampler {
    at: Instant,
    snapshot: Snapshot,
    rates: Rates,
}

/// A run this server executes (or executed).
pub struct LiveRun {
    /// The run's id in the store.
    pub id: String,
    pub(crate) progress: Arc<Progress>,
    pub(crate) control: Arc<RunControl>,
    ending: watch::Receiver<Option<Ending>>,
    sampler: Mutex<Sampler>,
}

impl LiveRun {
    /// The run `id`, steered by `control`, counted by `progress`; `ending`
    /// gets how its thread ended.
    pub(crate) fn new(
        id: String,
        progress: Arc<Progress>,
        control: Arc<RunControl>,
        ending: watch::Receiver<Option<Ending>>,
    ) -> LiveRun {
        LiveRun {
            id,
            progress,
            control,
            ending,
            sampler: Mutex::new(Sampler {
                at: Instant::now(),
                snapshot: Snapshot::default(),
                rates: Rates::default(),
            }),
        }
    }

    /// Whether the run's thread has ended.
    pub fn is_finished(&self) -> bool {
        self.ending.borrow().is_some()
    }

    /// Waits for the end of the run.
    pub(crate) async fn finished(&self) -> Ending {
        let mut rx = self.ending.clone();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                return Ending::Error("the run's thread stopped without a report".into());
            }
        }
    }

    /// Cancels the run (used on shutdown too).
    pub fn cancel(&self) {
        self.control.cancel();
    }

    /// The counters now and the rates over the last second or so.
    pub(crate) fn sample(&self) -> (Snapshot, Rates) {
        let now = self.progress.snapshot();
        let mut s = self.sampler.lock().unwrap_or_else(|e| e.into_inner());
        let secs = s.at.elapsed().as_secs_f64();
        if secs >= 0.9 {
            s.rates = Rates::between(&s.snapshot, &now, secs);
            s.snapshot = now;
            s.at = Instant::now();
        }
        (now, s.rates)
    }
}
