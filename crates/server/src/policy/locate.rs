//! Where a key sits in a job file: the line and column a refusal names
//! (`steps[1].kind` → `job.toml:9:1`), read from the TOML's spans.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a path into the document.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Key<'a> {
    /// A table's key.
    Name(&'a str),
    /// An array's element.
    Index(usize),
}

/// The 1-based line and character column of the last key of `path` (of the
/// element, for a trailing index); the deepest part found when the rest is
/// not there (a key set by default has no place of its own).
pub(crate) fn position(text: &str, path: &[Key<'_>]) -> (usize, usize) {
    let Ok(doc) = DeTable::parse(text) else {
        return (1, 1);
    };
    let mut offset = 0;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for key in path {
        match key {
            Key::Name(name) => {
                let Some(t) = table else { break };
                let Some((k, v)) = t.iter().find(|(k, _)| k.get_ref() == name) else {
                    break;
                };
                offset = k.span().start;
                value = Some(v);
            }
            Key::Index(i) => {
                let Some(DeValue::Array(items)) = value.map(Spanned::get_ref) else {
                    break;
                };
                let Some(item) = items.get(*i) else { break };
                offset = item.span().start;
                value = Some(item);
            }
        }
        table = match value.map(Spanned::get_ref) {
            Some(DeValue::Table(t)) => Some(t),
            _ => None,
        };
    }
    line_column(text, offset)
}

/// Whether the job file sets the key at `path` (rather than leaving it to
/// its default).
pub(crate) fn exists(text: &str, path: &[Key<'_>]) -> bool {
    let Ok(doc) = DeTable::parse(text) else {
        return false;
    };
    let mut table = doc.get_ref();
    for (i, key) in path.iter().enumerate() {
        let Key::Name(name) = key else { return false };
        let Some((_, v)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
            return false;
        };
        if i + 1 == path.len() {
            return true;
        }
        let DeValue::Table(t) = v.get_ref() else {
            return false;
        };
        table = t;
    }
    false
}

/// 1-based line and character column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_at_their_line_and_column() {
        let text = "name = \"x\"\nenv = [\"A\", \"B\"]\n[input]\npath = \"/etc/passwd\"\n[[steps]]\nname = \"a\"\nkind = \"chat\"\n[[steps]]\nname = \"b\"\n  kind = \"command\"\n[providers.p]\napi_key_env = \"K\"\n";
        let at = |path: &[Key]| position(text, path);
        assert_eq!(at(&[Key::Name("input"), Key::Name("path")]), (4, 1));
        assert_eq!(
            at(&[Key::Name("steps"), Key::Index(1), Key::Name("kind")]),
            (10, 3)
        );
        assert_eq!(at(&[Key::Name("env"), Key::Index(1)]), (2, 13));
        assert_eq!(
            at(&[
                Key::Name("providers"),
                Key::Name("p"),
                Key::Name("api_key_env")
            ]),
            (12, 1)
        );
        // Not there: the deepest part that is.
        assert_eq!(at(&[Key::Name("input"), Key::Name("glob")]), (3, 2));
        assert_eq!(at(&[Key::Name("output"), Key::Name("dir")]), (1, 1));
    }
}
