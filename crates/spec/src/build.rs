//! Raw sections → the validated model: the job's top level (with `budget`),
//! `[matrix]`, `[output]` and `[webhook]` (`[input]` is in `input`, providers
//! in `provider`, steps in `steps`), each problem reported at its span with
//! what to do.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use crate::ctx::{is_http_url, is_identifier, Ctx};
use crate::document::{Part, RawJob};
use crate::model::{Job, MatrixAxis, Output, Provider, Retries, Webhook, WebhookOn};
use crate::raw::{RawBudget, RawOutput, RawValue, RawWebhook};
use crate::steps::StepRef;
use crate::templates_check::Scope;

/// Default units in progress at once.
const DEFAULT_CONCURRENCY: u64 = 64;
/// Webhook deliveries: a receiver that is down for half a minute is retried
/// past that, but a run's end is not held up for long.
const WEBHOOK_RETRIES: Retries = Retries {
    max: 5,
    base: Duration::from_millis(500),
    cap: Duration::from_secs(30),
};

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
        Some(n) => {
            if let Some(problem) = crate::names::name_problem(n.get_ref()) {
                let message = format!("name {:?} {problem}", n.get_ref());
                ctx.diags.at(n.span(), message);
            }
            n.into_inner()
        }
        // A stem is not the user's choice of name: made to fit, not refused.
        None => crate::names::name_from_stem(
            &path
                .file_stem()
                .map_or_else(|| "job".into(), |s| s.to_string_lossy()),
        ),
    };
    let env = env(raw.env, ctx);
    let concurrency_set = raw.concurrency.is_some() || ctx.sets.concurrency.is_some();
    let concurrency = match (&raw.concurrency, ctx.sets.concurrency) {
        (_, Some(n)) => n,
        (Some(n), None) => ctx.calls(n, "concurrency").unwrap_or(1),
        (None, None) => DEFAULT_CONCURRENCY,
    };
    let input = crate::input::input(raw.input, ctx);
    let matrix = matrix(raw.matrix, ctx);
    let providers: Vec<Provider> = raw
        .providers
        .into_iter()
        .map(|p| crate::provider::provider(p, ctx))
        .collect();
    let (steps, step_refs) =
        crate::steps::steps(raw.steps, raw.steps_span, &providers, &matrix, ctx);
    let output = output(raw.output, ctx);
    let unit_timeout = raw
        .unit_timeout
        .as_ref()
        .and_then(|t| ctx.nonzero(t, "unit_timeout"));
    let webhook = webhook(raw.webhook, ctx);
    let budget_usd = budget(raw.budget.as_ref(), &providers, ctx);
    let max_in_flight = match (ctx.sets.max_in_flight, &raw.max_in_flight) {
        (Some(n), _) => Some(n),
        (None, Some(n)) => ctx.calls(n, "max_in_flight"),
        (None, None) => None,
    }
    .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let job = Job {
        name,
        path,
        env,
        concurrency: usize::try_from(concurrency).unwrap_or(usize::MAX),
        concurrency_set,
        input,
        matrix,
        providers,
        steps,
        output,
        unit_timeout,
        webhook,
        budget_usd,
        warnings: Vec::new(),
        files: crate::FileScope::default(),
        max_in_flight,
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

fn webhook(part: Part<RawWebhook>, ctx: &mut Ctx) -> Option<Webhook> {
    let Part::Present { span, raw } = part else {
        return None;
    };
    let url = match &raw.url {
        None => {
            let message = "[webhook] needs url = \"https://...\", where each POST goes";
            ctx.diags.at(span, message);
            String::new()
        }
        Some(u) if !is_http_url(u.get_ref()) => {
            let message = format!(
                "[webhook] url {:?} must be an absolute http:// or https:// URL",
                u.get_ref()
            );
            ctx.diags.at(u.span(), message);
            String::new()
        }
        Some(u) if u.get_ref().contains("{{") || u.get_ref().contains("{%") => {
            let message = "[webhook] url is one fixed URL, not a template; the item or run \
                           it reports on is in the body";
            ctx.diags.at(u.span(), message);
            String::new()
        }
        Some(u) => u.get_ref().clone(),
    };
    let on = match raw.on.as_ref().map(|o| (o, o.get_ref().as_str())) {
        None | Some((_, "item")) => WebhookOn::Item,
        Some((_, "run")) => WebhookOn::Run,
        Some((o, other)) => {
            let message = format!(
                "[webhook] on {other:?} must be \"item\" (once per finished item) or \"run\" \
                 (once when the run ends)"
            );
            ctx.diags.at(o.span(), message);
            WebhookOn::Item
        }
    };
    if let Some(key) = raw
        .secret_env
        .as_ref()
        .filter(|k| !is_identifier(k.get_ref()))
    {
        let message = format!(
            "[webhook] secret_env names the environment variable that holds the HMAC key \
             (e.g. \"HOOK_SECRET\"); {:?} is not such a name",
            key.get_ref()
        );
        ctx.diags.at(key.span(), message);
    }
    let headers = ctx.headers(raw.headers.as_ref(), "webhook.headers", Scope::EnvOnly);
    let retries = match &raw.retries {
        Some(r) => ctx.retries(r, WEBHOOK_RETRIES),
        None => WEBHOOK_RETRIES,
    };
    Some(Webhook {
        url,
        on,
        secret_env: raw.secret_env.map(Spanned::into_inner),
        headers,
        retries,
    })
}

/// `budget = { usd }` (or `--set budget.usd=X`); spend is counted by the
/// providers' prices, so a budget without any is refused.
fn budget(raw: Option<&Spanned<RawBudget>>, providers: &[Provider], ctx: &mut Ctx) -> Option<f64> {
    let file = raw.and_then(|b| match &b.get_ref().usd {
        None => {
            let message = "budget needs usd = AMOUNT, e.g. budget = { usd = 50.0 }";
            ctx.diags.at(b.span(), message);
            None
        }
        Some(u) if !(u.get_ref().is_finite() && *u.get_ref() > 0.0) => {
            let message = format!(
                "budget.usd must be more than 0 (USD), not {}; remove budget for no limit",
                u.get_ref()
            );
            ctx.diags.at(u.span(), message);
            None
        }
        Some(u) => Some(*u.get_ref()),
    });
    let usd = ctx.sets.budget_usd.or(file)?;
    if providers.iter().all(|p| p.prices.is_empty()) {
        let message = "a budget needs prices to count spend, but no provider has any; add \
                       prices = { \"MODEL\" = { input = 2.5, output = 10 } } (USD per million \
                       tokens; \"*\" for any model) to the providers the steps call";
        match raw {
            Some(b) => ctx.diags.at(b.span(), message),
            None => ctx.diags.set(format!("\"budget.usd={usd}\": {message}")),
        }
    }
    Some(usd)
}
