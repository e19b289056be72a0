//! `kind = "command"` steps: a local program per unit, run without a shell,
//! its output captured (capped) and the process killed on time-out.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use minijinja::Value;
use serde_json::Value as Json;
use sluice_spec::{RenderError, Template};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{placeholder_text, StepRules, Transport};
use crate::job::output::{parse_json_text, StepOutput};

/// A command step's fields.
pub(crate) struct Command<'a> {
    /// Program and arguments (no shell).
    pub(super) argv: &'a [Template],
    /// Written to the program's standard input.
    pub(super) stdin: Option<&'a Template>,
}

/// A command step rendered for one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandLine {
    /// The program, then its arguments.
    pub(crate) argv: Vec<String>,
    /// What its standard input gets; `None`: an empty one.
    pub(crate) stdin: Option<String>,
}

impl<'a> StepRules<'a> for Command<'a> {
    fn transport(&self) -> Transport {
        Transport::Command
    }

    fn default_latency(&self) -> f64 {
        1.0
    }

    fn templates(&self) -> Vec<&'a Template> {
        self.argv.iter().chain(self.stdin).collect()
    }

    /// Never: a probe would run the user's program.
    fn probe_templates(&self) -> Option<Vec<&'a Template>> {
        None
    }

    fn fingerprint_parts(
        &self,
        ctx: &minijinja::Value,
        parts: &mut Vec<Json>,
    ) -> Result<(), RenderError> {
        let line = self.render(ctx)?;
        parts.extend(line.argv.into_iter().map(Json::String));
        parts.extend(line.stdin.map(Json::String));
        Ok(())
    }

    fn command_line(&self, ctx: &minijinja::Value) -> Option<Result<CommandLine, RenderError>> {
        Some(self.render(ctx))
    }

    fn output_fields(&self, path: &str, fields: &mut BTreeMap<&'static str, Value>) {
        fields.insert("text", placeholder_text(path));
        fields.insert("status", Value::from(0));
    }
}

impl Command<'_> {
    fn render(&self, ctx: &minijinja::Value) -> Result<CommandLine, RenderError> {
        Ok(CommandLine {
            argv: self
                .argv
                .iter()
                .map(|t| t.render(ctx))
                .collect::<Result<_, _>>()?,
            stdin: self.stdin.map(|t| t.render(ctx)).transpose()?,
        })
    }
}

/// Most bytes kept from each of stdout and stderr.
const CAP: usize = 16 * 1024 * 1024;
/// Bytes of stderr quoted when the program fails.
const TAIL: usize = 2048;

/// What a program produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandOutput {
    /// Standard output (invalid UTF-8 replaced by U+FFFD).
    pub(crate) stdout: String,
    /// Standard error, likewise.
    pub(crate) stderr: String,
    /// Exit code (0: the only code that is not a failure).
    pub(crate) code: i32,
}

impl CommandOutput {
    /// The output as `steps.<name>` holds it: stdout as `.text` (and `.json`
    /// when it parses), the exit code as `.status`.
    pub(crate) fn into_step_output(self) -> StepOutput {
        StepOutput {
            json: parse_json_text(&self.stdout),
            text: Some(self.stdout),
            status: Some(i64::from(self.code)),
            ..Default::default()
        }
    }
}

/// Why a command step failed for one unit.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    /// `argv` rendered to nothing.
    #[error("the command is empty; give argv with the program first")]
    Empty,
    /// The program does not exist.
    #[error("program {program:?} not found; install it, or give its full path as argv[0]")]
    NotFound {
        /// The program (`argv[0]`).
        program: String,
    },
    /// The program exists but could not be started (permissions, …).
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program (`argv[0]`).
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error("{program:?} failed ({status}); its stderr ends: {stderr_tail:?}")]
    Failed {
        /// The program (`argv[0]`).
        program: String,
        /// The exit code; -1 when killed by a signal.
        code: i32,
        /// How it ended, e.g. `exit status: 2` or `signal: 9 (SIGKILL)`.
        status: String,
        /// The last 2 KB of stderr.
        stderr_tail: String,
    },
    /// It ran longer than the step's time-out and was killed.
    #[error("{program:?} did not finish within {timeout:?} and was killed; raise the step's timeout if it needs longer")]
    Timeout {
        /// The program (`argv[0]`).
        program: String,
        /// The time-out.
        timeout: Duration,
    },
    /// It wrote more than 16 MB to stdout or stderr, and was killed.
    #[error("{program:?} wrote more than 16 MB to {stream} and was killed; write large results to a file and print its path")]
    TooMuch {
        /// The program (`argv[0]`).
        program: String,
        /// `stdout` or `stderr`.
        stream: &'static str,
    },
    /// Reading its output failed.
    #[error("reading the output of {program:?}: {source}")]
    Io {
        /// The program (`argv[0]`).
        program: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Runs `argv[0]` with `argv[1..]` (no shell), writing `stdin` to it if given
/// (else its stdin is empty), capturing stdout and stderr (16 MB each at
/// most), and killing it (and waiting for it) after `timeout`.
pub(crate) async fn run(
    argv: &[String],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<CommandOutput, CommandError> {
    let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
        return Err(CommandError::Empty);
    };
    let mut child = tokio::process::Command::new(program)
        .args(&argv[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => CommandError::NotFound {
                program: program.clone(),
            },
            _ => CommandError::Spawn {
                program: program.clone(),
                source,
            },
        })?;
    let input = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let write = async {
        if let (Some(mut pipe), Some(text)) = (input, stdin) {
            // A program that exits without reading all its input closes the
            // pipe; that is its business, its exit code tells.
            let _ = pipe.write_all(text.as_bytes()).await;
        }
        Ok(())
    };
    let work = async {
        let ((), out, err, status) = tokio::try_join!(
            write,
            read_capped(stdout, program, "stdout"),
            read_capped(stderr, program, "stderr"),
            async {
                child.wait().await.map_err(|source| CommandError::Io {
                    program: program.clone(),
                    source,
                })
            },
        )?;
        Ok::<_, CommandError>((out, err, status))
    };
    let finished = tokio::time::timeout(timeout, work).await;
    let (out, err, status) = match finished {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            let _ = child.kill().await;
            return Err(e);
        }
        Err(_) => {
            let _ = child.kill().await;
            return Err(CommandError::Timeout {
                program: program.clone(),
                timeout,
            });
        }
    };
    let code = status.code().unwrap_or(-1);
    if !status.success() {
        let start = err.len().saturating_sub(TAIL);
        return Err(CommandError::Failed {
            program: program.clone(),
            code,
            status: status.to_string(),
            stderr_tail: String::from_utf8_lossy(&err[start..]).trim().to_string(),
        });
    }
    Ok(CommandOutput {
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        code,
    })
}

/// Reads `pipe` to its end, failing past [`CAP`] bytes.
async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin>,
    program: &str,
    stream: &'static str,
) -> Result<Vec<u8>, CommandError> {
    let mut out = Vec::new();
    let Some(pipe) = pipe else {
        return Ok(out);
    };
    // One byte past the cap tells "exactly 16 MB" from "more".
    let n = pipe
        .take(CAP as u64 + 1)
        .read_to_end(&mut out)
        .await
        .map_err(|source| CommandError::Io {
            program: program.to_string(),
            source,
        })?;
    if n > CAP {
        return Err(CommandError::TooMuch {
            program: program.to_string(),
            stream,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_command_line_renders_argv_and_stdin() {
        use serde_json::json;
        let step = super::super::test_step(
            "kind = \"command\"\ncommand = [\"wc\", \"-c\", \"{{ item.f }}\"]\nstdin = \"{{ item.n }}\"",
        );
        let rules = super::super::of(&step.kind);
        let line = rules
            .command_line(&super::super::test_ctx(json!({"f": "a b", "n": 3})))
            .unwrap()
            .unwrap();
        assert_eq!(line.argv, ["wc", "-c", "a b"]);
        assert_eq!(line.stdin.as_deref(), Some("3"));
        assert!(rules.probe_templates().is_none());
        let e = rules
            .command_line(&super::super::test_ctx(json!({})))
            .unwrap();
        assert!(e.is_err());
    }

    #[test]
    fn stdout_is_text_and_json_when_it_parses() {
        let out = CommandOutput {
            stdout: "{\"n\": 2}\n".into(),
            stderr: "noise".into(),
            code: 0,
        }
        .into_step_output();
        assert_eq!(out.json, Some(serde_json::json!({"n": 2})));
        assert_eq!(
            (out.text.as_deref(), out.status),
            (Some("{\"n\": 2}\n"), Some(0))
        );
    }

    #[tokio::test]
    async fn echo_and_cat_round_trip() {
        let out = run(
            &argv(&["echo", "hello", "world"]),
            None,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(
            out,
            CommandOutput {
                stdout: "hello world\n".into(),
                stderr: String::new(),
                code: 0
            }
        );
        let out = run(
            &argv(&["cat"]),
            Some("line 1\nline 2"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(out.stdout, "line 1\nline 2");
    }

    #[tokio::test]
    async fn non_zero_exit_quotes_the_end_of_stderr() {
        let script = "printf 'x%.0s' $(seq 3000) >&2; echo ' the end' >&2; exit 3";
        let e = run(&argv(&["sh", "-c", script]), None, Duration::from_secs(10))
            .await
            .unwrap_err();
        let CommandError::Failed {
            code, stderr_tail, ..
        } = &e
        else {
            panic!("{e}")
        };
        assert_eq!(*code, 3);
        assert!(stderr_tail.ends_with("x the end"), "{stderr_tail}");
        assert!(stderr_tail.len() <= TAIL, "{}", stderr_tail.len());
        assert!(e.to_string().contains("exit status: 3"), "{e}");
    }

    #[tokio::test]
    async fn a_slow_program_is_killed_at_the_timeout() {
        let started = Instant::now();
        let e = run(&argv(&["sleep", "5"]), None, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::Timeout { .. }), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn output_past_the_cap_is_refused() {
        let e = run(
            &argv(&["head", "-c", "16777217", "/dev/zero"]),
            None,
            Duration::from_secs(20),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e,
                CommandError::TooMuch {
                    stream: "stdout",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let e = run(
            &argv(&["sluice-no-such-program"]),
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, CommandError::NotFound { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("\"sluice-no-such-program\" not found"),
            "{e}"
        );
        assert!(matches!(
            run(&[], None, Duration::from_secs(1)).await,
            Err(CommandError::Empty)
        ));
    }

    #[test]
    fn its_output_before_an_answer_is_text_and_status() {
        let step = super::super::test_step(
            "kind = \"command\"\ncommand = [\"cat\"]\nstdin = \"{{ item.n }}\"",
        );
        let rules = super::super::of(&step.kind);
        let sources: Vec<&str> = rules.templates().iter().map(|t| t.source()).collect();
        assert_eq!(sources, ["cat", "{{ item.n }}"]);
        let mut fields = BTreeMap::new();
        rules.output_fields("steps.s", &mut fields);
        assert_eq!(
            fields.keys().copied().collect::<Vec<_>>(),
            ["status", "text"]
        );
        assert_eq!(fields["status"].as_i64(), Some(0));
    }
}
