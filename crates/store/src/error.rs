//! The store's error type: every message says what failed and what to do about it.

use std::path::PathBuf;

/// Result of every store operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store's directory could not be created.
    #[error("cannot create directory {} for the store: {cause} (is the path writable?)", path.display())]
    CreateDir {
        /// The directory that could not be created.
        path: PathBuf,
        /// Why (shown in the message, not as `source()`).
        cause: std::io::Error,
    },
    /// The store could not be opened, configured or migrated.
    #[error("cannot open store at {}: {cause}{hint}", path.display())]
    Open {
        /// The database file (or, for a server, its address without credentials).
        path: PathBuf,
        /// What the user can try, starting with " (", or empty.
        hint: &'static str,
        /// The driver's error, boxed so this API names no database driver. Shown in
        /// the message rather than as `source()`, so `{:#}` prints it once.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file was migrated by a newer sluice than this one.
    #[error(
        "store at {} has schema version {found}, but this sluice only knows up to {known} \
         (upgrade sluice, or use another store)",
        path.display()
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The newest version this build can migrate to.
        known: i64,
    },
    /// SQLite did not keep WAL mode, which concurrent readers and kill -9 safety rely on.
    #[error(
        "store at {} cannot use write-ahead logging (journal mode is {mode:?}); \
         put the store on a local disk, not a network file system",
        path.display()
    )]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite reported instead of `wal`.
        mode: String,
    },
    /// A run id or name that the store does not hold.
    #[error("no run named {0} (list runs with `sluice runs`)")]
    NoSuchRun(String),
    /// `set_state` was given a state outside [`crate::RUN_STATES`].
    #[error("invalid run state {0:?} (expected running, finished or interrupted)")]
    InvalidState(String),
    /// An item status string other than `done` or `failed`.
    #[error("unknown item status {0:?} (expected done or failed)")]
    UnknownStatus(String),
    /// A number too large for the database's signed 64-bit integers.
    #[error(
        "{what} is {value}, larger than the store can hold (at most {})",
        i64::MAX
    )]
    OutOfRange {
        /// Which field.
        what: &'static str,
        /// The value given.
        value: u64,
    },
    /// A stored value that does not decode; the file was changed outside sluice.
    #[error("the store holds an invalid {what}: {detail} (was the file edited by hand?)")]
    Corrupt {
        /// Which field.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A database operation failed.
    #[error("store could not {op}: {cause}{hint}")]
    Db {
        /// What the store was doing, phrased to follow "could not".
        op: &'static str,
        /// What the user can try, starting with " (", or empty.
        hint: &'static str,
        /// The driver's error, boxed so this API names no database driver. Shown in
        /// the message rather than as `source()`, so `{:#}` prints it once.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The callback given to `for_each_item` failed; iteration stopped.
    #[error(transparent)]
    Callback(Box<dyn std::error::Error + Send + Sync>),
    /// The store cannot do what was asked (e.g. a backend this build lacks).
    #[error("{0}")]
    Unsupported(String),
}

/// Names what the store was doing when a database call failed; each backend
/// implements it for its driver's `Result`.
pub(crate) trait During<T> {
    /// Turns a driver error into [`Error::Db`] for the operation `op`
    /// (phrased to follow "could not", e.g. "record results").
    fn during(self, op: &'static str) -> Result<T>;
}
