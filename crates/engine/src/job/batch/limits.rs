//! What one batch may hold at each provider, as their references state it,
//! and what a request counts toward those limits (bytes, embedding inputs,
//! prompt tokens).
//!
//! - OpenAI, Batch API guide (platform.openai.com/docs/guides/batch, "Rate
//!   limits"): "A single batch may include up to 50,000 requests, and a batch
//!   input file can be up to 200 MB in size. Note that `/v1/embeddings`
//!   batches are also restricted to a maximum of 50,000 embedding inputs
//!   across all requests in the batch." The same guide: "each input file can
//!   only include requests to a single model".
//! - Anthropic, Batch processing guide (docs.claude.com, "Batch
//!   limitations"): "A Message Batch is limited to either 100,000 Message
//!   requests or 256 MB in size, whichever is reached first."
//!
//! Neither says whether MB is 10^6 or 2^20 bytes; the smaller reading
//! (10^6) is the one that is always accepted.

use serde_json::Value as Json;
use sluice_provider::Dialect;

/// One megabyte as the references count it (the safe reading).
const MB: usize = 1_000_000;

/// The most one batch may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLimits {
    /// Requests.
    pub(crate) requests: usize,
    /// Bytes of the uploaded file (OpenAI) or of the create request's body
    /// (Anthropic).
    pub(crate) bytes: usize,
    /// Embedding inputs across the batch (OpenAI `/v1/embeddings`).
    pub(crate) embedding_inputs: usize,
}

impl BatchLimits {
    /// The documented limits of `dialect`'s batch API.
    pub(crate) fn of(dialect: Dialect) -> BatchLimits {
        match dialect {
            Dialect::OpenAi => BatchLimits {
                requests: 50_000,
                bytes: 200 * MB,
                embedding_inputs: 50_000,
            },
            Dialect::Anthropic => BatchLimits {
                requests: 100_000,
                // The create body wraps the requests: `{"requests":[...]}`.
                bytes: 256 * MB - 32,
                embedding_inputs: usize::MAX,
            },
        }
    }
}

/// What a request counts toward a batch's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Weight {
    /// Bytes of its line, separator included.
    pub(crate) bytes: usize,
    /// Embedding inputs (0 for other endpoints).
    pub(crate) inputs: usize,
    /// Estimated prompt tokens (what it enqueues).
    pub(crate) tokens: u64,
}

impl Weight {
    /// The weight of `body` sent as `line` to `path`.
    pub(crate) fn of(path: &str, body: &Json, line: &str) -> Weight {
        Weight {
            bytes: line.len() + 1,
            inputs: if path.ends_with("/embeddings") {
                embedding_inputs(&body["input"])
            } else {
                0
            },
            tokens: prompt_tokens(body),
        }
    }
}

/// Embedding inputs of an `input` value: a string or one token array is
/// one input; a list of strings or of token arrays counts each element.
pub(crate) fn embedding_inputs(input: &Json) -> usize {
    match input {
        Json::Array(items) if items.iter().all(Json::is_number) => 1,
        Json::Array(items) => items.len(),
        _ => 1,
    }
}

/// Estimated prompt tokens of a chat, messages or embeddings body (the
/// model's tokenizer, else characters ÷ 4): what OpenAI counts against its
/// enqueued-token limit.
pub(crate) fn prompt_tokens(body: &Json) -> u64 {
    let model = body["model"].as_str();
    let text = crate::job::kinds::model_request::text_estimate;
    let messages: u64 = body["messages"]
        .as_array()
        .map(|ms| ms.iter().map(|m| text(model, &m["content"])).sum())
        .unwrap_or(0);
    let input = match &body["input"] {
        // Token arrays are counted as they are.
        Json::Array(items) if items.iter().all(Json::is_number) => items.len() as u64,
        Json::Array(items) => items
            .iter()
            .map(|i| match i {
                Json::Array(tokens) if tokens.iter().all(Json::is_number) => tokens.len() as u64,
                other => text(model, other),
            })
            .sum(),
        other => text(model, other),
    };
    messages + input + text(model, &body["system"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_documented_limits_in_the_smaller_unit() {
        let openai = BatchLimits::of(Dialect::OpenAi);
        assert_eq!((openai.requests, openai.bytes), (50_000, 200_000_000));
        assert_eq!(openai.embedding_inputs, 50_000);
        let anthropic = BatchLimits::of(Dialect::Anthropic);
        assert_eq!(anthropic.requests, 100_000);
        assert!(anthropic.bytes < 256_000_000 && anthropic.bytes > 255_000_000);
    }

    #[test]
    fn each_element_of_a_list_input_is_an_embedding_input() {
        // Embeddings reference (platform.openai.com/docs/api-reference/embeddings/create):
        // `input` is a string, an array of strings, an array of tokens or an
        // array of token arrays.
        assert_eq!(embedding_inputs(&json!("one text")), 1);
        assert_eq!(embedding_inputs(&json!(["a", "b", "c"])), 3);
        assert_eq!(embedding_inputs(&json!([1212, 318, 257])), 1);
        assert_eq!(embedding_inputs(&json!([[1, 2], [3], [4, 5]])), 3);
        let body = json!({"model": "text-embedding-3-small", "input": ["a", "b"]});
        let w = Weight::of("/v1/embeddings", &body, &body.to_string());
        assert_eq!(w.inputs, 2);
        let w = Weight::of("/v1/chat/completions", &body, "x");
        assert_eq!((w.inputs, w.bytes), (0, 2));
    }

    #[test]
    fn prompt_tokens_count_messages_system_and_inputs() {
        let chat =
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}]});
        assert_eq!(prompt_tokens(&chat), 2);
        let anthropic = json!({"model": "claude-x", "system": "abcdefgh", "messages": [{"role": "user", "content": [{"type": "text", "text": "abcd"}]}]});
        assert_eq!(prompt_tokens(&anthropic), 3);
        let tokens = json!({"model": "text-embedding-3-small", "input": [[1, 2, 3], [4]]});
        assert_eq!(prompt_tokens(&tokens), 4);
        let texts =
            json!({"model": "text-embedding-3-small", "input": ["hello world", "hello world"]});
        assert_eq!(prompt_tokens(&texts), 4);
    }
}
