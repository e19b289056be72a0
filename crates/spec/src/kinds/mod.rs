//! The contents of each step kind, one file each (chat, embed, http,
//! command, conversation), and what the model kinds share: `model`,
//! `params`, the API path.

use crate::ctx::Ctx;
use crate::model::StepKind;
use crate::raw::{RawStep, RawValue};
use crate::steps::StepCtx;
use crate::template::{TValue, Template};

mod chat;
mod command;
mod conversation;
mod embed;
mod http;

/// Builds the kind named `kind` (already checked to be one of `KINDS`).
pub(crate) fn build(kind: &str, raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<StepKind> {
    match kind {
        "chat" => chat::build(raw, s, ctx),
        "embed" => embed::build(raw, s, ctx),
        "http" => http::build(raw, s, ctx),
        "command" => command::build(raw, s, ctx),
        "conversation" => conversation::build(raw, s, ctx),
        _ => None,
    }
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
