//! `kind = "conversation"`: model, an optional system message, the turns
//! (each may read `answers`), params and the API path.

use super::{api_path, missing, model, params};
use crate::ctx::Ctx;
use crate::model::StepKind;
use crate::raw::RawStep;
use crate::steps::StepCtx;
use crate::templates_check::Scope;

/// Builds a conversation step.
pub(super) fn build(raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<StepKind> {
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
