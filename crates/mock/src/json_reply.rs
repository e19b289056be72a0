//! JSON answers for chat requests with a `response_format`: `json_object`
//! gets an object, `json_schema` a value that validates against the schema
//! (types, `properties` with every `required` key, `items` and their
//! counts, `enum`, `const`, numeric bounds, string lengths, the first
//! branch of `anyOf`/`oneOf`/`allOf`), so graders can be tried offline.

use serde_json::{json, Map, Value};

use crate::reply;

/// What a request's `response_format` asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonReply {
    /// `{"type": "json_object"}`: any JSON object.
    Object,
    /// `{"type": "json_schema", "json_schema": {"schema": …}}`.
    Schema(Value),
}

impl JsonReply {
    /// From a request's `response_format`; `None` for text or no format.
    pub(crate) fn of(format: &Value) -> Option<JsonReply> {
        match format.get("type").and_then(Value::as_str)? {
            "json_object" => Some(JsonReply::Object),
            "json_schema" => {
                let spec = format.get("json_schema")?;
                // `schema` per OpenAI; a bare schema is taken as well.
                let schema = spec.get("schema").unwrap_or(spec);
                Some(JsonReply::Schema(schema.clone()))
            }
            _ => None,
        }
    }

    /// The answer's text: compact JSON, chosen by `seed`; a `json_object`
    /// answer's `answer` text is about `tokens` long.
    pub(crate) fn text(&self, seed: u64, tokens: u64) -> String {
        let value = match self {
            JsonReply::Object => {
                let mut rng = fastrand::Rng::with_seed(seed);
                json!({
                    "answer": reply::text(seed, tokens.saturating_sub(8).max(1)),
                    "score": rng.u64(1..=5),
                })
            }
            JsonReply::Schema(schema) => {
                let mut rng = fastrand::Rng::with_seed(seed);
                generate(schema, &mut rng, 0)
            }
        };
        value.to_string()
    }
}

/// A chat answer: JSON when the request's `response_format` asks for it
/// (unless `invalid_json` makes this one plain text, to exercise the
/// client's handling of a broken JSON answer), else plain reply text.
pub(crate) fn chat(json: Option<&JsonReply>, seed: u64, tokens: u64, invalid_json: bool) -> String {
    match json {
        Some(format) if !invalid_json => format.text(seed, tokens),
        _ => reply::text(seed, tokens),
    }
}

/// Completion tokens of an answer: as asked, except a JSON answer, whose
/// length is its own (counted as the model's texts are, see
/// [`crate::count`]).
pub(crate) fn answer_tokens(
    json: Option<&JsonReply>,
    text: &str,
    asked: u64,
    counter: crate::count::Counter,
) -> u64 {
    match json {
        Some(_) => counter.tokens(text),
        None => asked,
    }
}

/// Nesting deeper than this gets `null` (a recursive schema must end).
const DEPTH: usize = 12;

fn generate(schema: &Value, rng: &mut fastrand::Rng, depth: usize) -> Value {
    if depth > DEPTH {
        return Value::Null;
    }
    let Some(s) = schema.as_object() else {
        // `true` (anything) or a schema we cannot read: a string will do.
        return json!("mock");
    };
    if let Some(c) = s.get("const") {
        return c.clone();
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.is_empty() {
            return options[rng.usize(..options.len())].clone();
        }
    }
    for branch in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = s
            .get(branch)
            .and_then(Value::as_array)
            .and_then(|b| b.first())
        {
            return generate(first, rng, depth + 1);
        }
    }
    let kind = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if s.contains_key("properties") => "object",
        _ if s.contains_key("items") => "array",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    out.insert(name.clone(), generate(sub, rng, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let min = s.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            let max = s
                .get("maxItems")
                .and_then(Value::as_u64)
                .unwrap_or(min.max(3));
            let n = rng.u64(min..=max.max(min)).min(64);
            let items = s.get("items").cloned().unwrap_or(json!({"type": "string"}));
            Value::Array((0..n).map(|_| generate(&items, rng, depth + 1)).collect())
        }
        "integer" => {
            let (lo, hi) = bounds(s, 0.0, 10.0);
            json!(rng.i64(lo.ceil() as i64..=hi.floor() as i64))
        }
        "number" => {
            let (lo, hi) = bounds(s, 0.0, 1.0);
            let x = lo + rng.f64() * (hi - lo);
            json!((x * 100.0).round().clamp(lo * 100.0, hi * 100.0) / 100.0)
        }
        "boolean" => json!(rng.bool()),
        "null" => Value::Null,
        _ => {
            let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            let max = s
                .get("maxLength")
                .and_then(Value::as_u64)
                .map(|m| m as usize);
            let mut text = reply::text(rng.u64(..), 4).replace("mock reply: ", "");
            while text.chars().count() < min {
                text.push('x');
            }
            if let Some(max) = max {
                text = text.chars().take(max).collect();
            }
            json!(text)
        }
    }
}

/// `minimum`/`maximum` (exclusive ones nudged inward), or the defaults.
fn bounds(s: &Map<String, Value>, lo: f64, hi: f64) -> (f64, f64) {
    let get = |k: &str| s.get(k).and_then(Value::as_f64);
    let lo = get("minimum")
        .or(get("exclusiveMinimum").map(|x| x + 1.0))
        .unwrap_or(lo);
    let hi = get("maximum")
        .or(get("exclusiveMaximum").map(|x| x - 1.0))
        .unwrap_or(hi.max(lo));
    (lo, hi.max(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_object_answer_is_an_object() {
        let text = JsonReply::of(&json!({"type": "json_object"}))
            .unwrap()
            .text(7, 16);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v.is_object(), "{text}");
        assert!(JsonReply::of(&json!({"type": "text"})).is_none());
    }

    #[test]
    fn a_schema_answer_has_every_property_of_the_right_type() {
        let format = json!({"type": "json_schema", "json_schema": {"name": "grade", "strict": true,
        "schema": {"type": "object", "required": ["grade", "reason", "tags", "ok", "level"],
          "properties": {
            "grade": {"type": "integer", "minimum": 1, "maximum": 5},
            "reason": {"type": "string", "maxLength": 10},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
            "ok": {"type": "boolean"},
            "level": {"enum": ["low", "high"]},
            "score": {"type": ["number", "null"], "minimum": 0.5, "maximum": 0.6}
          }}}});
        for seed in 0..50 {
            let text = JsonReply::of(&format).unwrap().text(seed, 16);
            let v: Value = serde_json::from_str(&text).unwrap();
            let grade = v["grade"].as_i64().unwrap();
            assert!((1..=5).contains(&grade), "{text}");
            assert!(
                v["reason"].as_str().unwrap().chars().count() <= 10,
                "{text}"
            );
            assert_eq!(v["tags"].as_array().unwrap().len(), 2, "{text}");
            assert!(v["ok"].is_boolean(), "{text}");
            assert!(
                ["low", "high"].contains(&v["level"].as_str().unwrap()),
                "{text}"
            );
            let score = v["score"].as_f64().unwrap();
            assert!((0.5..=0.6).contains(&score), "{text}");
        }
    }
}
