//! NUL characters in the input. PostgreSQL cannot keep text holding U+0000
//! (a `custom_id` with one failed every commit, after every call was paid
//! for), so an input line or item with one anywhere in its strings is bad
//! input, found before anything is sent — on every store, so the same input
//! behaves the same on SQLite and PostgreSQL.

use serde_json::Value;

/// Where in a JSON line a string holds a NUL (`custom_id`,
/// `body.messages[0].content`, …), if anywhere. Lines without one cost a
/// scan for `\u0000` and a raw NUL byte.
pub(crate) fn in_line(text: &str) -> Option<String> {
    if !text.contains("\\u0000") && !text.contains('\0') {
        return None;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value) => in_value(&value),
        // Not JSON: the line is refused for that (a raw NUL is invalid JSON).
        Err(_) => None,
    }
}

/// Where in `value` a string or a key holds a NUL, if anywhere.
pub(crate) fn in_value(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &mut String) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Object(map) => map.iter().any(|(key, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key.replace('\0', "\\u0000"));
                let found = key.contains('\0') || walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    walk(value, &mut path).then(|| {
        if path.is_empty() {
            "the value".to_owned()
        } else {
            path
        }
    })
}

/// The message for a NUL found at `path`.
pub(crate) fn message(path: &str) -> String {
    format!(
        "{path} contains a NUL character (\\u0000), which the store cannot keep \
         (PostgreSQL text refuses it); remove it from the input"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_string_or_key_with_a_nul_and_names_its_path() {
        let line = r#"{"custom_id":"a\u0000b","body":{}}"#;
        assert_eq!(in_line(line).as_deref(), Some("custom_id"));
        let deep = r#"{"body":{"messages":[{"content":"ok"},{"content":"x\u0000"}]}}"#;
        assert_eq!(in_line(deep).as_deref(), Some("body.messages[1].content"));
        let key = r#"{"meta":{"k\u0000":1}}"#;
        assert_eq!(in_line(key).as_deref(), Some("meta.k\\u0000"));
        // An escaped backslash before "u0000" is no NUL.
        assert_eq!(in_line(r#"{"a":"\\u0000"}"#), None);
        assert_eq!(in_line(r#"{"a":"plain"}"#), None);
        assert_eq!(
            in_value(&Value::String("\0".into())).as_deref(),
            Some("the value")
        );
        assert!(message("custom_id").starts_with("custom_id contains a NUL"));
    }
}
