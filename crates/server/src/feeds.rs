//! The progress feeds of `/v1/runs/{id}/events`, one per run watched, by
//! the run's id or name as clients ask for it: each a watch channel that one
//! task publishes into (see `events`) and every client of the run reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use crate::error::ApiError;

/// What a feed publishes.
#[derive(Clone)]
pub(crate) enum Frame {
    /// Nothing computed yet.
    Starting,
    /// The run could not be read (a 404 for a missing run).
    Failed(ApiError),
    /// An event; the last one (`end`) closes the streams.
    Event {
        /// The framed event, shared by every client.
        bytes: Bytes,
        /// Whether it ends the streams.
        last: bool,
    },
}

/// The feeds of this server, by the run's id or name as clients ask for it.
#[derive(Default)]
pub(crate) struct Feeds {
    by_run: Mutex<HashMap<String, Arc<watch::Sender<Frame>>>>,
}

impl Feeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<watch::Sender<Frame>>>> {
        self.by_run.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver of the feed of `key`, which `start` is given to publish
    /// when none runs yet.
    pub(crate) fn join_or_start(
        &self,
        key: &str,
        start: impl FnOnce(Arc<watch::Sender<Frame>>),
    ) -> watch::Receiver<Frame> {
        let mut feeds = self.lock();
        if let Some(tx) = feeds.get(key) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(Frame::Starting);
        let tx = Arc::new(tx);
        feeds.insert(key.to_owned(), tx.clone());
        start(tx);
        rx
    }

    /// Takes `tx` out (new clients start a new feed), if it is still the
    /// feed of `id` and, with `when_idle`, nobody reads it.
    pub(crate) fn retire(&self, id: &str, tx: &Arc<watch::Sender<Frame>>, when_idle: bool) -> bool {
        let mut feeds = self.lock();
        let ours = feeds.get(id).is_some_and(|t| Arc::ptr_eq(t, tx));
        // Under the lock, so no client joins between the count and the removal.
        if ours && (!when_idle || tx.receiver_count() == 0) {
            feeds.remove(id);
            return true;
        }
        !ours
    }
}
