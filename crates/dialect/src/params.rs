//! What each top-level parameter of an OpenAI chat body becomes on an
//! Anthropic provider: translated, sent as written, dropped with a warning,
//! or refused with the reason — one table, read by the job file's checks
//! (position and reason before anything runs) and by the translation itself
//! (a templated value is judged once rendered, before it is sent).
//!
//! Sources: OpenAI's Create chat completion reference and Anthropic's
//! Messages reference (`temperature` 0–1, `metadata` holding only
//! `user_id`, `tool_choice` of type auto/any/tool/none,
//! `disable_parallel_tool_use`); see docs/JOBS.md, "Provider conformance".

use serde_json::Value as Json;

/// The verdict on one parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Sent: as written, or under Anthropic's name and shape.
    Send,
    /// Not sent, and that changes nothing the step relies on; the text says why.
    Drop(String),
    /// Has no equivalent: the call is refused before it is sent; the text says
    /// why and what to do.
    Refuse(String),
    /// Not known to either API: sent as written (it may be newer than this
    /// table), with a warning.
    Unknown,
}

/// How each parameter fares, for documentation and near-miss suggestions:
/// `(name, what happens on Anthropic)`. [`anthropic`] is the rule itself.
pub const ANTHROPIC_TABLE: &[(&str, &str)] = &[
    ("model", "sent as written"),
    ("messages", "translated (system → `system`, tool calls → tool_use, tool messages → tool_result)"),
    ("max_tokens", "sent (default 1024: Anthropic requires it)"),
    ("max_completion_tokens", "sent as `max_tokens`"),
    ("stop", "sent as `stop_sequences`"),
    ("temperature", "sent; refused above 1 (Anthropic's range is 0–1)"),
    ("top_p", "sent"),
    ("tools", "translated: function tools → `{name, description, input_schema}`; other tool types refused"),
    ("tool_choice", "translated: auto → auto, none → none, required → any, a named function → tool"),
    ("parallel_tool_calls", "translated: false → `tool_choice.disable_parallel_tool_use`"),
    ("user", "sent as `metadata.user_id`"),
    ("safety_identifier", "sent as `metadata.user_id`"),
    ("metadata", "sent when it holds only `user_id`; other keys refused"),
    ("stream", "set by sluice (`stream = true` on the step)"),
    ("stream_options", "dropped: Anthropic's stream always reports usage"),
    ("response_format", "dropped: the step still requires a JSON answer, so ask for JSON in the prompt"),
    ("n", "dropped when 1; refused above 1 (one answer per call)"),
    ("logprobs", "dropped when false; refused when true"),
    ("top_logprobs", "refused"),
    ("logit_bias", "refused"),
    ("frequency_penalty", "dropped when 0; refused otherwise"),
    ("presence_penalty", "dropped when 0; refused otherwise"),
    ("seed", "dropped (OpenAI's determinism is best-effort too)"),
    ("store", "dropped (Anthropic keeps no completions for evals)"),
    ("prompt_cache_key", "dropped (a caching hint)"),
    ("prompt_cache_retention", "dropped (a caching hint)"),
    ("prediction", "dropped (predicted outputs only change latency)"),
    ("service_tier", "sent when \"auto\"; other tiers refused"),
    ("reasoning_effort", "refused: use Anthropic's `thinking`"),
    ("verbosity", "refused"),
    ("modalities", "dropped when [\"text\"]; refused with audio"),
    ("audio", "refused"),
    ("web_search_options", "refused"),
    ("functions", "refused: use `tools`"),
    ("function_call", "refused: use `tool_choice`"),
    ("system", "sent (Anthropic's own); refused next to system messages"),
    ("top_k", "sent (Anthropic's own)"),
    ("thinking", "sent (Anthropic's own)"),
];

/// Anthropic's own top-level parameters an OpenAI-shaped body may carry.
const ANTHROPIC_OWN: [&str; 7] = [
    "top_k",
    "thinking",
    "system",
    "stop_sequences",
    "container",
    "mcp_servers",
    "context_management",
];

/// The verdict on parameter `key` of an OpenAI chat body bound for Anthropic;
/// `value` is `None` when it is not known yet (a template): only verdicts that
/// hold for every value are given then (anything else is [`Verdict::Send`],
/// judged again once rendered).
pub fn anthropic(key: &str, value: Option<&Json>) -> Verdict {
    let refuse = |why: &str| Verdict::Refuse(why.to_string());
    let drop = |why: &str| Verdict::Drop(why.to_string());
    let zero = |v: &Json| v.as_f64() == Some(0.0) || v.is_null();
    match key {
        "model" | "messages" | "max_tokens" | "max_completion_tokens" | "stop" | "top_p"
        | "tools" | "tool_choice" | "parallel_tool_calls" | "user" | "safety_identifier"
        | "stream" => Verdict::Send,
        k if ANTHROPIC_OWN.contains(&k) => Verdict::Send,
        "temperature" => match value.and_then(Json::as_f64) {
            Some(t) if !(0.0..=1.0).contains(&t) => Verdict::Refuse(format!(
                "temperature {t} is outside Anthropic's range 0–1 (OpenAI's is 0–2); \
                 halve it or choose a value up to 1"
            )),
            _ => Verdict::Send,
        },
        "metadata" => match value {
            Some(Json::Object(m)) => match m.keys().find(|k| k.as_str() != "user_id") {
                Some(other) => Verdict::Refuse(format!(
                    "Anthropic's metadata takes only user_id, not {other:?}; \
                     keep such tags in the item (they are exported with it)"
                )),
                None => Verdict::Send,
            },
            Some(Json::Null) | None => Verdict::Send,
            Some(_) => refuse("metadata must be a table holding only user_id"),
        },
        "stream_options" => drop("Anthropic's stream always reports usage"),
        "response_format" => drop(
            "Anthropic has no response_format; the step still requires a JSON answer, \
             so ask for JSON in the prompt",
        ),
        "n" => match value {
            Some(v) if v.as_u64() == Some(1) || v.is_null() => drop("n = 1 is the only answer"),
            Some(_) => refuse("Anthropic gives one answer per call; use a matrix axis (run = [1, 2, 3]) for several"),
            None => Verdict::Send,
        },
        "logprobs" => match value {
            Some(Json::Bool(false)) | Some(Json::Null) => drop("logprobs = false asks for nothing"),
            Some(_) => refuse("Anthropic returns no log probabilities"),
            None => Verdict::Send,
        },
        "top_logprobs" => match value {
            Some(Json::Null) => drop("null asks for nothing"),
            _ => refuse("Anthropic returns no log probabilities"),
        },
        "logit_bias" => refuse("Anthropic has no logit bias"),
        "frequency_penalty" | "presence_penalty" => match value {
            Some(v) if zero(v) => drop("a penalty of 0 changes nothing"),
            Some(_) => refuse(
                "Anthropic has no repetition penalties; remove it for this provider \
                 (dropping it would change the answers silently)",
            ),
            None => Verdict::Send,
        },
        "seed" => drop("Anthropic takes no seed (OpenAI's determinism is best-effort too)"),
        "store" => drop("Anthropic keeps no completions for evals"),
        "prompt_cache_key" | "prompt_cache_retention" => {
            drop("a caching hint; Anthropic caches by cache_control blocks")
        }
        "prediction" => drop("predicted outputs only change latency"),
        "service_tier" => match value {
            Some(Json::String(s)) if s == "auto" => Verdict::Send,
            Some(_) => refuse(
                "Anthropic's service_tier is \"auto\" or \"standard_only\", not OpenAI's tiers; \
                 set it to \"auto\" or remove it",
            ),
            None => Verdict::Send,
        },
        "reasoning_effort" => refuse(
            "Anthropic has no reasoning_effort; use params.thinking = \
             { type = \"enabled\", budget_tokens = N } (N below max_tokens)",
        ),
        "verbosity" => refuse("Anthropic has no verbosity setting; say it in the prompt"),
        "modalities" => match value {
            Some(Json::Array(list)) if list.iter().all(|m| m == "text") => {
                drop("text is Anthropic's only output")
            }
            Some(_) => refuse("Anthropic answers in text only"),
            None => Verdict::Send,
        },
        "audio" => refuse("Anthropic answers in text only"),
        "web_search_options" => refuse(
            "OpenAI's web search has no Anthropic equivalent here; use an Anthropic server \
             tool in params.tools written in Anthropic's shape",
        ),
        "functions" => refuse("functions is OpenAI's deprecated form; write params.tools"),
        "function_call" => refuse("function_call is OpenAI's deprecated form; write params.tool_choice"),
        _ => Verdict::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn value_dependent_verdicts() {
        assert_eq!(anthropic("temperature", Some(&json!(1))), Verdict::Send);
        assert!(matches!(
            anthropic("temperature", Some(&json!(1.5))),
            Verdict::Refuse(r) if r.contains("0–1")
        ));
        // A template's value is judged once rendered.
        assert_eq!(anthropic("temperature", None), Verdict::Send);
        assert!(matches!(anthropic("n", Some(&json!(1))), Verdict::Drop(_)));
        assert!(matches!(
            anthropic("n", Some(&json!(3))),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            anthropic("metadata", Some(&json!({"user_id": "u", "run": "r1"}))),
            Verdict::Refuse(r) if r.contains("\"run\"")
        ));
        assert_eq!(
            anthropic("metadata", Some(&json!({"user_id": "u"}))),
            Verdict::Send
        );
        assert!(matches!(
            anthropic("presence_penalty", Some(&json!(0))),
            Verdict::Drop(_)
        ));
        assert!(matches!(
            anthropic("presence_penalty", Some(&json!(0.5))),
            Verdict::Refuse(_)
        ));
        // Refused whatever the value.
        assert!(matches!(
            anthropic("reasoning_effort", None),
            Verdict::Refuse(r) if r.contains("thinking")
        ));
        assert_eq!(anthropic("frobnicate", Some(&json!(1))), Verdict::Unknown);
    }

    #[test]
    fn the_documentation_table_names_every_openai_parameter_the_rule_knows() {
        for (name, _) in ANTHROPIC_TABLE {
            assert_ne!(anthropic(name, None), Verdict::Unknown, "{name}");
        }
    }
}
