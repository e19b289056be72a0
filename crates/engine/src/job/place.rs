//! A unit's place in the run: a slot of the window of units in progress
//! (`concurrency`) while it works, or a *floating* place outside the window
//! once it waits for a batch result — so that units parked for hours do not
//! keep others from starting, while the run still ends only after every unit
//! (floating ones too) has finished.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit};

/// Units that left the window and have not finished yet.
#[derive(Debug, Default)]
pub(crate) struct Floating {
    count: AtomicUsize,
    idle: Notify,
}

impl Floating {
    /// A counter at zero.
    pub(crate) fn new() -> Arc<Floating> {
        Arc::new(Floating::default())
    }

    /// Waits until no unit floats.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

enum Hold {
    Slot(#[allow(dead_code)] OwnedSemaphorePermit),
    Floating,
}

/// Held by a unit's task until its record is sent.
pub(crate) struct Place {
    hold: Mutex<Hold>,
    floating: Arc<Floating>,
}

impl Place {
    /// A place holding one slot of the window.
    pub(crate) fn new(permit: OwnedSemaphorePermit, floating: Arc<Floating>) -> Place {
        Place {
            hold: Mutex::new(Hold::Slot(permit)),
            floating,
        }
    }

    /// Gives the slot to the next unit; this one floats until it ends.
    pub(crate) fn float(&self) {
        let mut hold = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*hold, Hold::Slot(_)) {
            // Counted before the slot is freed: a drain that sees every slot
            // free then also sees this unit floating.
            self.floating.count.fetch_add(1, SeqCst);
            *hold = Hold::Floating;
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let hold = self.hold.get_mut().unwrap_or_else(|e| e.into_inner());
        if matches!(hold, Hold::Floating) && self.floating.count.fetch_sub(1, SeqCst) == 1 {
            self.floating.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    #[tokio::test]
    async fn a_floating_unit_frees_its_slot_but_holds_the_drain() {
        let slots = Arc::new(Semaphore::new(1));
        let floating = Floating::new();
        let place = Place::new(
            slots.clone().acquire_owned().await.unwrap(),
            floating.clone(),
        );
        assert_eq!(slots.available_permits(), 0);
        place.float();
        place.float();
        assert_eq!(slots.available_permits(), 1);
        let idle = tokio::spawn({
            let floating = floating.clone();
            async move { floating.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!idle.is_finished());
        drop(place);
        idle.await.unwrap();
        // A place that never floated leaves the count alone.
        let place = Place::new(
            slots.clone().acquire_owned().await.unwrap(),
            floating.clone(),
        );
        drop(place);
        floating.idle().await;
        assert_eq!(slots.available_permits(), 1);
    }
}
