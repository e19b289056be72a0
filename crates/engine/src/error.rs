//! Errors that stop a run before or while it starts (bad input, bad flags, store).

use std::path::PathBuf;

/// A result with the engine's error.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a run could not start or finish. Per-item failures are not errors: they
/// are recorded with the item.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input line that cannot become a request (strict mode stops on it).
    #[error("{path}:{line}: {message}{more}", more = more_errors(*.others))]
    BadLine {
        /// The input file.
        path: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        message: String,
        /// How many further bad lines were found.
        others: u64,
    },
    /// The input could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The input file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A flag or setting is wrong (configuration: exit code 2).
    #[error("{0}")]
    Config(String),
    /// The input's items cannot be read or do not fit the job (exit code 2,
    /// nothing was sent).
    #[error("{0}")]
    Input(String),
    /// This machine could not do its part: the async runtime did not start,
    /// a store connection went away mid-run (exit code 1: not the user's
    /// input).
    #[error("{0}")]
    Runtime(String),
    /// Some units cannot render a template with the input's items (found
    /// before anything is sent).
    #[error("{0}")]
    Templates(Box<crate::check_report::CheckReport>),
    /// The target host does not accept connections.
    #[error("cannot reach {host} ({reason}); check --url and that the server is running. Nothing was sent.")]
    Unreachable {
        /// host:port
        host: String,
        /// The connect error.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] sluice_store::Error),
    /// Another process executes the run (it holds the run's lease).
    #[error("{0}")]
    Busy(Box<Busy>),
    /// The store stopped recording in the middle of a run: sending stopped
    /// at once, and what was committed before stays.
    #[error(
        "{cause}; sending stopped at once: every result recorded before stays{}; \
         fix the store (free space, reach the database) and run the same command again \
         to send the rest",
        lost_answers(*lost)
    )]
    StoreFailed {
        /// The store's own error (shown in the message, not as `source()`,
        /// so `{:#}` prints it once).
        cause: sluice_store::Error,
        /// Answers received (paid for) that could not be recorded: the
        /// failed commit's and those of the calls on the wire then.
        lost: u64,
    },
    /// The run stopped sending on its own: its first calls all failed the
    /// same way no retry can fix. The message says how and what to do.
    #[error("{0}")]
    StoppedEarly(String),
    /// The output file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether this is the user's input or flags (exit code 2: nothing was sent).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::BadLine { .. }
                | Error::Config(_)
                | Error::Input(_)
                | Error::Templates(_)
                | Error::Unreachable { .. }
                | Error::Read { .. }
                | Error::Busy(_)
        )
    }

    /// The process's exit code for this error: 2 for configuration and
    /// input (nothing was sent; fix and rerun), 1 for the store and the
    /// runtime.
    pub fn exit_code(&self) -> u8 {
        if self.is_invalid_input() {
            2
        } else {
            1
        }
    }
}

fn lost_answers(lost: u64) -> String {
    match lost {
        0 => String::new(),
        1 => ", but 1 answer received after the last commit could not be recorded".into(),
        n => format!(", but {n} answers received after the last commit could not be recorded"),
    }
}

fn more_errors(others: u64) -> String {
    match others {
        0 => " (nothing was sent; fix the line, or pass --skip-bad to record it as failed and run the rest)".to_string(),
        n => format!(" (and {n} more bad line{}; nothing was sent; fix them, or pass --skip-bad to record them as failed and run the rest)", if n == 1 { "" } else { "s" }),
    }
}

/// Why a second process may not execute a run now.
#[derive(Debug)]
pub struct Busy {
    /// The run being executed, if it exists yet.
    pub run: Option<String>,
    /// The live lease.
    pub lease: sluice_store::Lease,
    /// This process's lease time-to-live (what the holder's would be too).
    pub ttl: std::time::Duration,
    /// The store, for the commands the message suggests.
    pub store: String,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = &self.lease.holder;
        let secs = |ms: i64| format!("{:.1} s", ms.max(0) as f64 / 1000.0);
        let run = self.run.as_deref().unwrap_or("this input");
        let name = self.run.as_deref().unwrap_or("RUN");
        write!(
            f,
            "{run} is being executed by pid {} on {} (for {}, last heartbeat {} ago); nothing \
             was sent. Wait for it to end (`sluice status {name} --store {store}` shows its \
             progress) or stop it (`sluice cancel {name} --store {store}`). If that process \
             crashed, run this again once its hold lapses, {} after its last heartbeat (in {}); \
             on {} a dead process is noticed at once",
            h.pid,
            h.host,
            secs(self.lease.now - self.lease.acquired_at),
            secs(self.lease.now - self.lease.renewed_at),
            secs(self.ttl.as_millis() as i64),
            secs(self.lease.expires_at - self.lease.now),
            h.host,
            store = self.store,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_and_input_exit_2_the_store_and_the_runtime_exit_1() {
        let store = sluice_store::Error::CreateDir {
            path: "/x".into(),
            cause: std::io::Error::other("read-only"),
        };
        for (error, code) in [
            (Error::Config("--concurrency must be at least 1".into()), 2),
            (Error::Input("items.csv: line 3: bad".into()), 2),
            (Error::Store(store), 1),
            (
                Error::Runtime("cannot start the async runtime: no threads".into()),
                1,
            ),
            (Error::StoppedEarly("every call failed alike".into()), 1),
        ] {
            assert_eq!(error.exit_code(), code, "{error}");
            assert_eq!(error.is_invalid_input(), code == 2, "{error}");
        }
    }
}
