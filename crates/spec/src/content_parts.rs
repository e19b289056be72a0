//! A chat message's `content` in the job file: a text template, or a list of
//! OpenAI content parts — `text`, `image_url`, `input_audio`, `file` — each
//! checked for its type, its required keys and its role (images, audio and
//! files come from the user), at its position, before anything is sent.

use toml::Spanned;

use crate::ctx::Ctx;
use crate::model::Content;
use crate::raw::RawValue;
use crate::template::TValue;
use crate::templates_check::Scope;

/// The content part types a message may hold.
pub(crate) const PART_TYPES: [&str; 4] = ["text", "image_url", "input_audio", "file"];

/// The content at `place` (`steps.NAME.messages[i].content`, a
/// conversation's `steps.NAME.turns[i]`) of a message of `role`.
pub(crate) fn content(
    raw: &Spanned<RawValue>,
    role: &str,
    place: String,
    scope: Scope,
    ctx: &mut Ctx,
) -> Content {
    match raw.get_ref() {
        RawValue::String(s) => {
            let text = Spanned::new(raw.span(), s.clone());
            Content::Text(ctx.template(place, &text, scope))
        }
        RawValue::Array(parts) => {
            if parts.is_empty() {
                let message = format!("{place} is an empty list; give text, or at least one part like {{ type = \"text\", text = \"...\" }}");
                ctx.diags.at(raw.span(), message);
            }
            for (k, part) in parts.iter().enumerate() {
                check_part(part, role, &format!("{place}[{k}]"), ctx);
            }
            Content::Parts(ctx.tvalue(raw, place, scope))
        }
        other => {
            let message = format!(
                "{place} must be text or a list of content parts like [{{ type = \"text\", text = \"...\" }}, {{ type = \"image_url\", image_url = {{ url = \"{{{{ data_url(item.path) }}}}\" }} }}], not {}",
                other.type_name()
            );
            ctx.diags.at(raw.span(), message);
            Content::Parts(TValue::Array(Vec::new()))
        }
    }
}

/// One part: its type, the table its type needs, nothing else, and a role
/// that may carry it.
fn check_part(part: &Spanned<RawValue>, role: &str, place: &str, ctx: &mut Ctx) {
    let RawValue::Table(fields) = part.get_ref() else {
        let message = format!(
            "{place} must be a table like {{ type = \"text\", text = \"...\" }}, not {}",
            part.get_ref().type_name()
        );
        ctx.diags.at(part.span(), message);
        return;
    };
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let kind = match field("type").map(|t| (t, t.get_ref())) {
        Some((_, RawValue::String(t))) if PART_TYPES.contains(&t.as_str()) => t.as_str(),
        Some((t, RawValue::String(other))) => {
            let hint = crate::suggest::did_you_mean(other, PART_TYPES.iter().copied());
            let message = format!(
                "{place}.type {other:?} is not a content part type{hint}; use one of: {}",
                PART_TYPES.join(", ")
            );
            ctx.diags.at(t.span(), message);
            return;
        }
        Some((t, _)) => {
            let message = format!("{place}.type must be one of: {}", PART_TYPES.join(", "));
            ctx.diags.at(t.span(), message);
            return;
        }
        None => {
            let message = format!(
                "{place} needs type = one of: {} (a string written as is, not a template)",
                PART_TYPES.join(", ")
            );
            ctx.diags.at(part.span(), message);
            return;
        }
    };
    let a = if kind.starts_with(['i', 'a']) {
        "an"
    } else {
        "a"
    };
    for (key, value) in fields {
        if key != "type" && key != kind {
            let message = format!(
                "{place}: {a} {kind} part takes only type and {kind}, not {key:?} (OpenAI's shape: {})",
                example(kind)
            );
            ctx.diags.at(value.span(), message);
        }
    }
    if kind != "text" && role != "user" && !role.is_empty() {
        let message = format!(
            "{place}: {a} {kind} part belongs in a role = \"user\" message (APIs take images, audio and files from the user only)"
        );
        ctx.diags.at(part.span(), message);
    }
    let Some(value) = field(kind) else {
        let message = format!("{place}: {a} {kind} part needs {kind}: {}", example(kind));
        ctx.diags.at(part.span(), message);
        return;
    };
    let (needs, allowed): (&[&str], &[&str]) = match kind {
        "text" => {
            if !matches!(value.get_ref(), RawValue::String(_)) {
                let message = format!("{place}.text must be a string (a template)");
                ctx.diags.at(value.span(), message);
            }
            return;
        }
        "image_url" => (&["url"], &["url", "detail"]),
        "input_audio" => (&["data", "format"], &["data", "format"]),
        _ => (&[], &["file_data", "file_id", "filename"]),
    };
    let RawValue::Table(inner) = value.get_ref() else {
        let message = format!(
            "{place}.{kind} must be a table: {}, not {}",
            example(kind),
            value.get_ref().type_name()
        );
        ctx.diags.at(value.span(), message);
        return;
    };
    let has = |name: &str| inner.iter().any(|(k, _)| k == name);
    for need in needs {
        if !has(need) {
            let message = format!("{place}.{kind} needs {need}: {}", example(kind));
            ctx.diags.at(value.span(), message);
        }
    }
    if kind == "file" && has("file_data") == has("file_id") {
        let message = format!(
            "{place}.file needs exactly one of file_data (a data URL: \"{{{{ data_url(item.pdf) }}}}\") and file_id"
        );
        ctx.diags.at(value.span(), message);
    }
    for (key, v) in inner {
        if !allowed.contains(&key.as_str()) {
            let message = format!(
                "{place}.{kind} has no {key:?}; it takes: {}",
                allowed.join(", ")
            );
            ctx.diags.at(v.span(), message);
        }
        let literal = |choices: &[&str]| match v.get_ref() {
            RawValue::String(s) if !s.contains("{{") && !choices.contains(&s.as_str()) => {
                Some(s.clone())
            }
            _ => None,
        };
        let bad = match (kind, key.as_str()) {
            ("image_url", "detail") => {
                literal(&["auto", "low", "high"]).map(|s| (s, "auto, low, high"))
            }
            ("input_audio", "format") => literal(&["wav", "mp3"]).map(|s| (s, "wav, mp3")),
            _ => None,
        };
        if let Some((value, choices)) = bad {
            let message = format!("{place}.{kind}.{key} {value:?} is not one of: {choices}");
            ctx.diags.at(v.span(), message);
        }
    }
}

/// The shape a part of `kind` takes, for messages.
fn example(kind: &str) -> &'static str {
    match kind {
        "text" => "{ type = \"text\", text = \"...\" }",
        "image_url" => "{ type = \"image_url\", image_url = { url = \"{{ data_url(item.path) }}\", detail = \"low\" } }",
        "input_audio" => "{ type = \"input_audio\", input_audio = { data = \"{{ base64(item.wav) }}\", format = \"wav\" } }",
        _ => "{ type = \"file\", file = { file_data = \"{{ data_url(item.pdf) }}\", filename = \"doc.pdf\" } }",
    }
}
