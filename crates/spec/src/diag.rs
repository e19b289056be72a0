//! Diagnostics: what is wrong with a job file, where (file:line:column), and
//! what to do; collected so that one run reports every problem it can find.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a job file (or in a `--set` override).
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// The job file as given, or `--set` for an override.
    pub path: PathBuf,
    /// 1-based line; 0 for `--set` overrides, which have no position.
    pub line: usize,
    /// 1-based column in characters; 0 for `--set` overrides.
    pub column: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            let (path, line, column) = (self.path.display(), self.line, self.column);
            write!(f, "{path}:{line}:{column}: {}", self.message)
        }
    }
}

/// Why a job file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read job file {}", path.display())]
    Read {
        /// The job file as given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid job; every problem found, by position.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let mut text = String::new();
    for d in diagnostics {
        text.push_str(&d.to_string());
        text.push('\n');
    }
    let n = diagnostics.len();
    text.push_str(&format!(
        "{n} error{} in the job; nothing was run",
        if n == 1 { "" } else { "s" }
    ));
    text
}

/// Collects diagnostics for one job file, turning byte offsets into positions.
pub(crate) struct Diags<'a> {
    path: &'a Path,
    text: &'a str,
    /// Byte offset where each line starts.
    line_starts: Vec<usize>,
    list: Vec<Diagnostic>,
    /// Likely mistakes that do not stop the job (a near-miss in `params`).
    warnings: Vec<Diagnostic>,
}

impl<'a> Diags<'a> {
    pub(crate) fn new(path: &'a Path, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Diags {
            path,
            text,
            line_starts,
            list: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// A problem at `span` (byte offsets into the job file).
    pub(crate) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.list.push(Diagnostic {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        });
    }

    /// A likely mistake at `span` that does not stop the job.
    pub(crate) fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.warnings.push(Diagnostic {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        });
    }

    /// The warnings, by position.
    pub(crate) fn take_warnings(&mut self) -> Vec<Diagnostic> {
        let mut out = std::mem::take(&mut self.warnings);
        out.sort_by_key(|d| (d.line, d.column));
        out
    }

    /// A problem in a `--set` override.
    pub(crate) fn set(&mut self, message: impl Into<String>) {
        self.list.push(Diagnostic {
            path: PathBuf::from("--set"),
            line: 0,
            column: 0,
            message: message.into(),
        });
    }

    /// A TOML syntax error or a serde error; `context` names the section
    /// (`[input]`, `step "x"`), `key` the offending key when known.
    pub(crate) fn toml(&mut self, e: &toml::de::Error, context: &str, key: Option<&str>) {
        let message = humanize(e.message(), key);
        let message = if context.is_empty() {
            message
        } else {
            format!("{context}: {message}")
        };
        self.at(e.span().unwrap_or(0..0), message);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every diagnostic, by position (`--set` ones first), duplicates removed.
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        self.list.sort_by_key(|d| (d.line, d.column));
        let mut out: Vec<Diagnostic> = Vec::with_capacity(self.list.len());
        for d in self.list {
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }

    /// Where the string at `span` (quotes included) starts, and whether it
    /// is `source` written verbatim between one pair of quotes.
    pub(crate) fn origin(&self, span: &Range<usize>, source: &str) -> crate::template::Origin {
        let (line, column) = self.position(span.start);
        let written = self.text.get(span.clone()).unwrap_or_default();
        let verbatim = ['"', '\'']
            .iter()
            .any(|q| written.strip_prefix(*q).and_then(|w| w.strip_suffix(*q)) == Some(source))
            && !source.contains('\n');
        crate::template::Origin {
            line,
            column,
            verbatim,
        }
    }

    /// 1-based line and character column of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        (line, column + 1)
    }
}

/// serde's wording made readable for people who write TOML, not Rust.
fn humanize(message: &str, key: Option<&str>) -> String {
    let subject = key.map_or_else(|| "the value".to_string(), |k| format!("`{k}`"));
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.split_once(", expected ") {
                return format!("{subject} must be {}, not {found}", expected_name(expected));
            }
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        if let Some((field, expected)) = rest.split_once(", expected ") {
            let expected = expected.strip_prefix("one of ").unwrap_or(expected);
            let bare = |s: &'_ str| s.trim().trim_matches('`').to_string();
            let keys: Vec<String> = expected.split(", ").map(bare).collect();
            let hint = crate::suggest::did_you_mean(&bare(field), keys.iter().map(String::as_str));
            return format!("unknown key {field}{hint}; allowed keys: {expected}");
        }
        return format!("unknown key {rest}; this table takes no keys");
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("missing required key {field}");
    }
    message.to_string()
}

fn expected_name(expected: &str) -> &str {
    match expected {
        "u64" | "u32" | "usize" => "a non-negative whole number",
        "a sequence" => "an array",
        "a map" => "a table",
        "a boolean" => "true or false",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_in_characters() {
        let text = "a = 1\nb = \"é\" x\n";
        let mut d = Diags::new(Path::new("j.toml"), text);
        d.at(0..1, "first");
        d.at(text.find('x').unwrap()..text.len(), "second");
        let list = d.finish();
        assert_eq!((list[0].line, list[0].column), (1, 1));
        assert_eq!((list[1].line, list[1].column), (2, 9));
        assert_eq!(list[1].to_string(), "j.toml:2:9: second");
    }

    #[test]
    fn invalid_lists_every_diagnostic_then_the_count() {
        let mut d = Diags::new(Path::new("j.toml"), "x\ny\n");
        d.at(2..3, "later");
        d.at(0..1, "earlier");
        d.set("bad override");
        let text = SpecError::Invalid(d.finish()).to_string();
        assert_eq!(
            text,
            "--set: bad override\nj.toml:1:1: earlier\nj.toml:2:1: later\n\
             3 errors in the job; nothing was run"
        );
    }

    #[test]
    fn serde_wording_is_humanized() {
        let h = |m| humanize(m, Some("concurrency"));
        assert_eq!(
            h("invalid type: string \"5\", expected u64"),
            "`concurrency` must be a non-negative whole number, not string \"5\""
        );
        assert_eq!(
            h("unknown field `foo`, expected one of `a`, `b`"),
            "unknown key `foo`; allowed keys: `a`, `b`"
        );
        assert_eq!(
            h("unknown field `rmp`, expected one of `rps`, `rpm`"),
            "unknown key `rmp`; did you mean `rpm`?; allowed keys: `rps`, `rpm`"
        );
    }
}
