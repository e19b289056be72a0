//! Property tests of the job loader and template checker: any text, and
//! any mangling of a valid job, is a job or errors that each name a line and
//! column inside the file — never a panic, never an error without a place.
//!
//! Cases: `SLUICE_PROPTEST_CASES` (default 64).

use std::path::Path;

use proptest::prelude::*;
use sluice_spec::{parse_str, SpecError};

#[path = "../../../tests/support/watchdog.rs"]
mod watchdog;

fn config() -> ProptestConfig {
    // Called on the test's thread before any case: the test's time limit
    // (`SLUICE_TEST_TIMEOUT_SECS`), so a case that hangs names its test.
    watchdog::once_per_test();
    let cases = std::env::var("SLUICE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

const JOB: &str = r#"name = "eval"
env = ["TEAM"]
concurrency = 8

[input]
path = "items.jsonl"

[matrix]
model = ["a", "b"]

[providers.openai]
base_url = "http://127.0.0.1:8080/v1/"
api_key_env = "OPENAI_API_KEY"
rpm = 120
tpm = 400000
timeout = "30s"
retries = { max = 6, base = "250ms", cap = "10s" }
headers = { "x-team" = "{{ env.TEAM }}" }

[[steps]]
name = "plan"
kind = "chat"
provider = "openai"
model = "{{ matrix.model }}"
messages = [
  { role = "system", content = "You plan." },
  { role = "user", content = "Describe {{ item.url }} {% if item.x %}x{% endif %}" },
]
params = { temperature = 0, max_tokens = 200 }

[[steps]]
name = "vectors"
kind = "embed"
provider = "openai"
model = "text-embedding-3-small"
input = ["{{ steps.plan.text }}", "{{ item.title | upper }}"]
"#;

/// Checks the loader's answer to `text`.
fn judge(text: &str) -> Result<(), TestCaseError> {
    let lines = text.split('\n').count();
    match parse_str(text, Path::new("/nowhere/job.toml"), &[]) {
        Ok(_) => Ok(()),
        Err(SpecError::Invalid(ds)) => {
            prop_assert!(!ds.is_empty(), "an error with nothing in it");
            for d in &ds {
                prop_assert!(
                    d.line >= 1 && d.line <= lines + 1 && d.column >= 1,
                    "{}:{} outside a file of {} lines: {}",
                    d.line,
                    d.column,
                    lines,
                    d.message
                );
                prop_assert!(!d.message.trim().is_empty());
            }
            Ok(())
        }
        Err(e) => Err(TestCaseError::fail(format!("not a positioned error: {e}"))),
    }
}

/// A change to the valid job: its text is cut, repeated or written into.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..30).prop_map(|(a, n)| Edit::Delete(a, n)),
        (
            any::<usize>(),
            prop_oneof![
                "[\\[\\]{}=\",.a-z0-9 \n#%|]{1,12}",
                Just("{{".to_string()),
                Just("}}".to_string()),
                Just("{% for x in item %}".to_string()),
                Just("\n[[steps]]\n".to_string()),
                Just(" = \"{{ steps.nope.text }}\"".to_string()),
                "\\PC{1,6}",
            ]
        )
            .prop_map(|(a, s)| Edit::Insert(a, s)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

fn apply(text: &str, e: &Edit) -> String {
    let floor = |s: &str, mut i: usize| {
        i %= s.len() + 1;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    match e {
        Edit::Delete(a, n) => {
            let a = floor(text, *a);
            let b = floor(text, (a + n).min(text.len()));
            format!("{}{}", &text[..a], &text[b.max(a)..])
        }
        Edit::Insert(a, s) => {
            let a = floor(text, *a);
            format!("{}{}{}", &text[..a], s, &text[a..])
        }
        Edit::DuplicateLine(i) => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let i = i % lines.len();
            lines.insert(i, lines[i]);
            lines.join("\n")
        }
        Edit::SwapLines(a, b) => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let n = lines.len();
            lines.swap(a % n, b % n);
            lines.join("\n")
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_mangled_job_is_a_job_or_errors_with_positions(edits in prop::collection::vec(edit(), 1..6)) {
        let text = edits.iter().fold(JOB.to_string(), |t, e| apply(&t, e));
        judge(&text)?;
    }

    #[test]
    fn any_text_is_a_job_or_errors_with_positions(text in "\\PC{0,200}") {
        judge(&text)?;
    }
}

/// The unmangled job is valid: the properties above start from a job.
#[test]
fn the_base_job_loads() {
    parse_str(JOB, Path::new("/nowhere/job.toml"), &[]).expect("the base job is valid");
}
