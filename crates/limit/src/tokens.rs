//! Token estimates made before a request is sent, to reserve token budget.
//!
//! Characters ÷ 4 (rounded up) is the usual estimate for English text with
//! OpenAI-family tokenizers; the response's `usage` corrects it afterwards. The
//! built-in mock charges by the same rule with its own code (not this
//! function), so an estimator bug here shows against it. Chat prompts also cost a few tokens per message
//! and images by OpenAI's published tile rule ([`image_tokens`]).

/// Completion tokens assumed for a chat request that sets no `max_tokens`.
///
/// Providers reserve `max_tokens` against tokens/minute; with none given we
/// reserve this much and correct from `usage` once the response arrives.
pub const DEFAULT_COMPLETION_ESTIMATE: u64 = 256;

/// Tokens each chat message costs besides its content (its role and the
/// markers around it: `<|start|>{role}<|message|>…<|end|>`), as OpenAI's
/// cookbook counts them for current models.
pub const MESSAGE_OVERHEAD: u64 = 3;

/// Tokens every chat prompt costs once: the reply is primed with
/// `<|start|>assistant<|message|>`.
pub const REPLY_PRIMING: u64 = 3;

/// An image whose size is not known before sending (a URL): the tile rule's
/// largest high-detail answer, 2,048 × 768 or wider (8 tiles), so the
/// reservation is never short; `usage` corrects it.
pub const UNKNOWN_IMAGE_TOKENS: u64 = 85 + 170 * 8;

/// Estimated tokens in `text`: characters ÷ 4, rounded up.
pub fn estimate_text_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// An image's tokens by OpenAI's published rule for its vision models
/// (platform.openai.com/docs/guides/images-vision, "Calculating costs"):
/// `detail: "low"` is 85; otherwise the image is scaled to fit 2,048 × 2,048,
/// then down so its shortest side is at most 768, and costs 170 per 512-pixel
/// tile plus 85.
pub fn image_tokens(width: u32, height: u32, low_detail: bool) -> u64 {
    if low_detail {
        return 85;
    }
    let (mut w, mut h) = (width.max(1) as f64, height.max(1) as f64);
    if w > 2048.0 || h > 2048.0 {
        let r = (2048.0 / w).min(2048.0 / h);
        (w, h) = ((w * r).floor(), (h * r).floor());
    }
    let shortest = w.min(h);
    if shortest > 768.0 {
        let r = 768.0 / shortest;
        (w, h) = ((w * r).floor(), (h * r).floor());
    }
    let tiles = (w / 512.0).ceil() as u64 * (h / 512.0).ceil() as u64;
    85 + 170 * tiles
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

    #[test]
    fn images_follow_the_published_tile_rule() {
        // The guide's own examples.
        assert_eq!(image_tokens(1024, 1024, false), 765);
        assert_eq!(image_tokens(2048, 4096, false), 1105);
        assert_eq!(image_tokens(4096, 8192, true), 85);
        // Small images are not scaled up: one tile.
        assert_eq!(image_tokens(300, 200, false), 255);
        assert_eq!(UNKNOWN_IMAGE_TOKENS, image_tokens(2048, 768, false));
    }
}
