//! Tests of loading and validating job files: `good` loads full examples of
//! every step kind; `rules` and `templates` check one validation rule each,
//! with its exact position and a fragment of its message; `docs` loads the
//! examples of docs/JOBS.md.

mod docs;
mod good;
mod offload;
mod policies;
mod providers;
mod rules;
mod templates;

use std::path::Path;

use crate::{parse_str, Diagnostic, Job, SpecError};

/// The path every test job pretends to live at.
const PATH: &str = "/jobs/job.toml";

/// A valid job.
fn job(text: &str) -> Job {
    job_with(text, &[])
}

fn job_with(text: &str, sets: &[&str]) -> Job {
    match parse(text, sets) {
        Ok(job) => job,
        Err(e) => panic!("expected a valid job, got:\n{e}"),
    }
}

fn parse(text: &str, sets: &[&str]) -> Result<Job, SpecError> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    parse_str(text, Path::new(PATH), &sets)
}

/// Every diagnostic of an invalid job.
fn errors(text: &str, sets: &[&str]) -> Vec<Diagnostic> {
    match parse(text, sets) {
        Ok(_) => panic!("expected errors, the job is valid:\n{text}"),
        Err(SpecError::Invalid(list)) => list,
        Err(e) => panic!("expected Invalid, got {e}"),
    }
}

/// Asserts that the job has exactly one diagnostic, at `line`:`column`, whose
/// message contains every fragment.
#[track_caller]
fn assert_one(text: &str, line: usize, column: usize, fragments: &[&str]) {
    assert_one_with(text, &[], line, column, fragments);
}

#[track_caller]
fn assert_one_with(text: &str, sets: &[&str], line: usize, column: usize, fragments: &[&str]) {
    let list = errors(text, sets);
    let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
    assert_eq!(
        list.len(),
        1,
        "expected one diagnostic, got:\n{}",
        shown.join("\n")
    );
    let d = &list[0];
    assert_eq!((d.line, d.column), (line, column), "{d}");
    for fragment in fragments {
        assert!(d.message.contains(fragment), "{fragment:?} not in: {d}");
    }
}

/// A minimal valid job: input, one provider, one chat step. Tests append to
/// it or replace parts of it.
const BASE: &str = r#"[input]
path = "items.jsonl"

[providers.openai]
base_url = "http://127.0.0.1:8080/v1"

[[steps]]
name = "first"
kind = "chat"
provider = "openai"
model = "m"
messages = [{ role = "user", content = "Hi {{ item.name }}" }]
"#;

/// Lines in `BASE`: text appended to it starts on line 13.
const BASE_LINES: usize = 12;

#[test]
fn base_is_valid() {
    let job = job(BASE);
    assert_eq!(job.steps.len(), 1);
    assert_eq!(BASE.lines().count(), BASE_LINES);
}
