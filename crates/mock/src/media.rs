//! Images inside chat messages, checked as a provider checks them: an
//! inline image (a base64 data URL, or Anthropic's base64 `source`) must
//! decode to a PNG, JPEG, GIF or WebP of the media type it claims, or the
//! request is a 400. Each is counted (with its bytes) for `GET /_mock/stats`,
//! and priced: OpenAI's tile rule for `image_url`, width × height ÷ 750 for
//! Anthropic's `image`. An image given by URL is counted, not fetched.
//!
//! The tile rule is the mock's own, in exact integer arithmetic, so the
//! client's estimate (`sluice_limit::image_tokens`, in floating point) is
//! checked against an independent reading of the rule; a test compares the
//! two over a grid of sizes.

use serde_json::{Map, Value as Json};
use sluice_dialect::media::{base64_decode, data_url, image_size, media_type};

/// Images of a message or request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Images {
    /// Image parts.
    pub(crate) count: u64,
    /// Decoded bytes of the inline ones.
    pub(crate) bytes: u64,
}

/// One image part, checked.
pub(crate) struct Image {
    bytes: u64,
    tokens: u64,
}

impl Images {
    /// Counts `image`; returns its tokens.
    pub(crate) fn add(&mut self, image: Image) -> u64 {
        self.count += 1;
        self.bytes += image.bytes;
        image.tokens
    }

    /// Both counts of `self` and `other`.
    pub(crate) fn plus(self, other: Images) -> Images {
        Images {
            count: self.count + other.count,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// The image of a content part of type `kind` (its other fields `rest`), or
/// `None` for a part that is no image; `Err` is the 400's message.
pub(crate) fn of_part(kind: &str, rest: &Map<String, Json>) -> Option<Result<Image, String>> {
    match kind {
        "image_url" => {
            let image = &rest.get("image_url")?;
            let low = image["detail"].as_str() == Some("low");
            let Some(url) = image["url"].as_str() else {
                return Some(Err(
                    "image_url.url: a URL or a base64 data URL is required".into()
                ));
            };
            Some(match data_url(url) {
                Some((claimed, data)) => inline(claimed, data).map(|(bytes, (w, h))| Image {
                    bytes,
                    tokens: tile_rule_tokens(w, h, low),
                }),
                None if url.starts_with("http://") || url.starts_with("https://") => Ok(Image {
                    bytes: 0,
                    tokens: if low { 85 } else { 765 },
                }),
                None => Err(format!(
                    "image_url.url must be an http(s) URL or a base64 data URL (data:image/png;base64,...), not {:?}",
                    url.chars().take(40).collect::<String>()
                )),
            })
        }
        "image" => {
            let source = rest.get("source")?;
            Some(match source["type"].as_str() {
                Some("base64") => {
                    let claimed = source["media_type"].as_str().unwrap_or("");
                    let data = source["data"].as_str().unwrap_or("");
                    inline(claimed, data).map(|(bytes, (w, h))| Image {
                        bytes,
                        tokens: (u64::from(w) * u64::from(h)).div_ceil(750),
                    })
                }
                Some("url") => Ok(Image {
                    bytes: 0,
                    tokens: 1_600,
                }),
                _ => Err("image.source: type must be \"base64\" or \"url\"".into()),
            })
        }
        _ => None,
    }
}

/// OpenAI's tile rule for an image of `width` × `height` (vision guide,
/// "Calculating costs"): low detail is 85 tokens; high detail scales the
/// image to fit in 2048 × 2048, then its shortest side down to 768 (never
/// up), both keeping the aspect ratio with whole pixels, and costs 85 plus
/// 170 for each 512-pixel tile that covers it.
fn tile_rule_tokens(width: u32, height: u32, low: bool) -> u64 {
    if low {
        return 85;
    }
    let (mut w, mut h) = (u64::from(width.max(1)), u64::from(height.max(1)));
    if w > 2_048 || h > 2_048 {
        // The longer side becomes 2048; the other keeps the ratio, floored.
        if w >= h {
            (w, h) = (2_048, h * 2_048 / w);
        } else {
            (w, h) = (w * 2_048 / h, 2_048);
        }
    }
    if w.min(h) > 768 {
        if w <= h {
            (w, h) = (768, h * 768 / w);
        } else {
            (w, h) = (w * 768 / h, 768);
        }
    }
    85 + 170 * w.div_ceil(512) * h.div_ceil(512)
}

/// Decodes an inline image claimed to be `claimed`: its size in bytes and
/// its width and height.
fn inline(claimed: &str, data: &str) -> Result<(u64, (u32, u32)), String> {
    let bytes = base64_decode(data).ok_or("Invalid image: the data is not base64.")?;
    let actual = media_type(&bytes, "");
    if !actual.starts_with("image/") {
        return Err(format!(
            "Invalid image: the data is not a PNG, JPEG, GIF or WebP image (claimed {claimed:?})."
        ));
    }
    if actual != claimed {
        return Err(format!(
            "Invalid image: the data is {actual}, not the {claimed:?} it claims."
        ));
    }
    let size = image_size(&bytes).ok_or("Invalid image: its header has no size.")?;
    Ok((bytes.len() as u64, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_dialect::media::base64_encode;

    /// A PNG header of `w` × `h` (enough for the size).
    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.extend(w.to_be_bytes());
        b.extend(h.to_be_bytes());
        b.extend([8, 6, 0, 0, 0]);
        b
    }

    fn part(kind: &str, value: Json) -> Option<Result<Image, String>> {
        of_part(kind, value.as_object().unwrap())
    }

    #[test]
    fn inline_images_are_decoded_checked_and_priced() {
        let url = format!("data:image/png;base64,{}", base64_encode(&png(1024, 1024)));
        let image = part("image_url", json!({"image_url": {"url": url}}))
            .unwrap()
            .unwrap();
        assert_eq!(image.tokens, 765);
        assert_eq!(image.bytes, png(1, 1).len() as u64);
        let low = part(
            "image_url",
            json!({"image_url": {"url": url, "detail": "low"}}),
        );
        assert_eq!(low.unwrap().unwrap().tokens, 85);
        let data = base64_encode(&png(750, 100));
        let anthropic =
            json!({"source": {"type": "base64", "media_type": "image/png", "data": data}});
        assert_eq!(part("image", anthropic).unwrap().unwrap().tokens, 100);
    }

    #[test]
    fn the_tile_rule_gives_the_guides_examples() {
        assert_eq!(tile_rule_tokens(1024, 1024, false), 765);
        assert_eq!(tile_rule_tokens(2048, 4096, false), 1_105);
        assert_eq!(tile_rule_tokens(4096, 8192, true), 85);
        // Small images are not scaled up: one tile.
        assert_eq!(tile_rule_tokens(300, 200, false), 255);
    }

    /// Sides around every boundary of the rule (a tile, 768, 2048) and far
    /// beyond them.
    const SIDES: [u32; 26] = [
        0, 1, 2, 100, 511, 512, 513, 767, 768, 769, 1_000, 1_023, 1_024, 1_025, 1_365, 1_536,
        1_537, 2_047, 2_048, 2_049, 3_000, 4_095, 4_096, 8_192, 10_000, 65_535,
    ];

    #[test]
    fn the_mocks_tile_rule_agrees_with_the_clients_estimate_on_a_grid() {
        // Two implementations written apart (exact integers here, floating
        // point in sluice-limit) agreeing is the check on both.
        for w in SIDES {
            for h in SIDES {
                for low in [false, true] {
                    assert_eq!(
                        tile_rule_tokens(w, h, low),
                        sluice_limit::image_tokens(w, h, low),
                        "{w} x {h}, low detail {low}"
                    );
                }
            }
        }
    }

    /// Cases: `SLUICE_PROPTEST_CASES`, default 256 (each is two sums).
    fn cases() -> u32 {
        std::env::var("SLUICE_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(cases()))]
        #[test]
        fn the_mocks_tile_rule_agrees_with_the_clients_estimate_anywhere(
            w in 0u32..40_000,
            h in 0u32..40_000,
        ) {
            proptest::prop_assert_eq!(
                tile_rule_tokens(w, h, false),
                sluice_limit::image_tokens(w, h, false)
            );
        }
    }

    #[test]
    fn what_is_not_the_image_it_claims_is_refused() {
        let text = format!("data:image/png;base64,{}", base64_encode(b"hello world"));
        let e = part("image_url", json!({"image_url": {"url": text}}))
            .unwrap()
            .err()
            .unwrap();
        assert!(e.contains("not a PNG, JPEG, GIF or WebP"), "{e}");
        let jpeg_claim = format!("data:image/jpeg;base64,{}", base64_encode(&png(2, 2)));
        let e = part("image_url", json!({"image_url": {"url": jpeg_claim}}))
            .unwrap()
            .err()
            .unwrap();
        assert!(e.contains("image/png, not the \"image/jpeg\""), "{e}");
        assert!(part("text", json!({"text": "x"})).is_none());
    }
}
