//! The runnable examples under `examples/`: each test copies an example's
//! directory (job file and data) into a scratch directory, points its fixed
//! 127.0.0.1 ports at `sluice mock` processes started on free ports, runs the
//! job with the real binary, and checks the results against what the mocks saw.

mod audio;
mod eval;
mod image;
mod video;
mod vision;

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::util::*;

/// An example copied into a scratch directory.
pub(crate) struct Example {
    pub(crate) s: Scratch,
    /// The copied `job.toml`.
    pub(crate) job: PathBuf,
}

/// Names a run of an example leaves behind; not copied.
const LEFTOVERS: [&str; 3] = [".sluice", "results.jsonl", "output"];

impl Example {
    /// Copies `examples/NAME/` into a new scratch directory.
    pub(crate) fn copy(name: &str) -> Example {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        let s = Scratch::new();
        copy_dir(&from, s.dir.path());
        let job = s.path("job.toml");
        assert!(job.exists(), "examples/{name} has no job.toml");
        Example { s, job }
    }

    /// Points every `127.0.0.1:PORT` of the job file at `mock`.
    pub(crate) fn point(&self, port: u16, mock: &Mock) {
        self.point_to(port, mock.port);
    }

    /// Points every `127.0.0.1:PORT` of the job file at `127.0.0.1:TO`.
    pub(crate) fn point_to(&self, port: u16, to: u16) {
        let text = std::fs::read_to_string(&self.job).unwrap();
        let from = format!("127.0.0.1:{port}");
        assert!(text.contains(&from), "the job file does not use {from}");
        let text = text.replace(&from, &format!("127.0.0.1:{to}"));
        std::fs::write(&self.job, text).unwrap();
    }

    /// `sluice run job.toml EXTRA...` in the example's directory.
    pub(crate) fn run(&self, extra: &[&str]) -> Output {
        self.command(extra).output().unwrap()
    }

    /// The same, ready for `.env(...)` before `.output()`.
    pub(crate) fn command(&self, extra: &[&str]) -> assert_cmd::Command {
        let mut cmd = self.s.sluice(&["run", self.job.to_str().unwrap()]);
        cmd.args(extra);
        cmd
    }

    /// The results file the job writes.
    pub(crate) fn results(&self) -> Vec<serde_json::Value> {
        read_jsonl(&self.s.path("results.jsonl"))
    }

    /// A path inside the example's copy.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.s.path(name)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if LEFTOVERS.iter().any(|l| name == *l) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The JSON summary (`--json`) of a run that exited with `code`.
pub(crate) fn summary(output: &Output, code: i32) -> serde_json::Value {
    assert_eq!(output.status.code(), Some(code), "{}", stderr(output));
    json_stdout(output)
}

/// Requests a loaded machine may add to [`most_in_window`] over one second
/// of a rate paced 50 ms apart (1,200/min): a mock stalled for up to 200 ms
/// journals the requests sent meanwhile together when it runs again, so a
/// window ending there also holds those sent up to 200 ms before it. (A
/// client that did not pace would send its whole window of calls at once.)
pub(crate) const STALLED: usize = 4;

/// The most journal entries that arrived within any `window_ms`: the rate
/// the server saw, at millisecond resolution.
pub(crate) fn most_in_window(entries: &[serde_json::Value], window_ms: u64) -> usize {
    let at: Vec<u64> = entries.iter().map(|e| u(&e["at_ms"])).collect();
    (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|&&t| t < at[i] + window_ms)
                .count()
        })
        .max()
        .unwrap_or(0)
}
