//! A model step's `params` checked against its provider's dialect before
//! anything runs: a parameter Anthropic has no equivalent for, or a value
//! outside its range, is an error at the value's position with the reason
//! (the rules are `sluice_dialect::params`; a templated value is judged
//! again once rendered, before its call is sent).

use sluice_dialect::params::{self, Verdict};

use crate::ctx::Ctx;
use crate::raw::{RawStep, RawValue};

/// Checks `raw`'s params for an `api = "anthropic"` provider named `provider`.
pub(crate) fn anthropic(raw: &RawStep, label: &str, provider: &str, ctx: &mut Ctx) {
    let Some(RawValue::Table(fields)) = raw.params.as_ref().map(|p| p.get_ref()) else {
        return;
    };
    for (key, value) in fields {
        // A value holding a template is only known per item.
        let known = (!holds_template(value.get_ref())).then(|| value.get_ref().to_json());
        if let Verdict::Refuse(reason) = params::anthropic(key, known.as_ref()) {
            let message = format!(
                "{label}: params.{key} cannot be sent to provider {provider:?} \
                 (api = \"anthropic\"): {reason}"
            );
            ctx.diags.at(value.span(), message);
        }
    }
}

fn holds_template(value: &RawValue) -> bool {
    match value {
        RawValue::String(s) => s.contains("{{") || s.contains("{%"),
        RawValue::Array(items) => items.iter().any(|i| holds_template(i.get_ref())),
        RawValue::Table(fields) => fields.iter().any(|(_, v)| holds_template(v.get_ref())),
        _ => false,
    }
}
