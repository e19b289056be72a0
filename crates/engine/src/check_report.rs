//! What the render check found before a run: each template problem with
//! its place in the job file, and the whole report as `plan` and `run` print
//! it. Plain data, so errors and the CLI can carry it.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One template problem: where, what, and how many items it affects.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateProblem {
    /// 1-based line in the job file (0 when unknown).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The template's place, what is wrong, the names there are, a
    /// suggestion, the items affected and the template text.
    pub message: String,
    /// Items with at least one unit that cannot render this template.
    pub items: u64,
}

/// Everything the render check found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The job file.
    pub path: PathBuf,
    /// By position in the job file.
    pub problems: Vec<TemplateProblem>,
    /// Items checked.
    pub items: u64,
}

impl CheckReport {
    /// Whether every unit rendered.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                p.line,
                p.column,
                p.message
            )?;
        }
        let n = self.problems.len();
        write!(
            f,
            "{n} template problem{} with the input's items; nothing was sent",
            if n == 1 { "" } else { "s" }
        )
    }
}
