//! `POST /stages/NAME`: a generic processing host (a GPU box running a model
//! stage, a TTS or image service) with the API routes' limits and faults.
//!
//! The body may be a multipart upload (its file and form fields are read), a
//! JSON document, or anything else. The answer is JSON describing what was
//! received — `{"id", "stage", "host", "file"?, "fields"?, "input"?, "text"}` —
//! or, when NAME ends in a media extension (`tts.wav`, `scene.png`), a small
//! file of that type: the format's magic bytes, a newline, then that same
//! JSON, so a saved file shows what produced it.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// What a stage request carried.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// The uploaded file of a multipart body: form field, file name, media
    /// type and length.
    file: Option<(String, String, String, usize)>,
    /// A multipart body's other fields.
    fields: BTreeMap<String, String>,
    /// A JSON body.
    input: Option<Value>,
    /// The upload's size: the file of a multipart body, else the whole body.
    pub(crate) size: usize,
    /// A hash of the content (not of a multipart boundary, which clients
    /// draw at random per attempt), for rejections and duplicate counts.
    pub(crate) hash: u64,
}

impl Received {
    /// Reads `body` as described by its `content_type`.
    pub(crate) fn parse(content_type: &str, body: &[u8], seed: u64) -> Received {
        let boundary = content_type
            .split(';')
            .map(str::trim)
            .find_map(|p| p.strip_prefix("boundary="))
            .map(|b| b.trim_matches('"'))
            .filter(|_| content_type.trim_start().starts_with("multipart/form-data"));
        if let Some(boundary) = boundary {
            return multipart(boundary, body, seed);
        }
        Received {
            input: serde_json::from_slice(body).ok(),
            size: body.len(),
            hash: xxhash_rust::xxh3::xxh3_64_with_seed(body, seed),
            ..Received::default()
        }
    }

    /// The JSON answer for stage `name` on `host`.
    pub(crate) fn answer(&self, name: &str, host: &str, text: String) -> Value {
        let mut out = json!({
            "id": format!("{name}-{:012x}", self.hash & 0xffff_ffff_ffff),
            "stage": name,
            "host": host,
        });
        if let Some((field, file, kind, bytes)) = &self.file {
            out["file"] = json!({"field": field, "name": file, "type": kind, "bytes": bytes});
            out["fields"] = json!(self.fields);
        }
        if let Some(input) = &self.input {
            out["input"] = input.clone();
        }
        out["text"] = json!(text);
        out
    }
}

/// A stage name's media type and the magic bytes its files start with, when
/// the name ends in a known extension.
pub(crate) fn media(name: &str) -> Option<(&'static str, &'static [u8])> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => ("image/png", b"\x89PNG\r\n\x1a\n"),
        "jpg" | "jpeg" => ("image/jpeg", b"\xff\xd8\xff\xe0"),
        "wav" => ("audio/wav", b"RIFF\x24\x00\x00\x00WAVEfmt "),
        "mp3" => ("audio/mpeg", b"ID3\x04\x00"),
        "mp4" => ("video/mp4", b"\x00\x00\x00\x18ftypmp42"),
        "txt" => ("text/plain", b""),
        _ => return None,
    })
}

/// The part of a multipart body between `--boundary` lines.
fn multipart(boundary: &str, body: &[u8], seed: u64) -> Received {
    let delimiter = format!("--{boundary}");
    let mut received = Received::default();
    let mut hasher = xxhash_rust::xxh3::Xxh3::with_seed(seed);
    for part in split(body, delimiter.as_bytes()).into_iter().skip(1) {
        if part.starts_with(b"--") {
            break;
        }
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(end) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..end]);
        let content = &part[end + 4..];
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let mut name = String::new();
        let mut file_name = None;
        let mut kind = "application/octet-stream".to_owned();
        for line in head.lines() {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                name = param(line, "name").unwrap_or_default();
                file_name = param(line, "filename");
            } else if let Some(v) = lower.strip_prefix("content-type:") {
                kind = v.trim().to_owned();
            }
        }
        hasher.update(name.as_bytes());
        hasher.update(content);
        match file_name {
            Some(file) if received.file.is_none() => {
                hasher.update(file.as_bytes());
                received.size = content.len();
                received.file = Some((name, file, kind, content.len()));
            }
            _ => {
                received
                    .fields
                    .insert(name, String::from_utf8_lossy(content).into_owned());
            }
        }
    }
    if received.file.is_none() {
        received.size = body.len();
    }
    received.hash = hasher.digest();
    received
}

/// `name="value"` from a Content-Disposition line.
fn param(line: &str, key: &str) -> Option<String> {
    line.split(';').map(str::trim).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn split<'a>(hay: &'a [u8], needle: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = hay;
    while let Some(i) = find(rest, needle) {
        out.push(&rest[..i]);
        rest = &rest[i + needle.len()..];
    }
    out.push(rest);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(boundary: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"rate\"\r\n\r\n16000\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(b"RIFF\r\n\r\nabc");
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        body
    }

    #[test]
    fn multipart_uploads_are_read_and_hashed_without_the_boundary() {
        let a = Received::parse("multipart/form-data; boundary=xyz", &form("xyz"), 1);
        let b = Received::parse("multipart/form-data; boundary=\"q1\"", &form("q1"), 1);
        assert_eq!(a.size, 11);
        assert_eq!(a.hash, b.hash);
        let v = a.answer("upload", "h:1", "t".into());
        assert_eq!(
            v["file"],
            json!({"field": "file", "name": "a.wav", "type": "audio/wav", "bytes": 11})
        );
        assert_eq!(v["fields"], json!({"rate": "16000"}));
        assert_eq!(v["stage"], "upload");
        assert!(v["id"].as_str().unwrap().starts_with("upload-"));
        assert_ne!(
            a.hash,
            Received::parse("multipart/form-data; boundary=xyz", &form("xyz"), 2).hash
        );
    }

    #[test]
    fn json_bodies_are_echoed_and_media_names_have_types() {
        let r = Received::parse("application/json", br#"{"text":"hi"}"#, 0);
        assert_eq!(r.size, 13);
        assert_eq!(
            r.answer("tts", "h", "x".into())["input"],
            json!({"text": "hi"})
        );
        assert_eq!(media("tts.wav").unwrap().0, "audio/wav");
        assert_eq!(media("scene.PNG").unwrap().0, "image/png");
        assert!(media("denoise").is_none());
    }
}
