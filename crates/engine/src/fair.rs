//! A fair turn between runs: waiters queue per run (tenant) and the turn
//! passes round-robin between runs, so one run with thousands of waiting
//! calls cannot push a small run to the back of one long line.
//!
//! Used where calls of several runs in one process meet: a shared provider's
//! concurrency gate and its rate limiter (`job/sharing.rs`). With one run it
//! is a plain FIFO turn, like the mutex it replaced.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use tokio::sync::oneshot;

/// Who waits: one id per run (quick mode and tests use 0).
pub(crate) type Tenant = u64;

/// A fresh tenant id for a run starting in this process.
pub(crate) fn new_tenant() -> Tenant {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Relaxed)
}

#[derive(Default)]
struct State {
    held: bool,
    waiting: BTreeMap<Tenant, VecDeque<oneshot::Sender<()>>>,
    /// The tenant served last; the next turn goes to the next one after it.
    last: Tenant,
}

/// One turn at a time, handed round-robin between tenants.
#[derive(Default)]
pub(crate) struct FairTurn {
    state: Mutex<State>,
}

/// Holding the turn; dropping it passes the turn on.
pub(crate) struct Turn<'a>(&'a FairTurn);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.pass();
    }
}

/// A queued waiter; dropped before it took its turn, it passes a turn it was
/// already handed to the next waiter (so a cancelled call loses nothing).
struct Waiting<'a> {
    turn: &'a FairTurn,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.turn.pass();
            }
        }
    }
}

impl FairTurn {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether nobody holds or waits for the turn (callers may skip it).
    pub(crate) fn is_idle(&self) -> bool {
        let state = self.lock();
        !state.held && state.waiting.is_empty()
    }

    /// Waits for the turn of `tenant`.
    pub(crate) async fn take(&self, tenant: Tenant) -> Turn<'_> {
        let rx = {
            let mut state = self.lock();
            if !state.held && state.waiting.is_empty() {
                state.held = true;
                state.last = tenant;
                return Turn(self);
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.entry(tenant).or_default().push_back(tx);
            rx
        };
        let mut waiting = Waiting {
            turn: self,
            rx: Some(rx),
        };
        if let Some(rx) = waiting.rx.as_mut() {
            // The sender is only dropped unsent by `pass`, which never does.
            let _ = rx.await;
        }
        waiting.rx = None;
        Turn(self)
    }

    /// Hands the turn to the first waiter of the next tenant after the last
    /// one served (wrapping), or frees it.
    fn pass(&self) {
        let mut state = self.lock();
        loop {
            let last = state.last;
            let next = state
                .waiting
                .range((Bound::Excluded(last), Bound::Unbounded))
                .next()
                .or_else(|| state.waiting.iter().next())
                .map(|(t, _)| *t);
            let Some(tenant) = next else {
                state.held = false;
                return;
            };
            let queue = state.waiting.get_mut(&tenant).expect("tenant just found");
            let waiter = queue.pop_front();
            if queue.is_empty() {
                state.waiting.remove(&tenant);
            }
            state.last = tenant;
            if let Some(tx) = waiter {
                if tx.send(()).is_ok() {
                    state.held = true;
                    return;
                }
                // That waiter gave up; try the next one.
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn turns_alternate_between_tenants() {
        let turn = Arc::new(FairTurn::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = turn.take(1).await;
        let mut tasks = Vec::new();
        // 50 waiters of a big run queue before 3 of a small one.
        for (tenant, n) in [(1u64, 50), (2u64, 3)] {
            for _ in 0..n {
                let (turn, order) = (turn.clone(), order.clone());
                tasks.push(tokio::spawn(async move {
                    let _t = turn.take(tenant).await;
                    order.lock().unwrap().push(tenant);
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }));
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 53);
        let small_done_at = order.iter().rposition(|&t| t == 2).unwrap();
        // Round-robin: the small run's 3 are served within its first 6 turns,
        // not after the 50 that queued first.
        assert!(small_done_at < 6, "{order:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_passes_the_turn_on() {
        let turn = Arc::new(FairTurn::default());
        let held = turn.take(1).await;
        let quitter = {
            let turn = turn.clone();
            tokio::spawn(async move {
                let _t = turn.take(1).await;
            })
        };
        tokio::task::yield_now().await;
        let next = {
            let turn = turn.clone();
            tokio::spawn(async move {
                let _t = turn.take(2).await;
            })
        };
        tokio::task::yield_now().await;
        quitter.abort();
        let _ = quitter.await;
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(1), next)
            .await
            .expect("the turn reached the next waiter")
            .unwrap();
        assert!(turn.is_idle());
    }
}
