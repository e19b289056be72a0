//! Raw sections → the validated model: the job's top level, `[matrix]`,
//! `[providers.*]` and `[output]` (`[input]` is in `input`, steps in
//! `steps`), each problem reported at its span with what to do.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use crate::ctx::{is_http_url, is_identifier, Ctx};
use crate::document::{Entry, Part, RawJob};
use crate::model::{Job, MatrixAxis, Output, Provider, Retries};
use crate::raw::{RawOutput, RawProvider, RawValue};
use crate::sets::Limit;
use crate::steps::StepRef;
use crate::templates_check::Scope;

/// Default units in progress at once.
const DEFAULT_CONCURRENCY: u64 = 64;
/// Default time-out of one provider call.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the job (only used when no diagnostic was reported) and returns it
/// with every step entry's name, by position, for the template check.
pub(crate) fn job(raw: RawJob, path: PathBuf, ctx: &mut Ctx) -> (Job, Vec<StepRef>) {
    let name = match raw.name {
        Some(n) if n.get_ref().trim().is_empty() => {
            ctx.diags.at(
                n.span(),
                "name must not be empty; remove it to use the file's stem",
            );
            String::new()
        }
        Some(n) => n.into_inner(),
        None => path
            .file_stem()
            .map_or_else(|| "job".to_string(), |s| s.to_string_lossy().into_owned()),
    };
    let env = env(raw.env, ctx);
    let concurrency = match (&raw.concurrency, ctx.sets.concurrency) {
        (_, Some(n)) => n,
        (Some(n), None) => ctx.positive(n, "concurrency").unwrap_or(1),
        (None, None) => DEFAULT_CONCURRENCY,
    };
    let input = crate::input::input(raw.input, ctx);
    let matrix = matrix(raw.matrix, ctx);
    let providers: Vec<Provider> = raw
        .providers
        .into_iter()
        .map(|p| provider(p, ctx))
        .collect();
    let (steps, step_refs) = crate::steps::steps(raw.steps, raw.steps_span, &providers, ctx);
    let output = output(raw.output, ctx);
    let job = Job {
        name,
        path,
        env,
        concurrency: usize::try_from(concurrency).unwrap_or(usize::MAX),
        input,
        matrix,
        providers,
        steps,
        output,
    };
    (job, step_refs)
}

fn env(raw: Option<Spanned<Vec<Spanned<String>>>>, ctx: &mut Ctx) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in raw.map(Spanned::into_inner).unwrap_or_default() {
        if !is_identifier(name.get_ref()) {
            let message = format!(
                "env entry {:?} is not an environment variable name (letters, digits, _)",
                name.get_ref()
            );
            ctx.diags.at(name.span(), message);
        } else if out.contains(name.get_ref()) {
            ctx.diags.at(
                name.span(),
                format!("{:?} is listed twice in env", name.get_ref()),
            );
        }
        out.push(name.into_inner());
    }
    out
}

fn matrix(
    raw: Vec<(Spanned<String>, Option<Spanned<RawValue>>)>,
    ctx: &mut Ctx,
) -> Vec<MatrixAxis> {
    let mut out: Vec<MatrixAxis> = Vec::new();
    for (name, value) in raw {
        if !is_identifier(name.get_ref()) {
            let message = format!(
                "matrix key {:?} must be a name (letters, digits, _; not starting with a digit) to be used as matrix.KEY",
                name.get_ref()
            );
            ctx.diags.at(name.span(), message);
        }
        let Some(value) = value else { continue };
        let RawValue::Array(items) = value.get_ref() else {
            let message = format!(
                "matrix.{} must be an array of values, e.g. [\"a\", \"b\"], not {}",
                name.get_ref(),
                value.get_ref().type_name()
            );
            ctx.diags.at(value.span(), message);
            continue;
        };
        if items.is_empty() {
            let message = format!(
                "matrix.{} is empty; give at least one value or remove the key",
                name.get_ref()
            );
            ctx.diags.at(value.span(), message);
        }
        let mut values = Vec::new();
        for item in items {
            match item.get_ref() {
                RawValue::String(_) | RawValue::Number(_) | RawValue::Bool(_) => {
                    values.push(item.get_ref().to_json())
                }
                other => {
                    let message = format!(
                        "matrix values must be strings, numbers or booleans, not {}",
                        other.type_name()
                    );
                    ctx.diags.at(item.span(), message);
                }
            }
        }
        out.push(MatrixAxis {
            name: name.into_inner(),
            values,
        });
    }
    for (name, values) in &ctx.sets.matrix {
        match out.iter_mut().find(|a| &a.name == name) {
            Some(axis) => axis.values = values.clone(),
            None => out.push(MatrixAxis {
                name: name.clone(),
                values: values.clone(),
            }),
        }
    }
    out
}

fn provider(entry: Entry<RawProvider>, ctx: &mut Ctx) -> Provider {
    let name = entry.name.get_ref().clone();
    let mut provider = Provider {
        name: name.clone(),
        base_urls: Vec::new(),
        api_key_env: None,
        concurrency: None,
        rpm: None,
        tpm: None,
        timeout: DEFAULT_TIMEOUT,
        retries: Retries::default(),
        headers: Vec::new(),
    };
    let Some(raw) = entry.raw else {
        return provider;
    };
    let ctx_name = format!("[providers.{name}]");
    match (&raw.base_url, &raw.urls) {
        (Some(_), Some(urls)) => ctx.diags.at(
            urls.span(),
            format!("{ctx_name} has both base_url and urls; keep one"),
        ),
        (None, None) => ctx.diags.at(
            entry.name.span(),
            format!("{ctx_name} needs base_url = \"https://host/v1\" (or urls = [...] for a pool)"),
        ),
        (_, Some(urls)) if urls.get_ref().is_empty() => ctx.diags.at(
            urls.span(),
            format!("{ctx_name} urls is empty; list at least one URL"),
        ),
        _ => {}
    }
    let urls: Vec<&Spanned<String>> = raw
        .base_url
        .iter()
        .chain(raw.urls.iter().flat_map(|u| u.get_ref()))
        .collect();
    for url in urls {
        if !is_http_url(url.get_ref()) {
            let message = format!(
                "{ctx_name} URL {:?} must start with http:// or https://",
                url.get_ref()
            );
            ctx.diags.at(url.span(), message);
        }
        provider
            .base_urls
            .push(url.get_ref().trim_end_matches('/').to_string());
    }
    if let Some(key) = &raw.api_key_env {
        if !is_identifier(key.get_ref()) {
            let message = format!(
                "api_key_env names the environment variable that holds the key (e.g. \"OPENAI_API_KEY\"); {:?} is not such a name",
                key.get_ref()
            );
            ctx.diags.at(key.span(), message);
        }
        provider.api_key_env = Some(key.get_ref().clone());
    }
    let mut limit = |raw: &Option<Spanned<u64>>, limit: Limit, what: &str| {
        let file = raw
            .as_ref()
            .and_then(|n| ctx.positive(n, &format!("{ctx_name} {what}")));
        ctx.sets.provider(&name, limit).or(file)
    };
    provider.concurrency =
        limit(&raw.concurrency, Limit::Concurrency, "concurrency").map(|n| n as usize);
    provider.rpm = limit(&raw.rpm, Limit::Rpm, "rpm");
    provider.tpm = limit(&raw.tpm, Limit::Tpm, "tpm");
    if let Some(t) = &raw.timeout {
        match ctx.duration(t, "timeout") {
            Some(d) if d.is_zero() => ctx.diags.at(t.span(), "timeout must be longer than 0s"),
            Some(d) => provider.timeout = d,
            None => {}
        }
    }
    if let Some(r) = &raw.retries {
        provider.retries = ctx.retries(r, Retries::default());
    }
    let place = format!("providers.{name}.headers");
    provider.headers = ctx.headers(raw.headers.as_ref(), &place, Scope::EnvOnly);
    provider
}

fn output(part: Part<RawOutput>, ctx: &mut Ctx) -> Output {
    let raw = match part {
        Part::Present { raw, .. } => raw,
        _ => RawOutput {
            path: None,
            dir: None,
        },
    };
    let mut resolve = |p: &Spanned<String>, key: &str| {
        if p.get_ref().is_empty() {
            ctx.diags.at(
                p.span(),
                format!("[output] {key} must not be empty; remove it for the default"),
            );
        }
        ctx.resolve(p.get_ref())
    };
    Output {
        path: raw.path.as_ref().map(|p| resolve(p, "path")),
        dir: match &raw.dir {
            Some(d) => resolve(d, "dir"),
            None => ctx.resolve("output"),
        },
    }
}
