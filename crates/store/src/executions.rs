//! The values of one execution of a run: the lease of the process executing
//! it, and the list of items its current input holds (what exports and
//! counts follow).

use serde::Serialize;

use crate::ItemRecord;

/// The process that holds (or asks for) a run's executor lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseHolder {
    /// Unique per execution, e.g. `<host>:<pid>:<started_at>#<n>`.
    pub holder: String,
    /// Host name, for messages.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Boot id and pid namespace: a process with the same `machine` can
    /// check whether `pid` is still this holder.
    pub machine: String,
    /// The process's start time (clock ticks since boot), so a reused pid is
    /// not mistaken for the holder; `None` where the system does not say.
    pub pid_start: Option<u64>,
}

/// A lease as stored: who holds the run's execution, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The resume key the lease is on (a run's `source`).
    pub key: String,
    /// Who holds it.
    pub holder: LeaseHolder,
    /// When the holder took it, unix ms (the store's clock).
    pub acquired_at: i64,
    /// Its last renewal (the holder's last heartbeat), unix ms.
    pub renewed_at: i64,
    /// When it lapses unless renewed, unix ms.
    pub expires_at: i64,
    /// The store's clock when this was read, to compare the others with.
    pub now: i64,
}

impl Lease {
    /// Whether it lapsed (its holder stopped renewing it).
    pub fn expired(&self) -> bool {
        self.expires_at <= self.now
    }
}

/// One item of a run's input: its id, position and request hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRow {
    /// The item's id (as in its record).
    pub item_id: String,
    /// Its position in the input.
    pub idx: u64,
    /// The hash of its request now; a record with another hash answers an
    /// earlier version of the line.
    pub hash: u64,
}

/// What [`crate::Store::replace_inputs`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InputCounts {
    /// Items in the input.
    pub total: u64,
    /// Of them, done with the same request (nothing to send).
    pub done: u64,
}

/// One line of a run's results, in input order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The item's outcome, for its request as the input holds it now (`idx`
    /// is its current position).
    Recorded(ItemRecord),
    /// The item has no outcome for its current request yet.
    Pending {
        /// The item's id.
        item_id: String,
        /// Its position in the input.
        idx: u64,
    },
}
