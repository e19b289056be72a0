//! Latency accurate to a fraction of a millisecond.
//!
//! tokio's timer has 1 ms slots and its driver rounds its wait up again, so a
//! 100 ms `sleep` ends 1–2 ms late. At a mock latency of 100 ms that is a 1–2%
//! error in every latency-bound benchmark, charged to the client under test.
//! So the bulk of a wait uses tokio's timer and the last few milliseconds a
//! dedicated thread whose `recv_timeout` wakes within ~0.1 ms.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The part of a wait left to the precise thread.
const FINE: Duration = Duration::from_millis(3);

type Entry = (Instant, oneshot::Sender<()>);

static TIMER: OnceLock<Mutex<Sender<Entry>>> = OnceLock::new();

/// Sleeps until `deadline`, late by well under a millisecond.
pub(crate) async fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    if deadline - now > FINE {
        tokio::time::sleep_until((deadline - FINE).into()).await;
    }
    let (tx, rx) = oneshot::channel();
    let sent = TIMER
        .get_or_init(start)
        .lock()
        .map(|timer| timer.send((deadline, tx)).is_ok())
        .unwrap_or(false);
    if sent {
        let _ = rx.await;
    } else {
        // The timer thread is gone (it never is, but a mock must not hang).
        tokio::time::sleep_until(deadline.into()).await;
    }
}

fn start() -> Mutex<Sender<Entry>> {
    let (tx, rx) = channel::<Entry>();
    let spawned = std::thread::Builder::new()
        .name("mock-timer".into())
        .spawn(move || {
            // Min-heap by deadline; the counter keeps entries with equal
            // deadlines distinct without comparing senders.
            let mut due: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
            let mut waiting = std::collections::HashMap::new();
            let mut next_id = 0u64;
            loop {
                let now = Instant::now();
                while let Some(Reverse((at, id))) = due.peek().copied() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    if let Some(wake) = waiting.remove(&id) {
                        let _: Result<(), ()> = oneshot::Sender::send(wake, ());
                    }
                }
                let received = match due.peek() {
                    Some(Reverse((at, _))) => rx.recv_timeout(at.saturating_duration_since(now)),
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match received {
                    Ok((at, wake)) => {
                        due.push(Reverse((at, next_id)));
                        waiting.insert(next_id, wake);
                        next_id += 1;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        });
    if spawned.is_err() {
        // Without the thread, sends fail and callers fall back to tokio's timer.
        let (dead, _) = channel();
        return Mutex::new(dead);
    }
    Mutex::new(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_within_half_a_millisecond_of_the_deadline() {
        // Never early; and late by little more than the machine makes any
        // sleeping thread: a loaded machine wakes every thread late (by
        // milliseconds when its cores are busy), which says nothing about
        // this timer. So each wait is paired with a plain thread sleep of the
        // same length, and the best of each is compared. (tokio's timer alone
        // is 1-2 ms late on a quiet machine: it rounds up twice.)
        let (mut best, mut floor) = (Duration::MAX, Duration::MAX);
        for _ in 0..10 {
            for ms in [1u64, 5, 20, 40] {
                let deadline = Instant::now() + Duration::from_millis(ms);
                sleep_until(deadline).await;
                let now = Instant::now();
                assert!(now >= deadline, "woke before the deadline");
                best = best.min(now - deadline);
                let asleep = Instant::now();
                std::thread::sleep(Duration::from_millis(ms));
                floor = floor.min(asleep.elapsed() - Duration::from_millis(ms));
            }
        }
        assert!(
            best < floor + Duration::from_micros(500),
            "at best {best:?} late, where a sleeping thread was {floor:?} late"
        );
    }
}
