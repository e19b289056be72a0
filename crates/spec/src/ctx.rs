//! The state shared while a job is built (diagnostics, templates, the job's
//! directory, `--set` overrides) and the checks every section uses:
//! templates, durations, counts, retry policies, headers, names.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use crate::diag::Diags;
use crate::model::Retries;
use crate::model::MAX_CONCURRENCY;
use crate::raw::{RawRetries, RawValue, Table};
use crate::sets::Sets;
use crate::template::{TValue, Template};
use crate::templates_check::{Scope, Templates};

/// Everything building the job needs besides the raw sections.
pub(crate) struct Ctx<'a> {
    pub(crate) diags: Diags<'a>,
    pub(crate) templates: Templates,
    /// The job file's directory (absolute): relative paths resolve here.
    pub(crate) dir: PathBuf,
    pub(crate) sets: Sets,
}

impl Ctx<'_> {
    /// Compiles a template at `place`.
    pub(crate) fn template(
        &mut self,
        place: String,
        s: &Spanned<String>,
        scope: Scope,
    ) -> Template {
        self.templates.add(place, s, scope, &mut self.diags)
    }

    /// A value whose strings are templates.
    pub(crate) fn tvalue(&mut self, v: &Spanned<RawValue>, place: String, scope: Scope) -> TValue {
        match v.get_ref() {
            RawValue::String(s) => {
                let s = Spanned::new(v.span(), s.clone());
                TValue::Template(self.template(place, &s, scope))
            }
            RawValue::Array(items) => TValue::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.tvalue(item, format!("{place}[{i}]"), scope))
                    .collect(),
            ),
            RawValue::Table(fields) => TValue::Object(
                fields
                    .iter()
                    .map(|(k, item)| (k.clone(), self.tvalue(item, format!("{place}.{k}"), scope)))
                    .collect(),
            ),
            other => TValue::Literal(other.to_json()),
        }
    }

    /// `headers = { NAME = "template" }`, names checked.
    pub(crate) fn headers(
        &mut self,
        raw: Option<&Spanned<Table<Spanned<String>>>>,
        place: &str,
        scope: Scope,
    ) -> Vec<(String, Template)> {
        self.string_table(raw, place, scope, true)
    }

    /// A table of string templates (headers, form fields).
    pub(crate) fn string_table(
        &mut self,
        raw: Option<&Spanned<Table<Spanned<String>>>>,
        place: &str,
        scope: Scope,
        header_names: bool,
    ) -> Vec<(String, Template)> {
        let Some(raw) = raw else { return Vec::new() };
        let mut out = Vec::new();
        for (name, value) in &raw.get_ref().0 {
            if header_names && !is_header_name(name) {
                self.diags.at(
                    value.span(),
                    format!("{name:?} is not a valid HTTP header name (letters, digits, - _ only)"),
                );
            }
            let t = self.template(format!("{place}.{name}"), value, scope);
            out.push((name.clone(), t));
        }
        out
    }

    /// A humantime duration (`30s`, `500ms`, `2m`).
    pub(crate) fn duration(&mut self, s: &Spanned<String>, what: &str) -> Option<Duration> {
        match humantime::parse_duration(s.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                let text = s.get_ref();
                let message = format!(
                    "{what} {text:?} is not a duration ({e}); write e.g. \"30s\", \"500ms\", \"2m\""
                );
                self.diags.at(s.span(), message);
                None
            }
        }
    }

    /// A duration that must be longer than zero (time-outs, cooldowns, ttls).
    pub(crate) fn nonzero(&mut self, s: &Spanned<String>, what: &str) -> Option<Duration> {
        let d = self.duration(s, what)?;
        if d.is_zero() {
            self.diags
                .at(s.span(), format!("{what} must be longer than 0s"));
            return None;
        }
        Some(d)
    }

    /// A count that must be at least 1.
    pub(crate) fn positive(&mut self, n: &Spanned<u64>, what: &str) -> Option<u64> {
        if *n.get_ref() == 0 {
            self.diags
                .at(n.span(), format!("{what} must be at least 1"));
            return None;
        }
        Some(*n.get_ref())
    }

    /// A number of calls (or units) in flight at once: at least 1 and at
    /// most [`MAX_CONCURRENCY`], the bound `--concurrency` has too.
    pub(crate) fn calls(&mut self, n: &Spanned<u64>, what: &str) -> Option<u64> {
        let count = self.positive(n, what)?;
        if count > MAX_CONCURRENCY as u64 {
            self.diags.at(
                n.span(),
                format!(
                    "{what} {count} is above the most calls in progress sluice allows                      ({MAX_CONCURRENCY}); give a number from 1 to {MAX_CONCURRENCY}"
                ),
            );
            return None;
        }
        Some(count)
    }

    /// `retries = { ... }` with missing fields taken from `base`.
    pub(crate) fn retries(&mut self, raw: &Spanned<RawRetries>, base: Retries) -> Retries {
        let r = raw.get_ref();
        let mut out = base;
        if let Some(max) = &r.max {
            out.max = *max.get_ref();
        }
        if let Some(d) = r
            .base
            .as_ref()
            .and_then(|b| self.duration(b, "retries.base"))
        {
            out.base = d;
        }
        if let Some(d) = r.cap.as_ref().and_then(|c| self.duration(c, "retries.cap")) {
            out.cap = d;
        }
        if out.base > out.cap {
            let (b, c) = (
                humantime::format_duration(out.base),
                humantime::format_duration(out.cap),
            );
            self.diags.at(
                raw.span(),
                format!("retries base ({b}) is longer than cap ({c}); make cap at least base"),
            );
        }
        out
    }

    /// `path` against the job file's directory (absolute paths stay as they are).
    pub(crate) fn resolve(&self, path: &str) -> PathBuf {
        self.dir.join(path)
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: step names, matrix keys, environment variables.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `http://…` or `https://…` with something after the scheme.
pub(crate) fn is_http_url(s: &str) -> bool {
    ["http://", "https://"]
        .iter()
        .any(|p| s.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
