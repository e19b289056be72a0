//! Token estimates made before a call, to reserve tokens/minute budget.
//!
//! OpenAI-family models (`gpt-*`, `o1`/`o3`/`o4*`, `text-embedding-*`, …) are
//! counted with their own BPE tokenizer (tiktoken-rs embeds the tables, so it
//! works offline); any other model falls back to characters ÷ 4. Images
//! count by OpenAI's tile rule, their size read from a data URL's header
//! (PNG, GIF, JPEG, WebP), else the rule's largest answer. Either way the
//! response's `usage` corrects the reservation afterwards.

use sluice_limit::{estimate_text_tokens, image_tokens, UNKNOWN_IMAGE_TOKENS};
use sluice_provider::dialect::media::image_size;

/// Estimated tokens of `text` for `model`.
pub(crate) fn estimate(model: Option<&str>, text: &str) -> u64 {
    match model.and_then(|m| tiktoken_rs::bpe_for_model(m).ok()) {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => estimate_text_tokens(text),
    }
}

/// Estimated tokens of an image part (`image_url.url`, `image_url.detail`).
pub(crate) fn image_estimate(url: &str, detail: Option<&str>) -> u64 {
    let low = detail == Some("low");
    match url
        .strip_prefix("data:")
        .and_then(|r| r.split_once(";base64,"))
    {
        Some((_, data)) => match image_size(&decode_head(data, 64 * 1024)) {
            Some((w, h)) => image_tokens(w, h, low),
            None => image_tokens(2048, 768, low),
        },
        None if low => 85,
        None => UNKNOWN_IMAGE_TOKENS,
    }
}

/// Decodes up to `limit` bytes from the start of base64 `text` (enough for
/// an image header; the rest is never decoded).
fn decode_head(text: &str, limit: usize) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in text.bytes().map_while(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            if out.len() >= limit {
                break;
            }
        }
    }
    out
}

/// Starts building, on a thread of its own, the tokenizer tables of every
/// model in `candidates` that has one (~0.1 s each optimised, 0.4–0.8 s in a
/// debug build). [`Warmup::wait`] before dispatch starts, so that no estimate
/// on the single-threaded dispatcher builds them (or waits for them) while
/// calls are due: a stall there bunches the calls after it, which a provider
/// pacing a tokens/minute limit answers with 429s. Names without a tokenizer
/// cost nothing; tables already built return at once.
pub(crate) fn warm_up(candidates: impl IntoIterator<Item = String>) -> Warmup {
    let mut known: Vec<String> = candidates
        .into_iter()
        .filter(|m| tiktoken_rs::tokenizer::get_tokenizer(m).is_some())
        .collect();
    known.sort();
    known.dedup();
    if known.is_empty() {
        return Warmup(None);
    }
    let spawned = std::thread::Builder::new()
        .name("sluice-tokenizer".into())
        .spawn(move || {
            for model in known {
                let _ = tiktoken_rs::bpe_for_model(&model);
            }
        });
    match spawned {
        Ok(handle) => Warmup(Some(handle)),
        Err(e) => {
            tracing::debug!("tokenizer tables load on first use: {e}");
            Warmup(None)
        }
    }
}

/// Tokenizer tables being built by [`warm_up`]; dropped unwaited, the
/// thread finishes on its own.
#[derive(Debug)]
pub(crate) struct Warmup(Option<std::thread::JoinHandle<()>>);

impl Warmup {
    /// Blocks until the tables are built. Called from setup, never on the
    /// runtime's thread while it dispatches.
    pub(crate) fn wait(self) {
        if let Some(handle) = self.0 {
            let started = std::time::Instant::now();
            let _ = handle.join();
            tracing::debug!(waited = ?started.elapsed(), "tokenizer tables ready");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_models_use_their_tokenizer_others_chars_over_four() {
        // "hello world" is two tokens for o200k and cl100k alike.
        assert_eq!(estimate(Some("gpt-4o"), "hello world"), 2);
        assert_eq!(estimate(Some("gpt-4o-mini"), "hello world"), 2);
        assert_eq!(estimate(Some("gpt-3.5-turbo"), "hello world"), 2);
        // 11 characters → 3 by the fallback.
        assert_eq!(estimate(Some("qwen-72b"), "hello world"), 3);
        assert_eq!(estimate(None, "hello world"), 3);
    }

    #[test]
    fn a_warm_up_builds_the_tables_before_the_first_estimate() {
        warm_up(["gpt-4o-mini".to_owned(), "qwen-72b".to_owned()]).wait();
        // Built: the first estimate is a lookup, not a build (a debug build
        // takes 0.4 s or more for the tables, the count microseconds).
        let started = std::time::Instant::now();
        assert_eq!(estimate(Some("gpt-4o-mini"), "hello world"), 2);
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        // Nothing to build: no thread, nothing to wait for.
        assert!(warm_up(["qwen-72b".to_owned()]).0.is_none());
    }

    #[test]
    fn image_sizes_are_read_from_data_url_headers() {
        // A 1024 × 1024 PNG header (signature, IHDR length and type, size).
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&1024u32.to_be_bytes());
        png.extend_from_slice(&1024u32.to_be_bytes());
        png.extend_from_slice(&[8, 6, 0, 0, 0]);
        let url = format!("data:image/png;base64,{}", encode(&png));
        assert_eq!(image_estimate(&url, None), 765);
        assert_eq!(image_estimate(&url, Some("low")), 85);
        // A GIF of 300 × 200: one tile.
        let mut gif = b"GIF89a".to_vec();
        gif.extend_from_slice(&300u16.to_le_bytes());
        gif.extend_from_slice(&200u16.to_le_bytes());
        let url = format!("data:image/gif;base64,{}", encode(&gif));
        assert_eq!(image_estimate(&url, Some("high")), 255);
        // A JPEG with an APP0 segment, then SOF0 of 2048 × 4096 (h, w).
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0, 4, 0, 0];
        jpeg.extend_from_slice(&[0xff, 0xc0, 0, 17, 8, 0x10, 0x00, 0x08, 0x00, 3, 0, 0, 0]);
        let url = format!("data:image/jpeg;base64,{}", encode(&jpeg));
        assert_eq!(image_estimate(&url, None), 1105);
        // A URL: the rule's largest answer.
        assert_eq!(
            image_estimate("https://x/y.png", None),
            UNKNOWN_IMAGE_TOKENS
        );
    }

    fn encode(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
            for k in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            }
        }
        out
    }
}
