//! The value a process makes once and hands to every run it starts: what
//! the runs of one process share — their providers' limiters, gates and
//! endpoint pools (`job/sharing.rs` says when two providers are the same),
//! the process's call totals per provider and step, and the warnings said
//! once. Two engines in one process (tests, an embedder) share none of it.

use std::any::Any;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

use crate::identity::Identity;
use crate::meter::CallCounts;
use crate::stats::{ProcessTotals, ProviderReport, ProviderView};

/// What the runs of one process share. Cheap to clone: clones are the same
/// engine.
#[derive(Clone, Default)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    /// The providers some run holds now, by what makes two the same.
    providers: Mutex<Vec<Held>>,
    /// Calls per (provider, step), cumulative across the runs.
    totals: Arc<ProcessTotals>,
    /// Warnings already said (each once per engine).
    said: Mutex<HashSet<String>>,
    /// Who executes its runs (their heartbeats, claims and shared limits).
    identity: Identity,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            providers: Mutex::default(),
            totals: Arc::default(),
            said: Mutex::default(),
            identity: Identity::new(),
        }
    }
}

/// A provider share some run holds: weak, so it goes when the last run
/// using it ends and the next run starts afresh.
struct Held {
    key: String,
    name: String,
    share: Weak<dyn Any + Send + Sync>,
    view: Weak<dyn ProviderView>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// A new engine, sharing nothing with any other.
    pub fn new() -> Engine {
        Engine::default()
    }

    /// The share held under `key` by a run of this engine, else a new one
    /// from `make` (named `name` in the process's list of providers).
    pub(crate) fn share<T: ProviderView + Any + Send + Sync>(
        &self,
        key: String,
        name: &str,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let mut held = lock(&self.inner.providers);
        held.retain(|h| h.share.strong_count() > 0);
        if let Some(existing) = held
            .iter()
            .filter(|h| h.key == key)
            .find_map(|h| h.share.upgrade()?.downcast::<T>().ok())
        {
            return existing;
        }
        let share = Arc::new(make());
        let any: Arc<dyn Any + Send + Sync> = share.clone();
        let view: Arc<dyn ProviderView> = share.clone();
        held.push(Held {
            key,
            name: name.to_owned(),
            share: Arc::downgrade(&any),
            view: Arc::downgrade(&view),
        });
        share
    }

    /// Every provider some run of this engine uses now.
    pub fn process_providers(&self) -> Vec<ProviderReport> {
        lock(&self.inner.providers)
            .iter()
            .filter_map(|h| Some(h.view.upgrade()?.report(&h.name)))
            .collect()
    }

    /// This engine's call totals per (provider, step), across its runs.
    pub fn process_calls(&self) -> Vec<(String, String, CallCounts)> {
        self.inner.totals.counts()
    }

    /// Who executes its runs: the worker id of their heartbeats and claims.
    pub(crate) fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// The totals its runs' statistics count into.
    pub(crate) fn totals(&self) -> &Arc<ProcessTotals> {
        &self.inner.totals
    }

    /// True the first time `what` is asked of this engine: for warnings
    /// every call of a step would repeat.
    pub(crate) fn first_time(&self, what: String) -> bool {
        lock(&self.inner.said).insert(what)
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(&'static str);

    impl ProviderView for Fake {
        fn report(&self, name: &str) -> ProviderReport {
            ProviderReport {
                name: format!("{name}/{}", self.0),
                in_flight: 0,
                on_wire: 0,
                concurrency: None,
                limits: crate::stats::Limits::default(),
                announced: vec![],
                used_rpm: 0.0,
                used_tpm: 0.0,
                rate_waiting: false,
                endpoints: vec![],
            }
        }
    }

    #[test]
    fn shares_are_found_by_key_while_held_and_per_engine() {
        let one = Engine::new();
        let a = one.share("k".into(), "p", || Fake("a"));
        let b = one.share("k".into(), "p", || Fake("b"));
        assert!(Arc::ptr_eq(&a, &b));
        let other = Engine::new();
        let c = other.share("k".into(), "p", || Fake("c"));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(one.process_providers().len(), 1);
        drop((a, b));
        assert!(one.process_providers().is_empty());
        let again = one.share("k".into(), "p", || Fake("d"));
        assert_eq!(again.0, "d");
        assert!(one.first_time("w".into()) && !one.first_time("w".into()));
        assert!(other.first_time("w".into()));
        // Each engine executes runs under a worker id of its own.
        let (a, b) = (one.identity(), other.identity());
        assert_ne!(a.worker_id, b.worker_id);
        assert_eq!((a.pid, &a.host), (b.pid, &b.host));
        assert_eq!(one.clone().identity().worker_id, a.worker_id);
    }
}
