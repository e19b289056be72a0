//! OpenAI's Files API, as far as batches use it: upload (multipart, purpose
//! `batch`), metadata, content.

use http::{Response, StatusCode};
use serde_json::json;

use super::State;
use crate::response::{self, Body};

/// An uploaded file.
#[derive(Debug, Clone)]
pub(super) struct File {
    pub(super) bytes: Vec<u8>,
    pub(super) purpose: String,
    pub(super) filename: String,
    pub(super) created_ms: u64,
}

fn file_object(id: &str, f: &File) -> serde_json::Value {
    json!({"id": id, "object": "file", "bytes": f.bytes.len(), "created_at": f.created_ms / 1000,
           "filename": f.filename, "purpose": f.purpose})
}

/// `POST /v1/files`: a `multipart/form-data` body with `purpose` and `file`.
pub(super) fn upload(
    state: &mut State,
    content_type: &str,
    body: &[u8],
    now: u64,
) -> Response<Body> {
    let Some(boundary) = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
    else {
        return response::bad_request("Expected a multipart/form-data body with a boundary.");
    };
    let parts = multipart(body, &boundary);
    let purpose = parts
        .iter()
        .find(|p| p.name == "purpose")
        .map(|p| String::from_utf8_lossy(&p.data).into_owned());
    let file = parts
        .iter()
        .find(|p| p.name == "file" && p.filename.is_some());
    let (Some(purpose), Some(file)) = (purpose, file) else {
        return response::bad_request("Both `purpose` and `file` are required.");
    };
    if purpose != "batch" {
        return response::bad_request("The mock only accepts files with purpose \"batch\".");
    }
    let id = state.id("file-");
    let stored = File {
        bytes: file.data.clone(),
        purpose,
        filename: file.filename.clone().unwrap_or_default(),
        created_ms: now,
    };
    let res = response::json(
        StatusCode::OK,
        file_object(&id, &stored).to_string().into_bytes(),
    );
    state.files.insert(id, stored);
    state.stats.files_uploaded += 1;
    res
}

/// `GET /v1/files/{id}`.
pub(super) fn object(state: &State, id: &str) -> Response<Body> {
    match state.files.get(id) {
        Some(f) => response::json(StatusCode::OK, file_object(id, f).to_string().into_bytes()),
        None => not_found(id),
    }
}

/// `GET /v1/files/{id}/content`.
pub(super) fn content(state: &State, id: &str) -> Response<Body> {
    match state.files.get(id) {
        Some(f) => response::json(StatusCode::OK, f.bytes.clone()),
        None => not_found(id),
    }
}

fn not_found(id: &str) -> Response<Body> {
    response::error(
        StatusCode::NOT_FOUND,
        &format!("No such File object: {id}"),
        "invalid_request_error",
        None,
    )
}

struct Part {
    name: String,
    filename: Option<String>,
    data: Vec<u8>,
}

/// The parts of a `multipart/form-data` body.
fn multipart(body: &[u8], boundary: &str) -> Vec<Part> {
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    for chunk in split(body, delimiter.as_bytes()).into_iter().skip(1) {
        if chunk.starts_with(b"--") {
            break;
        }
        let chunk = chunk.strip_prefix(b"\r\n").unwrap_or(chunk);
        let Some(split_at) = find(chunk, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&chunk[..split_at]);
        let mut data = &chunk[split_at + 4..];
        data = data.strip_suffix(b"\r\n").unwrap_or(data);
        let attr = |key: &str| {
            let marker = format!("{key}=\"");
            head.find(&marker).and_then(|i| {
                let rest = &head[i + marker.len()..];
                rest.find('"').map(|j| rest[..j].to_string())
            })
        };
        out.push(Part {
            name: attr("name").unwrap_or_default(),
            filename: attr("filename"),
            data: data.to_vec(),
        });
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut hay: &'a [u8], needle: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = find(hay, needle) {
        out.push(&hay[..i]);
        hay = &hay[i + needle.len()..];
    }
    out.push(hay);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_are_found() {
        let body = b"--XY\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{\"a\":1}\n{\"a\":2}\n\r\n--XY--\r\n";
        let parts = multipart(body, "XY");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].data, b"batch");
        assert_eq!(parts[1].filename.as_deref(), Some("b.jsonl"));
        assert_eq!(parts[1].data, b"{\"a\":1}\n{\"a\":2}\n");
    }
}
