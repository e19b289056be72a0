//! `kind = "http"`: method, `url` or `path`, headers, one body (`json`,
//! `body` or `upload`) and `save`.

use toml::Spanned;

use super::missing;
use crate::ctx::{is_http_url, Ctx};
use crate::model::{StepKind, Upload};
use crate::raw::RawStep;
use crate::steps::StepCtx;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Builds an http step.
pub(super) fn build(raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<StepKind> {
    let method = match &raw.method {
        None => "POST".to_string(),
        Some(m) => {
            let upper = m.get_ref().to_ascii_uppercase();
            if !METHODS.contains(&upper.as_str()) {
                let message = format!(
                    "method {:?} is not one of: {}",
                    m.get_ref(),
                    METHODS.join(", ")
                );
                ctx.diags.at(m.span(), message);
            }
            upper
        }
    };
    match (&raw.url, &raw.path) {
        (Some(_), Some(path)) => {
            let message = format!(
                "{} has both url and path; use url for an absolute URL or path on the provider's base URL, not both",
                s.label
            );
            ctx.diags.at(path.span(), message);
        }
        (None, None) => missing(
            s,
            "http",
            "url",
            "\"https://host/...\" (or path = \"/...\" with a provider)",
            ctx,
        ),
        (None, Some(path)) if raw.provider.is_none() => {
            let message = format!(
                "{}: path {:?} needs a provider for its base URL; add provider = \"NAME\" or use url = \"https://...\"",
                s.label,
                path.get_ref()
            );
            ctx.diags.at(path.span(), message);
        }
        _ => {}
    }
    let url = raw.url.as_ref().map(|u| {
        let text = u.get_ref();
        if !text.trim_start().starts_with('{') && !is_http_url(text) {
            let message = format!(
                "url {text:?} must be absolute (http:// or https://); for a path on a provider's base URL use path = ..."
            );
            ctx.diags.at(u.span(), message);
        }
        ctx.template(format!("{}.url", s.place), u, s.scope)
    });
    let path = raw.path.as_ref().map(|p| {
        let text = p.get_ref();
        if !text.starts_with('/') && !text.trim_start().starts_with('{') {
            ctx.diags
                .at(p.span(), format!("path {text:?} must start with \"/\""));
        }
        ctx.template(format!("{}.path", s.place), p, s.scope)
    });
    let bodies = [
        ("json", raw.json.as_ref().map(Spanned::span)),
        ("body", raw.body.as_ref().map(Spanned::span)),
        ("upload", raw.upload.as_ref().map(Spanned::span)),
    ];
    let given: Vec<_> = bodies
        .iter()
        .filter_map(|(k, span)| span.clone().map(|sp| (*k, sp)))
        .collect();
    for (key, span) in given.iter().skip(1) {
        let message = format!(
            "{}: an http step sends at most one body, but it has both {} and {key}; keep one",
            s.label, given[0].0
        );
        ctx.diags.at(span.clone(), message);
    }
    if let Some(save) = &raw.save {
        if save.get_ref() != "file" {
            let message = format!(
                "save {:?} is not supported; the only value is save = \"file\"",
                save.get_ref()
            );
            ctx.diags.at(save.span(), message);
        }
    }
    Some(StepKind::Http {
        method,
        url,
        path,
        headers: ctx.headers(
            raw.headers.as_ref(),
            &format!("{}.headers", s.place),
            s.scope,
        ),
        json: raw
            .json
            .as_ref()
            .map(|j| ctx.tvalue(j, format!("{}.json", s.place), s.scope)),
        body: raw
            .body
            .as_ref()
            .map(|b| ctx.template(format!("{}.body", s.place), b, s.scope)),
        upload: upload(raw, s, ctx),
        save: raw.save.is_some(),
    })
}

fn upload(raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<Upload> {
    let spanned = raw.upload.as_ref()?;
    let u = spanned.get_ref();
    let Some(file) = &u.file else {
        let message = format!(
            "{}: upload needs file = \"{{{{ item.path }}}}\" (the file to send)",
            s.label
        );
        ctx.diags.at(spanned.span(), message);
        return None;
    };
    let place = format!("{}.upload", s.place);
    Some(Upload {
        field: u
            .field
            .as_ref()
            .map_or_else(|| "file".to_string(), |f| f.get_ref().clone()),
        file: ctx.template(format!("{place}.file"), file, s.scope),
        fields: ctx.string_table(
            u.fields.as_ref(),
            &format!("{place}.fields"),
            s.scope,
            false,
        ),
    })
}
