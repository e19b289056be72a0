//! A job's executor: a task per unit, as many at once as the unit window
//! holds places (a unit waiting for a batch gives its place up meanwhile:
//! `place.rs`).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::runner::{Unit, UnitContext};
use super::spawn_unit;
use crate::dispatch::Executor;

/// A unit to start, and its lease token when it was claimed from a shared
/// queue (its records are fenced by it).
pub(crate) struct Started {
    pub(crate) unit: Unit,
    pub(crate) token: Option<i64>,
}

/// Unit tasks, `size` at once.
pub(crate) struct Tasks {
    shared: Arc<UnitContext>,
    slots: Arc<Semaphore>,
    size: usize,
}

impl Tasks {
    pub(crate) fn new(shared: Arc<UnitContext>, size: usize) -> Tasks {
        let size = size.max(1);
        Tasks {
            shared,
            slots: Arc::new(Semaphore::new(size)),
            size,
        }
    }
}

impl Executor for Tasks {
    type Work = Started;
    type Room = OwnedSemaphorePermit;

    async fn room(&mut self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    fn start(&mut self, work: Started, room: OwnedSemaphorePermit) {
        spawn_unit(&self.shared, work.unit, room, work.token);
    }

    fn grow(&mut self, size: usize) {
        if size > self.size {
            self.slots.add_permits(size - self.size);
            self.size = size;
        }
    }

    fn in_progress(&self) -> usize {
        self.size.saturating_sub(self.slots.available_permits())
    }

    async fn drained(self) {
        let all = u32::try_from(self.size).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
        // Units waiting for a batch hold no slot (see `place`).
        self.shared.batches.floating.idle().await;
    }
}
