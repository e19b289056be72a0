//! Input files the scenarios send, and the exactly-once check of what came back.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

use super::report::Scenario;
pub(super) use crate::display::fmt_count as fmt_int;

/// Writes `n` Batch API chat lines, ids `r0`…, prompt `q{i} ` plus
/// `prompt_chars(i)` filler characters, and `max_tokens`.
pub(super) fn write_requests(
    path: &Path,
    n: u64,
    prompt_chars: &dyn Fn(u64) -> usize,
    max_tokens: u64,
) -> anyhow::Result<()> {
    write_lines(path, n, &|i| {
        json!({
            "custom_id": format!("r{i}"),
            "body": {
                "model": "m",
                "messages": [{"role": "user", "content": format!("q{i} {}", "x".repeat(prompt_chars(i)))}],
                "max_tokens": max_tokens,
            },
        })
    })
}

/// Writes `n` job items `{"id": "i{i}", "q": "question {i}"}`.
pub(super) fn write_items(path: &Path, n: u64) -> anyhow::Result<()> {
    write_lines(
        path,
        n,
        &|i| json!({"id": format!("i{i}"), "q": format!("question {i}")}),
    )
}

/// A job over DIR/items.jsonl (written by [`write_items`]) with one chat step,
/// `ask`, on the provider `mock` configured by `provider` (TOML lines);
/// `top` goes first (top-level keys), and with `output` the results go to
/// DIR/results.jsonl.
pub(super) fn ask_job(top: &str, provider: &str, output: bool) -> String {
    let output = if output {
        "[output]\npath = \"results.jsonl\"\n"
    } else {
        ""
    };
    format!(
        r#"{top}
[input]
path = "items.jsonl"
[providers.mock]
{provider}
[[steps]]
name = "ask"
kind = "chat"
provider = "mock"
model = "m"
messages = [{{ role = "user", content = "{{{{ item.q }}}}" }}]
params = {{ max_tokens = 8 }}
{output}"#
    )
}

fn write_lines(path: &Path, n: u64, line: &dyn Fn(u64) -> Value) -> anyhow::Result<()> {
    let context = || format!("writing {}", path.display());
    let mut out = BufWriter::new(std::fs::File::create(path).with_context(context)?);
    for i in 0..n {
        writeln!(out, "{}", line(i)).with_context(context)?;
    }
    out.flush().with_context(context)
}

/// What a results file holds, against the `n` items sent.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Tally {
    pub(super) lines: u64,
    /// Lines whose id was already seen.
    pub(super) duplicates: u64,
    /// Lines whose id is not one of the input's.
    pub(super) strangers: u64,
    /// Input ids with no line.
    pub(super) missing: u64,
    /// Lines that succeeded (quick mode: HTTP 200; jobs: status done).
    pub(super) ok: u64,
    /// Failed lines that do not say why.
    pub(super) failed_without_reason: u64,
}

impl Tally {
    pub(super) fn exactly_once(&self) -> bool {
        self.duplicates == 0 && self.strangers == 0 && self.missing == 0
    }

    /// Adds the checks every results file must pass: each item once and,
    /// unless failures are expected, every one of them successful.
    pub(super) fn check(&self, s: &mut Scenario, n: u64, all_ok: bool) {
        s.check(
            format!(
                "each of {} items exactly once in the results ({} lines, {} doubled, {} missing)",
                fmt_int(n),
                fmt_int(self.lines),
                self.duplicates + self.strangers,
                self.missing
            ),
            self.exactly_once(),
        );
        if all_ok {
            s.check(
                format!("all succeeded ({} of {})", fmt_int(self.ok), fmt_int(n)),
                self.ok == n,
            );
        } else {
            s.check(
                format!(
                    "every failure says why ({} do not)",
                    self.failed_without_reason
                ),
                self.failed_without_reason == 0,
            );
        }
    }
}

/// Reads a quick-mode results file (`{"custom_id": "r{i}", "response": {"status_code"}}`).
pub(super) fn tally_batch(path: &Path, n: u64) -> anyhow::Result<Tally> {
    tally(path, n, "custom_id", 'r', &|line| {
        let ok = line["response"]["status_code"] == 200;
        (
            ok,
            ok || line["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
        )
    })
}

/// Reads a job's results file (`{"id": "i{i}", "status": "done" | "failed", "error"}`).
pub(super) fn tally_units(path: &Path, n: u64) -> anyhow::Result<Tally> {
    tally(path, n, "id", 'i', &|line| {
        let ok = line["status"] == "done";
        let reason = line["error"]["message"]
            .as_str()
            .or(line["error"].as_str())
            .is_some_and(|m| !m.is_empty());
        (ok, ok || reason)
    })
}

/// `judge` says of a line: (succeeded, explained).
fn tally(
    path: &Path,
    n: u64,
    id_field: &str,
    prefix: char,
    judge: &dyn Fn(&Value) -> (bool, bool),
) -> anyhow::Result<Tally> {
    let context = || format!("reading the results {}", path.display());
    let file = std::fs::File::open(path).with_context(context)?;
    let mut seen = vec![false; usize::try_from(n).context("too many items")?];
    let mut t = Tally::default();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(context)?;
        let value: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), number + 1))?;
        t.lines += 1;
        let index = value[id_field]
            .as_str()
            .and_then(|id| id.strip_prefix(prefix))
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|&i| i < seen.len());
        match index {
            None => t.strangers += 1,
            Some(i) if seen[i] => t.duplicates += 1,
            Some(i) => seen[i] = true,
        }
        let (ok, explained) = judge(&value);
        t.ok += u64::from(ok);
        t.failed_without_reason += u64::from(!explained);
    }
    t.missing = seen.iter().filter(|s| !**s).count() as u64;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_finds_doubled_missing_and_foreign_lines() {
        let dir = std::env::temp_dir().join(format!("sluice-bench-tally-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.jsonl");
        let line = |id: &str, code: u16| {
            json!({"custom_id": id, "response": {"status_code": code}, "error": null}).to_string()
        };
        let lines = [
            line("r0", 200),
            line("r2", 500),
            line("r0", 200),
            line("x9", 200),
        ];
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let t = tally_batch(&path, 4).unwrap();
        assert_eq!(
            t,
            Tally {
                lines: 4,
                duplicates: 1,
                strangers: 1,
                missing: 2,
                ok: 3,
                failed_without_reason: 1,
            }
        );
        assert!(!t.exactly_once());
        let units = [
            json!({"id": "i0", "status": "done"}).to_string(),
            json!({"id": "i1", "status": "failed", "error": {"message": "500 after 3 tries"}})
                .to_string(),
        ];
        std::fs::write(&path, units.join("\n")).unwrap();
        let t = tally_units(&path, 2).unwrap();
        assert!(t.exactly_once());
        assert_eq!((t.ok, t.failed_without_reason), (1, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
