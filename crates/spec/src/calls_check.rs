//! Filters and tests a template uses (`| shout`, `is oddd`): minijinja looks
//! them up only while rendering, so each template is rendered once with every
//! variable a placeholder, and an unknown name is reported at its position
//! when the job is loaded instead of failing every unit of the run.

use std::ops::Range;

use minijinja::{Environment, Value};

use crate::placeholder::Placeholder;
use crate::template::{Failure, Template};

/// Jinja's filter names; those the environment has are the suggestions.
const FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "center",
    "chain",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "truncate",
    "unique",
    "upper",
    "urlencode",
    "wordcount",
    "zip",
];

/// Jinja's test names; those the environment has are the suggestions.
const TESTS: &[&str] = &[
    "boolean",
    "defined",
    "divisibleby",
    "endingwith",
    "eq",
    "escaped",
    "even",
    "false",
    "filter",
    "float",
    "ge",
    "gt",
    "in",
    "integer",
    "iterable",
    "le",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "sameas",
    "sequence",
    "startingwith",
    "string",
    "test",
    "true",
    "undefined",
    "upper",
];

/// An unknown filter or test in `template`: the message and the byte range
/// of the template text it points at.
pub(crate) fn unknown_call(
    env: &Environment<'static>,
    template: &Template,
    roots: &[&str],
) -> Option<(String, Option<Range<usize>>)> {
    let ctx: std::collections::BTreeMap<&str, Value> = roots
        .iter()
        .map(|root| (*root, Placeholder::value(*root)))
        .collect();
    let error = template.render(&Value::from(ctx)).err()?;
    let (what, names) = match error.failure {
        Failure::UnknownFilter => ("filter", FILTERS),
        Failure::UnknownTest => ("test", TESTS),
        _ => return None,
    };
    let name = unknown_name(&error.message)?;
    let known: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| exists(env, what, n))
        .collect();
    let hint = crate::suggest::did_you_mean(&name, known.iter().copied());
    let message = format!(
        "{}: unknown {what} `{name}`{hint}; {what}s: {}; template: {:?}",
        template.place(),
        known.join(", "),
        template.source()
    );
    // Point at the name itself when it can be found after the error's start.
    let range = error.range.map(|r| {
        let from = r.start.min(template.source().len());
        match template.source()[from..].find(&name) {
            Some(at) => from + at..from + at + name.len(),
            None => r,
        }
    });
    Some((message, range))
}

/// `shout` from minijinja's "unknown filter: filter shout is unknown".
fn unknown_name(message: &str) -> Option<String> {
    let before = message.rsplit_once(" is unknown")?.0;
    before.split_whitespace().last().map(str::to_string)
}

/// Whether `env` has the filter or test `name`.
fn exists(env: &Environment<'static>, what: &str, name: &str) -> bool {
    let source = match what {
        "filter" => format!("{{{{ none | {name} }}}}"),
        _ => format!("{{{{ none is {name} }}}}"),
    };
    match env.render_str(&source, ()) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            minijinja::ErrorKind::UnknownFilter | minijinja::ErrorKind::UnknownTest
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_minijinja_messages() {
        assert_eq!(
            unknown_name("unknown filter: filter shout is unknown").as_deref(),
            Some("shout")
        );
        assert_eq!(
            unknown_name("unknown test: test oddd is unknown").as_deref(),
            Some("oddd")
        );
        let env = crate::template::environment();
        assert!(exists(&env, "filter", "upper"));
        assert!(!exists(&env, "filter", "shout"));
        assert!(exists(&env, "test", "odd"));
    }
}
