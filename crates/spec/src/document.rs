//! The document: TOML parsed with spans and split into sections, each section
//! (and each provider and step) deserialized on its own, so that one bad part
//! does not hide the problems of the others.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::diag::Diags;
use crate::raw::{RawBudget, RawInput, RawOutput, RawProvider, RawStep, RawValue, RawWebhook};

/// The top-level keys, in the order the docs list them.
const TOP_KEYS: &str = "name, env, concurrency, max_in_flight, unit_timeout, budget, input, \
                        matrix, providers, steps, output, webhook";

/// The whole file, as raw sections.
#[derive(Default)]
pub(crate) struct RawJob {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) env: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) concurrency: Option<Spanned<u64>>,
    pub(crate) unit_timeout: Option<Spanned<String>>,
    /// One unit's calls in flight at most, across its steps and fan-outs.
    pub(crate) max_in_flight: Option<Spanned<u64>>,
    pub(crate) budget: Option<Spanned<RawBudget>>,
    pub(crate) input: Part<RawInput>,
    /// `[matrix]` keys with their values (none when the value had a TOML error).
    pub(crate) matrix: Vec<(Spanned<String>, Option<Spanned<RawValue>>)>,
    pub(crate) providers: Vec<Entry<RawProvider>>,
    /// `steps` present at all (even if empty or broken).
    pub(crate) steps_span: Option<Range<usize>>,
    pub(crate) steps: Vec<StepEntry>,
    pub(crate) output: Part<RawOutput>,
    pub(crate) webhook: Part<RawWebhook>,
}

/// A section that may be missing, broken (already reported) or fine.
#[derive(Default)]
pub(crate) enum Part<T> {
    #[default]
    Absent,
    Broken,
    Present {
        span: Range<usize>,
        raw: T,
    },
}

/// One `[providers.NAME]`: its name (with the key's span) and, if it
/// deserialized, its contents.
pub(crate) struct Entry<T> {
    pub(crate) name: Spanned<String>,
    pub(crate) raw: Option<T>,
}

/// One `[[steps]]` table.
pub(crate) struct StepEntry {
    /// The table's span (its `[[steps]]` header).
    pub(crate) span: Range<usize>,
    /// The keys as written, with spans, for per-kind field checks.
    pub(crate) keys: Vec<Spanned<String>>,
    /// `name`, read directly so a step that failed to deserialize can still
    /// be referenced by later steps without spurious errors.
    pub(crate) name_hint: Option<String>,
    /// `kind`, read directly, so that unknown keys are reported with the
    /// keys of this kind even when the step does not deserialize.
    pub(crate) kind_hint: Option<String>,
    pub(crate) raw: Option<RawStep>,
}

/// Parses `text`; TOML syntax errors end here (a broken document would only
/// produce misleading follow-up errors), all of them reported.
pub(crate) fn parse(text: &str, diags: &mut Diags<'_>) -> Option<RawJob> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in &errors {
            diags.toml(e, "TOML syntax error", None);
        }
        return None;
    }
    let mut job = RawJob::default();
    for (key, value) in doc.get_ref().iter() {
        match key.get_ref().as_ref() {
            "name" => job.name = de(value, "", Some("name"), diags),
            "env" => job.env = de(value, "", Some("env"), diags),
            "concurrency" => job.concurrency = de(value, "", Some("concurrency"), diags),
            "unit_timeout" => job.unit_timeout = de(value, "", Some("unit_timeout"), diags),
            "max_in_flight" => job.max_in_flight = de(value, "", Some("max_in_flight"), diags),
            "budget" => job.budget = de(value, "", Some("budget"), diags),
            "webhook" => job.webhook = part(value, "[webhook]", diags),
            "input" => job.input = part(value, "[input]", diags),
            "output" => job.output = part(value, "[output]", diags),
            "matrix" => job.matrix = matrix(value, diags),
            "providers" => job.providers = providers(value, diags),
            "steps" => {
                job.steps_span = Some(value.span());
                job.steps = steps(value, diags);
            }
            other => {
                let hint = crate::suggest::did_you_mean(other, TOP_KEYS.split(", "));
                diags.at(
                    key.span(),
                    format!("unknown top-level key `{other}`{hint}; allowed: {TOP_KEYS}"),
                )
            }
        }
    }
    Some(job)
}

fn part<T: DeserializeOwned>(value: &Spanned<DeValue<'_>>, ctx: &str, d: &mut Diags) -> Part<T> {
    match de(value, ctx, None, d) {
        Some(raw) => Part::Present {
            span: value.span(),
            raw,
        },
        None => Part::Broken,
    }
}

fn matrix(
    value: &Spanned<DeValue<'_>>,
    diags: &mut Diags,
) -> Vec<(Spanned<String>, Option<Spanned<RawValue>>)> {
    let Some(table) = table(value, "[matrix]", diags) else {
        return Vec::new();
    };
    table
        .iter()
        .map(|(k, v)| {
            let name = Spanned::new(k.span(), k.get_ref().to_string());
            let values = de(v, "[matrix]", Some(k.get_ref()), diags);
            (name, values)
        })
        .collect()
}

fn providers(value: &Spanned<DeValue<'_>>, diags: &mut Diags) -> Vec<Entry<RawProvider>> {
    let Some(table) = table(value, "[providers]", diags) else {
        return Vec::new();
    };
    table
        .iter()
        .map(|(k, v)| {
            let context = format!("[providers.{}]", k.get_ref());
            Entry {
                name: Spanned::new(k.span(), k.get_ref().to_string()),
                raw: de(v, &context, None, diags),
            }
        })
        .collect()
}

fn steps(value: &Spanned<DeValue<'_>>, diags: &mut Diags) -> Vec<StepEntry> {
    let DeValue::Array(items) = value.get_ref() else {
        diags.at(
            value.span(),
            "`steps` must be a list of tables: write each step as a [[steps]] section",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let DeValue::Table(t) = item.get_ref() else {
            let found = item.get_ref().type_str();
            diags.at(
                item.span(),
                format!("steps[{i}] must be a table, not {found}"),
            );
            continue;
        };
        let name_hint = t
            .iter()
            .find(|(k, _)| k.get_ref() == "name")
            .and_then(|(_, v)| v.get_ref().as_str().map(str::to_string));
        let kind_hint = t
            .iter()
            .find(|(k, _)| k.get_ref() == "kind")
            .and_then(|(_, v)| v.get_ref().as_str().map(str::to_string));
        let context = match &name_hint {
            Some(name) => format!("step {name:?}"),
            None => format!("step {}", i + 1),
        };
        // Unknown keys are reported by `steps` with the keys of the step's
        // kind and a suggestion; the rest of the step is still checked.
        let known: DeTable<'_> = t
            .iter()
            .filter(|(k, _)| crate::step_keys::is_step_key(k.get_ref()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let known = Spanned::new(item.span(), DeValue::Table(known));
        out.push(StepEntry {
            span: item.span(),
            keys: t
                .keys()
                .map(|k| Spanned::new(k.span(), k.get_ref().to_string()))
                .collect(),
            name_hint,
            kind_hint,
            raw: de(&known, &context, None, diags),
        });
    }
    out
}

fn table<'a, 'i>(
    value: &'a Spanned<DeValue<'i>>,
    ctx: &str,
    diags: &mut Diags,
) -> Option<&'a DeTable<'i>> {
    match value.get_ref() {
        DeValue::Table(t) => Some(t),
        other => {
            let found = other.type_str();
            diags.at(value.span(), format!("{ctx} must be a table, not {found}"));
            None
        }
    }
}

/// Deserializes one value; a failure is reported with the section's name and
/// the offending key's dotted path.
fn de<T: DeserializeOwned>(
    value: &Spanned<DeValue<'_>>,
    context: &str,
    key: Option<&str>,
    diags: &mut Diags,
) -> Option<T> {
    match T::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.span().and_then(|span| key_at(value, &span));
            let path = match (key, inner) {
                (Some(k), Some(i)) => Some(join(k, &i)),
                (Some(k), None) => Some(k.to_string()),
                (None, inner) => inner,
            };
            diags.toml(&e, context, path.as_deref());
            None
        }
    }
}

/// The dotted path (`retries.max`, `messages[0].role`) of the key or value
/// at `span` inside `value`.
fn key_at(value: &Spanned<DeValue<'_>>, span: &Range<usize>) -> Option<String> {
    match value.get_ref() {
        DeValue::Table(t) => t.iter().find_map(|(k, v)| {
            let name = k.get_ref().as_ref();
            if v.span() == *span || k.span() == *span {
                Some(name.to_string())
            } else {
                key_at(v, span).map(|rest| join(name, &rest))
            }
        }),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            if v.span() == *span {
                Some(format!("[{i}]"))
            } else {
                key_at(v, span).map(|rest| join(&format!("[{i}]"), &rest))
            }
        }),
        _ => None,
    }
}

fn join(prefix: &str, rest: &str) -> String {
    if rest.starts_with('[') {
        format!("{prefix}{rest}")
    } else {
        format!("{prefix}.{rest}")
    }
}
