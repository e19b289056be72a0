//! Who this process is (host, pid, start) and how fresh a heartbeat must be
//! to count as alive: the lowest layer of run ownership, used by the
//! heartbeat, the lease, run control and every view of a run.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use sluice_store::WorkerBeat;

use crate::clock::now_ms;

/// How often a working process records its heartbeat.
pub const BEAT_PERIOD: Duration = Duration::from_secs(1);

/// A beat older than this means the process is gone (killed, or its machine lost).
pub const BEAT_STALE: Duration = Duration::from_secs(15);

/// Who executes a run: the host and pid of the process, and when its
/// engine started — `worker_id` (`host:pid:started_at`) tells apart the
/// engines of one process, as it does processes.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) worker_id: String,
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) started_at: i64,
}

impl Identity {
    /// A new identity in this process, its start later than any before
    /// (two engines made in one millisecond still differ).
    pub(crate) fn new() -> Identity {
        static LAST: AtomicI64 = AtomicI64::new(0);
        let now = now_ms();
        let mut last = LAST.load(Relaxed);
        let started_at = loop {
            let next = now.max(last + 1);
            match LAST.compare_exchange(last, next, Relaxed, Relaxed) {
                Ok(_) => break next,
                Err(seen) => last = seen,
            }
        };
        let host = process().host.clone();
        let pid = process().pid;
        Identity {
            worker_id: format!("{host}:{pid}:{started_at}"),
            host,
            pid,
            started_at,
        }
    }
}

/// The process itself: its host, pid and start. No worker id — a run's
/// heartbeats and claims go by its engine's ([`Identity`]), never by this.
#[derive(Debug, Clone)]
pub(crate) struct Process {
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) started_at: i64,
}

/// The process (computed once): what leases, a control's `by` and the
/// liveness of a pid on this host go by — facts of the process, not of an
/// engine.
pub(crate) fn process() -> &'static Process {
    static ID: OnceLock<Process> = OnceLock::new();
    ID.get_or_init(|| Process {
        host: hostname(),
        pid: std::process::id(),
        started_at: now_ms(),
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A process's part in a run, read from its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// It beats: it executes the run now.
    Running,
    /// It left the run (its last beat said so).
    Stopped,
    /// It was running and is gone (killed, or its machine lost).
    Lost,
}

impl WorkerState {
    /// `running`, `stopped` or `lost`, as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Stopped => "stopped",
            WorkerState::Lost => "lost",
        }
    }
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Running`, `Stopped`, or `Lost` for a running worker that is gone: its
/// beats stopped (killed, or its machine lost), or, on this host, its
/// process no longer exists (known at once, without waiting for the beats
/// to go stale), as of `now` (unix ms).
pub fn worker_state(beat: &WorkerBeat, now: i64) -> WorkerState {
    let stale = BEAT_STALE.as_millis() as i64;
    match beat.state.as_str() {
        "running" if now - beat.beat_at > stale => WorkerState::Lost,
        "running" if beat.host == process().host && !process_exists(beat.pid) => WorkerState::Lost,
        "running" => WorkerState::Running,
        _ => WorkerState::Stopped,
    }
}

/// Whether a process with this id runs on this host. Where that cannot be
/// told (no `/proc`), it is taken to run: only a stale beat then says it
/// is gone. A reused pid only delays that until the beat is stale.
fn process_exists(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}
