//! Token estimates made before a request is sent, to reserve tokens/minute budget.
//!
//! Characters ÷ 4 (rounded up) is the usual estimate for English text with
//! OpenAI-family tokenizers; the response's `usage` corrects it afterwards. The
//! built-in mock counts usage with the same function, so its accounting and the
//! client's agree exactly.

/// Completion tokens assumed for a chat request that sets no `max_tokens`.
///
/// Providers reserve `max_tokens` against tokens/minute; with none given we
/// reserve this much and correct from `usage` once the response arrives.
pub const DEFAULT_COMPLETION_ESTIMATE: u64 = 256;

/// Estimated tokens in `text`: characters ÷ 4, rounded up.
pub fn estimate_text_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_characters_make_a_token_rounded_up() {
        assert_eq!(estimate_text_tokens(""), 0);
        assert_eq!(estimate_text_tokens("abcd"), 1);
        assert_eq!(estimate_text_tokens("abcde"), 2);
        // Characters, not bytes: multi-byte text is not over-counted fourfold.
        assert_eq!(estimate_text_tokens("éééé"), 1);
    }
}
