//! `kind = "command"`: a local program's argv (no shell) and its stdin.

use super::missing;
use crate::ctx::Ctx;
use crate::model::StepKind;
use crate::raw::RawStep;
use crate::steps::StepCtx;

/// Builds a command step.
pub(super) fn build(raw: &RawStep, s: &StepCtx, ctx: &mut Ctx) -> Option<StepKind> {
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
