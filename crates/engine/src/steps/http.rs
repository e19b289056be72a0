//! `kind = "http"` steps: rendering a call (method, URL, headers, body) for
//! one unit, and turning its response into `steps.<name>` (saving the body to
//! a file with `save = "file"`).

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sluice_spec::{StepKind, Template};

use super::multipart;

/// A rendered http step call, ready to send.
#[derive(Debug, Clone)]
pub(crate) struct HttpCall {
    /// Method and full URL.
    pub(crate) endpoint: sluice_provider::Endpoint,
    /// Provider headers first, then the step's (a `Content-Type` among them
    /// is moved to `content_type`).
    pub(crate) headers: Vec<(String, String)>,
    /// The body's type; `None` = `application/json` (the client's default).
    pub(crate) content_type: Option<String>,
    /// The body (empty without `json`, `body` or `upload`).
    pub(crate) body: Bytes,
    /// Whether a 2xx must be JSON (a non-JSON one is retried as truncated):
    /// only when the step asks for JSON with an `Accept` header and does not
    /// save the body; any other answer is taken as it comes.
    pub(crate) expect_json: bool,
}

/// Why an http step could not be built or finished for one unit.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    /// A template failed (names its place and text).
    #[error(transparent)]
    Render(#[from] sluice_spec::RenderError),
    /// A rendered value cannot be used: an upload file missing, a bad method,
    /// a header with a line break. Names the value and what to do.
    #[error("{0}")]
    Input(String),
    /// The rendered URL is not a valid http(s) URL.
    #[error(transparent)]
    Url(#[from] sluice_provider::ClientError),
    /// The response could not be saved.
    #[error("cannot save the response to {}: {source}; check that [output] dir is writable and the disk not full", path.display())]
    Write {
        /// The file (or directory) being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Renders an http step's call with `ctx`: method; `url`, or `path` joined to
/// `base_url` ("http://h/v1" + "/x" → "http://h/v1/x"); headers (provider's
/// first, then the step's); body (`json` serialized, `body` as text/plain,
/// `upload` as multipart reading the file now, else empty).
pub(crate) fn build(
    kind: &StepKind,
    base_url: Option<&str>,
    provider_headers: &[(String, Template)],
    ctx: &minijinja::Value,
    files: Option<&crate::FileAccess>,
) -> Result<HttpCall, StepError> {
    let StepKind::Http {
        method,
        url,
        path,
        headers,
        json,
        body,
        upload,
        save,
    } = kind
    else {
        return Err(StepError::Input(format!(
            "a {} step was given to the http step builder",
            kind.name()
        )));
    };
    let method =
        http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| {
            StepError::Input(format!(
                "{method:?} is not an HTTP method; use GET, POST, PUT, PATCH or DELETE"
            ))
        })?;
    let target = match (url, path) {
        (Some(url), _) => url.render(ctx)?,
        (None, Some(path)) => {
            let path = path.render(ctx)?;
            let Some(base) = base_url else {
                return Err(StepError::Input(format!(
                    "the step's path {path:?} needs a provider with a base_url; set provider, or give url instead"
                )));
            };
            join(base, &path)
        }
        (None, None) => {
            return Err(StepError::Input(
                "the step has neither url nor path; give one".into(),
            ))
        }
    };
    let endpoint = sluice_provider::Endpoint::parse(&target, method)?;

    let mut rendered = Vec::with_capacity(provider_headers.len() + headers.len());
    let mut content_type = None;
    for (name, value) in provider_headers.iter().chain(headers) {
        let value = value.render(ctx)?;
        if value.contains(['\r', '\n']) {
            return Err(StepError::Input(format!(
                "header {name:?} rendered with a line break; fix its template (trim the value?)"
            )));
        }
        if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value);
        } else {
            rendered.push((name.clone(), value));
        }
    }
    let expect_json = !save
        && rendered
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("accept") && v.contains("json"));

    let body = if let Some(json) = json {
        let value = json.render(ctx)?;
        content_type.get_or_insert_with(|| "application/json".into());
        // Serializing a `serde_json::Value` cannot fail.
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    } else if let Some(text) = body {
        content_type.get_or_insert_with(|| "text/plain; charset=utf-8".into());
        Bytes::from(text.render(ctx)?)
    } else if let Some(upload) = upload {
        let mut file = PathBuf::from(upload.file.render(ctx)?);
        if let Some(files) = files {
            file = files
                .readable(&file, "upload.file")
                .map_err(StepError::Input)?;
        }
        let bytes = std::fs::read(&file).map_err(|e| {
            StepError::Input(format!(
                "cannot read the upload file {}: {e}; check the step's upload.file",
                file.display()
            ))
        })?;
        let fields = upload
            .fields
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.render(ctx)?)))
            .collect::<Result<Vec<_>, StepError>>()?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let file_type = multipart::content_type_for(&file);
        let (header, body) = multipart::encode(&fields, &upload.field, &name, file_type, &bytes);
        // The boundary must match the body: a Content-Type header from the
        // step cannot replace this one.
        content_type = Some(header);
        body
    } else {
        Bytes::new()
    };
    Ok(HttpCall {
        endpoint,
        headers: rendered,
        content_type,
        body,
        expect_json,
    })
}

/// `base` + `path` with exactly one `/` between them.
fn join(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    if path.starts_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    }
}

/// What an http step produced, for `steps.<name>`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HttpOutput {
    /// HTTP status.
    pub(crate) status: u16,
    /// The body as text, if UTF-8 and not saved.
    pub(crate) text: Option<String>,
    /// The body as JSON, if it parses and is not saved.
    pub(crate) json: Option<serde_json::Value>,
    /// The saved file, with `save`.
    pub(crate) file: Option<PathBuf>,
}

/// Turns a successful response into the output. With `save`, writes the body
/// to `dir/<step>/<file_stem>.<ext>` (ext from `content_type` if known, else
/// `bin`) atomically, and leaves `text`/`json` empty: the content is the file,
/// and a large body is not copied into the results.
pub(crate) fn finish(
    save: bool,
    dir: &Path,
    step: &str,
    file_stem: &str,
    content_type: Option<&str>,
    status: u16,
    body: &[u8],
) -> Result<HttpOutput, StepError> {
    if !save {
        return Ok(HttpOutput {
            status,
            text: std::str::from_utf8(body).ok().map(str::to_string),
            json: serde_json::from_slice(body).ok(),
            file: None,
        });
    }
    let ext = content_type
        .and_then(multipart::extension_for)
        .unwrap_or("bin");
    let folder = dir.join(step);
    let path = folder.join(format!("{file_stem}.{ext}"));
    write_atomically(&folder, &path, body)?;
    Ok(HttpOutput {
        status,
        text: None,
        json: None,
        file: Some(path),
    })
}

/// Writes a temporary file beside `path` and renames it over `path`, so a
/// reader (or a crash) never sees a half-written file.
fn write_atomically(folder: &Path, path: &Path, body: &[u8]) -> Result<(), StepError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StepError::Write { path, source }
    };
    std::fs::create_dir_all(folder).map_err(err(folder))?;
    let tmp = folder.join(format!(
        ".{}.{:08x}.partial",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        fastrand::u32(..)
    ));
    let written = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(body));
    if let Err(source) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(StepError::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(())
}

/// Longest stem [`safe_stem`] returns.
const MAX_STEM: usize = 120;

/// A unit id as a file name stem: characters outside `[A-Za-z0-9._-]` become
/// `_`, at most 120 characters; when anything changed, a short hash of the id
/// is appended so distinct ids never share a file.
pub(crate) fn safe_stem(unit_id: &str) -> String {
    let mapped: String = unit_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // A leading dot would hide the file; "." and ".." are not file names.
    let hidden = mapped.starts_with('.');
    if mapped == unit_id && !hidden && !mapped.is_empty() && mapped.len() <= MAX_STEM {
        return mapped;
    }
    let hash = format!(
        "{:08x}",
        xxhash_rust::xxh3::xxh3_64(unit_id.as_bytes()) as u32
    );
    // Only ASCII is left, so byte slicing is on character boundaries.
    let keep = mapped.len().min(MAX_STEM - hash.len() - 1);
    let start = if hidden { "_" } else { "" };
    let keep = keep.saturating_sub(start.len());
    format!("{start}{}-{hash}", &mapped[..keep])
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sluice_spec::{TValue, Upload};

    use super::*;

    fn t(source: &str) -> Template {
        Template::standalone("steps.call", source).unwrap()
    }

    fn ctx() -> minijinja::Value {
        minijinja::Value::from(minijinja::value::Serde(json!({
            "item": {"id": "a 1", "n": 3, "file": "/nonexistent/x.wav"},
            "env": {"KEY": "k"},
        })))
    }

    fn step(url: Option<&str>, path: Option<&str>) -> StepKind {
        StepKind::Http {
            method: "post".into(),
            url: url.map(t),
            path: path.map(t),
            headers: vec![("X-Item".into(), t("{{ item.id }}"))],
            json: None,
            body: None,
            upload: None,
            save: false,
        }
    }

    #[test]
    fn path_joins_base_url_and_headers_keep_their_order() {
        let mut kind = step(None, Some("/items/{{ item.n }}"));
        if let StepKind::Http { json, .. } = &mut kind {
            *json = Some(TValue::Object(vec![
                ("n".into(), TValue::Template(t("{{ item.n }}"))),
                ("fixed".into(), TValue::Literal(json!([true]))),
            ]));
        }
        let provider = vec![("Authorization".to_string(), t("Bearer {{ env.KEY }}"))];
        let call = build(&kind, Some("http://h:9/v1/"), &provider, &ctx(), None).unwrap();
        assert_eq!(call.endpoint.uri.to_string(), "http://h:9/v1/items/3");
        assert_eq!(call.endpoint.method, http::Method::POST);
        let names: Vec<_> = call
            .headers
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        assert_eq!(names, ["Authorization=Bearer k", "X-Item=a 1"]);
        assert_eq!(call.content_type.as_deref(), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body, json!({"n": 3, "fixed": [true]}));
        assert!(!call.expect_json);
    }

    #[test]
    fn text_body_a_content_type_header_and_accept_json() {
        let mut kind = step(Some("http://h/x?q={{ item.n }}"), None);
        if let StepKind::Http {
            body,
            headers,
            method,
            ..
        } = &mut kind
        {
            *body = Some(t("n={{ item.n }}"));
            *method = "PUT".into();
            headers.push(("content-type".into(), t("text/csv")));
            headers.push(("Accept".into(), t("application/json")));
        }
        let call = build(&kind, None, &[], &ctx(), None).unwrap();
        assert_eq!(call.endpoint.uri.to_string(), "http://h/x?q=3");
        assert_eq!(call.endpoint.method, http::Method::PUT);
        assert_eq!(&call.body[..], b"n=3");
        assert_eq!(call.content_type.as_deref(), Some("text/csv"));
        assert!(call.expect_json);
        assert!(!call.headers.iter().any(|(n, _)| n == "content-type"));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = build(&step(None, Some("/x")), None, &[], &ctx(), None).unwrap_err();
        assert!(e.to_string().contains("base_url"), "{e}");
        let e = build(
            &step(Some("{{ item.missing }}"), None),
            None,
            &[],
            &ctx(),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, StepError::Render(_)), "{e}");
        let e = build(&step(Some("not a url"), None), None, &[], &ctx(), None).unwrap_err();
        assert!(e.to_string().contains("not a url"), "{e}");
        let mut kind = step(Some("http://h/"), None);
        if let StepKind::Http { upload, .. } = &mut kind {
            *upload = Some(Upload {
                field: "file".into(),
                file: t("{{ item.file }}"),
                fields: vec![],
            });
        }
        let e = build(&kind, None, &[], &ctx(), None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.wav"), "{e}");
    }

    #[test]
    fn upload_is_multipart_with_the_file_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clip.wav");
        std::fs::write(&file, b"RIFFdata").unwrap();
        let mut kind = step(Some("http://h/upload"), None);
        if let StepKind::Http { upload, .. } = &mut kind {
            *upload = Some(Upload {
                field: "audio".into(),
                file: t(file.to_str().unwrap()),
                fields: vec![("n".into(), t("{{ item.n }}"))],
            });
        }
        let call = build(&kind, None, &[], &ctx(), None).unwrap();
        let header = call.content_type.unwrap();
        let boundary = header
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap();
        let text = String::from_utf8_lossy(&call.body).into_owned();
        assert!(text.starts_with(&format!("--{boundary}\r\n")), "{text}");
        assert!(text.contains("name=\"n\"\r\n\r\n3\r\n"), "{text}");
        assert!(
            text.contains("name=\"audio\"; filename=\"clip.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFFdata\r\n"),
            "{text}"
        );
    }

    #[test]
    fn finish_reads_text_and_json_or_saves_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let run = |save, stem: &str, content_type, body: &[u8]| {
            finish(save, dir.path(), "tts", stem, content_type, 201, body).unwrap()
        };
        let out = run(false, "x", None, br#"{"a":1}"#);
        assert_eq!(out.json, Some(json!({"a": 1})));
        assert_eq!(out.text.as_deref(), Some(r#"{"a":1}"#));
        let out = run(false, "x", None, b"\xff\x00");
        assert_eq!((out.status, out.text, out.json), (201, None, None));

        let out = run(true, "u1-0", Some("audio/mpeg"), b"ID3");
        let file = out.file.unwrap();
        assert_eq!(file, dir.path().join("tts/u1-0.mp3"));
        assert_eq!(std::fs::read(&file).unwrap(), b"ID3");
        assert_eq!(out.text, None);
        let out = run(true, "u2", None, b"?");
        assert_eq!(out.file.unwrap(), dir.path().join("tts/u2.bin"));
        // Only the two files: no temporary file left behind.
        let files = std::fs::read_dir(dir.path().join("tts")).unwrap().count();
        assert_eq!(files, 2);
    }

    #[test]
    fn safe_stems_keep_plain_ids_and_never_collide() {
        assert_eq!(safe_stem("item-1.a_b"), "item-1.a_b");
        let a = safe_stem("a/b");
        let b = safe_stem("a?b");
        assert!(a.starts_with("a_b-") && b.starts_with("a_b-"), "{a} {b}");
        assert_ne!(a, b);
        assert_ne!(safe_stem(""), "");
        assert!(safe_stem("..").starts_with('_'));
        let long = safe_stem(&"x".repeat(500));
        assert_eq!(long.len(), MAX_STEM);
        assert_ne!(long, safe_stem(&"x".repeat(501)));
        let unicode = safe_stem("café ☕");
        assert!(unicode.bytes().all(|b| b.is_ascii()), "{unicode}");
    }
}
