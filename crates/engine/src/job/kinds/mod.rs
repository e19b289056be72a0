//! Step kinds, one file each (chat, embed, conversation, http, command): each
//! owns its request building, its estimate, its output reading and its part
//! of plan, show, probe and check. This module is the one place that matches
//! on [`StepKind`]: [`of`] hands out a kind's [`StepRules`], and everything
//! else asks those.
//!
//! Adding a kind: a variant in `sluice_spec::StepKind` (read and checked in
//! `crates/spec/src/kinds/`), a file here with a view of the variant's fields
//! implementing [`StepRules`], and one arm in [`of`] (docs/ARCHITECTURE.md,
//! "Adding a step kind").

use std::collections::BTreeMap;

use minijinja::Value;
use serde_json::{json, Value as Json};
use sluice_spec::{Content, Dialect, RenderError, Step, StepKind, TValue, Template};

pub(crate) mod chat;
pub(crate) mod command;
pub(crate) mod conversation;
pub(crate) mod embed;
pub(crate) mod http;
pub(crate) mod model_request;
pub(crate) mod multipart;

pub(crate) use model_request::JsonRequest;

/// How one call of a step goes out: what the runner, `plan --show` and
/// `--probe` do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// One JSON request to a model provider ([`StepRules::model_request`]).
    /// `chat`: a chat-completions body (translated for Anthropic, may
    /// stream); else an embeddings body.
    Model {
        /// Whether the body is a chat completion's.
        chat: bool,
    },
    /// One chat request per turn, the history growing
    /// ([`StepRules::turn_request`]).
    Turns,
    /// An HTTP call ([`StepRules::http_call`]).
    Http,
    /// A local program ([`StepRules::command_line`]).
    Command,
}

impl Transport {
    /// Whether its model requests are chat completions (a chat step, a
    /// conversation's turns): translated for Anthropic, streamed when asked.
    pub(crate) fn is_chat(self) -> bool {
        matches!(self, Transport::Model { chat: true } | Transport::Turns)
    }
}

/// What a step kind answers for the runner, plan, show, probe and check.
/// Each kind's file implements it on a view of its `StepKind` fields.
pub(crate) trait StepRules<'a>: Send + Sync {
    /// How its calls go out.
    fn transport(&self) -> Transport;

    /// Seconds one call takes when nothing better is known (`plan`'s
    /// estimate): an LLM answer of a few hundred tokens, an embedding, a web
    /// call, a program.
    fn default_latency(&self) -> f64;

    /// Calls one unit makes (a conversation: one per turn).
    fn calls_per_unit(&self) -> u64 {
        1
    }

    /// A conversation's turns; no other kind has any.
    fn turns(&self) -> &'a [Content] {
        &[]
    }

    /// The model template of a model step: what its tokens and price are
    /// counted by.
    fn model(&self) -> Option<&'a Template> {
        None
    }

    /// The body fields of a chat-shaped step (chat, conversation): where its
    /// completion cap is set.
    fn chat_params(&self) -> Option<&'a TValue> {
        None
    }

    /// Whether the answer must parse as JSON (a chat step's `response_format`).
    fn wants_json(&self) -> bool {
        false
    }

    /// Every template of one call, but `for_each` and a conversation's turns
    /// (those render with `answers`).
    fn templates(&self) -> Vec<&'a Template>;

    /// The templates a `--probe` call renders with only the item; `None`
    /// when the kind is never probed (a local program).
    fn probe_templates(&self) -> Option<Vec<&'a Template>>;

    /// Adds everything one call renders to, for the step's fingerprint.
    fn fingerprint_parts(
        &self,
        ctx: &minijinja::Value,
        parts: &mut Vec<Json>,
    ) -> Result<(), RenderError>;

    /// The rendered JSON request of a chat or embed step.
    fn model_request(&self, _ctx: &minijinja::Value) -> Result<Option<JsonRequest>, RenderError> {
        Ok(None)
    }

    /// The chat request of a conversation's turn `prompts.len() - 1`.
    fn turn_request(
        &self,
        _ctx: &minijinja::Value,
        _prompts: &[Json],
        _answers: &[String],
    ) -> Result<Option<JsonRequest>, RenderError> {
        Ok(None)
    }

    /// An http step's call; `None` for other kinds.
    fn http_call(
        &self,
        _base_url: Option<&str>,
        _provider_headers: &[(String, Template)],
        _ctx: &minijinja::Value,
        _files: Option<&crate::FileAccess>,
    ) -> Option<Result<http::HttpCall, http::StepError>> {
        None
    }

    /// A command step's program line; `None` for other kinds.
    fn command_line(
        &self,
        _ctx: &minijinja::Value,
    ) -> Option<Result<command::CommandLine, RenderError>> {
        None
    }

    /// `plan`'s tokens for one unit's call(s), when the templates render
    /// without earlier answers, and its image parts (all, and those of
    /// unknown size). `None` for a kind that counts no tokens.
    fn plan_tokens(&self, _ctx: &minijinja::Value) -> Option<(u64, (u64, u64))> {
        None
    }

    /// Characters of prompt template text: `plan`'s floor when the prompts
    /// cannot be rendered yet.
    fn template_chars(&self) -> usize {
        0
    }

    /// Why the step cannot go to provider `name` of `dialect`, if it cannot.
    fn unfit_for(&self, _dialect: Dialect, _name: &str) -> Option<String> {
        None
    }

    /// The fields `steps.NAME` has (typed stand-ins at `path`) before the
    /// run has an answer, beside `json`.
    fn output_fields(&self, path: &str, fields: &mut BTreeMap<&'static str, Value>);
}

/// The rules of `kind`: the one match on [`StepKind`].
pub(crate) fn of(kind: &StepKind) -> Box<dyn StepRules<'_> + '_> {
    match kind {
        StepKind::Chat {
            model,
            messages,
            params,
            response_format,
            path,
        } => Box::new(chat::Chat {
            model,
            messages,
            params,
            response_format: response_format.as_ref(),
            path,
        }),
        StepKind::Embed {
            model,
            input,
            params,
            path,
        } => Box::new(embed::Embed {
            model,
            input,
            params,
            path,
        }),
        StepKind::Conversation {
            model,
            system,
            turns,
            params,
            path,
        } => Box::new(conversation::Conversation {
            model,
            system: system.as_ref(),
            turns,
            params,
            path,
        }),
        StepKind::Http {
            method,
            url,
            path,
            headers,
            json,
            body,
            upload,
            save,
        } => Box::new(http::Http {
            method,
            url: url.as_ref(),
            path: path.as_ref(),
            headers,
            json: json.as_ref(),
            body: body.as_ref(),
            upload: upload.as_ref(),
            save: *save,
        }),
        StepKind::Command { argv, stdin } => Box::new(command::Command {
            argv,
            stdin: stdin.as_ref(),
        }),
    }
}

/// Hash of everything a step renders to for this unit (and fan-out element):
/// equal fingerprints mean an equal request.
pub(crate) fn fingerprint(
    step: &Step,
    ctx: &minijinja::Value,
    part: i64,
) -> Result<u64, RenderError> {
    let mut parts: Vec<Json> = vec![json!(step.name), json!(step.kind.name()), json!(part)];
    of(&step.kind).fingerprint_parts(ctx, &mut parts)?;
    Ok(hash_json(&Json::Array(parts)))
}

/// xxh3 of a JSON value's canonical text (object keys sorted by serde_json's map).
pub(crate) fn hash_json(value: &Json) -> u64 {
    xxhash_rust::xxh3::xxh3_64(value.to_string().as_bytes())
}

/// The stand-in of an answer's text at `path`.
pub(crate) fn placeholder_text(path: &str) -> Value {
    Value::from(format!("⟨{path}.text⟩"))
}

/// A usage stand-in: both counts zero.
fn zero_usage() -> Value {
    let mut u = BTreeMap::new();
    u.insert("prompt_tokens", Value::from(0));
    u.insert("completion_tokens", Value::from(0));
    Value::from(u)
}

/// A step of `kind_toml`'s kind (its `kind = ...` and fields), for the
/// kinds' tests; all but a command step go to provider `p` at `http://h/v1`.
#[cfg(test)]
pub(crate) fn test_step(kind_toml: &str) -> Step {
    let provider = if kind_toml.contains("\"command\"") {
        ""
    } else {
        "provider = \"p\"\n"
    };
    let text = format!(
        "[input]\npath = \"items.jsonl\"\n\n[providers.p]\nbase_url = \"http://h/v1\"\n\n[[steps]]\nname = \"s\"\n{provider}{kind_toml}\n"
    );
    match sluice_spec::parse_str(&text, std::path::Path::new("/jobs/job.toml"), &[]) {
        Ok(job) => job.steps[0].clone(),
        Err(e) => panic!("{e}\n{text}"),
    }
}

/// `{"item": item}` as a template context.
#[cfg(test)]
pub(crate) fn test_ctx(item: Json) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(json!({ "item": item })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = "kind = \"chat\"\nmodel = \"m\"\nmessages = [{ role = \"user\", content = \"{{ item.q }}\" }]";
    const EMBED: &str = "kind = \"embed\"\nmodel = \"m\"\ninput = \"{{ item.q }}\"";
    const CONVERSATION: &str = "kind = \"conversation\"\nmodel = \"m\"\nturns = [\"a\", \"b\"]";
    const HTTP: &str = "kind = \"http\"\nurl = \"http://h/x\"";
    const COMMAND: &str = "kind = \"command\"\ncommand = [\"echo\", \"{{ item.q }}\"]";

    #[test]
    fn every_kind_has_its_transport_and_latency() {
        let cases = [
            (CHAT, Transport::Model { chat: true }, 2.0, 1),
            (EMBED, Transport::Model { chat: false }, 0.3, 1),
            (CONVERSATION, Transport::Turns, 2.0, 2),
            (HTTP, Transport::Http, 0.5, 1),
            (COMMAND, Transport::Command, 1.0, 1),
        ];
        for (kind, transport, latency, calls) in cases {
            let step = test_step(kind);
            let rules = of(&step.kind);
            assert_eq!(rules.transport(), transport, "{kind}");
            assert_eq!(rules.default_latency(), latency, "{kind}");
            assert_eq!(rules.calls_per_unit(), calls, "{kind}");
        }
    }

    #[test]
    fn a_fingerprint_changes_with_what_is_rendered_only() {
        let hi = test_ctx(json!({"q": "hi"}));
        let ho = test_ctx(json!({"q": "ho"}));
        for kind in [CHAT, EMBED, COMMAND] {
            let step = test_step(kind);
            let a = fingerprint(&step, &hi, -1).unwrap();
            assert_eq!(a, fingerprint(&step, &hi, -1).unwrap(), "{kind}");
            assert_ne!(a, fingerprint(&step, &hi, 0).unwrap(), "{kind}");
            assert_ne!(a, fingerprint(&step, &ho, -1).unwrap(), "{kind}");
        }
        // A conversation's turns hash their own bodies, in the runner.
        let step = test_step(CONVERSATION);
        assert_eq!(
            fingerprint(&step, &hi, -1).unwrap(),
            fingerprint(&step, &ho, -1).unwrap()
        );
    }
}
