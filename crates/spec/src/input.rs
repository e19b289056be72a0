//! `[input]` → [`Input`]: exactly one source (path, glob or url), its
//! format and paging, paths resolved against the job file's directory.

use std::path::Path;

use toml::Spanned;

use crate::ctx::{is_http_url, Ctx};
use crate::document::Part;
use crate::model::{Input, InputFormat, InputSource};
use crate::raw::RawInput;
use crate::templates_check::Scope;

pub(crate) fn input(part: Part<RawInput>, ctx: &mut Ctx) -> Input {
    let fallback = Input {
        source: InputSource::Stdin {
            format: InputFormat::Jsonl,
        },
        id: None,
    };
    let (span, raw) = match part {
        Part::Present { span, raw } => (span, raw),
        Part::Broken => return fallback,
        Part::Absent => {
            ctx.diags.at(
                0..0,
                "the job has no [input]; add [input] with path = \"items.jsonl\" (or glob, or url)",
            );
            return fallback;
        }
    };
    let given: Vec<(&str, &Spanned<String>)> =
        [("path", &raw.path), ("glob", &raw.glob), ("url", &raw.url)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
            .collect();
    match given.as_slice() {
        [] => ctx.diags.at(
            span,
            "[input] needs one of path, glob or url; e.g. path = \"items.jsonl\"",
        ),
        [(first, _), rest @ ..] => {
            for (key, value) in rest {
                let message = format!(
                    "[input] has both {first} and {key}; keep exactly one of path, glob, url"
                );
                ctx.diags.at(value.span(), message);
            }
        }
    }
    let is_url = raw.url.is_some();
    let url_only = [
        ("pointer", raw.pointer.as_ref().map(Spanned::span)),
        ("page_size", raw.page_size.as_ref().map(Spanned::span)),
        ("limit_param", raw.limit_param.as_ref().map(Spanned::span)),
        ("offset_param", raw.offset_param.as_ref().map(Spanned::span)),
        ("headers", raw.headers.as_ref().map(Spanned::span)),
    ];
    for (key, span) in url_only {
        if let (Some(span), false) = (span, is_url) {
            ctx.diags.at(
                span,
                format!("`{key}` only applies to url inputs; remove it"),
            );
        }
    }
    let format = raw.format.as_ref().and_then(|f| {
        if raw.path.is_none() {
            ctx.diags
                .at(f.span(), "`format` only applies to path inputs; remove it");
        }
        match f.get_ref().as_str() {
            "jsonl" => Some(InputFormat::Jsonl),
            "csv" => Some(InputFormat::Csv),
            "json" => Some(InputFormat::Json),
            other => {
                let message =
                    format!("unknown format {other:?}; use \"jsonl\", \"csv\" or \"json\"");
                ctx.diags.at(f.span(), message);
                None
            }
        }
    });
    let id = raw
        .id
        .as_ref()
        .map(|t| ctx.template("input.id".into(), t, Scope::InputId));
    let source = if let Some(path) = &raw.path {
        file_source(path, format, ctx)
    } else if let Some(pattern) = &raw.glob {
        if let Err(e) = glob::Pattern::new(pattern.get_ref()) {
            ctx.diags.at(
                pattern.span(),
                format!("glob {:?} is not a valid pattern: {e}", pattern.get_ref()),
            );
        }
        let pattern = if Path::new(pattern.get_ref()).is_absolute() {
            pattern.get_ref().clone()
        } else {
            let dir = glob::Pattern::escape(&ctx.dir.to_string_lossy());
            format!("{}/{}", dir.trim_end_matches('/'), pattern.get_ref())
        };
        InputSource::Glob { pattern }
    } else if let Some(url) = &raw.url {
        url_source(url, &raw, ctx)
    } else {
        fallback.source
    };
    Input { source, id }
}

fn file_source(path: &Spanned<String>, format: Option<InputFormat>, ctx: &mut Ctx) -> InputSource {
    if path.get_ref() == "-" {
        return InputSource::Stdin {
            format: format.unwrap_or(InputFormat::Jsonl),
        };
    }
    if path.get_ref().is_empty() {
        ctx.diags.at(
            path.span(),
            "path must not be empty; use \"-\" for standard input",
        );
    }
    let resolved = ctx.resolve(path.get_ref());
    let from_extension = match resolved.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "ndjson") => Some(InputFormat::Jsonl),
        Some("csv") => Some(InputFormat::Csv),
        Some("json") => Some(InputFormat::Json),
        _ => None,
    };
    let format = format.or(from_extension).unwrap_or_else(|| {
        let message = format!(
            "cannot tell the format of {:?} from its extension; add format = \"jsonl\", \"csv\" or \"json\"",
            path.get_ref()
        );
        ctx.diags.at(path.span(), message);
        InputFormat::Jsonl
    });
    InputSource::File {
        path: resolved,
        format,
    }
}

fn url_source(url: &Spanned<String>, raw: &RawInput, ctx: &mut Ctx) -> InputSource {
    let text = url.get_ref();
    if !is_http_url(text) {
        ctx.diags.at(
            url.span(),
            format!("url {text:?} must start with http:// or https://"),
        );
    }
    if let Some(p) = &raw.pointer {
        if !p.get_ref().starts_with('/') {
            let message = format!(
                "pointer {:?} must be a JSON pointer starting with \"/\", e.g. \"/data\"",
                p.get_ref()
            );
            ctx.diags.at(p.span(), message);
        }
    }
    let page_size = raw
        .page_size
        .as_ref()
        .and_then(|n| ctx.positive(n, "page_size"));
    let param = |p: &Option<Spanned<String>>, default: &str| {
        p.as_ref()
            .map_or_else(|| default.to_string(), |p| p.get_ref().clone())
    };
    InputSource::Url {
        url: text.clone(),
        pointer: raw.pointer.as_ref().map(|p| p.get_ref().clone()),
        page_size,
        limit_param: param(&raw.limit_param, "limit"),
        offset_param: param(&raw.offset_param, "offset"),
        headers: ctx.headers(raw.headers.as_ref(), "input.headers", Scope::EnvOnly),
    }
}
