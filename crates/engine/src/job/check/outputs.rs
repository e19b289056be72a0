//! What an earlier step leaves in `steps.NAME` before the run has an answer:
//! the fields its kind produces, typed (`text` a string, `status` a number,
//! `usage` its two counts, `turns` a list of exchanges), with a
//! [`Placeholder`] where the content is the answer's own (`json`).

use std::collections::BTreeMap;

use minijinja::Value;
use sluice_spec::{Fallback, Placeholder, Step};

use crate::job::kinds;

/// The output of one call (or conversation) of `step`, as later templates see it.
pub(crate) fn typed(step: &Step, path: &str) -> Value {
    let mut fields: BTreeMap<&str, Value> = BTreeMap::new();
    fields.insert("json", Placeholder::value(format!("{path}.json")));
    kinds::of(&step.kind).output_fields(path, &mut fields);
    if step.stream {
        fields.insert("ttft_ms", Value::from(0));
        fields.insert("tokens_per_s", Value::from(0.0));
    }
    if let Some(Fallback::Value(_)) = &step.fallback {
        // A fallback value stands in with text and json (and a file when
        // it names one): those may be read whichever way the step ends.
        fields
            .entry("text")
            .or_insert_with(|| kinds::placeholder_text(path));
    }
    Value::from(fields)
}

/// The names a value has as fields, for "x has: a, b" (none for a
/// non-object or a placeholder).
pub(crate) fn field_names(value: &Value) -> Option<Vec<String>> {
    if Placeholder::is(value) || value.kind() != minijinja::value::ValueKind::Map {
        return None;
    }
    let keys = value.try_iter().ok()?;
    Some(
        keys.filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(text: &str) -> Step {
        let job = sluice_spec::parse_str(text, std::path::Path::new("/j/job.toml"), &[]).unwrap();
        job.steps.into_iter().next().unwrap()
    }

    #[test]
    fn each_kind_has_its_own_fields() {
        let chat = step(
            "[input]\npath = \"x.jsonl\"\n[providers.p]\nbase_url = \"http://h\"\n\
             [[steps]]\nname = \"a\"\nkind = \"chat\"\nprovider = \"p\"\nmodel = \"m\"\n\
             messages = [{ role = \"user\", content = \"hi\" }]\n",
        );
        let v = typed(&chat, "steps.a");
        assert_eq!(
            field_names(&v).unwrap(),
            vec!["json", "text", "usage"],
            "chat: no status, file or turns"
        );
        let command = step(
            "[input]\npath = \"x.jsonl\"\n[[steps]]\nname = \"c\"\nkind = \"command\"\n\
             command = [\"echo\"]\n",
        );
        let v = typed(&command, "steps.c");
        assert_eq!(field_names(&v).unwrap(), vec!["json", "status", "text"]);
        assert!(field_names(&Placeholder::value("x")).is_none());
    }
}
