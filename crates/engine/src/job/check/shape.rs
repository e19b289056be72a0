//! An item's shape — its keys and the types of its values, nested — so that
//! a quick check renders one item of each shape: whether a template finds
//! its fields depends on the shape, rarely on the values.

use serde_json::Value as Json;
use xxhash_rust::xxh3::Xxh3;

/// A hash of `item`'s shape.
pub(super) fn of(item: &Json) -> u64 {
    let mut hasher = Xxh3::new();
    feed(item, &mut hasher, 0);
    hasher.digest()
}

/// Nesting deeper than this counts as "a value" (templates rarely reach it).
const DEPTH: usize = 6;

fn feed(value: &Json, h: &mut Xxh3, depth: usize) {
    let tag: u8 = match value {
        Json::Null => 0,
        Json::Bool(_) => 1,
        Json::Number(n) if n.is_f64() => 2,
        Json::Number(_) => 3,
        Json::String(s) if s.is_empty() => 4,
        Json::String(_) => 5,
        Json::Array(a) if a.is_empty() => 6,
        Json::Array(_) => 7,
        Json::Object(_) => 8,
    };
    h.update(&[tag]);
    if depth >= DEPTH {
        return;
    }
    match value {
        Json::Array(items) => {
            // Lists are usually uniform: the first element stands for all.
            if let Some(first) = items.first() {
                feed(first, h, depth + 1);
            }
        }
        Json::Object(fields) => {
            for (k, v) in fields {
                h.update(k.as_bytes());
                h.update(&[0xff]);
                feed(v, h, depth + 1);
            }
            h.update(&[0xfe]);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn shapes_follow_keys_and_types_not_values() {
        let a = super::of(&json!({"id": 1, "q": "x", "tags": ["a"]}));
        assert_eq!(
            a,
            super::of(&json!({"id": 2, "q": "y", "tags": ["b", "c"]}))
        );
        assert_ne!(
            a,
            super::of(&json!({"id": 1, "question": "x", "tags": ["a"]}))
        );
        assert_ne!(a, super::of(&json!({"id": "1", "q": "x", "tags": ["a"]})));
        assert_ne!(a, super::of(&json!({"id": 1, "q": "x", "tags": []})));
    }
}
