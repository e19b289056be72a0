//! The job file as written: serde types mirroring the TOML, every value that a
//! diagnostic may point at kept with its span. Nothing here is checked beyond
//! TOML types and unknown keys; `build` and `steps` turn these into the model.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize as DeriveDeserialize;
use toml::Spanned;

/// The key toml uses to pass a datetime through serde's data model.
const DATETIME_KEY: &str = "$__toml_private_datetime";

/// `[input]`.
#[derive(DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawInput {
    pub(crate) path: Option<Spanned<String>>,
    pub(crate) glob: Option<Spanned<String>>,
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) format: Option<Spanned<String>>,
    pub(crate) pointer: Option<Spanned<String>>,
    pub(crate) page_size: Option<Spanned<u64>>,
    pub(crate) limit_param: Option<Spanned<String>>,
    pub(crate) offset_param: Option<Spanned<String>>,
    pub(crate) headers: Option<Spanned<Table<Spanned<String>>>>,
    pub(crate) id: Option<Spanned<String>>,
}

/// One `[providers.NAME]` table.
#[derive(DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawProvider {
    pub(crate) base_url: Option<Spanned<String>>,
    pub(crate) urls: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) api_key_env: Option<Spanned<String>>,
    pub(crate) concurrency: Option<Spanned<RawConcurrency>>,
    pub(crate) max_concurrency: Option<Spanned<u64>>,
    pub(crate) url_concurrency: Option<Spanned<u64>>,
    pub(crate) rps: Option<Spanned<u64>>,
    pub(crate) rpm: Option<Spanned<u64>>,
    pub(crate) rph: Option<Spanned<u64>>,
    pub(crate) rpd: Option<Spanned<u64>>,
    pub(crate) tpm: Option<Spanned<u64>>,
    pub(crate) tpd: Option<Spanned<u64>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) connect_timeout: Option<Spanned<String>>,
    pub(crate) retries: Option<Spanned<RawRetries>>,
    pub(crate) circuit_breaker: Option<Spanned<RawBreakerSetting>>,
    pub(crate) headers: Option<Spanned<Table<Spanned<String>>>>,
    pub(crate) prices: Option<Spanned<Table<Spanned<RawPrice>>>>,
    pub(crate) api: Option<Spanned<String>>,
    pub(crate) mode: Option<Spanned<String>>,
    pub(crate) deadline: Option<Spanned<String>>,
    pub(crate) batch: Option<Spanned<RawBatch>>,
    pub(crate) assume_latency: Option<Spanned<String>>,
}

/// `batch = { size, window, poll, waiting, retry, completion_window,
/// max_enqueued_tokens }`; every field optional.
#[derive(DeriveDeserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { size = 10000, window = \"10s\", poll = \"30s\" }"
)]
pub(crate) struct RawBatch {
    pub(crate) size: Option<Spanned<u64>>,
    pub(crate) window: Option<Spanned<String>>,
    pub(crate) poll: Option<Spanned<String>>,
    pub(crate) waiting: Option<Spanned<u64>>,
    pub(crate) retry: Option<Spanned<String>>,
    pub(crate) completion_window: Option<Spanned<String>>,
    pub(crate) max_enqueued_tokens: Option<Spanned<u64>>,
}

/// A provider's `concurrency`: a count, or a word (only `"auto"` is valid).
pub(crate) enum RawConcurrency {
    Count(u64),
    Word(String),
}

impl<'de> Deserialize<'de> for RawConcurrency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawConcurrency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number or \"auto\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawConcurrency::Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(RawConcurrency::Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawConcurrency::Word(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `circuit_breaker = false | true | { ... }`.
pub(crate) enum RawBreakerSetting {
    Enabled(bool),
    Table(RawBreaker),
}

impl<'de> Deserialize<'de> for RawBreakerSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBreakerSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("false or a table like { failures = 5, cooldown = \"30s\" }")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(RawBreakerSetting::Enabled(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                // The fields still come from toml's own map, so they keep their spans.
                RawBreaker::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawBreakerSetting::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// `circuit_breaker = { failures, cooldown, window, rate }`; every field optional.
#[derive(DeriveDeserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub(crate) failures: Option<Spanned<u32>>,
    pub(crate) cooldown: Option<Spanned<String>>,
    pub(crate) window: Option<Spanned<u32>>,
    pub(crate) rate: Option<Spanned<f64>>,
}

/// One `prices` entry: USD per million tokens.
#[derive(DeriveDeserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { input = 2.5, output = 10 }"
)]
pub(crate) struct RawPrice {
    pub(crate) input: Option<Spanned<f64>>,
    pub(crate) output: Option<Spanned<f64>>,
    pub(crate) batch_input: Option<Spanned<f64>>,
    pub(crate) batch_output: Option<Spanned<f64>>,
}

/// `retries = { max, base, cap }`; every field optional.
#[derive(DeriveDeserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { max = 6, base = \"500ms\", cap = \"60s\" }"
)]
pub(crate) struct RawRetries {
    pub(crate) max: Option<Spanned<u32>>,
    pub(crate) base: Option<Spanned<String>>,
    pub(crate) cap: Option<Spanned<String>>,
}

/// One `[[steps]]` table: the fields of every kind; `steps` checks which
/// belong to the step's kind. Required fields are optional here so that one
/// missing field does not hide the step's other problems.
#[derive(DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawStep {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) kind: Option<Spanned<String>>,
    pub(crate) provider: Option<Spanned<String>>,
    pub(crate) concurrency: Option<Spanned<u64>>,
    pub(crate) for_each: Option<Spanned<String>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) retries: Option<Spanned<RawRetries>>,
    pub(crate) fallback: Option<Spanned<RawFallback>>,
    pub(crate) cache: Option<Spanned<RawCache>>,
    pub(crate) model: Option<Spanned<String>>,
    pub(crate) messages: Option<Spanned<Vec<Spanned<RawMessage>>>>,
    pub(crate) params: Option<Spanned<RawValue>>,
    pub(crate) response_format: Option<Spanned<RawValue>>,
    pub(crate) path: Option<Spanned<String>>,
    pub(crate) input: Option<Spanned<RawValue>>,
    pub(crate) method: Option<Spanned<String>>,
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) headers: Option<Spanned<Table<Spanned<String>>>>,
    pub(crate) json: Option<Spanned<RawValue>>,
    pub(crate) body: Option<Spanned<String>>,
    pub(crate) upload: Option<Spanned<RawUpload>>,
    pub(crate) save: Option<Spanned<String>>,
    pub(crate) command: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) stdin: Option<Spanned<String>>,
    pub(crate) system: Option<Spanned<String>>,
    /// Each turn: text, or a list of OpenAI content parts.
    pub(crate) turns: Option<Spanned<Vec<Spanned<RawValue>>>>,
    pub(crate) stream: Option<Spanned<bool>>,
    pub(crate) assume_latency: Option<Spanned<String>>,
    /// `embed`: units' inputs sent in one request.
    pub(crate) batch: Option<Spanned<u64>>,
    /// The steps this one waits for.
    pub(crate) needs: Option<Spanned<Vec<Spanned<String>>>>,
    /// The key that keeps calls on one endpoint of a pool.
    pub(crate) affinity: Option<Spanned<String>>,
    /// With `affinity`: go to the next endpoint while its own is down.
    pub(crate) affinity_failover: Option<Spanned<bool>>,
}

/// `fallback = { value = ... }` or `{ provider = "NAME" }`.
#[derive(DeriveDeserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { value = \"unavailable\" } or { provider = \"backup\" }"
)]
pub(crate) struct RawFallback {
    pub(crate) value: Option<Spanned<RawValue>>,
    pub(crate) provider: Option<Spanned<String>>,
}

/// `cache = { ttl = "168h" }`.
#[derive(DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a table like { ttl = \"168h\" }")]
pub(crate) struct RawCache {
    pub(crate) ttl: Option<Spanned<String>>,
}

/// `{ role = "user", content = "..." }`.
#[derive(DeriveDeserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { role = \"user\", content = \"...\" }"
)]
pub(crate) struct RawMessage {
    pub(crate) role: Option<Spanned<String>>,
    /// Text, or a list of OpenAI content parts.
    pub(crate) content: Option<Spanned<RawValue>>,
    /// A `tool` message: the id of the call it answers.
    pub(crate) tool_call_id: Option<Spanned<String>>,
    /// An `assistant` message: the tool calls it made (OpenAI's shape).
    pub(crate) tool_calls: Option<Spanned<RawValue>>,
}

/// `upload = { file, field, fields }`.
#[derive(DeriveDeserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { file = \"{{ item.path }}\" }"
)]
pub(crate) struct RawUpload {
    pub(crate) file: Option<Spanned<String>>,
    pub(crate) field: Option<Spanned<String>>,
    pub(crate) fields: Option<Spanned<Table<Spanned<String>>>>,
}

/// `[output]`.
#[derive(DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawOutput {
    pub(crate) path: Option<Spanned<String>>,
    pub(crate) dir: Option<Spanned<String>>,
}

/// `[webhook]`.
#[derive(DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawWebhook {
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) on: Option<Spanned<String>>,
    pub(crate) secret_env: Option<Spanned<String>>,
    pub(crate) headers: Option<Spanned<Table<Spanned<String>>>>,
    pub(crate) retries: Option<Spanned<RawRetries>>,
}

/// `budget = { usd = 50.0 }`.
#[derive(DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a table like { usd = 50.0 }")]
pub(crate) struct RawBudget {
    pub(crate) usd: Option<Spanned<f64>>,
}

/// A TOML table with its keys in file order.
pub(crate) struct Table<V>(pub(crate) Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Table<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TableVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for TableVisitor<V> {
            type Value = Table<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    pairs.push((key, map.next_value()?));
                }
                Ok(Table(pairs))
            }
        }
        d.deserialize_map(TableVisitor(std::marker::PhantomData))
    }
}

/// Any TOML value, every nested value with its span (bodies, params, matrix).
#[derive(Debug)]
pub(crate) enum RawValue {
    /// A string (a template where templates are allowed).
    String(String),
    /// An integer or a float.
    Number(serde_json::Number),
    /// `true` / `false`.
    Bool(bool),
    /// A TOML datetime, kept as its text.
    Datetime(String),
    /// An array.
    Array(Vec<Spanned<RawValue>>),
    /// A table, keys in file order.
    Table(Vec<(String, Spanned<RawValue>)>),
}

impl RawValue {
    /// The TOML type's name, for messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            RawValue::String(_) => "a string",
            RawValue::Number(_) => "a number",
            RawValue::Bool(_) => "a boolean",
            RawValue::Datetime(_) => "a datetime",
            RawValue::Array(_) => "an array",
            RawValue::Table(_) => "a table",
        }
    }

    /// The value as plain JSON (no templates).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            RawValue::String(s) | RawValue::Datetime(s) => serde_json::Value::String(s.clone()),
            RawValue::Number(n) => serde_json::Value::Number(n.clone()),
            RawValue::Bool(b) => serde_json::Value::Bool(*b),
            RawValue::Array(items) => {
                serde_json::Value::Array(items.iter().map(|i| i.get_ref().to_json()).collect())
            }
            RawValue::Table(fields) => serde_json::Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.get_ref().to_json()))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawValueVisitor)
    }
}

struct RawValueVisitor;

impl<'de> Visitor<'de> for RawValueVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
        Ok(RawValue::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawValue, E> {
        serde_json::Number::from_f64(v)
            .map(RawValue::Number)
            .ok_or_else(|| E::custom(format!("{v} cannot be sent as JSON; use a finite number")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(RawValue::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut fields = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == DATETIME_KEY {
                return Ok(RawValue::Datetime(map.next_value()?));
            }
            fields.push((key, map.next_value()?));
        }
        Ok(RawValue::Table(fields))
    }
}
