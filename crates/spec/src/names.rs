//! Run and job names: `[A-Za-z0-9._-]{1,64}`, not only dots. Names become
//! parts of file names (a submitted job's kept copy, saved files under
//! `[output] dir/RUN`), so a name given explicitly that breaks the rule is
//! refused, while one derived from a file's stem is made to fit.

/// Longest name.
pub const MAX_NAME: usize = 64;

/// Why `name` cannot name a run (`None`: it can). The message says what is
/// allowed, for the caller to prefix with where the name came from.
pub fn name_problem(name: &str) -> Option<String> {
    let bad: Vec<char> = name.chars().filter(|c| !is_name_char(*c)).take(3).collect();
    if name.is_empty() {
        Some("is empty; give 1 to 64 letters, digits, '.', '_' or '-'".into())
    } else if !bad.is_empty() {
        Some(format!(
            "contains {}; a name is 1 to 64 letters, digits, '.', '_' or '-' (it becomes part of file names)",
            bad.iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else if name.chars().count() > MAX_NAME {
        Some(format!(
            "is {} characters long; a name is at most {MAX_NAME}",
            name.chars().count()
        ))
    } else if name.chars().all(|c| c == '.') {
        Some("is only dots, which names a directory; use letters or digits".into())
    } else {
        None
    }
}

/// A valid name made from `stem` (a file's stem): every other character
/// becomes `_`, at most 64 characters, `run` when nothing is left.
pub fn name_from_stem(stem: &str) -> String {
    let name: String = stem
        .chars()
        .map(|c| if is_name_char(c) { c } else { '_' })
        .take(MAX_NAME)
        .collect();
    if name.chars().all(|c| c == '.' || c == '_') {
        "run".into()
    } else {
        name
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_plain_words() {
        for ok in [
            "a",
            "poster-analysis",
            "v1.2_final",
            "A.b-c",
            &"x".repeat(64),
        ] {
            assert_eq!(name_problem(ok), None, "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../srv/x",
            "a/b",
            "a\nb",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(name_problem("a/b").unwrap().contains("'/'"));
    }

    #[test]
    fn stems_are_made_to_fit() {
        assert_eq!(name_from_stem("my batch (2)"), "my_batch__2_");
        assert_eq!(name_from_stem("..."), "run");
        assert_eq!(name_from_stem(""), "run");
        assert_eq!(name_from_stem(&"y".repeat(80)).len(), 64);
        assert_eq!(name_from_stem("données"), "donn_es");
        for stem in ["a b", "x/y", "é", ".."] {
            assert_eq!(name_problem(&name_from_stem(stem)), None, "{stem:?}");
        }
    }
}
