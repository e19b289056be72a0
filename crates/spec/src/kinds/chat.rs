//! `kind = "chat"`: model, messages (text or content parts, tool calls),
//! params, `response_format` and the API path.

use super::{api_path, missing, model, params};
use crate::ctx::Ctx;
use crate::model::{Message, StepKind};
use crate::raw::{RawStep, RawValue};
use crate::steps::StepCtx;

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// Builds a chat step.
pub(super) fn build(raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<StepKind> {
    let model = model(raw, s, ctx);
    let messages = messages(raw, s, ctx);
    Some(StepKind::Chat {
        params: params(raw, s, &["model", "messages"], ctx),
        response_format: response_format(raw, ctx),
        path: api_path(raw, "/chat/completions", ctx),
        model: model?,
        messages: messages?,
    })
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
