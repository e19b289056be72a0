//! `kind = "http"` steps: rendering a call (method, URL, headers, body) for
//! one unit, and turning its response into `steps.<name>` (saving the body to
//! a file with `save = "file"`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use minijinja::Value;
use serde_json::{json, Value as Json};
use sluice_spec::{RenderError, TValue, Template, Upload};

use super::multipart;
use super::{placeholder_text, StepRules, Transport};
use crate::job::output::StepOutput;

/// An http step's fields.
pub(crate) struct Http<'a> {
    /// GET, POST, PUT, PATCH or DELETE.
    pub(super) method: &'a str,
    /// Absolute URL; or `path` on the provider's base URL.
    pub(super) url: Option<&'a Template>,
    pub(super) path: Option<&'a Template>,
    pub(super) headers: &'a [(String, Template)],
    /// JSON body.
    pub(super) json: Option<&'a TValue>,
    /// Raw text body.
    pub(super) body: Option<&'a Template>,
    /// Multipart upload.
    pub(super) upload: Option<&'a Upload>,
    /// Write the response body to a file (`.file`).
    pub(super) save: bool,
}

impl<'a> StepRules<'a> for Http<'a> {
    fn transport(&self) -> Transport {
        Transport::Http
    }

    fn default_latency(&self) -> f64 {
        0.5
    }

    fn templates(&self) -> Vec<&'a Template> {
        let mut out: Vec<&'a Template> = Vec::new();
        out.extend(self.url);
        out.extend(self.path);
        out.extend(self.headers.iter().map(|(_, t)| t));
        if let Some(json) = self.json {
            out.extend(TValue::templates(json));
        }
        out.extend(self.body);
        if let Some(upload) = self.upload {
            out.push(&upload.file);
            out.extend(upload.fields.iter().map(|(_, t)| t));
        }
        out
    }

    /// Not the upload's other form fields (a probe reads only what picks
    /// the call's size and place).
    fn probe_templates(&self) -> Option<Vec<&'a Template>> {
        let mut out: Vec<&'a Template> = self.url.iter().chain(self.path.iter()).copied().collect();
        out.extend(self.headers.iter().map(|(_, v)| v));
        out.extend(self.json.iter().flat_map(|j| j.templates()));
        out.extend(self.body);
        out.extend(self.upload.map(|u| &u.file));
        Some(out)
    }

    fn fingerprint_parts(
        &self,
        ctx: &minijinja::Value,
        parts: &mut Vec<Json>,
    ) -> Result<(), RenderError> {
        parts.push(json!(self.method));
        parts.push(json!(self.save));
        for t in self
            .url
            .iter()
            .chain(self.path.iter())
            .chain(self.body.iter())
        {
            parts.push(Json::String(t.render(ctx)?));
        }
        for (name, t) in self.headers {
            parts.push(json!([name, t.render(ctx)?]));
        }
        if let Some(j) = self.json {
            parts.push(j.render(ctx)?);
        }
        if let Some(u) = self.upload {
            let file = u.file.render(ctx)?;
            // The file's identity, not its bytes: path, size and mtime.
            let meta = std::fs::metadata(&file).ok();
            parts.push(json!([
                u.field,
                file,
                meta.as_ref().map(|m| m.len()),
                meta.and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64),
            ]));
            for (name, t) in &u.fields {
                parts.push(json!([name, t.render(ctx)?]));
            }
        }
        Ok(())
    }

    fn http_call(
        &self,
        base_url: Option<&str>,
        provider_headers: &[(String, Template)],
        ctx: &minijinja::Value,
        files: Option<&crate::FileAccess>,
    ) -> Option<Result<HttpCall, StepError>> {
        Some(self.build(base_url, provider_headers, ctx, files))
    }

    fn output_fields(&self, path: &str, fields: &mut BTreeMap<&'static str, Value>) {
        fields.insert("status", Value::from(200));
        if self.save {
            fields.insert("file", Value::from(format!("⟨{path}.file⟩")));
        } else {
            fields.insert("text", placeholder_text(path));
        }
    }
}

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
    /// With `save = "file"`: the body goes to a file, not into the results.
    pub(crate) save: bool,
    /// Built from `url` (which may name one host of the provider's pool),
    /// not from `path` on its base URL.
    pub(crate) by_url: bool,
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

impl Http<'_> {
    /// Renders the call with `ctx`: method; `url`, or `path` joined to
    /// `base_url` ("http://h/v1" + "/x" → "http://h/v1/x"); headers
    /// (provider's first, then the step's); body (`json` serialized, `body`
    /// as text/plain, `upload` as multipart reading the file now, else empty).
    fn build(
        &self,
        base_url: Option<&str>,
        provider_headers: &[(String, Template)],
        ctx: &minijinja::Value,
        files: Option<&crate::FileAccess>,
    ) -> Result<HttpCall, StepError> {
        let Http {
            method,
            url,
            path,
            headers,
            json,
            body,
            upload,
            save,
        } = *self;
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
            let (header, body) =
                multipart::encode(&fields, &upload.field, &name, file_type, &bytes);
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
            save,
            by_url: url.is_some(),
        })
    }
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

impl HttpOutput {
    /// The output as `steps.<name>` holds it.
    pub(crate) fn into_step_output(self) -> StepOutput {
        StepOutput {
            text: self.text,
            json: self.json,
            file: self.file.map(|p| p.display().to_string()),
            status: Some(i64::from(self.status)),
            ..Default::default()
        }
    }
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
    use sluice_spec::StepKind;

    use super::*;

    fn build(
        kind: &StepKind,
        base_url: Option<&str>,
        provider_headers: &[(String, Template)],
        ctx: &minijinja::Value,
        files: Option<&crate::FileAccess>,
    ) -> Result<HttpCall, StepError> {
        super::super::of(kind)
            .http_call(base_url, provider_headers, ctx, files)
            .expect("an http step")
    }

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
        assert!(!call.by_url && !call.save);
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
        assert!(call.by_url);
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
        let file = out.file.clone().unwrap();
        assert_eq!(file, dir.path().join("tts/u1-0.mp3"));
        assert_eq!(std::fs::read(&file).unwrap(), b"ID3");
        assert_eq!(out.text, None);
        assert_eq!(
            out.clone().into_step_output(),
            StepOutput {
                file: Some(file.display().to_string()),
                status: Some(201),
                ..Default::default()
            }
        );
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

    #[test]
    fn a_saved_body_is_a_file_and_a_probe_skips_form_fields() {
        let mut kind = step(Some("http://h/{{ item.n }}"), None);
        if let StepKind::Http { upload, save, .. } = &mut kind {
            *upload = Some(Upload {
                field: "file".into(),
                file: t("{{ item.file }}"),
                fields: vec![("lang".into(), t("{{ item.lang }}"))],
            });
            *save = true;
        }
        let rules = super::super::of(&kind);
        let sources: Vec<&str> = rules.templates().iter().map(|t| t.source()).collect();
        assert_eq!(
            sources,
            [
                "http://h/{{ item.n }}",
                "{{ item.id }}",
                "{{ item.file }}",
                "{{ item.lang }}"
            ]
        );
        let probed = rules.probe_templates().unwrap();
        assert_eq!(probed.len(), 3);
        let mut fields = BTreeMap::new();
        rules.output_fields("steps.call", &mut fields);
        assert_eq!(
            fields.keys().copied().collect::<Vec<_>>(),
            ["file", "status"]
        );
        let mut fields = BTreeMap::new();
        super::super::of(&step(Some("http://h/"), None)).output_fields("steps.call", &mut fields);
        assert_eq!(
            fields.keys().copied().collect::<Vec<_>>(),
            ["status", "text"]
        );
    }
}
