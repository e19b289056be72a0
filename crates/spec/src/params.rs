//! The request parameters each API takes, by step kind, so that a near-miss
//! in `params` (`max_token`, `temprature`) is caught before every call is
//! answered 400. A key no API lists is sent as written — providers add their
//! own — so only keys close to a known one are reported, and as warnings.
//!
//! One table per API and body shape; a new dialect adds a row to [`TABLES`].

/// The parameters one API takes in one kind of request body.
pub(crate) struct ParamTable {
    /// The provider's `api` as written (`openai`, `anthropic`).
    pub(crate) api: &'static str,
    /// The body shape: `chat` (chat and conversation steps) or `embed`.
    pub(crate) body: &'static str,
    /// What the API's reference calls the request, for messages.
    pub(crate) request: &'static str,
    /// Every top-level body field it documents.
    pub(crate) known: &'static [&'static str],
}

const OPENAI_CHAT: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "stream",
    "stream_options",
    "service_tier",
    "reasoning_effort",
    "metadata",
    "store",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
];

/// Anthropic's Messages API; OpenAI names the translation maps (`stop`,
/// `max_completion_tokens`, `user`) are accepted too.
const ANTHROPIC_MESSAGES: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "stop_sequences",
    "metadata",
    "user",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "stream",
];

const OPENAI_EMBEDDINGS: &[&str] = &["model", "input", "dimensions", "encoding_format", "user"];

/// Every API's parameters, by body shape.
pub(crate) const TABLES: &[ParamTable] = &[
    ParamTable {
        api: "openai",
        body: "chat",
        request: "chat completions",
        known: OPENAI_CHAT,
    },
    ParamTable {
        api: "anthropic",
        body: "chat",
        request: "Anthropic Messages",
        known: ANTHROPIC_MESSAGES,
    },
    ParamTable {
        api: "openai",
        body: "embed",
        request: "embeddings",
        known: OPENAI_EMBEDDINGS,
    },
    ParamTable {
        api: "anthropic",
        body: "embed",
        request: "embeddings",
        known: OPENAI_EMBEDDINGS,
    },
];

/// The warning for `params.KEY` of a `body` request to `api` (its name, as
/// `api = "…"` spells it), when `key` is not a parameter of that request but
/// close to one.
pub(crate) fn near_miss(api: &str, body: &str, key: &str) -> Option<String> {
    let table = TABLES.iter().find(|t| t.api == api && t.body == body)?;
    if table.known.contains(&key) {
        return None;
    }
    let meant = crate::suggest::closest(key, table.known.iter().copied())?;
    Some(format!(
        "params.{key} is not a {} parameter; did you mean `{meant}`? (sent as written; \
         the API may refuse every call)",
        table.request
    ))
}

/// For a key written on a step of `kind` instead of in its `params`: the
/// request parameter it is (or is a near-miss of), if any.
pub(crate) fn request_param(kind: &str, key: &str) -> Option<&'static str> {
    let body = match kind {
        "chat" | "conversation" => "chat",
        "embed" => "embed",
        _ => return None,
    };
    let known = TABLES
        .iter()
        .filter(|t| t.body == body)
        .flat_map(|t| t.known.iter().copied());
    let mut all: Vec<&'static str> = known.collect();
    all.dedup();
    if let Some(exact) = all.iter().find(|k| **k == key) {
        return Some(exact);
    }
    crate::suggest::closest(key, all.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_are_named_and_unknown_extras_pass() {
        let w = near_miss("openai", "chat", "max_token").unwrap();
        assert!(w.contains("did you mean `max_tokens`"), "{w}");
        assert!(near_miss("openai", "chat", "temprature").is_some());
        assert_eq!(near_miss("openai", "chat", "max_tokens"), None);
        // A provider's own parameter, far from every known one.
        assert_eq!(near_miss("openai", "chat", "repetition_penalty"), None);
        assert!(near_miss("anthropic", "chat", "top_kk").is_some());
        assert!(near_miss("openai", "embed", "dimension").is_some());
    }
}
