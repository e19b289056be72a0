//! One process executes a run at a time: the executor lease on the run's
//! resume key, taken before the run is found or created (so two processes
//! started together cannot both create it), renewed every second by a keeper
//! thread, and given up when the run ends. A lease whose holder stopped
//! renewing lapses after its time-to-live; on the holder's own machine a
//! dead process is noticed at once.
//!
//! Runs shared by workers on PostgreSQL take no executor lease: their units
//! are leased one by one (`job/claimed.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_store::{Lease, LeaseHolder, Store, StoreLocation};

use crate::control::RunControl;
use crate::error::{Busy, Error, Result};
use crate::identity::{process, BEAT_PERIOD};

/// The lease this process holds on one run's execution; given up on drop.
pub(crate) struct ExecutorLease {
    keeper: Option<JoinHandle<()>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// Set when the lease was lost (this process stalled past its
    /// time-to-live and another took the run over).
    lost: Arc<AtomicBool>,
    /// Cancelled when the lease is lost, once the run has a control.
    control: Arc<Mutex<Option<Arc<RunControl>>>>,
    /// Whose lease this process took over (its holder was gone), for messages.
    took_over: Option<Lease>,
}

impl ExecutorLease {
    /// Takes the lease on `key` (a run's source) in `location` for `ttl`,
    /// or fails with [`Error::Busy`] naming the live holder. A holder on
    /// this machine whose process is gone is replaced at once.
    pub(crate) fn acquire(
        location: &StoreLocation,
        store: &mut dyn Store,
        key: &str,
        ttl: Duration,
    ) -> Result<ExecutorLease> {
        let me = holder();
        let mut took_over = None;
        let mut replace: Option<String> = None;
        // At most twice: once as asked, once more replacing a dead holder.
        for _ in 0..2 {
            match store.acquire_lease(key, &me, ttl, replace.as_deref())? {
                None => return Ok(ExecutorLease::keep(location, key, me, ttl, took_over)),
                Some(held) if replace.is_none() && holder_gone(&held.holder) => {
                    replace = Some(held.holder.holder.clone());
                    took_over = Some(held);
                }
                Some(held) => {
                    let run = store.latest_run_for_source(key)?.map(|r| r.id);
                    return Err(Error::Busy(Box::new(Busy {
                        run,
                        lease: held,
                        ttl,
                        store: location.to_string(),
                    })));
                }
            }
        }
        Err(Error::Config(
            "the run's lease changed hands while this process was taking it over; run again".into(),
        ))
    }

    /// Starts the keeper thread, with a connection of its own.
    fn keep(
        location: &StoreLocation,
        key: &str,
        me: LeaseHolder,
        ttl: Duration,
        took_over: Option<Lease>,
    ) -> ExecutorLease {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let lost = Arc::new(AtomicBool::new(false));
        let control: Arc<Mutex<Option<Arc<RunControl>>>> = Arc::default();
        let keeper = {
            let (location, key) = (location.clone(), key.to_owned());
            let (stop, lost, control) = (stop.clone(), lost.clone(), control.clone());
            std::thread::Builder::new()
                .name("sluice-lease".into())
                .spawn(move || keeper(&location, &key, &me.holder, ttl, &stop, &lost, &control))
                .ok()
        };
        if keeper.is_none() {
            tracing::warn!("could not start the thread that renews the run's lease");
        }
        ExecutorLease {
            keeper,
            stop,
            lost,
            control,
            took_over,
        }
    }

    /// The host and pid of the process this one took the run over from
    /// (gone without giving it up).
    pub(crate) fn took_over(&self) -> Option<(String, u32)> {
        self.took_over
            .as_ref()
            .map(|l| (l.holder.host.clone(), l.holder.pid))
    }

    /// From now on a lost lease cancels the run like Ctrl-C.
    pub(crate) fn guard(&self, run: Arc<RunControl>) {
        if self.lost.load(Relaxed) {
            run.cancel();
        }
        if let Ok(mut slot) = self.control.lock() {
            *slot = Some(run);
        }
    }
}

impl Drop for ExecutorLease {
    fn drop(&mut self) {
        let (flag, wake) = &*self.stop;
        if let Ok(mut stopped) = flag.lock() {
            *stopped = true;
        }
        wake.notify_all();
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// Renews the lease every beat until told to stop, then gives it up.
fn keeper(
    location: &StoreLocation,
    key: &str,
    me: &str,
    ttl: Duration,
    stop: &(Mutex<bool>, Condvar),
    lost: &AtomicBool,
    control: &Mutex<Option<Arc<RunControl>>>,
) {
    let mut store = match location.open() {
        Ok(store) => store,
        Err(e) => {
            tracing::warn!("cannot renew the run's lease: {e}");
            return;
        }
    };
    let (flag, wake) = stop;
    let Ok(mut stopped) = flag.lock() else { return };
    // Since when renewals fail (a busy or full store): warned about once
    // half the lease is gone, when another process could soon take over.
    let mut failing_since: Option<std::time::Instant> = None;
    let mut warned = false;
    loop {
        let Ok((guard, _)) = wake.wait_timeout(stopped, BEAT_PERIOD) else {
            return;
        };
        stopped = guard;
        if *stopped {
            break;
        }
        match store.renew_lease(key, me, ttl) {
            Ok(true) => {
                failing_since = None;
                warned = false;
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                if !warned && since.elapsed() >= ttl / 2 {
                    warned = true;
                    tracing::warn!(
                        "could not renew this process's hold on the run for {:.0} s ({e}); \
                         if it lapses another process may take the run over",
                        since.elapsed().as_secs_f64()
                    );
                }
            }
            Ok(false) => {
                tracing::error!(
                    "this process lost its hold on the run (it stalled past --lease and \
                     another process took the run over): stopping"
                );
                lost.store(true, Relaxed);
                if let Some(run) = control.lock().ok().and_then(|c| c.clone()) {
                    run.cancel();
                }
                return;
            }
        }
    }
    if let Err(e) = store.release_lease(key, me) {
        // Nothing to act on: once this process is gone the next run on
        // this machine takes the run over at once (elsewhere: it lapses).
        // The store's failure, if it matters, was reported by the run.
        tracing::debug!("could not release the run's lease: {e}");
    }
}

/// This execution's identity in the lease table: unique per acquisition,
/// so two runs in one process (a server) never mistake each other's lease.
fn holder() -> LeaseHolder {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = process();
    LeaseHolder {
        holder: format!(
            "{}:{}:{}#{}",
            id.host,
            id.pid,
            id.started_at,
            NEXT.fetch_add(1, Relaxed)
        ),
        host: id.host.clone(),
        pid: id.pid,
        machine: machine().to_owned(),
        pid_start: process_start(id.pid),
    }
}

/// Where a pid names one process: this boot of this machine, this pid
/// namespace. Empty where the system does not say (then no holder is ever
/// judged gone by its pid, only by its lease lapsing).
fn machine() -> &'static str {
    static MACHINE: OnceLock<String> = OnceLock::new();
    MACHINE.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id");
        let ns = std::fs::read_link("/proc/self/ns/pid");
        match (boot, ns) {
            (Ok(boot), Ok(ns)) => format!("{}/{}", boot.trim(), ns.display()),
            _ => String::new(),
        }
    })
}

/// A process's start time in clock ticks since boot, and whether it has
/// exited (a zombie not yet reaped), from `/proc/PID/stat`.
fn process_stat(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let exited = matches!(fields.first(), Some(&"Z" | &"X"));
    // Field 22 of the file is the 20th after the command name.
    let start = fields.get(19)?.parse().ok()?;
    Some((start, exited))
}

fn process_start(pid: u32) -> Option<u64> {
    process_stat(pid).map(|(start, _)| start)
}

/// Whether `holder` is certainly gone: on this machine, and its pid is no
/// longer that process. Elsewhere nothing is certain: its lease must lapse.
fn holder_gone(holder: &LeaseHolder) -> bool {
    let here = machine();
    if here.is_empty() || holder.machine != here {
        return false;
    }
    match process_stat(holder.pid) {
        None => true,
        Some((_, true)) => true,
        Some((start, false)) => holder.pid_start.is_some_and(|s| s != start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not_its_holder() {
        let me = holder();
        assert!(me.pid_start.is_some(), "/proc is readable here");
        assert!(!holder_gone(&me));
        let reused = LeaseHolder {
            pid_start: me.pid_start.map(|s| s + 1),
            ..me.clone()
        };
        assert!(holder_gone(&reused));
        let elsewhere = LeaseHolder {
            machine: "other-boot/pid:[1]".into(),
            pid: u32::MAX - 1,
            ..me.clone()
        };
        assert!(
            !holder_gone(&elsewhere),
            "another machine's pid says nothing"
        );
        let exited = LeaseHolder {
            pid: u32::MAX - 1,
            ..me
        };
        assert!(holder_gone(&exited));
    }

    #[test]
    fn a_second_execution_is_refused_naming_the_holder_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::from(dir.path().join("s.db"));
        let mut store = location.open().unwrap();
        let ttl = Duration::from_secs(30);
        let first = ExecutorLease::acquire(&location, &mut *store, "src", ttl).unwrap();
        assert!(first.took_over.is_none());
        let Err(Error::Busy(busy)) = ExecutorLease::acquire(&location, &mut *store, "src", ttl)
        else {
            panic!("a second execution got the lease");
        };
        let text = busy.to_string();
        let pid = format!("pid {}", std::process::id());
        assert!(text.contains(&pid), "{text}");
        assert!(text.contains("sluice cancel"), "{text}");
        drop(first);
        assert!(store.lease("src").unwrap().is_none(), "released on drop");
        drop(ExecutorLease::acquire(&location, &mut *store, "src", ttl).unwrap());
    }

    #[test]
    fn a_dead_holder_on_this_machine_is_replaced_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::from(dir.path().join("s.db"));
        let mut store = location.open().unwrap();
        let dead = LeaseHolder {
            holder: "gone".into(),
            pid: u32::MAX - 1,
            ..holder()
        };
        let long = Duration::from_secs(600);
        assert!(store
            .acquire_lease("src", &dead, long, None)
            .unwrap()
            .is_none());
        let lease = ExecutorLease::acquire(&location, &mut *store, "src", long).unwrap();
        assert_eq!(lease.took_over.as_ref().unwrap().holder.holder, "gone");
    }
}
