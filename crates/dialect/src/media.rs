//! Files inside chat messages: base64, data URLs, what an image's header
//! says (type and size), and how large a file each API takes — the same
//! rules for the job file's template functions, the engine's check before a
//! call is sent, and `sluice mock`'s check of what it receives.

use serde_json::Value as Json;

use crate::Dialect;

/// Largest file a template may turn into a data URL: more than any API
/// takes in one part (OpenAI's request limit is 50 MB, Anthropic's 32 MB).
pub const MAX_INLINE_BYTES: u64 = 32 << 20;

/// The largest image and document each API takes, in bytes, as published:
/// OpenAI 20 MB per image and 32 MB per file (PDF); Anthropic 5 MB per
/// image through the API and 32 MB per request (documents).
pub fn limits(dialect: Dialect) -> Limits {
    match dialect {
        Dialect::OpenAi => Limits {
            image: 20 << 20,
            document: 32 << 20,
            audio: 25 << 20,
        },
        Dialect::Anthropic => Limits {
            image: 5 << 20,
            document: 32 << 20,
            audio: 0,
        },
    }
}

/// Per-part size limits of one API (decoded bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// One image.
    pub image: u64,
    /// One document (PDF).
    pub document: u64,
    /// One audio input (0: none taken).
    pub audio: u64,
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
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
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64 (padding optional); `None` when
/// `text` holds anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let trimmed = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in trimmed.bytes() {
        acc = (acc << 6) | u32::from(value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    (trimmed.len() % 4 != 1).then_some(out)
}

/// `data:MEDIA;base64,DATA` as (media type, data).
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    url.strip_prefix("data:")?.split_once(";base64,")
}

/// The media type of a file from its first bytes, else from its name's
/// extension; `application/octet-stream` when neither says.
pub fn media_type(head: &[u8], name: &str) -> &'static str {
    let sniffed = if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if head.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if head.starts_with(b"GIF8") {
        Some("image/gif")
    } else if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        Some("image/webp")
    } else if head.starts_with(b"%PDF-") {
        Some("application/pdf")
    } else if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WAVE") {
        Some("audio/wav")
    } else if head.starts_with(b"ID3") || head.starts_with(&[0xff, 0xfb]) {
        Some("audio/mpeg")
    } else {
        None
    };
    if let Some(t) = sniffed {
        return t;
    }
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        Some("wav") => "audio/wav",
        Some("mp3") => "audio/mpeg",
        Some("txt") => "text/plain",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Width and height from an image's first bytes (PNG, GIF, WebP, JPEG).
pub fn image_size(b: &[u8]) -> Option<(u32, u32)> {
    let be16 = |i: usize| Some(u32::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?])));
    let le16 = |i: usize| Some(u32::from(u16::from_le_bytes([*b.get(i)?, *b.get(i + 1)?])));
    let be32 = |i: usize| Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?));
    if b.starts_with(b"\x89PNG") {
        return Some((be32(16)?, be32(20)?));
    }
    if b.starts_with(b"GIF8") {
        return Some((le16(6)?, le16(8)?));
    }
    if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        let le24 = |i: usize| {
            Some(u32::from_le_bytes([
                *b.get(i)?,
                *b.get(i + 1)?,
                *b.get(i + 2)?,
                0,
            ]))
        };
        return match b.get(12..16)? {
            b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
            b"VP8 " => Some((le16(26)? & 0x3fff, le16(28)? & 0x3fff)),
            b"VP8L" => {
                let bits = u32::from_le_bytes(b.get(21..25)?.try_into().ok()?);
                Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
            }
            _ => None,
        };
    }
    if b.starts_with(&[0xff, 0xd8]) {
        // JPEG: walk the segments to a start-of-frame marker.
        let mut i = 2;
        while i + 9 < b.len() {
            if b[i] != 0xff {
                return None;
            }
            let marker = b[i + 1];
            let len = be16(i + 2)? as usize;
            if matches!(marker, 0xc0..=0xcf) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
                return Some((be16(i + 7)?, be16(i + 5)?));
            }
            i += 2 + len;
        }
    }
    None
}

/// Decoded bytes of base64 text of `len` characters.
fn decoded_len(len: usize) -> u64 {
    (len as u64 * 3) / 4
}

/// Checks every inline file of an OpenAI-shaped chat body against what
/// `dialect`'s API takes; the error names the part (`messages[1].content[0]`),
/// its size and the limit.
pub fn check_sizes(dialect: Dialect, body: &Json) -> Result<(), String> {
    let Some(messages) = body["messages"].as_array() else {
        return Ok(());
    };
    let limits = limits(dialect);
    let api = match dialect {
        Dialect::OpenAi => "OpenAI",
        Dialect::Anthropic => "Anthropic",
    };
    for (i, m) in messages.iter().enumerate() {
        let Some(parts) = m["content"].as_array() else {
            continue;
        };
        for (k, part) in parts.iter().enumerate() {
            let (what, limit, data) = match part["type"].as_str() {
                Some("image_url") => (
                    "image",
                    limits.image,
                    part.pointer("/image_url/url")
                        .and_then(Json::as_str)
                        .and_then(data_url)
                        .map(|(_, d)| d),
                ),
                Some("file") => (
                    "file",
                    limits.document,
                    part.pointer("/file/file_data")
                        .and_then(Json::as_str)
                        .and_then(data_url)
                        .map(|(_, d)| d),
                ),
                Some("input_audio") => (
                    "audio input",
                    limits.audio,
                    part.pointer("/input_audio/data").and_then(Json::as_str),
                ),
                _ => continue,
            };
            let Some(data) = data else { continue };
            let size = decoded_len(data.len());
            if limit > 0 && size > limit {
                return Err(format!(
                    "messages[{i}].content[{k}]: the {what} is {:.1} MB; {api} takes at most {} MB per {what}; send a smaller file (or a URL the API fetches)",
                    size as f64 / 1e6,
                    limit >> 20
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_round_trips_every_length() {
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let text = base64_encode(&bytes);
            assert_eq!(text.len() % 4, 0);
            assert_eq!(base64_decode(&text).unwrap(), bytes, "{n}");
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(base64_decode("not base64!"), None);
    }

    #[test]
    fn media_types_come_from_the_bytes_then_the_name() {
        assert_eq!(media_type(b"\x89PNG\r\n\x1a\n....", "x.jpg"), "image/png");
        assert_eq!(media_type(b"%PDF-1.7", "doc"), "application/pdf");
        assert_eq!(media_type(b"????", "a.JPEG"), "image/jpeg");
        assert_eq!(media_type(b"????", "a"), "application/octet-stream");
    }

    #[test]
    fn an_image_past_the_apis_limit_is_named_with_its_size() {
        let big = "A".repeat(8 << 20); // 6 MiB decoded
        let body = json!({"messages": [
            {"role": "system", "content": "x"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{big}")}},
            ]},
        ]});
        assert!(check_sizes(Dialect::OpenAi, &body).is_ok());
        let e = check_sizes(Dialect::Anthropic, &body).unwrap_err();
        assert!(
            e.starts_with("messages[1].content[1]: the image is 6.3 MB"),
            "{e}"
        );
        assert!(e.contains("Anthropic takes at most 5 MB"), "{e}");
    }
}
