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
    /// A flag or setting is wrong.
    #[error("{0}")]
    Config(String),
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
    Busy(Box<crate::lease::Busy>),
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
                | Error::Unreachable { .. }
                | Error::Read { .. }
                | Error::Busy(_)
        )
    }
}

fn more_errors(others: u64) -> String {
    match others {
        0 => " (nothing was sent; fix the line, or pass --skip-bad to record it as failed and run the rest)".to_string(),
        n => format!(" (and {n} more bad line{}; nothing was sent; fix them, or pass --skip-bad to record them as failed and run the rest)", if n == 1 { "" } else { "s" }),
    }
}
