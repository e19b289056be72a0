//! Generated content: reply text of an exact token length, and embedding vectors.

/// Words the replies are made of; lowercase ASCII, so characters are bytes and
/// nothing needs escaping in JSON.
const WORDS: [&str; 32] = [
    "alpha", "bravo", "cargo", "delta", "eager", "fable", "gamma", "harbor", "index", "jolly",
    "kernel", "lemon", "metric", "noble", "orbit", "pixel", "quota", "river", "sluice", "token",
    "union", "vector", "water", "xenon", "yield", "zebra", "batch", "limit", "queue", "retry",
    "stream", "window",
];

/// A reply of exactly `tokens` tokens under the chars ÷ 4 estimate, that is
/// exactly `4 × tokens` characters, chosen by `seed`.
pub(crate) fn text(seed: u64, tokens: u64) -> String {
    let len = usize::try_from(tokens.saturating_mul(4)).unwrap_or(usize::MAX);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = String::with_capacity(len.saturating_add(8));
    out.push_str("mock reply:");
    while out.len() < len {
        out.push(' ');
        out.push_str(WORDS[rng.usize(..WORDS.len())]);
    }
    out.truncate(len);
    if out.ends_with(' ') {
        out.pop();
        out.push('.');
    }
    out
}

/// A unit-length vector of `dims` numbers that depends on `input` alone, so the
/// same text embeds the same way on every server, as with a real model.
pub(crate) fn embedding(input: &str, dims: usize) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(xxhash_rust::xxh3::xxh3_64(input.as_bytes()));
    let mut v: Vec<f32> = (0..dims).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else if let Some(first) = v.first_mut() {
        *first = 1.0;
    }
    v
}

/// `v` as little-endian `f32` bytes in standard base64, OpenAI's
/// `encoding_format: "base64"` (the default of its Python client).
pub(crate) fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::count::text_tokens as estimate_text_tokens;

    #[test]
    fn replies_have_exactly_the_asked_token_count() {
        for tokens in [0, 1, 2, 3, 4, 5, 16, 17, 255, 1_000] {
            let reply = text(42, tokens);
            assert_eq!(estimate_text_tokens(&reply), tokens, "{reply:?}");
            assert_eq!(reply.len() as u64, 4 * tokens);
            assert!(!reply.ends_with(' '));
        }
        assert!(text(1, 16).starts_with("mock reply: "));
        assert_eq!(text(1, 16), text(1, 16));
        assert_ne!(text(1, 16), text(2, 16));
    }

    #[test]
    fn embeddings_are_unit_length_and_follow_the_text() {
        let a = embedding("hello", 8);
        assert_eq!(a.len(), 8);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(a, embedding("hello", 8));
        assert_ne!(a, embedding("hello!", 8));
    }

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        // 1.0f32 is 00 00 80 3f little-endian.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 1.0, 1.0]), "AACAPwAAgD8AAIA/");
        assert_eq!(base64_f32(&[]), "");
    }
}
