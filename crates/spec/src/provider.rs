//! `[providers.NAME]` → [`Provider`]: URLs, key, limits (fixed or adaptive
//! concurrency, request and token rates over several windows), time-outs,
//! retries, the circuit breaker and prices.

use toml::Spanned;

use crate::ctx::{is_http_url, is_identifier, Ctx};
use crate::document::Entry;
use crate::model::{BreakerSpec, Price, Provider, Retries};
use crate::raw::{RawBreakerSetting, RawConcurrency, RawPrice, RawProvider, Table};
use crate::sets::Limit;
use crate::templates_check::Scope;

/// Default ceiling of `concurrency = "auto"`.
const DEFAULT_MAX_CONCURRENCY: usize = 256;

pub(crate) fn provider(entry: Entry<RawProvider>, ctx: &mut Ctx) -> Provider {
    let name = entry.name.get_ref().clone();
    let mut provider = Provider {
        name: name.clone(),
        ..Provider::default()
    };
    let Some(raw) = entry.raw else {
        return provider;
    };
    let ctx_name = format!("[providers.{name}]");
    urls(&raw, &entry.name, &ctx_name, &mut provider, ctx);
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
    concurrency(&raw, &ctx_name, &mut provider, ctx);
    let per_url = raw
        .url_concurrency
        .as_ref()
        .and_then(|n| ctx.calls(n, &format!("{ctx_name} url_concurrency")));
    provider.url_concurrency = ctx
        .sets
        .provider(&name, Limit::UrlConcurrency)
        .or(per_url)
        .map(to_usize);
    let mut limit = |raw: &Option<Spanned<u64>>, limit: Limit, what: &str| {
        let file = raw
            .as_ref()
            .and_then(|n| ctx.positive(n, &format!("{ctx_name} {what}")));
        ctx.sets.provider(&name, limit).or(file)
    };
    provider.rps = limit(&raw.rps, Limit::Rps, "rps");
    provider.rpm = limit(&raw.rpm, Limit::Rpm, "rpm");
    provider.rph = limit(&raw.rph, Limit::Rph, "rph");
    provider.rpd = limit(&raw.rpd, Limit::Rpd, "rpd");
    provider.tpm = limit(&raw.tpm, Limit::Tpm, "tpm");
    provider.tpd = limit(&raw.tpd, Limit::Tpd, "tpd");
    if let Some(d) = raw.timeout.as_ref().and_then(|t| ctx.nonzero(t, "timeout")) {
        provider.timeout = d;
    }
    provider.assume_latency = raw
        .assume_latency
        .as_ref()
        .and_then(|t| ctx.nonzero(t, &format!("{ctx_name} assume_latency")));
    if let Some(d) = raw
        .connect_timeout
        .as_ref()
        .and_then(|t| ctx.nonzero(t, "connect_timeout"))
    {
        provider.connect_timeout = d;
    }
    if let Some(r) = &raw.retries {
        provider.retries = ctx.retries(r, Retries::default());
    }
    provider.breaker = breaker(raw.circuit_breaker.as_ref(), &ctx_name, ctx);
    let place = format!("providers.{name}.headers");
    provider.headers = ctx.headers(raw.headers.as_ref(), &place, Scope::EnvOnly);
    provider.prices = prices(raw.prices.as_ref(), &ctx_name, ctx);
    crate::offload::provider(&raw, &ctx_name, &mut provider, ctx);
    provider
}

/// Exactly one of `base_url` and `urls`, every URL absolute.
fn urls(
    raw: &RawProvider,
    name: &Spanned<String>,
    ctx_name: &str,
    provider: &mut Provider,
    ctx: &mut Ctx,
) {
    match (&raw.base_url, &raw.urls) {
        (Some(_), Some(urls)) => ctx.diags.at(
            urls.span(),
            format!("{ctx_name} has both base_url and urls; keep one"),
        ),
        (None, None) => ctx.diags.at(
            name.span(),
            format!("{ctx_name} needs base_url = \"https://host/v1\" (or urls = [...] for a pool)"),
        ),
        (_, Some(urls)) if urls.get_ref().is_empty() => ctx.diags.at(
            urls.span(),
            format!("{ctx_name} urls is empty; list at least one URL"),
        ),
        _ => {}
    }
    let urls = raw
        .base_url
        .iter()
        .chain(raw.urls.iter().flat_map(|u| u.get_ref()));
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
}

/// `concurrency = N` or `"auto"` (with `max_concurrency`); a `--set`
/// override is a fixed cap and wins over both.
fn concurrency(raw: &RawProvider, ctx_name: &str, provider: &mut Provider, ctx: &mut Ctx) {
    let (mut fixed, mut auto) = (None, false);
    match raw.concurrency.as_ref() {
        None => {}
        Some(c) => match c.get_ref() {
            RawConcurrency::Count(n) => {
                let n = Spanned::new(c.span(), *n);
                fixed = ctx.calls(&n, &format!("{ctx_name} concurrency"));
            }
            RawConcurrency::Word(w) if w == "auto" => auto = true,
            RawConcurrency::Word(w) => {
                let message = format!(
                    "{ctx_name} concurrency {w:?} is not valid; write a whole number of at \
                     least 1, or \"auto\" to adapt it to the provider's latency and errors"
                );
                ctx.diags.at(c.span(), message);
            }
        },
    }
    let word = matches!(
        raw.concurrency.as_ref().map(Spanned::get_ref),
        Some(RawConcurrency::Word(_))
    );
    let max = raw.max_concurrency.as_ref().and_then(|m| {
        if !word {
            let message = format!(
                "{ctx_name} max_concurrency only applies with concurrency = \"auto\"; \
                 set concurrency = \"auto\" or remove max_concurrency"
            );
            ctx.diags.at(m.span(), message);
            return None;
        }
        ctx.calls(m, &format!("{ctx_name} max_concurrency"))
    });
    match ctx.sets.provider(&provider.name, Limit::Concurrency) {
        Some(n) => provider.concurrency = Some(to_usize(n)),
        None if auto => {
            provider.adaptive = Some(max.map_or(DEFAULT_MAX_CONCURRENCY, to_usize));
        }
        None => provider.concurrency = fixed.map(to_usize),
    }
}

/// `circuit_breaker`: absent or `true` = the defaults, `false` = none.
fn breaker(
    raw: Option<&Spanned<RawBreakerSetting>>,
    ctx_name: &str,
    ctx: &mut Ctx,
) -> Option<BreakerSpec> {
    let mut out = BreakerSpec::default();
    let t = match raw.map(Spanned::get_ref) {
        None | Some(RawBreakerSetting::Enabled(true)) => return Some(out),
        Some(RawBreakerSetting::Enabled(false)) => return None,
        Some(RawBreakerSetting::Table(t)) => t,
    };
    let what = format!("{ctx_name} circuit_breaker");
    if let Some(f) = &t.failures {
        if *f.get_ref() == 0 {
            let message = format!(
                "{what}.failures must be at least 1; to turn the breaker off write \
                 circuit_breaker = false"
            );
            ctx.diags.at(f.span(), message);
        } else {
            out.failures = *f.get_ref();
        }
    }
    if let Some(d) = t
        .cooldown
        .as_ref()
        .and_then(|c| ctx.nonzero(c, "circuit_breaker.cooldown"))
    {
        out.cooldown = d;
    }
    if let Some(w) = &t.window {
        out.window = *w.get_ref();
        if out.window != 0 && out.window < out.failures {
            let message = format!(
                "{what}.window ({}) is smaller than failures ({}); make it at least failures, \
                 or 0 to count only consecutive failures",
                out.window, out.failures
            );
            ctx.diags.at(w.span(), message);
        }
    }
    if let Some(r) = &t.rate {
        let rate = *r.get_ref();
        if !(rate > 0.0 && rate <= 1.0) {
            let message = format!(
                "{what}.rate must be the share of failed calls that opens the breaker, above \
                 0 and at most 1 (e.g. 0.5), not {rate}"
            );
            ctx.diags.at(r.span(), message);
        } else if out.window == 0 {
            let message = format!(
                "{what}.rate only applies with window = N (the last N calls the rate is \
                 measured over); add window or remove rate"
            );
            ctx.diags.at(r.span(), message);
        } else {
            out.rate = rate;
        }
    }
    Some(out)
}

/// `prices = { MODEL = { input, output } }`, USD per million tokens.
fn prices(
    raw: Option<&Spanned<Table<Spanned<RawPrice>>>>,
    ctx_name: &str,
    ctx: &mut Ctx,
) -> Vec<Price> {
    let Some(raw) = raw else { return Vec::new() };
    let mut out = Vec::new();
    for (model, entry) in &raw.get_ref().0 {
        if model.trim().is_empty() {
            let message =
                format!("{ctx_name} prices: a key must be a model name, or \"*\" for any model");
            ctx.diags.at(entry.span(), message);
        }
        let mut amount = |value: &Option<Spanned<f64>>, key: &str| match value {
            None => {
                let message = format!(
                    "{ctx_name} prices.{model} needs {key} = USD per million {key} tokens \
                     (0 when they are free, e.g. output of embeddings)"
                );
                ctx.diags.at(entry.span(), message);
                0.0
            }
            Some(x) if !(x.get_ref().is_finite() && *x.get_ref() >= 0.0) => {
                let message = format!(
                    "{ctx_name} prices.{model}.{key} must be a non-negative number of USD \
                     per million tokens, not {}",
                    x.get_ref()
                );
                ctx.diags.at(x.span(), message);
                0.0
            }
            Some(x) => *x.get_ref(),
        };
        let e = entry.get_ref();
        let (input, output) = (amount(&e.input, "input"), amount(&e.output, "output"));
        // The batch APIs of OpenAI and Anthropic charge half the live price.
        let mut batch = |value: &Option<Spanned<f64>>, key: &str, live: f64| match value {
            Some(_) => amount(value, key),
            None => live * 0.5,
        };
        out.push(Price {
            model: model.clone(),
            input_per_mtok: input,
            output_per_mtok: output,
            batch_input_per_mtok: batch(&e.batch_input, "batch_input", input),
            batch_output_per_mtok: batch(&e.batch_output, "batch_output", output),
        });
    }
    out
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
