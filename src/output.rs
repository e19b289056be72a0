//! Data on stdout (results, `--json`, status) written so that a closed
//! stdout (`sluice export RUN | head`) ends the command quietly instead of
//! panicking or printing an error.

use std::io::Write;

/// `println!` for data: ends the process quietly (exit 0) when stdout is
/// closed.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for data, like [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

/// Writes to stdout; a closed pipe ends the process with success (whoever
/// read it wanted no more), another error with a message.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Whether `error` comes from writing to a closed stdout (or other pipe).
pub(crate) fn closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `{:#}` of `error` without a cause its message already includes (an
/// error that shows its source would otherwise print it twice).
pub(crate) fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "Broken pipe");
        let error = anyhow::Error::from(sluice_engine::Error::Write {
            path: "output".into(),
            source: io,
        });
        assert_eq!(describe(&error), "cannot write output: Broken pipe");
        assert!(closed_pipe(&error));
        let other = anyhow::anyhow!("disk full").context("writing results");
        assert_eq!(describe(&other), "writing results: disk full");
        assert!(!closed_pipe(&other));
    }
}
