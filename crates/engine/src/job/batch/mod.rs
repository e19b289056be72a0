//! Batch offload: a provider with `mode = "batch"` (or `auto` that chose
//! batch) sends its chat, embed and conversation calls through its batch API
//! instead of live.
//!
//! How it fits the streaming pipeline: a unit reaching a batched step hands
//! its request to the provider's [`LaneBatcher`] and waits. Requests gather
//! into an open batch per API path and model until it holds `batch.size`
//! requests or reaches a documented per-batch limit (see `limits`) or the
//! enqueued-token limit (see `enqueued`), or `batch.window` has passed since
//! its first request; then it is stored (`batch:*` run state), submitted, and polled every
//! `batch.poll`. A waiting unit leaves the window of units in progress (see
//! `place`), so others keep starting — up to `batch.waiting` units per
//! provider wait at once. When the batch ends, each unit gets its result as
//! if a live call had answered and goes on with its next step; expired or
//! retryably failed requests go into a later batch (or live, with
//! `batch.retry = "live"`), up to the provider's `retries.max` more times.
//!
//! Requests are known by a custom id derived from the unit, step, part,
//! provider and request fingerprint, so a rerun after a crash finds the
//! requests of stored batches, keeps polling those instead of submitting
//! them again, and hands their results to the same step records.

mod anthropic;
mod api;
#[cfg(test)]
mod contract;
mod dialects;
mod enqueued;
mod lane;
mod limits;
mod openai;
mod state;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value as Json;
use sluice_spec::Job;
use sluice_store::Store;

pub(crate) use lane::LaneBatcher;
pub(crate) use state::BatchRecord;

use super::lanes::Lanes;
use super::place::Floating;
use crate::stopping::Stopping;

/// One request for a batch, in its provider's dialect.
#[derive(Debug, Clone)]
pub(crate) struct BatchRequest {
    /// Its identity across runs (`[A-Za-z0-9_-]`, ≤ 64 characters).
    pub(crate) custom_id: String,
    /// The step's path under the base URL (`/chat/completions`).
    pub(crate) path: String,
    pub(crate) body: Json,
}

/// How a batched request ended.
#[derive(Debug)]
pub(crate) enum BatchEnd {
    /// Answered: the body a live call would have received.
    Done {
        status: u16,
        body: Bytes,
        /// From joining the first batch to the result.
        latency: Duration,
        attempts: u32,
    },
    /// Failed for good.
    Failed {
        error: crate::item_error::ItemError,
        status: Option<u16>,
        attempts: u32,
    },
    /// Expired or failed retryably, and the provider retries live.
    Live { attempts: u32 },
    /// The run is stopping: the unit stays pending (the batch goes on at the
    /// provider, and a rerun picks up its results).
    Stopped,
}

/// The batchers of a run, by provider.
pub(crate) struct Batches {
    lanes: Vec<(String, Arc<LaneBatcher>)>,
    /// Units that left the window to wait for a batch.
    pub(crate) floating: Arc<Floating>,
}

impl Batches {
    /// No provider batches.
    pub(crate) fn none() -> Batches {
        Batches {
            lanes: Vec::new(),
            floating: Floating::new(),
        }
    }

    /// A batcher for each of `providers` (those whose calls go through the
    /// batch API this run), taking up the batches earlier runs stored. Must
    /// be called inside the run's runtime (it spawns the polls). Units
    /// waiting for a batch give up once `stop` is set. Result files are
    /// downloaded under `downloads` (a folder per provider) and removed once
    /// read.
    pub(crate) fn start(
        job: &Job,
        lanes: &Lanes,
        providers: &[String],
        run_id: &str,
        downloads: &std::path::Path,
        store: Box<dyn Store>,
        stop: Arc<Stopping>,
    ) -> crate::error::Result<Batches> {
        let store = Arc::new(Mutex::new(store));
        let mut out = Vec::new();
        for name in providers {
            let (Some(lane), Some(provider)) = (lanes.get(name), job.provider(name)) else {
                continue;
            };
            let remote = api::Remote::new(lane);
            let batcher = LaneBatcher::start(
                remote,
                provider.batch,
                lane.retries.max,
                run_id,
                downloads.join(name),
                store.clone(),
                stop.clone(),
            )?;
            out.push((name.clone(), batcher));
        }
        Ok(Batches {
            lanes: out,
            floating: Floating::new(),
        })
    }

    /// The batcher of provider `name`, when its calls are batched.
    pub(crate) fn lane(&self, name: &str) -> Option<&Arc<LaneBatcher>> {
        self.lanes.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }

    /// Batches all of whose results reached their units, to be marked
    /// collected once the run's records are committed.
    pub(crate) fn delivered(&self) -> Vec<(Arc<LaneBatcher>, Vec<BatchRecord>)> {
        self.lanes
            .iter()
            .map(|(_, b)| (b.clone(), b.delivered()))
            .filter(|(_, r)| !r.is_empty())
            .collect()
    }
}
