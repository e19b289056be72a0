//! The contents of each step kind: chat, embed, http, command, conversation.

use toml::Spanned;

use crate::ctx::{is_http_url, Ctx};
use crate::model::{Message, StepKind, Upload};
use crate::raw::{RawStep, RawValue};
use crate::steps::StepCtx;
use crate::template::{TValue, Template};
use crate::templates_check::Scope;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// Builds the kind named `kind` (already checked to be one of `KINDS`).
pub(crate) fn build(kind: &str, raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<StepKind> {
    Some(match kind {
        "chat" => {
            let model = model(raw, s, ctx);
            let messages = messages(raw, s, ctx);
            StepKind::Chat {
                params: params(raw, s, &["model", "messages"], ctx),
                response_format: response_format(raw, ctx),
                path: api_path(raw, "/chat/completions", ctx),
                model: model?,
                messages: messages?,
            }
        }
        "embed" => {
            let model = model(raw, s, ctx);
            let input = embed_input(raw, s, ctx);
            StepKind::Embed {
                params: params(raw, s, &["model", "input"], ctx),
                path: api_path(raw, "/embeddings", ctx),
                model: model?,
                input: input?,
            }
        }
        "http" => http(raw, s, ctx)?,
        "command" => command(raw, s, ctx)?,
        "conversation" => conversation(raw, s, ctx)?,
        _ => return None,
    })
}

fn missing(s: &StepCtx, kind: &str, key: &str, example: &str, ctx: &mut Ctx) {
    let message = format!("{} is a {kind} step and needs {key} = {example}", s.label);
    ctx.diags.at(s.span.clone(), message);
}

fn model(raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<Template> {
    let Some(model) = &raw.model else {
        let kind = raw.kind.as_ref().map_or("", |k| k.get_ref().as_str());
        missing(
            s,
            kind,
            "model",
            "\"NAME\" (or \"{{ matrix.model }}\")",
            ctx,
        );
        return None;
    };
    Some(ctx.template(format!("{}.model", s.place), model, s.scope))
}

fn messages(raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<Vec<Message>> {
    let Some(list) = &raw.messages else {
        missing(
            s,
            "chat",
            "messages",
            "[{ role = \"user\", content = \"...\" }]",
            ctx,
        );
        return None;
    };
    if list.get_ref().is_empty() {
        ctx.diags.at(
            list.span(),
            format!("{}: messages is empty; add at least one", s.label),
        );
    }
    let mut out = Vec::new();
    for (i, m) in list.get_ref().iter().enumerate() {
        let message = m.get_ref();
        let role = match &message.role {
            Some(r) if ROLES.contains(&r.get_ref().as_str()) => r.get_ref().clone(),
            Some(r) => {
                let text = format!("role {:?} is not one of: {}", r.get_ref(), ROLES.join(", "));
                ctx.diags.at(r.span(), text);
                String::new()
            }
            None => {
                ctx.diags.at(
                    m.span(),
                    "message needs role = \"system\", \"user\", \"assistant\" or \"tool\"",
                );
                String::new()
            }
        };
        let Some(content) = &message.content else {
            ctx.diags.at(
                m.span(),
                "message needs content = \"...\" (or a list of content parts)",
            );
            continue;
        };
        let place = format!("{}.messages[{i}]", s.place);
        // The tool-call fields belong to one role each, as in OpenAI's API.
        let tool_call_id = match (&message.tool_call_id, role.as_str()) {
            (Some(id), "tool") => Some(ctx.template(format!("{place}.tool_call_id"), id, s.scope)),
            (Some(id), _) => {
                ctx.diags.at(
                    id.span(),
                    "tool_call_id belongs on a role = \"tool\" message",
                );
                None
            }
            (None, "tool") => {
                let text = "a role = \"tool\" message needs tool_call_id = \"…\" (the id of the call it answers)";
                ctx.diags.at(m.span(), text);
                None
            }
            (None, _) => None,
        };
        let tool_calls = match &message.tool_calls {
            Some(calls) if role == "assistant" => {
                if !matches!(calls.get_ref(), RawValue::Array(_) | RawValue::String(_)) {
                    let text = format!(
                        "tool_calls must be a list of calls (or a template rendering one), not {}",
                        calls.get_ref().type_name()
                    );
                    ctx.diags.at(calls.span(), text);
                }
                Some(ctx.tvalue(calls, format!("{place}.tool_calls"), s.scope))
            }
            Some(calls) => {
                ctx.diags.at(
                    calls.span(),
                    "tool_calls belongs on a role = \"assistant\" message",
                );
                None
            }
            None => None,
        };
        out.push(Message {
            content: crate::content_parts::content(
                content,
                &role,
                format!("{place}.content"),
                s.scope,
                ctx,
            ),
            role,
            tool_call_id,
            tool_calls,
        });
    }
    Some(out)
}

/// `params = { ... }`; keys the step sets itself are refused.
fn params(raw: &RawStep, s: &StepCtx, reserved: &[&str], ctx: &mut Ctx) -> TValue {
    let Some(params) = &raw.params else {
        return TValue::empty_object();
    };
    let RawValue::Table(fields) = params.get_ref() else {
        let message = format!(
            "params must be a table like {{ temperature = 0 }}, not {}",
            params.get_ref().type_name()
        );
        ctx.diags.at(params.span(), message);
        return TValue::empty_object();
    };
    let body = if reserved.contains(&"input") {
        "embed"
    } else {
        "chat"
    };
    for (key, value) in fields {
        if reserved.contains(&key.as_str()) {
            let message = format!(
                "params.{key} would replace the step's own `{key}`; set {key} on the step instead"
            );
            ctx.diags.at(value.span(), message);
        } else if let Some(warning) = s
            .api
            .and_then(|api| crate::params::near_miss(api.name(), body, key))
        {
            ctx.diags
                .warn(value.span(), format!("{}: {warning}", s.label));
        }
    }
    ctx.tvalue(params, format!("{}.params", s.place), s.scope)
}

fn response_format(raw: &RawStep, ctx: &mut Ctx) -> Option<serde_json::Value> {
    let rf = raw.response_format.as_ref()?;
    if !matches!(rf.get_ref(), RawValue::Table(_)) {
        let message = format!(
            "response_format must be a table like {{ type = \"json_object\" }}, not {}",
            rf.get_ref().type_name()
        );
        ctx.diags.at(rf.span(), message);
    }
    Some(rf.get_ref().to_json())
}

/// The literal API path of chat, embed and conversation steps.
fn api_path(raw: &RawStep, default: &str, ctx: &mut Ctx) -> String {
    let Some(path) = &raw.path else {
        return default.to_string();
    };
    if !path.get_ref().starts_with('/') {
        let message = format!(
            "path {:?} must start with \"/\", e.g. {default:?}",
            path.get_ref()
        );
        ctx.diags.at(path.span(), message);
    }
    path.get_ref().clone()
}

fn embed_input(raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<TValue> {
    let Some(input) = &raw.input else {
        missing(
            s,
            "embed",
            "input",
            "\"{{ item.text }}\" (or a list of strings)",
            ctx,
        );
        return None;
    };
    match input.get_ref() {
        RawValue::String(_) => {}
        RawValue::Array(items) => {
            for item in items
                .iter()
                .filter(|i| !matches!(i.get_ref(), RawValue::String(_)))
            {
                let message = format!(
                    "input list must hold strings, not {}",
                    item.get_ref().type_name()
                );
                ctx.diags.at(item.span(), message);
            }
        }
        other => {
            let message = format!(
                "input must be a string or a list of strings, not {}",
                other.type_name()
            );
            ctx.diags.at(input.span(), message);
        }
    }
    Some(ctx.tvalue(input, format!("{}.input", s.place), s.scope))
}

fn http(raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<StepKind> {
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

fn command(raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<StepKind> {
    let Some(argv) = &raw.command else {
        missing(s, "command", "command", "[\"program\", \"arg\", ...]", ctx);
        return None;
    };
    if argv.get_ref().is_empty() {
        let message = format!(
            "{}: command is empty; give the program and its arguments",
            s.label
        );
        ctx.diags.at(argv.span(), message);
    }
    let argv = argv
        .get_ref()
        .iter()
        .enumerate()
        .map(|(i, a)| ctx.template(format!("{}.command[{i}]", s.place), a, s.scope))
        .collect();
    let stdin = raw
        .stdin
        .as_ref()
        .map(|t| ctx.template(format!("{}.stdin", s.place), t, s.scope));
    Some(StepKind::Command { argv, stdin })
}

fn conversation(raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<StepKind> {
    let model = model(raw, s, ctx);
    let system = raw
        .system
        .as_ref()
        .map(|t| ctx.template(format!("{}.system", s.place), t, s.scope));
    let Some(turns) = &raw.turns else {
        missing(
            s,
            "conversation",
            "turns",
            "[\"first question\", \"...\"]",
            ctx,
        );
        return None;
    };
    if turns.get_ref().is_empty() {
        let message = format!("{}: turns is empty; add at least one", s.label);
        ctx.diags.at(turns.span(), message);
    }
    let turn_scope = match s.scope {
        Scope::Step { index, each, .. } => Scope::Step {
            index,
            each,
            answers: true,
        },
        other => other,
    };
    let turns = turns
        .get_ref()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let place = format!("{}.turns[{i}]", s.place);
            crate::content_parts::content(t, "user", place, turn_scope, ctx)
        })
        .collect();
    Some(StepKind::Conversation {
        model: model?,
        system,
        turns,
        params: params(raw, s, &["model", "messages"], ctx),
        path: api_path(raw, "/chat/completions", ctx),
    })
}
