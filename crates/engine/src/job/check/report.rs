//! The render check's findings: which name is missing where, grouped so that
//! each distinct problem is reported once with the number of items it
//! affects, at its position in the job file.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

use minijinja::Value;
use sluice_spec::{Job, Placeholder, Template};

use super::outputs::field_names;
pub use crate::check_report::{CheckReport, TemplateProblem};

/// A name a template reads that is not there.
pub(crate) struct Missing {
    /// Where it was looked for: `item`, `steps.ask`, `each` (empty for a
    /// variable that does not exist at all).
    parent: String,
    /// The missing field.
    name: String,
    /// The fields `parent` has, when it is an object.
    have: Option<Vec<String>>,
    /// What `parent` is when it has no fields (`a string`, `a number`).
    parent_kind: Option<String>,
}

/// Every name `template` reads that `ctx` does not have, as far as they can
/// be found among its variables (a missing element of a list or a name read
/// through a loop variable cannot).
pub(crate) fn missing(template: &Template, ctx: &Value) -> Vec<Missing> {
    template
        .variables()
        .iter()
        .filter_map(|var| missing_in(var, ctx))
        .collect()
}

fn missing_in(var: &str, ctx: &Value) -> Option<Missing> {
    let mut parts = var.split('.');
    let root = parts.next().unwrap_or_default();
    let mut value = ctx.get_attr(root).ok()?;
    if value.is_undefined() {
        return Some(Missing {
            parent: String::new(),
            name: root.to_string(),
            have: None,
            parent_kind: None,
        });
    }
    let mut path = root.to_string();
    for part in parts {
        if Placeholder::is(&value) {
            break;
        }
        let next = value.get_attr(part).unwrap_or(Value::UNDEFINED);
        if next.is_undefined() {
            let have = field_names(&value);
            let parent_kind = have.is_none().then(|| kind_of(&value));
            return Some(Missing {
                parent: path,
                name: part.to_string(),
                have,
                parent_kind,
            });
        }
        path = format!("{path}.{part}");
        value = next;
    }
    None
}

fn kind_of(value: &Value) -> String {
    use minijinja::value::ValueKind as K;
    match value.kind() {
        K::String => "a string",
        K::Number => "a number",
        K::Bool => "true or false",
        K::None => "null",
        K::Seq => "a list",
        _ => "a value",
    }
    .to_string()
}

/// One distinct problem, found in one or more items.
struct Entry {
    template_place: String,
    line: usize,
    column: usize,
    /// What is wrong, e.g. "item has no field `promt`".
    what: String,
    /// "did you mean `prompt`?"
    hint: Option<String>,
    /// "item has: id, prompt, topic"
    have: Option<String>,
    source: String,
    items: u64,
    last_item: Option<u64>,
}

/// The problems found so far.
#[derive(Default)]
pub(crate) struct Problems {
    entries: Vec<Entry>,
    by_key: HashMap<String, usize>,
    /// Findings so far (every unit, every template), to tell whether an
    /// item added any.
    hits: u64,
}

impl Problems {
    /// Findings so far; compared before and after an item to learn whether
    /// it had any.
    pub(crate) fn hits(&self) -> u64 {
        self.hits
    }

    /// A missing name in `template`, found in the item at `position`.
    pub(crate) fn missing(&mut self, template: &Template, m: Missing, position: u64) {
        let full = if m.parent.is_empty() {
            m.name.clone()
        } else {
            format!("{}.{}", m.parent, m.name)
        };
        let key = format!("{}\u{0}missing\u{0}{full}", template.place());
        let offset = template
            .source()
            .find(&full)
            .map(|at| at + full.len() - m.name.len());
        self.add(key, template, offset, position, || {
            let (what, hint, have) = match (&m.have, &m.parent_kind) {
                _ if m.parent.is_empty() => (format!("`{}` is not defined", m.name), None, None),
                (Some(have), _) => (
                    format!("{} has no field `{}`", m.parent, m.name),
                    sluice_spec::closest(&m.name, have.iter().map(String::as_str))
                        .map(|c| format!("did you mean `{c}`?")),
                    Some(if have.is_empty() {
                        format!("{} has no fields", m.parent)
                    } else {
                        format!("{} has: {}", m.parent, have.join(", "))
                    }),
                ),
                (None, kind) => (
                    format!(
                        "{} is {}, so it has no field `{}`",
                        m.parent,
                        kind.as_deref().unwrap_or("a value"),
                        m.name
                    ),
                    None,
                    None,
                ),
            };
            (what, hint, have)
        });
    }

    /// A templated provider that renders `name`, which no `[providers.*]`
    /// declares, in the item at `position`.
    pub(crate) fn unknown_provider(
        &mut self,
        template: &Template,
        name: &str,
        job: &Job,
        position: u64,
    ) {
        let key = format!("{}\u{0}provider\u{0}{name}", template.place());
        self.add(key, template, None, position, || {
            let declared: Vec<&str> = job.providers.iter().map(|p| p.name.as_str()).collect();
            (
                format!("provider renders {name:?}, which is not a defined provider"),
                sluice_spec::closest(name, declared.iter().copied())
                    .map(|c| format!("did you mean `{c}`?")),
                Some(format!("defined: {}", declared.join(", "))),
            )
        });
    }

    /// Any other failure of `template` (minijinja's message), found in the
    /// item at `position`.
    pub(crate) fn other(
        &mut self,
        template: &Template,
        message: &str,
        range: Option<Range<usize>>,
        position: u64,
    ) {
        let key = format!("{}\u{0}other\u{0}{message}", template.place());
        let offset = range.map(|r| r.start);
        self.add(key, template, offset, position, || {
            (message.to_string(), None, None)
        });
    }

    fn add(
        &mut self,
        key: String,
        template: &Template,
        offset: Option<usize>,
        position: u64,
        describe: impl FnOnce() -> (String, Option<String>, Option<String>),
    ) {
        self.hits += 1;
        let index = match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                let (line, column) = match (template.origin(), offset) {
                    (Some(o), Some(at)) => o.at(template.source(), at),
                    (Some(o), None) => (o.line, o.column),
                    (None, _) => (0, 0),
                };
                let (what, hint, have) = describe();
                self.entries.push(Entry {
                    template_place: template.place().to_string(),
                    line,
                    column,
                    what,
                    hint,
                    have,
                    source: template.source().to_string(),
                    items: 0,
                    last_item: None,
                });
                self.by_key.insert(key, self.entries.len() - 1);
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        if entry.last_item != Some(position) {
            entry.items += 1;
            entry.last_item = Some(position);
        }
    }

    pub(crate) fn finish(mut self, job: &Job, items: u64) -> CheckReport {
        self.entries.sort_by_key(|e| (e.line, e.column));
        let problems = self
            .entries
            .into_iter()
            .map(|e| {
                let hint = e.hint.map(|h| format!("; {h}")).unwrap_or_default();
                let have = e.have.map(|h| format!("; {h}")).unwrap_or_default();
                let message = format!(
                    "{}: {}{hint} ({} of {} item{}){have}; template: {:?}",
                    e.template_place,
                    e.what,
                    e.items,
                    items,
                    if items == 1 { "" } else { "s" },
                    e.source
                );
                TemplateProblem {
                    line: e.line,
                    column: e.column,
                    message,
                    items: e.items,
                }
            })
            .collect();
        CheckReport {
            path: shown_path(&job.path),
            problems,
            items,
        }
    }
}

/// The job file as a person would name it: relative to the current
/// directory when it is below it.
fn shown_path(path: &std::path::Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(PathBuf::from))
        .unwrap_or_else(|| path.to_path_buf())
}
