//! `kind = "embed"`: model, input (a string or a list of strings), params
//! and the API path.

use super::{api_path, missing, model, params};
use crate::ctx::Ctx;
use crate::model::StepKind;
use crate::raw::{RawStep, RawValue};
use crate::steps::StepCtx;
use crate::template::TValue;

/// Builds an embed step.
pub(super) fn build(raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<StepKind> {
    let model = model(raw, s, ctx);
    let input = embed_input(raw, s, ctx);
    Some(StepKind::Embed {
        params: params(raw, s, &["model", "input"], ctx),
        path: api_path(raw, "/embeddings", ctx),
        model: model?,
        input: input?,
    })
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
