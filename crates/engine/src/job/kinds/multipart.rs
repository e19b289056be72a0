//! `multipart/form-data` bodies (RFC 7578) for `upload` steps, and the file
//! type table shared by uploads (extension → type) and saved responses
//! (type → extension).

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};

/// Extensions and their media types; the first entry for a type is the
/// extension a saved response of that type gets.
const TYPES: &[(&str, &str)] = &[
    ("wav", "audio/wav"),
    ("mp3", "audio/mpeg"),
    ("flac", "audio/flac"),
    ("ogg", "audio/ogg"),
    ("m4a", "audio/mp4"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("pdf", "application/pdf"),
    ("txt", "text/plain"),
    ("json", "application/json"),
];

/// Other names servers use for the types above, for saved responses.
const ALIASES: &[(&str, &str)] = &[
    ("audio/x-wav", "wav"),
    ("audio/wave", "wav"),
    ("audio/vnd.wave", "wav"),
    ("audio/mp3", "mp3"),
    ("audio/x-flac", "flac"),
    ("audio/x-m4a", "m4a"),
    ("image/jpg", "jpg"),
];

/// The media type for a file, guessed from its extension (any case);
/// `application/octet-stream` when unknown.
pub(crate) fn content_type_for(path: &Path) -> &'static str {
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        return "application/octet-stream";
    };
    TYPES
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map_or("application/octet-stream", |(_, t)| t)
}

/// The file extension for a response `Content-Type` (parameters such as
/// `; charset=utf-8` ignored), if it is a known type.
pub(crate) fn extension_for(content_type: &str) -> Option<&'static str> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    TYPES
        .iter()
        .find(|(_, t)| t.eq_ignore_ascii_case(mime))
        .map(|(e, _)| *e)
        .or_else(|| {
            ALIASES
                .iter()
                .find(|(t, _)| t.eq_ignore_ascii_case(mime))
                .map(|(_, e)| *e)
        })
}

/// Encodes `fields` then one file part as `multipart/form-data`; returns the
/// `Content-Type` header value (with the boundary) and the body.
pub(crate) fn encode(
    fields: &[(String, String)],
    file_field: &str,
    file_name: &str,
    content_type: &str,
    file_bytes: &[u8],
) -> (String, Bytes) {
    let boundary = loop {
        let candidate = format!(
            "sluice-{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        );
        // 128 random bits practically never occur, but a body containing the
        // boundary would be cut there, so make sure.
        let occurs = |hay: &[u8]| contains(hay, candidate.as_bytes());
        if !occurs(file_bytes)
            && !fields
                .iter()
                .any(|(k, v)| occurs(k.as_bytes()) || occurs(v.as_bytes()))
        {
            break candidate;
        }
    };
    let body = encode_with_boundary(
        &boundary,
        fields,
        file_field,
        file_name,
        content_type,
        file_bytes,
    );
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// [`encode`] with a given boundary (which must not occur in the content).
pub(crate) fn encode_with_boundary(
    boundary: &str,
    fields: &[(String, String)],
    file_field: &str,
    file_name: &str,
    content_type: &str,
    file_bytes: &[u8],
) -> Bytes {
    let size = file_bytes.len()
        + fields
            .iter()
            .map(|(k, v)| k.len() + v.len() + 100)
            .sum::<usize>()
        + boundary.len() * (fields.len() + 2)
        + 200;
    let mut out = BytesMut::with_capacity(size);
    for (name, value) in fields {
        out.put_slice(format!("--{boundary}\r\n").as_bytes());
        out.put_slice(
            format!(
                "Content-Disposition: form-data; name=\"{}\"\r\n\r\n",
                escape(name)
            )
            .as_bytes(),
        );
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(format!("--{boundary}\r\n").as_bytes());
    out.put_slice(
        format!(
            "Content-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
            escape(file_field),
            escape(file_name),
            content_type.replace(['\r', '\n'], "")
        )
        .as_bytes(),
    );
    out.put_slice(file_bytes);
    out.put_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out.freeze()
}

/// Percent-encodes `"`, CR and LF in a name or file name, as browsers do
/// (the HTML form encoding RFC 7578 §4.2 defers to).
fn escape(text: &str) -> String {
    text.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_bytes_with_a_fixed_boundary() {
        let fields = vec![
            ("model".to_string(), "whisper-1".to_string()),
            ("a\"b\r\nc".to_string(), "line1\nline2".to_string()),
        ];
        let body = encode_with_boundary(
            "XYZ",
            &fields,
            "file",
            "my \"clip\".wav",
            "audio/wav",
            b"\x00RIFF",
        );
        let expected: &[u8] = b"--XYZ\r\n\
Content-Disposition: form-data; name=\"model\"\r\n\r\n\
whisper-1\r\n\
--XYZ\r\n\
Content-Disposition: form-data; name=\"a%22b%0D%0Ac\"\r\n\r\n\
line1\nline2\r\n\
--XYZ\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"my %22clip%22.wav\"\r\n\
Content-Type: audio/wav\r\n\r\n\
\x00RIFF\r\n\
--XYZ--\r\n";
        assert_eq!(&body[..], expected, "{}", String::from_utf8_lossy(&body));
    }

    #[test]
    fn random_boundary_is_in_the_header_and_splits_the_body() {
        let (header, body) = encode(
            &[("k".into(), "v".into())],
            "f",
            "x.bin",
            "application/octet-stream",
            b"data",
        );
        let boundary = header
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        let parts: Vec<&str> = text.split(&format!("--{boundary}")).collect();
        // Preamble (empty), two parts, and the closing "--\r\n".
        assert_eq!(parts.len(), 4, "{text}");
        assert_eq!(parts[0], "");
        assert!(parts[1].ends_with("\r\n\r\nv\r\n"), "{}", parts[1]);
        assert!(parts[2].ends_with("\r\n\r\ndata\r\n"), "{}", parts[2]);
        assert_eq!(parts[3], "--\r\n");
    }

    #[test]
    fn types_by_extension_and_back() {
        assert_eq!(content_type_for(Path::new("/a/b.WAV")), "audio/wav");
        assert_eq!(content_type_for(Path::new("x.jpeg")), "image/jpeg");
        assert_eq!(
            content_type_for(Path::new("x.tar.gz")),
            "application/octet-stream"
        );
        assert_eq!(
            content_type_for(Path::new("noext")),
            "application/octet-stream"
        );
        assert_eq!(extension_for("image/jpeg"), Some("jpg"));
        assert_eq!(extension_for("audio/mpeg"), Some("mp3"));
        assert_eq!(
            extension_for("Application/JSON; charset=utf-8"),
            Some("json")
        );
        assert_eq!(extension_for("audio/x-wav"), Some("wav"));
        assert_eq!(extension_for("application/x-unknown"), None);
    }
}
