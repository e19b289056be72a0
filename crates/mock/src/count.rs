//! The mock's own token count: characters ÷ 4, rounded up, per text.
//!
//! Written here rather than taken from the client's estimator so the
//! client's reservation is checked against an independent charge. The mock
//! does not run a real tokenizer: chars ÷ 4 is the rule OpenAI publishes
//! for English text, and what a provider charges differs from any client
//! estimate anyway; `usage` in each answer carries this count, which the
//! client then settles against.

/// Tokens the mock charges for `text`.
pub(crate) fn text_tokens(text: &str) -> u64 {
    let chars = text.chars().count() as u64;
    chars / 4 + u64::from(!chars.is_multiple_of(4))
}

#[cfg(test)]
mod tests {
    use super::text_tokens;

    #[test]
    fn four_characters_are_a_token_rounded_up() {
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("abcd"), 1);
        assert_eq!(text_tokens("abcde"), 2);
        assert_eq!(text_tokens("éééé"), 1);
    }
}
