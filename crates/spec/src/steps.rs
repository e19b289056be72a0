//! `[[steps]]` → [`Step`]s: names, kinds and the fields each kind takes,
//! providers, limits and overrides, fallbacks and caches. The per-kind
//! contents are in `kinds`.

use std::ops::Range;

use toml::Spanned;

use crate::ctx::{is_identifier, Ctx};
use crate::document::StepEntry;
use crate::model::{Fallback, Provider, Retries, Step};
use crate::raw::RawStep;
use crate::step_keys::{is_step_key, kind_keys, COMMON, KINDS};
use crate::templates_check::Scope;

/// What a kind builder needs to know about its step.
pub(crate) struct StepCtx {
    /// `step "name"`, for messages.
    pub(crate) label: String,
    /// `steps.name` (or `steps[i]` when the name is unusable), for template places.
    pub(crate) place: String,
    /// The `[[steps]]` header, for "missing key" diagnostics.
    pub(crate) span: Range<usize>,
    /// Scope of the step's templates.
    pub(crate) scope: Scope,
    /// The API of the step's provider, for the check of `params`.
    pub(crate) api: Option<crate::offload::Dialect>,
}

/// What templates may read of one `[[steps]]` entry, also of one that failed
/// to build (so that it causes no follow-up errors in later steps).
pub(crate) struct StepRef {
    /// Its `name`, if it is a string.
    pub(crate) name: Option<String>,
    /// It has `for_each`, so its output is a list.
    pub(crate) fans_out: bool,
    /// The steps whose outputs it may read: what it needs, and what they
    /// need, all the way up (by index).
    pub(crate) upstream: Vec<usize>,
}

/// Builds every step; returns them and what templates may read of each entry.
pub(crate) fn steps(
    entries: Vec<StepEntry>,
    steps_span: Option<Range<usize>>,
    providers: &[Provider],
    matrix: &[crate::MatrixAxis],
    ctx: &mut Ctx,
) -> (Vec<Step>, Vec<StepRef>) {
    if entries.is_empty() {
        let message = "the job has no steps; add a [[steps]] section with a name and a kind";
        ctx.diags.at(steps_span.unwrap_or(0..0), message);
    }
    let names: Vec<Option<String>> = entries.iter().map(|e| e.name_hint.clone()).collect();
    let needs: Vec<Vec<usize>> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| declared_needs(i, e.raw.as_ref(), &names))
        .collect();
    let mut refs: Vec<StepRef> = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let mut upstream = std::collections::BTreeSet::new();
        for &j in &needs[i] {
            upstream.insert(j);
            upstream.extend(refs[j].upstream.iter().copied());
        }
        refs.push(StepRef {
            name: e.name_hint.clone(),
            fans_out: e.raw.as_ref().is_some_and(|r| r.for_each.is_some()),
            upstream: upstream.into_iter().collect(),
        });
    }
    let mut out = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        unknown_keys(&entry, index, ctx);
        check_needs(index, entry.raw.as_ref(), &names, ctx);
        if let Some(mut step) = step(index, entry, &names, providers, matrix, ctx) {
            step.needs = needs[index].clone();
            out.push(step);
        }
    }
    (out, refs)
}

/// The earlier steps `needs` names (those it names wrongly are reported by
/// [`check_needs`]), else the step before.
fn declared_needs(index: usize, raw: Option<&RawStep>, names: &[Option<String>]) -> Vec<usize> {
    match raw.and_then(|r| r.needs.as_ref()) {
        Some(list) => {
            let mut out: Vec<usize> = list
                .get_ref()
                .iter()
                .filter_map(|n| {
                    names[..index]
                        .iter()
                        .position(|m| m.as_ref() == Some(n.get_ref()))
                })
                .collect();
            out.sort_unstable();
            out.dedup();
            out
        }
        None => index.checked_sub(1).into_iter().collect(),
    }
}

/// `needs = [...]`: names of steps above this one, each once.
fn check_needs(index: usize, raw: Option<&RawStep>, names: &[Option<String>], ctx: &mut Ctx) {
    let Some(list) = raw.and_then(|r| r.needs.as_ref()) else {
        return;
    };
    let above: Vec<&str> = names[..index]
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let above_text = if above.is_empty() {
        "none (it is the first step)".to_owned()
    } else {
        above.join(", ")
    };
    let mut seen: Vec<&str> = Vec::new();
    for need in list.get_ref() {
        let name = need.get_ref().as_str();
        let at = names.iter().position(|n| n.as_deref() == Some(name));
        let problem = match at {
            _ if seen.contains(&name) => Some(format!("needs lists {name:?} twice")),
            Some(p) if p == index => Some(format!("a step cannot need itself ({name:?}); steps above it: {above_text}")),
            Some(_) if !above.contains(&name) => Some(format!(
                "needs {name:?}, which comes later in the file; a step may need only steps above it (move {name:?} up); steps above it: {above_text}"
            )),
            Some(_) => None,
            None => Some(format!(
                "needs {name:?}: there is no such step{}; steps above it: {above_text}",
                crate::suggest::did_you_mean(name, above.iter().copied())
            )),
        };
        if let Some(message) = problem {
            ctx.diags.at(need.span(), message);
        }
        seen.push(name);
    }
}

fn step(
    index: usize,
    entry: StepEntry,
    names: &[Option<String>],
    providers: &[Provider],
    matrix: &[crate::MatrixAxis],
    ctx: &mut Ctx,
) -> Option<Step> {
    let raw = entry.raw?;
    let label = match &entry.name_hint {
        Some(name) => format!("step {name:?}"),
        None => format!("step {}", index + 1),
    };
    let mut place = format!("steps[{index}]");
    match &raw.name {
        None => ctx.diags.at(
            entry.span.clone(),
            format!("{label} has no name; add name = \"...\" (letters, digits, _)"),
        ),
        Some(name) if !is_identifier(name.get_ref()) => ctx.diags.at(
            name.span(),
            format!(
                "step name {:?} must be letters, digits and _ (not starting with a digit), \
                 as it is used in templates as steps.NAME",
                name.get_ref()
            ),
        ),
        Some(name) => match names
            .iter()
            .position(|n| n.as_ref() == Some(name.get_ref()))
        {
            Some(first) if first < index => ctx.diags.at(
                name.span(),
                format!(
                    "step name {:?} is already used by step {}; step names must be unique",
                    name.get_ref(),
                    first + 1
                ),
            ),
            _ => place = format!("steps.{}", name.get_ref()),
        },
    }
    let name = raw
        .name
        .as_ref()
        .map_or_else(String::new, |n| n.get_ref().clone());

    let kind = match &raw.kind {
        None => {
            let message = format!(
                "{label} has no kind; add kind = \"...\", one of: {}",
                kind_list()
            );
            ctx.diags.at(entry.span.clone(), message);
            None
        }
        Some(k) => match KINDS.iter().find(|(n, _)| n == k.get_ref()) {
            Some((kind, fields)) => {
                check_fields(&entry.keys, kind, fields, &label, ctx);
                Some(*kind)
            }
            None => {
                let message = format!(
                    "unknown step kind {:?}; use one of: {}",
                    k.get_ref(),
                    kind_list()
                );
                ctx.diags.at(k.span(), message);
                None
            }
        },
    };

    let templated = raw
        .provider
        .as_ref()
        .filter(|p| p.get_ref().contains("{{") || p.get_ref().contains("{%"));
    let (provider, provider_template) = match templated {
        Some(t) => {
            for p in crate::provider_choice::values(t, matrix, &label, providers, ctx) {
                crate::offload::step(&raw, kind, &label, p, ctx);
            }
            let scope = Scope::Step {
                index,
                each: false,
                answers: false,
            };
            (
                None,
                Some(ctx.template(format!("{place}.provider"), t, scope)),
            )
        }
        None => (
            provider(&raw.provider, kind, &label, &entry.span, providers, ctx),
            None,
        ),
    };
    if let Some(p) = provider {
        crate::offload::step(&raw, kind, &label, p, ctx);
    }
    let concurrency = match (ctx.sets.step(&name), &raw.concurrency) {
        (Some(n), _) => Some(n),
        (None, Some(n)) => ctx.calls(n, "concurrency"),
        (None, None) => None,
    };
    let for_each = raw.for_each.as_ref().map(|t| {
        let scope = Scope::Step {
            index,
            each: false,
            answers: false,
        };
        let text = t.get_ref().trim();
        let inner = text.strip_prefix("{{").and_then(|x| x.strip_suffix("}}"));
        if inner.is_none_or(|x| x.contains("{{") || x.contains("}}")) {
            let message = format!(
                "for_each {:?} must be a single expression that renders to a list, \
                 e.g. \"{{{{ steps.plan.json.scenes }}}}\"",
                t.get_ref()
            );
            ctx.diags.at(t.span(), message);
        }
        ctx.template(format!("{place}.for_each"), t, scope)
    });
    let timeout = raw.timeout.as_ref().and_then(|t| ctx.nonzero(t, "timeout"));
    let base = provider.map_or_else(Retries::default, |p| p.retries);
    let retries = raw.retries.as_ref().map(|r| ctx.retries(r, base));
    let fallback = fallback(&raw, kind, &label, providers, ctx);
    let cache_ttl = cache(&raw, kind, &label, ctx);
    let batch = embed_batch(&raw, for_each.is_some(), provider, &label, ctx);
    let affinity_scope = Scope::Step {
        index,
        each: for_each.is_some(),
        answers: false,
    };
    let affinity = match (&raw.affinity, provider) {
        (Some(key), Some(_)) => {
            Some(ctx.template(format!("{place}.affinity"), key, affinity_scope))
        }
        (Some(key), None) => {
            let message = format!(
                "{label}: affinity keeps calls on one endpoint of a provider's pool (urls); the step has no provider"
            );
            ctx.diags.at(key.span(), message);
            None
        }
        (None, _) => None,
    };
    if let (Some(flag), None) = (&raw.affinity_failover, &raw.affinity) {
        let message = format!("{label}: affinity_failover goes with affinity = \"{{{{ … }}}}\"; add affinity or drop it");
        ctx.diags.at(flag.span(), message);
    }
    let affinity_failover = raw.affinity_failover.as_ref().is_some_and(|f| *f.get_ref());

    let scope = Scope::Step {
        index,
        each: for_each.is_some(),
        answers: false,
    };
    let step_ctx = StepCtx {
        label,
        place,
        span: entry.span,
        scope,
        api: provider.map(|p| p.api),
    };
    let kind = crate::kinds::build(kind?, &raw, &step_ctx, ctx)?;
    Some(Step {
        name,
        index,
        provider: provider_template
            .is_none()
            .then(|| raw.provider.as_ref().map(|p| p.get_ref().clone()))
            .flatten(),
        provider_template,
        concurrency: concurrency.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        for_each,
        timeout,
        retries,
        fallback,
        cache_ttl,
        stream: raw.stream.as_ref().is_some_and(|s| *s.get_ref()),
        assume_latency: raw
            .assume_latency
            .as_ref()
            .and_then(|t| ctx.nonzero(t, "assume_latency")),
        batch,
        needs: Vec::new(),
        affinity,
        affinity_failover,
        kind,
    })
}

/// Most inputs OpenAI takes in one embeddings request.
const MAX_EMBED_BATCH: u64 = 2048;

/// `batch = N` (embed steps only; the key check refuses it elsewhere): 1 to
/// 2,048 units a request, live calls only, not in a fan-out.
fn embed_batch(
    raw: &RawStep,
    fan_out: bool,
    provider: Option<&crate::Provider>,
    label: &str,
    ctx: &mut Ctx,
) -> Option<usize> {
    let n = raw.batch.as_ref()?;
    let value = *n.get_ref();
    let problem = if value == 0 || value > MAX_EMBED_BATCH {
        Some(format!(
            "{label}: batch = {value}: give 1 to {MAX_EMBED_BATCH} units per request (OpenAI takes at most {MAX_EMBED_BATCH} inputs)"
        ))
    } else if fan_out {
        Some(format!(
            "{label}: batch and for_each do not go together: batch gathers units, not a unit's elements; drop one"
        ))
    } else if provider.is_some_and(|p| p.mode != crate::Mode::Live) {
        Some(format!(
            "{label}: batch gathers live requests; its provider sends through the batch API (mode), which takes each unit's request on its own: drop batch or set mode = \"live\""
        ))
    } else {
        None
    };
    match problem {
        Some(message) => {
            ctx.diags.at(n.span(), message);
            None
        }
        None => usize::try_from(value).ok(),
    }
}

/// Keys no step kind takes: "did you mean" among the keys of the step's
/// kind (of every kind when the kind is unknown), and that kind's keys.
fn unknown_keys(entry: &StepEntry, index: usize, ctx: &mut Ctx) {
    let label = match &entry.name_hint {
        Some(name) => format!("step {name:?}"),
        None => format!("step {}", index + 1),
    };
    let kind = entry.kind_hint.as_deref();
    let own = kind.and_then(kind_keys);
    for key in entry.keys.iter().filter(|k| !is_step_key(k.get_ref())) {
        let name = key.get_ref();
        let message = match (&own, kind) {
            (Some(keys), Some(kind))
                if crate::suggest::closest(name, keys.iter().copied()).is_none()
                    && crate::params::request_param(kind, name).is_some() =>
            {
                let meant = crate::params::request_param(kind, name).unwrap_or(name);
                let hint = if meant == name {
                    String::new()
                } else {
                    format!("; did you mean `{meant}`?")
                };
                format!(
                    "{label}: unknown key `{name}`{hint}; request parameters go in \
                     params = {{ {meant} = ... }}; {kind} steps take: {}",
                    keys.join(", ")
                )
            }
            (Some(keys), Some(kind)) => {
                let hint = crate::suggest::did_you_mean(name, keys.iter().copied());
                format!(
                    "{label}: unknown key `{name}`{hint}; {kind} steps take: {}",
                    keys.join(", ")
                )
            }
            _ => {
                let every = COMMON
                    .iter()
                    .chain(KINDS.iter().flat_map(|(_, f)| f.iter()))
                    .copied();
                let hint = crate::suggest::did_you_mean(name, every);
                format!(
                    "{label}: unknown key `{name}`{hint}; every step takes: {}, and the keys of its kind ({})",
                    COMMON.join(", "),
                    kind_list()
                )
            }
        };
        ctx.diags.at(key.span(), message);
    }
}

/// Keys that belong to another kind are errors naming this kind's keys.
fn check_fields(keys: &[Spanned<String>], kind: &str, fields: &[&str], label: &str, ctx: &mut Ctx) {
    for key in keys {
        let key_name = key.get_ref().as_str();
        if key_name == "cache" {
            continue; // refused with its reason by `cache`
        }
        let known = COMMON.contains(&key_name) || KINDS.iter().any(|(_, f)| f.contains(&key_name));
        if known && !COMMON.contains(&key_name) && !fields.contains(&key_name) {
            let allowed: Vec<&str> = COMMON.iter().chain(fields).copied().collect();
            let message = format!(
                "{label}: `{key_name}` is not used by {kind} steps; {kind} steps take: {}",
                allowed.join(", ")
            );
            ctx.diags.at(key.span(), message);
        }
    }
}

/// The step's provider: required for chat, embed and conversation; must exist.
fn provider<'p>(
    raw: &Option<Spanned<String>>,
    kind: Option<&str>,
    label: &str,
    span: &Range<usize>,
    providers: &'p [Provider],
    ctx: &mut Ctx,
) -> Option<&'p Provider> {
    let defined = defined(providers);
    if kind == Some("command") {
        return None; // `provider` on a command step is reported by check_fields
    }
    let Some(name) = raw else {
        if matches!(kind, Some("chat" | "embed" | "conversation")) {
            let kind = kind.unwrap_or_default();
            let message = format!(
                "{label} is a {kind} step and needs provider = \"NAME\"; defined providers: {defined}"
            );
            ctx.diags.at(span.clone(), message);
        }
        return None;
    };
    let found = providers.iter().find(|p| &p.name == name.get_ref());
    if found.is_none() {
        let message = format!(
            "{label} uses provider {:?}, which is not defined; defined: {defined}",
            name.get_ref()
        );
        ctx.diags.at(name.span(), message);
    }
    found
}

/// `fallback = { value }` for any kind, or `{ provider }` for the kinds
/// that call a provider: another defined one, not the step's own.
fn fallback(
    raw: &RawStep,
    kind: Option<&str>,
    label: &str,
    providers: &[Provider],
    ctx: &mut Ctx,
) -> Option<Fallback> {
    let f = raw.fallback.as_ref()?;
    let (value, provider) = (&f.get_ref().value, &f.get_ref().provider);
    let p = match (value, provider) {
        (Some(_), Some(p)) => {
            let message = format!("{label}: fallback has both value and provider; keep one");
            ctx.diags.at(p.span(), message);
            return None;
        }
        (None, None) => {
            let message = format!(
                "{label}: fallback needs value = ... (the step's output when it fails) or \
                 provider = \"NAME\" (another provider to send the request to)"
            );
            ctx.diags.at(f.span(), message);
            return None;
        }
        (Some(v), None) => return Some(Fallback::Value(v.get_ref().to_json())),
        (None, Some(p)) => p,
    };
    let name = p.get_ref();
    let own = raw.provider.as_ref().map(Spanned::get_ref);
    let problem = match kind {
        Some("command") => Some(
            "a command step calls no provider, so it cannot fall back to one; \
             use fallback = { value = ... }"
                .to_string(),
        ),
        Some("http") if raw.url.is_some() => Some(
            "a provider fallback sends the request to that provider's base URL, so this \
             http step needs path = \"/...\" instead of url; or use fallback = { value = ... }"
                .to_string(),
        ),
        _ if own == Some(name) => Some(format!(
            "fallback provider {name:?} is the step's own provider; name another one"
        )),
        _ if !providers.iter().any(|d| &d.name == name) => Some(format!(
            "fallback provider {name:?} is not defined; defined: {}",
            defined(providers)
        )),
        _ => None,
    };
    if let Some(problem) = problem {
        ctx.diags.at(p.span(), format!("{label}: {problem}"));
    }
    Some(Fallback::Provider(name.clone()))
}

/// `cache = { ttl }`: only for steps whose result depends on the request alone.
fn cache(
    raw: &RawStep,
    kind: Option<&str>,
    label: &str,
    ctx: &mut Ctx,
) -> Option<std::time::Duration> {
    let c = raw.cache.as_ref()?;
    let why = match kind {
        Some("command") => Some(
            "a command may have side effects (files written, messages sent), so it runs \
             every time",
        ),
        Some("conversation") => Some(
            "a conversation's turns depend on each other (each sees the earlier answers), \
             so one cannot be reused on its own",
        ),
        _ => None,
    };
    if let (Some(why), Some(kind)) = (why, kind) {
        let message = format!("{label}: {kind} steps cannot be cached: {why}; remove cache");
        ctx.diags.at(c.span(), message);
        return None;
    }
    let Some(ttl) = &c.get_ref().ttl else {
        let message =
            format!("{label}: cache needs ttl = \"168h\", how long a stored result is reused");
        ctx.diags.at(c.span(), message);
        return None;
    };
    ctx.nonzero(ttl, "cache.ttl")
}

fn defined(providers: &[Provider]) -> String {
    if providers.is_empty() {
        "none; add a [providers.NAME] section".to_string()
    } else {
        providers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn kind_list() -> String {
    KINDS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
}
