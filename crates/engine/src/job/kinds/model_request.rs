//! What chat, embed and conversation steps share: the rendered JSON request
//! to a model provider, and its token estimate (what the limiter reserves
//! and `plan` counts).

use serde_json::{Map, Value as Json};
use sluice_limit::{Cost, DEFAULT_COMPLETION_ESTIMATE, MESSAGE_OVERHEAD, REPLY_PRIMING};
use sluice_provider::dialect::{to_anthropic, Refusal, DEFAULT_MAX_TOKENS};
use sluice_provider::Dialect;

use crate::job::output::Usage;

/// A rendered OpenAI-style JSON request.
pub(crate) struct JsonRequest {
    /// Path under the provider's base URL.
    pub(crate) path: String,
    pub(crate) body: Json,
    /// Tokens to reserve: the prompt's estimate (input) and the completion
    /// cap (output).
    pub(crate) estimate: Cost,
}

/// A model request as its provider's dialect takes it: what the runner
/// sends, `plan --show` shows and `--probe` times.
#[derive(Debug)]
pub(crate) struct DialectRequest {
    /// Path under the provider's base URL (`/messages` for an Anthropic chat).
    pub(crate) path: String,
    /// The translated body; `None`: the rendered (OpenAI) body goes as it is.
    pub(crate) translated: Option<Json>,
    /// Parameters the translation left out, each `name: why`.
    pub(crate) warnings: Vec<String>,
    /// Tokens to reserve: Anthropic reserves the `max_tokens` it is sent,
    /// which defaults higher than the estimate of a request that set none.
    pub(crate) estimate: Cost,
}

impl JsonRequest {
    /// This request in `dialect`'s shape; `chat`: a chat-completions body
    /// (an embeddings body goes as it is). Refused before anything is sent:
    /// a parameter (or a value rendered from the item) with no equivalent.
    pub(crate) fn in_dialect(
        &self,
        dialect: Dialect,
        chat: bool,
    ) -> Result<DialectRequest, Refusal> {
        match dialect {
            Dialect::Anthropic if chat => {
                let translated = to_anthropic(&self.body)?;
                let unset = self.body.get("max_tokens").is_none()
                    && self.body.get("max_completion_tokens").is_none();
                let mut estimate = self.estimate;
                if unset {
                    estimate.output = DEFAULT_MAX_TOKENS;
                }
                Ok(DialectRequest {
                    path: dialect.chat_path(&self.path).to_string(),
                    translated: Some(translated.body),
                    warnings: translated.warnings,
                    estimate,
                })
            }
            _ => Ok(DialectRequest {
                path: self.path.clone(),
                translated: None,
                warnings: Vec::new(),
                estimate: self.estimate,
            }),
        }
    }
}

/// A rendered `params` value as the body's first fields (nothing when it is
/// not a table).
pub(super) fn object(value: Json) -> Map<String, Json> {
    match value {
        Json::Object(map) => map,
        _ => Map::new(),
    }
}

/// The prompt's tokens (the model's tokenizer, else chars ÷ 4; images by
/// the tile rule; a few per message for its framing) and the completion cap
/// (the same estimate as quick mode).
pub(super) fn chat_estimate(body: &Json) -> Cost {
    let model = body["model"].as_str();
    let prompt: u64 = body["messages"]
        .as_array()
        .map(|ms| {
            REPLY_PRIMING
                + ms.iter()
                    .map(|m| {
                        MESSAGE_OVERHEAD
                            + text_estimate(model, &m["content"])
                            + m.get("tool_calls")
                                .map_or(0, |c| crate::tokens::estimate(model, &c.to_string()))
                    })
                    .sum::<u64>()
        })
        .unwrap_or(0);
    let tools = body
        .get("tools")
        .map_or(0, |t| crate::tokens::estimate(model, &t.to_string()));
    let completion = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Json::as_u64)
        .unwrap_or(DEFAULT_COMPLETION_ESTIMATE);
    Cost {
        input: prompt + tools,
        output: completion,
    }
}

/// Estimated tokens of a content value (a string, a list of parts or of
/// inputs, `{text}`).
pub(crate) fn text_estimate(model: Option<&str>, value: &Json) -> u64 {
    match value {
        Json::String(s) => crate::tokens::estimate(model, s),
        Json::Array(items) => items.iter().map(|i| text_estimate(model, i)).sum(),
        Json::Object(o) => match o.get("image_url") {
            Some(image) => crate::tokens::image_estimate(
                image["url"].as_str().unwrap_or(""),
                image["detail"].as_str(),
            ),
            None => o.get("text").map(|t| text_estimate(model, t)).unwrap_or(0),
        },
        _ => 0,
    }
}

/// Image parts of a chat body, and those whose size a data URL does not say.
pub(super) fn images(body: &Json) -> (u64, u64) {
    let parts = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter_map(|p| p.pointer("/image_url/url").and_then(Json::as_str));
    parts.fold((0, 0), |(all, unknown), url| {
        let known = sluice_provider::dialect::media::data_url(url)
            .and_then(|(_, data)| {
                let head: String = data.chars().take(1024).collect();
                let head = &head[..head.len() - head.len() % 4];
                sluice_provider::dialect::media::base64_decode(head)
            })
            .and_then(|b| sluice_provider::dialect::media::image_size(&b))
            .is_some();
        (all + 1, unknown + u64::from(!known))
    })
}

/// An answer's `usage` (OpenAI's or Anthropic's names).
pub(super) fn usage(value: &Json) -> Option<Usage> {
    let u = value.get("usage")?;
    let get = |a: &str, b: &str| u.get(a).or_else(|| u.get(b)).and_then(Json::as_u64);
    Some(Usage {
        prompt_tokens: get("prompt_tokens", "input_tokens").unwrap_or(0),
        completion_tokens: get("completion_tokens", "output_tokens").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_chat_estimate_counts_messages_tools_and_the_cap() {
        let body =
            json!({"model": "m", "messages": [{"role": "user", "content": "abcd".repeat(10)}]});
        let plain = chat_estimate(&body);
        assert_eq!(plain.output, DEFAULT_COMPLETION_ESTIMATE);
        assert!(plain.input > MESSAGE_OVERHEAD + REPLY_PRIMING, "{plain:?}");
        let mut capped = body.clone();
        capped["max_tokens"] = json!(7);
        capped["tools"] = json!([{"type": "function", "function": {"name": "lookup"}}]);
        let capped = chat_estimate(&capped);
        assert_eq!(capped.output, 7);
        assert!(capped.input > plain.input, "{capped:?} {plain:?}");
    }

    #[test]
    fn text_estimates_walk_lists_and_parts() {
        let one = text_estimate(None, &json!("abcd abcd"));
        assert!(one > 0);
        assert_eq!(
            text_estimate(None, &json!(["abcd abcd", "abcd abcd"])),
            2 * one
        );
        assert_eq!(
            text_estimate(None, &json!([{"type": "text", "text": "abcd abcd"}])),
            one
        );
        assert_eq!(text_estimate(None, &json!(3)), 0);
    }

    #[test]
    fn images_counts_parts_and_those_of_unknown_size() {
        let body = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "x"},
            {"type": "image_url", "image_url": {"url": "http://h/a.png"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]}]});
        assert_eq!(images(&body), (2, 2));
        assert_eq!(images(&json!({"messages": [{"content": "text"}]})), (0, 0));
    }

    fn request(body: Json) -> JsonRequest {
        JsonRequest {
            path: "/chat/completions".into(),
            estimate: chat_estimate(&body),
            body,
        }
    }

    #[test]
    fn an_openai_body_goes_as_rendered_an_anthropic_chat_is_translated() {
        let chat = request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let openai = chat.in_dialect(Dialect::OpenAi, true).unwrap();
        assert_eq!(
            (openai.path.as_str(), openai.translated.is_none()),
            ("/chat/completions", true)
        );
        assert_eq!(openai.estimate, chat.estimate);
        let anthropic = chat.in_dialect(Dialect::Anthropic, true).unwrap();
        assert_eq!(anthropic.path, "/messages");
        let body = anthropic.translated.unwrap();
        assert_eq!(body["max_tokens"], json!(DEFAULT_MAX_TOKENS));
        // No cap set: Anthropic reserves the one sent.
        assert_eq!(anthropic.estimate.output, DEFAULT_MAX_TOKENS);
        let capped = request(
            json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(
            capped
                .in_dialect(Dialect::Anthropic, true)
                .unwrap()
                .estimate
                .output,
            9
        );
        // An embeddings body is never translated.
        let embed = JsonRequest {
            path: "/embeddings".into(),
            body: json!({"model": "e", "input": "x"}),
            estimate: Cost::from(1),
        };
        assert!(embed
            .in_dialect(Dialect::Anthropic, false)
            .unwrap()
            .translated
            .is_none());
        let refused = request(json!({"model": "m", "messages": "not a list"}));
        assert!(refused.in_dialect(Dialect::Anthropic, true).is_err());
    }

    #[test]
    fn usage_reads_either_dialects_names() {
        let openai =
            usage(&json!({"usage": {"prompt_tokens": 3, "completion_tokens": 4}})).unwrap();
        assert_eq!((openai.prompt_tokens, openai.completion_tokens), (3, 4));
        let anthropic = usage(&json!({"usage": {"input_tokens": 5, "output_tokens": 6}})).unwrap();
        assert_eq!(
            (anthropic.prompt_tokens, anthropic.completion_tokens),
            (5, 6)
        );
        assert!(usage(&json!({})).is_none());
    }
}
