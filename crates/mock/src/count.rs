//! The mock's own token count, what it charges against `--tpm` and reports
//! as `usage`: an OpenAI model's text by that model's BPE tokenizer, any
//! other model's at characters ÷ 4, rounded up, per text.
//!
//! Written here rather than taken from the client's estimator (which also
//! runs a tokenizer) so the client's reservation is checked against an
//! independent charge: which model uses which encoding is the mock's own
//! table, from OpenAI's model list, and only the BPE tables are shared (they
//! are the tokenizer, not an estimate of it). Only the texts are counted, not
//! the few tokens a provider adds per message for the chat format.

use tiktoken_rs::CoreBPE;

/// How the texts of one model are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    /// `o200k_base`: gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3, o4.
    O200k,
    /// `cl100k_base`: gpt-3.5-turbo, gpt-4, the text-embedding models.
    Cl100k,
    /// Characters ÷ 4, rounded up: every other model.
    Chars,
}

impl Counter {
    /// The counter for `model` (a fine-tuned `ft:BASE:…` counts as its base).
    pub(crate) fn for_model(model: &str) -> Counter {
        let m = model.strip_prefix("ft:").unwrap_or(model);
        // `name` itself or a dated or sized variant of it (`name-…`).
        let is = |name: &str| {
            m.strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
        };
        let o200k = ["gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5"]
            .iter()
            .any(|p| m.starts_with(p))
            || ["o1", "o3", "o4"].into_iter().any(is);
        let cl100k = is("gpt-4")
            || is("gpt-3.5-turbo")
            || is("gpt-35-turbo")
            || is("text-embedding-ada-002")
            || m.starts_with("text-embedding-3-");
        if o200k {
            Counter::O200k
        } else if cl100k {
            Counter::Cl100k
        } else {
            Counter::Chars
        }
    }

    /// Tokens the mock charges for `text`.
    pub(crate) fn tokens(self, text: &str) -> u64 {
        let bpe: &CoreBPE = match self {
            Counter::O200k => tiktoken_rs::o200k_base_singleton(),
            Counter::Cl100k => tiktoken_rs::cl100k_base_singleton(),
            Counter::Chars => return text_tokens(text),
        };
        bpe.encode_ordinary(text).len() as u64
    }
}

/// Builds both tokenizers' tables (a few hundred ms in a debug build, more
/// on a loaded machine) so that no request waits for them. Under `--tpm`
/// this matters for the referee: a request's arrival is stamped when its
/// head is read, and on the mock's one thread the heads that came in while
/// the first request built the tables would be read, and stamped, together.
pub fn warm_tokenizers() {
    let _ = tiktoken_rs::o200k_base_singleton();
    let _ = tiktoken_rs::cl100k_base_singleton();
}

/// Tokens at characters ÷ 4, rounded up: the rule for models without a
/// known tokenizer, and the length of the replies the mock writes.
pub(crate) fn text_tokens(text: &str) -> u64 {
    let chars = text.chars().count() as u64;
    chars / 4 + u64::from(!chars.is_multiple_of(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_characters_are_a_token_rounded_up() {
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("abcd"), 1);
        assert_eq!(text_tokens("abcde"), 2);
        assert_eq!(text_tokens("éééé"), 1);
    }

    #[test]
    fn openai_models_are_told_apart_by_their_encoding() {
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4o-2024-08-06",
            "chatgpt-4o-latest",
            "gpt-4.1-nano",
            "gpt-5",
            "o1",
            "o3-mini",
            "o4-mini",
            "ft:gpt-4o-mini:acme::abc123",
        ] {
            assert_eq!(Counter::for_model(m), Counter::O200k, "{m}");
        }
        for m in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-4-0613",
            "gpt-3.5-turbo",
            "gpt-3.5-turbo-0125",
            "gpt-35-turbo",
            "text-embedding-3-small",
            "text-embedding-ada-002",
        ] {
            assert_eq!(Counter::for_model(m), Counter::Cl100k, "{m}");
        }
        for m in [
            "m",
            "gpt-mock",
            "gpt-x",
            "o10",
            "claude-3-5-haiku",
            "qwen-72b",
            "",
        ] {
            assert_eq!(Counter::for_model(m), Counter::Chars, "{m}");
        }
    }

    #[test]
    fn each_encoding_counts_as_its_tokenizer_does() {
        // OpenAI's cookbook ("How to count tokens with tiktoken"):
        // "tiktoken is great!" is 6 tokens in cl100k_base.
        assert_eq!(Counter::Cl100k.tokens("tiktoken is great!"), 6);
        let text = "hello world";
        assert_eq!(Counter::O200k.tokens(text), 2);
        assert_eq!(Counter::Cl100k.tokens(text), 2);
        assert_eq!(Counter::Chars.tokens(text), 3);
        // Where the vocabularies differ the counts do (o200k has more
        // non-English pieces), and neither is characters ÷ 4.
        let text = "The quick brown fox jumps over the lazy dog. Ünïcödé: 東京, ∑";
        assert_eq!(Counter::O200k.tokens(text), 19);
        assert_eq!(Counter::Cl100k.tokens(text), 24);
        assert_eq!(Counter::Chars.tokens(text), 15);
    }
}
