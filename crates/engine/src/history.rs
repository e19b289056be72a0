//! A run's story as this process saw it: one sample of the cumulative
//! counters per heartbeat, kept with the run in the store (run state
//! `session/…`, one entry per process and session) together with the final
//! counters and per-step/per-provider statistics, so any surface can draw a
//! finished run's charts and summary — runs of the CLI, of workers and of a
//! server alike. Rates are derived from the samples by whoever reads them.
//!
//! Bounded: a session keeps at most [`MAX_SAMPLES`]; when full, every other
//! sample is dropped and only every second beat is kept from then on (one
//! hour at one a second, then two hours at one every two seconds, …).
//! Counters are cumulative, so dropping samples loses resolution, not totals.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clock::now_ms;

/// The run-state key prefix of every session's story.
pub const SESSION_PREFIX: &str = "session/";

/// Samples a session keeps at most (an hour at one a second).
pub const MAX_SAMPLES: usize = 3_600;

/// Heartbeats between two writes of the story while the run goes (the last
/// write is at the end).
pub(crate) const FLUSH_BEATS: u64 = 10;

/// The cumulative counters and the gauges at one moment (a row of numbers
/// in the store: `[t, done, failed, attempts, retries, throttled, tokens,
/// cache_hits, spent_usd, on_wire, rate_waiting, place_wait_secs,
/// rate_wait_secs, latency_ms]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Row", into = "Row")]
pub struct Sample {
    /// Unix ms.
    pub t: i64,
    /// Items done in this session so far.
    pub done: u64,
    /// Items failed in this session so far.
    pub failed: u64,
    /// Calls sent (retries included).
    pub attempts: u64,
    /// Calls that were retries.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    /// Tokens reported.
    pub tokens: u64,
    /// Step outputs served from the cache.
    pub cache_hits: u64,
    /// Spend in this session, USD.
    pub spent_usd: f64,
    /// Calls of this run on the wire now.
    pub on_wire: u64,
    /// Calls holding a place and waiting for a rate slot now (every run of
    /// the process on the same providers).
    pub rate_waiting: u64,
    /// Seconds calls spent waiting for a place (concurrency, an endpoint).
    pub place_wait_secs: f64,
    /// Seconds calls spent waiting for a rate slot.
    pub rate_wait_secs: f64,
    /// Moving average of answered calls' latency, ms.
    pub latency_ms: f64,
}

type Row = (
    i64,
    u64,
    u64,
    u64,
    u64,
    u64,
    u64,
    u64,
    f64,
    u64,
    u64,
    f64,
    f64,
    f64,
);

impl From<Row> for Sample {
    fn from(r: Row) -> Sample {
        Sample {
            t: r.0,
            done: r.1,
            failed: r.2,
            attempts: r.3,
            retries: r.4,
            throttled: r.5,
            tokens: r.6,
            cache_hits: r.7,
            spent_usd: r.8,
            on_wire: r.9,
            rate_waiting: r.10,
            place_wait_secs: r.11,
            rate_wait_secs: r.12,
            latency_ms: r.13,
        }
    }
}

impl From<Sample> for Row {
    fn from(s: Sample) -> Row {
        // Rounded: the store keeps text, and nobody reads microseconds here.
        let r3 = |v: f64| (v * 1e3).round() / 1e3;
        (
            s.t,
            s.done,
            s.failed,
            s.attempts,
            s.retries,
            s.throttled,
            s.tokens,
            s.cache_hits,
            (s.spent_usd * 1e6).round() / 1e6,
            s.on_wire,
            s.rate_waiting,
            r3(s.place_wait_secs),
            r3(s.rate_wait_secs),
            r3(s.latency_ms),
        )
    }
}

/// One session's samples, thinned when full.
#[derive(Debug, Default)]
struct Series {
    /// Keep one beat in `stride`.
    stride: u64,
    /// Beats offered so far.
    seen: u64,
    samples: Vec<Sample>,
}

impl Series {
    fn push(&mut self, sample: Sample, last: bool) {
        let stride = self.stride.max(1);
        self.seen += 1;
        if !last && !(self.seen - 1).is_multiple_of(stride) {
            return;
        }
        if self.samples.len() >= MAX_SAMPLES {
            let kept: Vec<Sample> = self.samples.iter().copied().step_by(2).collect();
            self.samples = kept;
            self.stride = stride * 2;
        }
        self.samples.push(sample);
    }
}

/// The story of one session of a run in this process (one per
/// [`crate::Progress`]).
#[derive(Debug)]
pub struct Recorder {
    /// When the session started (unix ms): part of its key.
    started_at: i64,
    series: Mutex<Series>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            started_at: now_ms(),
            series: Mutex::new(Series::default()),
        }
    }
}

impl Recorder {
    fn series(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the sample of one heartbeat (`last`: the session's final one,
    /// always kept).
    pub fn record(&self, sample: Sample, last: bool) {
        self.series().push(sample, last);
    }

    /// The samples kept so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.series().samples.clone()
    }

    /// The run-state key of this session of process `worker_id` (sorted by
    /// start, then process).
    pub fn key(&self, worker_id: &str) -> String {
        format!("{SESSION_PREFIX}{:015}/{worker_id}", self.started_at)
    }

    /// The session's entry as kept in the store: who ran it (`who`: worker
    /// id, host, pid), when, its counters and statistics now, and its
    /// samples (`ended`: the session is over).
    pub fn entry(
        &self,
        who: (&str, &str, u32),
        counters: &impl Serialize,
        stats: &impl Serialize,
        ended: bool,
    ) -> Value {
        let series = self.series();
        json!({
            "worker_id": who.0,
            "host": who.1,
            "pid": who.2,
            "started_at": self.started_at,
            "updated_at": now_ms(),
            "ended": ended,
            "stride_secs": series.stride.max(1),
            "counters": counters,
            "stats": stats,
            "samples": series.samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_series_halves_its_resolution_and_keeps_the_last_sample() {
        let mut s = Series::default();
        for i in 0..(MAX_SAMPLES as i64 * 3) {
            s.push(
                Sample {
                    t: i * 1000,
                    done: i as u64,
                    ..Sample::default()
                },
                false,
            );
        }
        assert!(s.samples.len() <= MAX_SAMPLES, "{}", s.samples.len());
        assert!(s.samples.len() >= MAX_SAMPLES / 2, "{}", s.samples.len());
        assert_eq!(s.stride, 4);
        // Evenly spaced, in order, counters intact.
        let gaps: std::collections::BTreeSet<i64> =
            s.samples.windows(2).map(|w| w[1].t - w[0].t).collect();
        assert!(gaps.iter().all(|g| *g == 2000 || *g == 4000), "{gaps:?}");
        let last = Sample {
            t: 99_999_999,
            done: 12_345,
            ..Sample::default()
        };
        s.push(last, true);
        assert_eq!(s.samples.last(), Some(&last));
    }

    #[test]
    fn samples_are_rows_of_numbers_in_the_store() {
        let s = Sample {
            t: 5,
            done: 1,
            spent_usd: 0.25,
            latency_ms: 12.5,
            ..Sample::default()
        };
        let v = serde_json::to_value(s).unwrap();
        assert_eq!(
            v,
            json!([5, 1, 0, 0, 0, 0, 0, 0, 0.25, 0, 0, 0.0, 0.0, 12.5])
        );
        assert_eq!(serde_json::from_value::<Sample>(v).unwrap(), s);
    }
}
