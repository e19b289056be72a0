//! A run's story for the dashboard: the sessions the engine kept with the
//! run (one per process and resume, see [`sluice_engine::Recorder`]) merged
//! into one series of points whose rates are computed here, and a summary
//! of the final figures — for runs of this server, of the CLI and of
//! workers alike, live or long finished.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value as Json;
use sluice_engine::{Latency, ProviderReport, Sample, StatsReport, StepReport, SESSION_PREFIX};
use sluice_store::Store;

use crate::error::ApiResult;
use crate::live_run::LiveRun;

/// Points sent for a run at most (older stretches merge into wider buckets).
pub(crate) const MAX_POINTS: usize = 1_800;

/// One session of a run as kept in the store.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) worker_id: String,
    pub(crate) host: String,
    pub(crate) pid: u64,
    pub(crate) started_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) ended: bool,
    pub(crate) stride_secs: u64,
    pub(crate) counters: Json,
    pub(crate) stats: StatsReport,
    pub(crate) samples: Vec<Sample>,
}

impl Session {
    fn parse(v: &Json) -> Option<Session> {
        Some(Session {
            worker_id: v["worker_id"].as_str()?.to_owned(),
            host: v["host"].as_str().unwrap_or("").to_owned(),
            pid: v["pid"].as_u64().unwrap_or(0),
            started_at: v["started_at"].as_i64()?,
            updated_at: v["updated_at"].as_i64().unwrap_or(0),
            ended: v["ended"].as_bool().unwrap_or(false),
            stride_secs: v["stride_secs"].as_u64().unwrap_or(1).max(1),
            counters: v["counters"].clone(),
            stats: serde_json::from_value(v["stats"].clone()).unwrap_or_default(),
            samples: serde_json::from_value(v["samples"].clone()).unwrap_or_default(),
        })
    }

    fn count(&self, name: &str) -> u64 {
        self.counters[name].as_u64().unwrap_or(0)
    }

    fn real(&self, name: &str) -> f64 {
        self.counters[name].as_f64().unwrap_or(0.0)
    }
}

/// The sessions of run `run_id`, oldest first; the one executing here read
/// from memory (up to the second) rather than from its last write.
pub(crate) fn sessions(
    store: &mut dyn Store,
    run_id: &str,
    here: Option<&LiveRun>,
) -> ApiResult<Vec<Session>> {
    let mut entries: BTreeMap<String, Json> = store
        .run_state(run_id, SESSION_PREFIX)?
        .into_iter()
        .collect();
    if let Some(run) = here.filter(|r| !r.is_finished()) {
        let (key, entry) = sluice_engine::session_entry(&run.progress, false);
        entries.insert(key, entry);
    }
    Ok(entries.values().filter_map(Session::parse).collect())
}

/// One moment of a run, rates over the time since the point before.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Point {
    /// Unix ms (the end of the interval).
    pub(crate) t: i64,
    /// Calls sent per second (retries included).
    pub(crate) calls_per_sec: f64,
    /// Items finished per minute, done and failed.
    pub(crate) done_per_min: f64,
    pub(crate) failed_per_min: f64,
    /// Done among the items finished in the interval (none: nothing finished).
    pub(crate) success: Option<f64>,
    /// Retries and 429 answers per second.
    pub(crate) retries_per_sec: f64,
    pub(crate) throttled_per_sec: f64,
    /// Tokens per minute.
    pub(crate) tokens_per_min: f64,
    /// Calls on the wire.
    pub(crate) on_wire: f64,
    /// Calls holding a place and waiting for a rate slot.
    pub(crate) waiting_rate: f64,
    /// Calls waiting for a place, on average over the interval (seconds
    /// waited per second).
    pub(crate) waiting_place: f64,
    /// Spend of the run so far, USD (every session).
    pub(crate) spent_usd: f64,
    /// Moving average of answered calls' latency, ms (none: none answered).
    pub(crate) latency_ms: Option<f64>,
}

/// Counter differences over one interval of one session.
#[derive(Debug, Clone, Copy, Default)]
struct Delta {
    secs: f64,
    attempts: f64,
    done: f64,
    failed: f64,
    retries: f64,
    throttled: f64,
    tokens: f64,
    place_wait: f64,
}

impl Delta {
    fn between(a: &Sample, b: &Sample) -> Delta {
        let d = |x: u64, y: u64| y.saturating_sub(x) as f64;
        Delta {
            secs: (b.t - a.t) as f64 / 1e3,
            attempts: d(a.attempts, b.attempts),
            done: d(a.done, b.done),
            failed: d(a.failed, b.failed),
            retries: d(a.retries, b.retries),
            throttled: d(a.throttled, b.throttled),
            tokens: d(a.tokens, b.tokens),
            place_wait: (b.place_wait_secs - a.place_wait_secs).max(0.0),
        }
    }

    fn add(&mut self, o: &Delta) {
        self.secs += o.secs;
        self.attempts += o.attempts;
        self.done += o.done;
        self.failed += o.failed;
        self.retries += o.retries;
        self.throttled += o.throttled;
        self.tokens += o.tokens;
        self.place_wait += o.place_wait;
    }
}

/// The point of one interval (`b` ends it; `spent_usd` is the run's).
pub(crate) fn point_between(a: &Sample, b: &Sample, spent_usd: f64) -> Option<Point> {
    let d = Delta::between(a, b);
    (d.secs > 0.0).then(|| to_point(b.t, &d, d.secs, gauges(b), spent_usd))
}

fn gauges(s: &Sample) -> (f64, f64, Option<f64>) {
    (
        s.on_wire as f64,
        s.rate_waiting as f64,
        (s.latency_ms > 0.0).then_some(s.latency_ms),
    )
}

fn to_point(t: i64, d: &Delta, secs: f64, g: (f64, f64, Option<f64>), spent: f64) -> Point {
    let secs = secs.max(1e-3);
    let finished = d.done + d.failed;
    Point {
        t,
        calls_per_sec: d.attempts / secs,
        done_per_min: d.done / secs * 60.0,
        failed_per_min: d.failed / secs * 60.0,
        success: (finished > 0.0).then(|| d.done / finished),
        retries_per_sec: d.retries / secs,
        throttled_per_sec: d.throttled / secs,
        tokens_per_min: d.tokens / secs * 60.0,
        on_wire: g.0,
        waiting_rate: g.1,
        waiting_place: d.place_wait / secs,
        spent_usd: (spent * 1e6).round() / 1e6,
        latency_ms: g.2,
    }
}

/// One bucket of the merged series, summed over sessions.
#[derive(Default)]
struct Bucket {
    delta: Delta,
    /// Seconds covered, per session (the window is the longest).
    covered: BTreeMap<usize, f64>,
    /// Gauges per session: sums and samples.
    gauges: BTreeMap<usize, (f64, f64, f64, f64, f64)>,
}

/// Every session's samples as one series of points, oldest first: rates
/// over buckets of one second or more (at most [`MAX_POINTS`]), summed over
/// sessions that ran at once (workers), with gaps where none ran.
pub(crate) fn points(sessions: &[Session]) -> Vec<Point> {
    let first = sessions.iter().map(|s| s.started_at).min();
    let last = sessions
        .iter()
        .filter_map(|s| s.samples.last().map(|x| x.t))
        .max();
    let (Some(t0), Some(t1)) = (first, last) else {
        return Vec::new();
    };
    let stride = sessions.iter().map(|s| s.stride_secs).max().unwrap_or(1) as i64 * 1000;
    let span = (t1 - t0).max(0);
    let needed = (span / MAX_POINTS as i64 + 999) / 1000 * 1000;
    let width = stride.max(needed).max(1000);
    let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
    for (k, s) in sessions.iter().enumerate() {
        let start = Sample {
            t: s.started_at,
            ..Sample::default()
        };
        let mut prev = start;
        for b in &s.samples {
            let d = Delta::between(&prev, b);
            prev = *b;
            if d.secs <= 0.0 {
                continue;
            }
            let bucket = buckets.entry((b.t - t0) / width).or_default();
            bucket.delta.add(&d);
            *bucket.covered.entry(k).or_default() += d.secs;
            let g = bucket.gauges.entry(k).or_default();
            let (wire, wait, lat) = gauges(b);
            g.0 += wire;
            g.1 += wait;
            if let Some(l) = lat {
                g.2 += l;
                g.3 += 1.0;
            }
            g.4 += 1.0;
        }
    }
    buckets
        .into_iter()
        .map(|(i, b)| {
            let t = t0 + (i + 1) * width;
            let end = t.min(t1);
            let secs = b.covered.values().copied().fold(0.0, f64::max);
            let (mut wire, mut wait, mut lat, mut lat_n) = (0.0, 0.0, 0.0, 0.0);
            for g in b.gauges.values() {
                wire += g.0 / g.4;
                wait += g.1 / g.4;
                lat += g.2;
                lat_n += g.3;
            }
            let latency = (lat_n > 0.0).then(|| lat / lat_n);
            to_point(
                end,
                &b.delta,
                secs,
                (wire, wait, latency),
                spent_at(sessions, end),
            )
        })
        .collect()
}

/// The run's spend at `t`: every session's latest sample by then.
fn spent_at(sessions: &[Session], t: i64) -> f64 {
    sessions
        .iter()
        .map(|s| {
            let i = s.samples.partition_point(|x| x.t <= t);
            i.checked_sub(1).map_or(0.0, |i| s.samples[i].spent_usd)
        })
        .sum()
}

/// The final figures of a run over every session.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Summary {
    /// Sessions (a resume or retry starts one; each worker has its own).
    pub(crate) sessions: usize,
    pub(crate) started_at: Option<i64>,
    /// The latest figure kept (the end, for a run that ended).
    pub(crate) updated_at: Option<i64>,
    /// Seconds the run was being worked on (sessions' clocks, pauses left out).
    pub(crate) active_secs: f64,
    pub(crate) done: u64,
    pub(crate) failed: u64,
    pub(crate) attempts: u64,
    pub(crate) retries: u64,
    pub(crate) throttled: u64,
    pub(crate) tokens: u64,
    pub(crate) cache_hits: u64,
    pub(crate) fallbacks: u64,
    pub(crate) spent_usd: f64,
    pub(crate) breaker_openings: u64,
    /// Items finished and calls sent per second of work.
    pub(crate) items_per_sec: f64,
    pub(crate) calls_per_sec: f64,
    /// Mean latency of answered calls, ms.
    pub(crate) latency_mean_ms: Option<f64>,
    /// Per step and provider, over every session (percentiles: weighted
    /// by answered calls, an approximation across sessions).
    pub(crate) steps: Vec<StepReport>,
    /// The providers as the latest session left them (limits, breakers).
    pub(crate) providers: Vec<ProviderReport>,
    /// Who worked on it.
    pub(crate) workers: Vec<Json>,
}

/// The summary of `sessions`.
pub(crate) fn summary(sessions: &[Session]) -> Summary {
    let mut s = Summary {
        sessions: sessions.len(),
        started_at: sessions.iter().map(|x| x.started_at).min(),
        updated_at: sessions.iter().map(|x| x.updated_at).max(),
        ..Summary::default()
    };
    let mut steps: Vec<StepReport> = Vec::new();
    let mut weights: Vec<f64> = Vec::new();
    for x in sessions {
        s.active_secs += (x.real("elapsed_secs") - x.real("paused_secs")).max(0.0);
        s.done += x.count("done");
        s.failed += x.count("failed");
        s.attempts += x.count("attempts");
        s.retries += x.count("retries");
        s.throttled += x.count("throttled");
        s.tokens += x.count("tokens");
        s.cache_hits += x.count("cache_hits");
        s.fallbacks += x.count("fallbacks");
        s.spent_usd += x.real("spent_usd");
        s.breaker_openings += x.count("breaker_openings");
        for r in &x.stats.steps {
            let i = match steps
                .iter()
                .position(|m| m.step == r.step && m.provider == r.provider)
            {
                Some(i) => i,
                None => {
                    let mut fresh = r.clone();
                    fresh.by_status.clear();
                    fresh.attempts = 0;
                    fresh.ok = 0;
                    fresh.retries = 0;
                    fresh.throttled = 0;
                    fresh.tokens = 0;
                    fresh.in_flight = 0;
                    fresh.latency_ms = Latency::default();
                    fresh.place_waits = (0, 0.0);
                    fresh.rate_waits = (0, 0.0);
                    steps.push(fresh);
                    weights.push(0.0);
                    steps.len() - 1
                }
            };
            merge_step(&mut steps[i], &mut weights[i], r);
        }
        s.workers.push(serde_json::json!({
            "worker_id": x.worker_id,
            "host": x.host,
            "pid": x.pid,
            "started_at": x.started_at,
            "updated_at": x.updated_at,
            "ended": x.ended,
            "attempts": x.count("attempts"),
            "done": x.count("done"),
            "failed": x.count("failed"),
        }));
    }
    if let Some(latest) = sessions.iter().max_by_key(|x| x.updated_at) {
        s.providers = latest.stats.providers.clone();
    }
    s.spent_usd = (s.spent_usd * 1e6).round() / 1e6;
    if s.active_secs > 0.0 {
        s.items_per_sec = (s.done + s.failed) as f64 / s.active_secs;
        s.calls_per_sec = s.attempts as f64 / s.active_secs;
    }
    let (mut sum, mut n) = (0.0, 0.0);
    for (m, w) in steps.iter().zip(&weights) {
        if let Some(mean) = m.latency_ms.mean {
            sum += mean * w;
            n += w;
        }
    }
    s.latency_mean_ms = (n > 0.0).then(|| sum / n);
    s.steps = steps;
    s
}

/// Adds `r` (one session's) into `m`; `w` is the answered calls so far.
fn merge_step(m: &mut StepReport, w: &mut f64, r: &StepReport) {
    for (status, n) in &r.by_status {
        match m.by_status.iter_mut().find(|(s, _)| s == status) {
            Some(slot) => slot.1 += n,
            None => m.by_status.push((status.clone(), *n)),
        }
    }
    m.attempts += r.attempts;
    m.ok += r.ok;
    m.retries += r.retries;
    m.throttled += r.throttled;
    m.tokens += r.tokens;
    m.in_flight += r.in_flight;
    m.place_waits.0 += r.place_waits.0;
    m.place_waits.1 += r.place_waits.1;
    m.rate_waits.0 += r.rate_waits.0;
    m.rate_waits.1 += r.rate_waits.1;
    let rw = r.attempts.saturating_sub(r.throttled) as f64;
    let blend = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if *w + rw > 0.0 => Some((a * *w + b * rw) / (*w + rw)),
        (None, b) => b,
        (a, _) => a,
    };
    let (a, b) = (m.latency_ms, r.latency_ms);
    m.latency_ms = Latency {
        p50: blend(a.p50, b.p50),
        p90: blend(a.p90, b.p90),
        p99: blend(a.p99, b.p99),
        mean: blend(a.mean, b.mean),
    };
    *w += rw;
}

/// The cumulative sample a live view shows (`live`: its counters, stats
/// and moving latency), at `t`.
pub(crate) fn sample_of_live(t: i64, live: &Json) -> Option<Sample> {
    let c = live.get("counters").filter(|c| c.is_object())?;
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    let stats: StatsReport = serde_json::from_value(live["stats"].clone()).unwrap_or_default();
    let mut s = Sample {
        t,
        done: n("done"),
        failed: n("failed"),
        attempts: n("attempts"),
        retries: n("retries"),
        throttled: n("throttled"),
        tokens: n("tokens"),
        cache_hits: n("cache_hits"),
        spent_usd: c["spent_usd"].as_f64().unwrap_or(0.0),
        on_wire: n("in_flight"),
        latency_ms: live["latency_ewma_ms"].as_f64().unwrap_or(0.0),
        ..Sample::default()
    };
    for step in &stats.steps {
        s.place_wait_secs += step.place_waits.1;
        s.rate_wait_secs += step.rate_waits.1;
    }
    s.rate_waiting = stats
        .providers
        .iter()
        .map(|p| p.in_flight.saturating_sub(p.on_wire))
        .sum();
    Some(s)
}

#[cfg(test)]
mod tests;

/// The points of a live stream: one per tick, from the counters of the
/// views it shows (the run's spend counts the sessions before this one).
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    prev: Option<Sample>,
    /// Spend of the run's ended sessions (read when the stream starts).
    pub(crate) base_spent: Option<f64>,
}

impl Tracker {
    /// The point since the last view, from `live` (none for the first, or
    /// when the counters went back: a new session started).
    pub(crate) fn point(&mut self, cur: Option<Sample>) -> Option<Point> {
        let cur = cur?;
        let prev = self.prev.replace(cur)?;
        if cur.attempts < prev.attempts || cur.done + cur.failed < prev.done + prev.failed {
            return None;
        }
        point_between(&prev, &cur, self.base_spent.unwrap_or(0.0) + cur.spent_usd)
    }
}

/// The sample of every process working on a run now (`beats`: their
/// heartbeats), counters and gauges summed, latency averaged: workers of a
/// shared run each count their own calls.
pub(crate) fn sample_of_beats(t: i64, beats: &[sluice_store::WorkerBeat]) -> Option<Sample> {
    let now = sluice_engine::now_ms();
    let mut total: Option<Sample> = None;
    let mut latencies = Vec::new();
    for b in beats
        .iter()
        .filter(|b| sluice_engine::worker_state(b, now) == sluice_engine::WorkerState::Running)
    {
        let Some(s) = sample_of_live(t, &b.live) else {
            continue;
        };
        if s.latency_ms > 0.0 {
            latencies.push(s.latency_ms);
        }
        let sum = total.get_or_insert(Sample {
            t,
            ..Sample::default()
        });
        sum.done += s.done;
        sum.failed += s.failed;
        sum.attempts += s.attempts;
        sum.retries += s.retries;
        sum.throttled += s.throttled;
        sum.tokens += s.tokens;
        sum.cache_hits += s.cache_hits;
        sum.spent_usd += s.spent_usd;
        sum.on_wire += s.on_wire;
        sum.rate_waiting += s.rate_waiting;
        sum.place_wait_secs += s.place_wait_secs;
        sum.rate_wait_secs += s.rate_wait_secs;
    }
    if let Some(sum) = total.as_mut() {
        if !latencies.is_empty() {
            sum.latency_ms = latencies.iter().sum::<f64>() / latencies.len() as f64;
        }
    }
    total
}

/// Spend of the sessions of `run_id` that ended.
pub(crate) fn ended_spend(store: &mut dyn Store, run_id: &str) -> ApiResult<f64> {
    Ok(sessions(store, run_id, None)?
        .iter()
        .filter(|s| s.ended)
        .map(|s| s.real("spent_usd"))
        .sum())
}
