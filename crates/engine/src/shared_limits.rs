//! A provider's limits held together with every other process working from
//! the same shared store (PostgreSQL): the arithmetic is
//! `sluice_limit::SharedLimitState`, the state lives in the store (one value
//! per provider, changed under its row lock), and this module is the
//! plumbing: claiming slices of sending time for the limiter, publishing
//! this process's pauses, announced limits and open breakers, taking up the
//! others', and renewing this process's share of the provider's concurrency.
//!
//! The store is asked once per slice (a quarter of a second of sending
//! time) and once a second for the rest, never per request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_limit::{SharedLimitState, SliceGrant};
use sluice_store::Store;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Sending time claimed at once (µs), unless one request needs more.
const SLICE_US: i64 = 250_000;
/// Sending time handed out at most this far ahead (µs): a process that
/// claims and dies holds the others back no longer than this.
const HORIZON_US: i64 = 2_000_000;
/// A concurrency share not renewed for this long is forgotten (µs).
const SHARE_TTL_US: i64 = 10_000_000;
/// How often the shared state is read and written besides slice claims.
pub(crate) const SYNC_PERIOD: Duration = Duration::from_secs(1);
/// The clock offset is measured afresh at least this often (µs), even when
/// the new round trip is longer than the best one seen.
const OFFSET_REFRESH_US: i64 = 30_000_000;
/// The most a slice is trimmed at each end for clock uncertainty (µs).
const MAX_GUARD_US: i64 = 10_000;
/// Room left in a slice for its requests' lateness, beyond the most seen
/// lately (µs). A request sent late (timers wake a millisecond or more after
/// their instant, later on a loaded machine) can push the rest of the
/// slice's schedule back: a provider answering `remaining: 0` gives its next
/// instant from the request's arrival, and the limiter holds it. Without
/// room the slice's last request then never fits: 4 of 5 at 1,200/min,
/// 80% of the limit. Room is claimed for what was seen, so a process whose
/// requests are not late claims (almost) none.
const SLIP_MARGIN_US: i64 = 2_000;
/// At most this much room for lateness in one slice (µs).
const MAX_SLIP_US: i64 = SLICE_US / 10;
/// The lateness remembered fades by this much per slice (ns), so one stall
/// does not widen every slice after it (its variation from slice to slice
/// is a few milliseconds: the worst seen lately is kept a while).
const SLIP_DECAY_NS: u64 = 250_000;
/// The lateness assumed before any was seen (ns): about a millisecond per
/// request of a slice at 1,200/min in a debug build. The first slice then
/// keeps its last request too; a process whose requests are on time
/// unlearns it within a few seconds.
const FIRST_SLIP_NS: u64 = 4_000_000;
/// A gate waiting for more places asks at most this often.
const MIN_SYNC_GAP: Duration = Duration::from_millis(50);

/// One store connection for every shared lane of this process.
pub(crate) type SharedStore = Arc<Mutex<Box<dyn Store>>>;

/// A slice of sending time in this process's clock (ns since `origin`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalSlice {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// The slice's end in the store's clock, to give the rest back.
    db_end: i64,
    /// Room for lateness claimed in it beyond its requests' spacing (ns).
    room: u64,
}

/// What one exchange with the store brought back.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Reply {
    now_us: i64,
    slice: Option<(i64, i64)>,
    later_us: Option<i64>,
    paused_until: i64,
    learned_rpm: u64,
    learned_tpm: u64,
    open_until: BTreeMap<String, i64>,
    granted: Option<u64>,
}

/// What this process tells the store in one exchange.
#[derive(Debug, Clone, Default)]
struct Publish {
    paused_until_us: i64,
    learned_rpm: u64,
    learned_tpm: u64,
    opened: Vec<(String, i64)>,
    /// (wanted, in flight, cap) for the concurrency share.
    share: Option<(u64, u64, u64)>,
    slice_us: Option<i64>,
    give_back: Option<(i64, i64)>,
    leave: bool,
}

/// One provider's shared limits in this process.
pub(crate) struct SharedLimits {
    store: SharedStore,
    key: String,
    process: String,
    /// The limiter's clock origin: local instants are nanoseconds since it.
    origin: Instant,
    /// Store clock minus local clock, µs: from the exchange with the
    /// shortest round trip (the least uncertain), refreshed now and then.
    offset_us: AtomicI64,
    /// That exchange's round trip, µs.
    rtt_us: AtomicI64,
    /// When it was measured (local µs).
    offset_at_us: AtomicI64,
    pub(crate) slice: Mutex<Option<LocalSlice>>,
    /// How far this process's schedule ran late in a slice lately (ns):
    /// the room claimed in the next one.
    slip_ns: AtomicU64,
    /// This process's pause (local ns) not yet published.
    pause_local: AtomicU64,
    /// Limits this process learned from headers, to publish.
    learned_here: [AtomicU64; 2],
    /// Limits the store holds (learned by any process).
    pub(crate) learned_shared: [AtomicU64; 2],
    /// The store's pause, local ns.
    pub(crate) paused_until: AtomicU64,
    opened: Mutex<Vec<(String, i64)>>,
    /// Endpoints another process found failing, until (local ns).
    open_elsewhere: Mutex<BTreeMap<String, u64>>,
    /// The provider's configured concurrency, shared among processes.
    cap: Option<usize>,
    /// This process's share of it (`usize::MAX` before the first grant without a cap).
    pub(crate) granted: AtomicUsize,
    /// The most calls in flight and waiting for a place (plus one) since the
    /// last exchange: the share asked for.
    pub(crate) wanted: AtomicUsize,
    pub(crate) in_flight: AtomicUsize,
    /// Wakes the sync task early (a gate ran out of places).
    pub(crate) wake: Notify,
}

impl SharedLimits {
    /// The shared limits of the provider reached at `base_urls`.
    pub(crate) fn new(
        store: SharedStore,
        base_urls: &[String],
        process: &str,
        origin: Instant,
        cap: Option<usize>,
    ) -> SharedLimits {
        let mut urls: Vec<&str> = base_urls.iter().map(|u| u.trim_end_matches('/')).collect();
        urls.sort_unstable();
        SharedLimits {
            store,
            key: format!("provider:{}", urls.join(" ")),
            process: process.to_owned(),
            origin,
            offset_us: AtomicI64::new(0),
            rtt_us: AtomicI64::new(i64::MAX),
            offset_at_us: AtomicI64::new(0),
            slice: Mutex::new(None),
            slip_ns: AtomicU64::new(FIRST_SLIP_NS),
            pause_local: AtomicU64::new(0),
            learned_here: [AtomicU64::new(0), AtomicU64::new(0)],
            learned_shared: [AtomicU64::new(0), AtomicU64::new(0)],
            paused_until: AtomicU64::new(0),
            opened: Mutex::new(Vec::new()),
            open_elsewhere: Mutex::new(BTreeMap::new()),
            cap,
            granted: AtomicUsize::new(if cap.is_some() { 0 } else { usize::MAX }),
            // The first exchange asks for every place; shares even out at
            // the next ones if other processes want some too.
            wanted: AtomicUsize::new(cap.unwrap_or(0)),
            in_flight: AtomicUsize::new(0),
            wake: Notify::new(),
        }
    }

    fn local_now_us(&self) -> i64 {
        (self.origin.elapsed().as_nanos() / 1_000) as i64
    }

    fn to_local_ns(&self, db_us: i64) -> u64 {
        (db_us - self.offset_us.load(Relaxed)).max(0) as u64 * 1_000
    }

    fn to_db_us(&self, local_ns: u64) -> i64 {
        (local_ns / 1_000) as i64 + self.offset_us.load(Relaxed)
    }

    /// Remembers a pause (`retry-after`) until `until_local_ns`, for everyone.
    pub(crate) fn publish_pause(&self, until_local_ns: u64) {
        self.pause_local.fetch_max(until_local_ns, Relaxed);
    }

    /// Remembers a per-minute limit the provider announced (0: none).
    pub(crate) fn publish_learned(&self, rpm: Option<u64>, tpm: Option<u64>) {
        if let Some(r) = rpm {
            self.learned_here[0].store(r, Relaxed);
        }
        if let Some(t) = tpm {
            self.learned_here[1].store(t, Relaxed);
        }
    }

    /// Tells the others an endpoint's breaker opened for `cooldown`.
    pub(crate) fn publish_open(&self, url: &str, cooldown: Duration) {
        let until = self.local_now_us() + cooldown.as_micros() as i64;
        let until = until + self.offset_us.load(Relaxed);
        lock(&self.opened).push((url.to_owned(), until));
    }

    /// Whether another process found `url` failing and its cooldown is not over.
    pub(crate) fn open_elsewhere(&self, url: &str, now_local_ns: u64) -> bool {
        lock(&self.open_elsewhere)
            .get(url)
            .is_some_and(|&until| until > now_local_ns)
    }

    fn publish(&self) -> Publish {
        let pause = self.pause_local.swap(0, Relaxed);
        Publish {
            paused_until_us: if pause > 0 { self.to_db_us(pause) } else { 0 },
            learned_rpm: self.learned_here[0].load(Relaxed),
            learned_tpm: self.learned_here[1].load(Relaxed),
            opened: std::mem::take(&mut *lock(&self.opened)),
            share: self.cap.map(|cap| {
                let in_flight = self.in_flight.load(Relaxed);
                // The peak since the last exchange; the next one starts afresh.
                let wanted = self.wanted.swap(in_flight + 1, Relaxed);
                (wanted as u64, in_flight as u64, cap as u64)
            }),
            ..Publish::default()
        }
    }

    /// One exchange with the store (on a blocking thread: the store is
    /// synchronous), then what it said applied here.
    async fn exchange(&self, publish: Publish) -> Option<Reply> {
        let store = self.store.clone();
        let (key, process) = (self.key.clone(), self.process.clone());
        let before = self.local_now_us();
        let answer = tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
            let shared = store.shared()?;
            shared
                .update_shared(
                    &key,
                    Box::new(move |old, now| update(old, now, &process, publish)),
                )
                .map_err(|e| tracing::warn!("shared limits: {e}"))
                .ok()
        })
        .await
        .ok()
        .flatten()?;
        let after = self.local_now_us();
        let reply: Reply = serde_json::from_value(answer).ok()?;
        let rtt = after - before;
        if rtt <= self.rtt_us.load(Relaxed)
            || after - self.offset_at_us.load(Relaxed) > OFFSET_REFRESH_US
        {
            self.offset_us
                .store(reply.now_us - (before + after) / 2, Relaxed);
            self.rtt_us.store(rtt, Relaxed);
            self.offset_at_us.store(after, Relaxed);
        }
        self.paused_until
            .store(self.to_local_ns(reply.paused_until), Relaxed);
        self.learned_shared[0].store(reply.learned_rpm, Relaxed);
        self.learned_shared[1].store(reply.learned_tpm, Relaxed);
        *lock(&self.open_elsewhere) = reply
            .open_until
            .iter()
            .map(|(u, t)| (u.clone(), self.to_local_ns(*t)))
            .collect();
        if let Some(n) = reply.granted {
            self.granted.store(n as usize, Relaxed);
        }
        Some(reply)
    }

    /// Claims the next slice of sending time lasting at least `min_len_ns`;
    /// returns how long to wait before looking again when none is free yet.
    pub(crate) async fn claim(&self, min_len_ns: u64) -> Option<Duration> {
        let mut publish = self.publish();
        let room_us =
            ((self.slip_ns.load(Relaxed) / 1_000) as i64 + SLIP_MARGIN_US).min(MAX_SLIP_US);
        publish.slice_us = Some(slice_len_us(min_len_ns, room_us, self.guard_us()));
        if let Some(old) = *lock(&self.slice) {
            let now_db = self.to_db_us(self.origin.elapsed().as_nanos() as u64);
            publish.give_back = Some((now_db, old.db_end));
        }
        let Some(reply) = self.exchange(publish).await else {
            // The store is unreachable: wait a little rather than spin.
            return Some(Duration::from_millis(100));
        };
        match (reply.slice, reply.later_us) {
            (Some((start, end)), _) => {
                let guard = self.guard_us();
                *lock(&self.slice) = Some(LocalSlice {
                    start: self.to_local_ns(start + guard),
                    end: self.to_local_ns(end - guard),
                    db_end: end,
                    room: room_us as u64 * 1_000,
                });
                None
            }
            (None, Some(at)) => Some(Duration::from_micros(
                (at - reply.now_us).clamp(1_000, 1_000_000) as u64,
            )),
            (None, None) => Some(Duration::from_millis(100)),
        }
    }

    /// Half the round trip is how far this process's idea of the store's
    /// clock may be off: kept clear at both ends of a slice, so two
    /// processes' slices never overlap in real time (µs).
    fn guard_us(&self) -> i64 {
        (self.rtt_us.load(Relaxed).saturating_add(1) / 2 + 1_000).clamp(1_000, MAX_GUARD_US)
    }

    /// The request that would end at `ends` (local ns) does not fit in
    /// `slice`: learns from it how late this process's schedule ran there.
    /// Only while sending back to back (the schedule ends a request's
    /// spacing or more after `now`): a slice left idle for a while has an
    /// overshoot that says nothing of lateness.
    pub(crate) fn ran_out(&self, slice: &LocalSlice, now: u64, ends: u64, unit: u64) {
        if ends <= slice.end || ends.saturating_sub(unit) <= now {
            return;
        }
        let seen = slip_seen(ends - slice.end, slice.room, unit);
        let _ = self.slip_ns.fetch_update(Relaxed, Relaxed, |old| {
            Some(seen.max(old.saturating_sub(SLIP_DECAY_NS)))
        });
    }

    /// Publishes and reads the shared state; renews the concurrency share.
    pub(crate) async fn sync(&self) {
        let publish = self.publish();
        let _ = self.exchange(publish).await;
    }

    /// Runs [`SharedLimits::sync`] every second, or sooner when woken.
    pub(crate) async fn sync_loop(self: Arc<Self>) {
        loop {
            self.sync().await;
            let _ = tokio::time::timeout(SYNC_PERIOD, self.wake.notified()).await;
            tokio::time::sleep(MIN_SYNC_GAP).await;
        }
    }

    /// Leaves: gives back the unused rest of the slice and the concurrency share.
    pub(crate) fn leave(&self) {
        let mut publish = self.publish();
        publish.leave = true;
        if let Some(old) = lock(&self.slice).take() {
            let now_db = self.to_db_us(self.origin.elapsed().as_nanos() as u64);
            publish.give_back = Some((now_db, old.db_end));
        }
        let (key, process) = (self.key.clone(), self.process.clone());
        let mut store = lock(&self.store);
        if let Some(shared) = store.shared() {
            let left = shared.update_shared(
                &key,
                Box::new(move |old, now| update(old, now, &process, publish)),
            );
            if let Err(e) = left {
                tracing::warn!("shared limits: could not give back this process's share: {e}");
            }
        }
    }
}

/// The sending time to claim for requests each occupying `unit_ns` of the
/// schedule (µs): a whole number of them in about [`SLICE_US`] (a slice
/// that ends mid-gap would waste the rest of it), `room_us` for their
/// lateness, and the guard trimmed at each end.
fn slice_len_us(unit_ns: u64, room_us: i64, guard_us: i64) -> i64 {
    let unit = (unit_ns.div_ceil(1_000) as i64).max(1);
    let count = ((SLICE_US + unit - 1) / unit).max(1);
    count * unit + room_us + 2 * guard_us
}

/// How late a slice's schedule ran (ns), from how far the request that no
/// longer fit would have ended past it (`overshoot`), the `room` the slice
/// had for lateness and the spacing `unit` of its requests: the slice holds
/// a whole number of units plus the room, so what is left over is the
/// lateness (whether the last request was lost to it or not). More than
/// half a unit left over is a schedule running early (the limiter's
/// catch-up), not late.
fn slip_seen(overshoot: u64, room: u64, unit: u64) -> u64 {
    let unit = unit.max(1);
    let left = overshoot.saturating_add(room) % unit;
    if left > unit / 2 {
        0
    } else {
        left
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The change made under the store's lock: pure arithmetic from sluice-limit.
fn update(
    old: Option<serde_json::Value>,
    now: i64,
    process: &str,
    publish: Publish,
) -> (serde_json::Value, serde_json::Value) {
    let mut state: SharedLimitState = old
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    if let Some((from, end)) = publish.give_back {
        state.give_back(from, end, now);
    }
    if publish.paused_until_us > 0 {
        state.pause(publish.paused_until_us);
    }
    for (i, n) in [publish.learned_rpm, publish.learned_tpm]
        .into_iter()
        .enumerate()
    {
        let slot = if i == 0 {
            &mut state.learned_rpm
        } else {
            &mut state.learned_tpm
        };
        if n > 0 {
            *slot = n;
        }
    }
    for (url, until) in &publish.opened {
        state.open(url, *until, now);
    }
    let mut reply = Reply {
        now_us: now,
        ..Reply::default()
    };
    if publish.leave {
        state.leave(process);
    } else if let Some((wanted, in_flight, cap)) = publish.share {
        reply.granted = Some(state.grant(process, wanted, in_flight, cap, now, SHARE_TTL_US));
    }
    if let Some(len) = publish.slice_us {
        match state.claim_slice(now, len, HORIZON_US) {
            SliceGrant::Slice { start, end } => reply.slice = Some((start, end)),
            SliceGrant::Later { at } => reply.later_us = Some(at),
        }
    }
    reply.paused_until = state.paused_until;
    reply.learned_rpm = state.learned_rpm;
    reply.learned_tpm = state.learned_tpm;
    reply.open_until = state.open_until.clone();
    let stored = serde_json::to_value(&state).unwrap_or(serde_json::Value::Null);
    let reply = serde_json::to_value(&reply).unwrap_or(serde_json::Value::Null);
    (stored, reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_limit::{WindowLimits, Windows};

    const MS: u64 = 1_000_000;

    /// How many requests a slice of `len_ns` (guards trimmed) admits when
    /// each is sent `late_ns` after the instant it was due, and the provider
    /// answers that its next one is due a full spacing after it was sent;
    /// and where the one that no longer fit would have ended.
    fn admitted_in(len_ns: u64, late_ns: u64) -> (u64, u64) {
        let mut w = Windows::new(
            &WindowLimits {
                rpm: Some(1_200),
                ..WindowLimits::default()
            },
            2 * MS,
        );
        let (start, end) = (10_000 * MS, 10_000 * MS + len_ns);
        let mut due = start;
        let mut sent = 0;
        loop {
            let now = due + late_ns;
            if !w.fits_before(now, 0, end) {
                return (sent, w.schedule_end(now, 0) - end);
            }
            w.try_acquire(now, 0).unwrap();
            // `remaining: 0`, next one in 50 ms: held from the sending.
            w.hold_until(now + 50 * MS);
            sent += 1;
            due = now + 50 * MS;
        }
    }

    #[test]
    fn a_slice_makes_room_for_the_lateness_seen_in_the_last() {
        // 1,200/min: 50 ms each, 5 in a slice. Sent 1.5 ms late each, the
        // schedule slips by that much per request after the first (whose
        // lateness the limiter's catch-up absorbs; the provider's answers
        // leave the others none): with 1 ms of room the last one misses
        // the slice by 4.5 ms (5.5 of lateness).
        let unit = 50 * MS;
        let (sent, overshoot) = admitted_in(251 * MS, 1_500_000);
        assert_eq!((sent, overshoot), (4, 4_500_000));
        let seen = slip_seen(overshoot, MS, unit);
        assert_eq!(seen, 5_500_000);
        // The next slice has that room (and the margin): all 5 fit. What is
        // left over reads as the lateness up to a sixth request, a little
        // more: room errs on the side of keeping the fifth.
        let room_us = (seen / 1_000) as i64 + SLIP_MARGIN_US;
        let len = slice_len_us(unit, room_us, 2_000) - 2 * 2_000;
        let (sent, overshoot) = admitted_in(len as u64 * 1_000, 1_500_000);
        assert_eq!(sent, 5);
        assert_eq!(slip_seen(overshoot, room_us as u64 * 1_000, unit), 7 * MS);
        // Requests on time leave no lateness to make room for.
        let (sent, overshoot) = admitted_in(251 * MS, 0);
        assert_eq!(sent, 5);
        assert_eq!(slip_seen(overshoot, MS, unit), 0);
    }

    #[test]
    fn a_slice_is_whole_requests_plus_its_room() {
        // 100/s: 25 requests of 10 ms.
        assert_eq!(slice_len_us(10 * MS, 3_000, 1_000), 250_000 + 3_000 + 2_000);
        // One request longer than a slice: one request.
        assert_eq!(slice_len_us(1_000 * MS, 0, 1_000), 1_000_000 + 2_000);
    }
}
