//! `multipart/form-data` submissions: the job (TOML or JSON) as the part
//! named `job`, every other part a file, written into the run's scratch
//! directory as it arrives (the body never sits in memory whole). The job's
//! relative paths then resolve in that directory, so `glob = "*.png"` is the
//! images sent with it.

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::Multipart;
use axum::http::StatusCode;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::submit;
use crate::error::{ApiError, ApiResult};
use crate::uploads::{ScratchDir, Uploads};

/// The name of the part that holds the job.
const JOB_PART: &str = "job";

/// A submission read from a form.
#[derive(Debug)]
pub(crate) struct Form {
    /// The job part's content.
    pub(crate) job: Bytes,
    /// Whether the job is the JSON form (by the part's type or file name).
    pub(crate) json: bool,
    /// The files, each under its own name.
    pub(crate) scratch: ScratchDir,
}

/// Whether the body is a form (by its content type).
pub(crate) fn is_multipart(content_type: Option<&str>) -> bool {
    content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .is_some_and(|c| c.eq_ignore_ascii_case("multipart/form-data"))
}

/// Reads every part of `form`: the job into memory, files to disk. On any
/// error the files written so far go with the scratch directory.
pub(crate) async fn read(mut form: Multipart, uploads: &Uploads) -> ApiResult<Form> {
    let scratch = uploads.scratch()?;
    let mut job: Option<(Bytes, bool)> = None;
    let mut names = std::collections::HashSet::new();
    while let Some(field) = form.next_field().await.map_err(refused)? {
        let part = field.name().unwrap_or("").to_owned();
        if part == JOB_PART {
            if job.is_some() {
                return Err(invalid(
                    "the form has two parts named \"job\"; send one job",
                ));
            }
            let json = submit::is_json(field.content_type())
                || field.file_name().is_some_and(|f| f.ends_with(".json"));
            job = Some((field.bytes().await.map_err(refused)?, json));
            continue;
        }
        let Some(raw) = field.file_name().map(str::to_owned) else {
            return Err(invalid(format!(
                "the form part {part:?} is neither the job nor a file; send the job as the part named \"job\" and each file as a part with a file name"
            )));
        };
        let name = file_name(&raw)?;
        if !names.insert(name.clone()) {
            return Err(invalid(format!(
                "two files are named {name:?}; give each file its own name"
            )));
        }
        save(field, &scratch.path().join(&name)).await?;
    }
    let Some((job, json)) = job else {
        return Err(invalid(
            "the form has no part named \"job\"; send the job file (TOML or JSON) as the part \"job\" and the files as the other parts",
        ));
    };
    Ok(Form { job, json, scratch })
}

/// Streams one file part to `path`.
async fn save(mut field: Field<'_>, path: &std::path::Path) -> ApiResult<()> {
    let failed = |e: std::io::Error| ApiError::internal("keeping an uploaded file", e);
    let mut file = tokio::fs::File::create(path).await.map_err(failed)?;
    while let Some(chunk) = field.chunk().await.map_err(refused)? {
        file.write_all(&chunk).await.map_err(failed)?;
    }
    file.flush().await.map_err(failed)
}

/// The name a file is kept under: the last part of what the client sent
/// (browsers send a base name, some clients a path), refused when it could
/// name anything but a plain file in the scratch directory.
fn file_name(raw: &str) -> ApiResult<String> {
    let name = raw.rsplit(['/', '\\']).next().unwrap_or("");
    if name.is_empty() || name.starts_with('.') || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_upload",
            format!(
                "the file name {raw:?} cannot be kept; name each file like image-01.png (not empty, not starting with a dot)"
            ),
        ));
    }
    Ok(name.to_owned())
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_multipart", message)
}

/// A form the server cannot read: too large (413), or malformed (400).
fn refused(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large()
    } else {
        invalid(format!(
            "the multipart/form-data body could not be read: {}",
            e.body_text()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_plain_names_in_the_scratch_directory() {
        assert_eq!(file_name("cat.png").unwrap(), "cat.png");
        assert_eq!(file_name("photos/cat.png").unwrap(), "cat.png");
        assert_eq!(file_name("C:\\photos\\cat.png").unwrap(), "cat.png");
        for bad in ["", "..", "../", ".hidden", "a/", "x\ny.png"] {
            let e = file_name(bad).unwrap_err();
            assert_eq!(e.code, "invalid_upload", "{bad:?}");
        }
    }

    #[test]
    fn forms_are_told_by_their_content_type() {
        assert!(is_multipart(Some("multipart/form-data; boundary=x")));
        assert!(is_multipart(Some("Multipart/Form-Data")));
        assert!(!is_multipart(Some("application/json")));
        assert!(!is_multipart(None));
    }
}
