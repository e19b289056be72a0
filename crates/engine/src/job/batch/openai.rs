//! OpenAI's Batch API: upload a JSONL file (Files API, purpose `batch`),
//! create the batch, poll it, download its output and error files; and find
//! a batch whose create answer was lost.
//!
//! References: Batch API guide (platform.openai.com/docs/guides/batch), API
//! reference for Batches and Files (platform.openai.com/docs/api-reference/batch,
//! …/files); where they are silent, openai-python 1.x (`resources/batches.py`,
//! `pagination.py`: lists are paged with `after` = the last id).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use http::Method;
use serde_json::{json, Value as Json};

use super::api::{count, text, BatchError, Remote, Status, CLOCK_SKEW_SECS, MAX_LOOKUP_PAGES};
use super::state::{retryable_status, status_code_name, BatchRecord, LineResult};
use crate::item_error::ItemError;

pub(crate) async fn submit(
    remote: &Remote,
    record: &mut BatchRecord,
    lines: &[String],
    known: &HashSet<String>,
    save: &(dyn Fn(&BatchRecord) + Sync),
) -> Result<(), String> {
    if record.input_file_id.is_none() {
        let mut file = lines.join("\n").into_bytes();
        file.push(b'\n');
        let fields = [("purpose".to_string(), "batch".to_string())];
        let name = format!("sluice-{}.jsonl", record.key.replace(':', "-"));
        let (content_type, body) = crate::job::kinds::multipart::encode(
            &fields,
            "file",
            &name,
            "application/jsonl",
            &file,
        );
        let answer = remote
            .exchange(Method::POST, "/files", body, Some(&content_type), true)
            .await?;
        let value: Json = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
        let id = text(&value, "/id").ok_or("the Files API answered without an id")?;
        record.input_file_id = Some(id);
        save(record);
    }
    let request = create_request(record);
    let body = bytes::Bytes::from(request.to_string());
    let batch = remote.create(record, "/batches", body, known, save).await?;
    record.id = Some(text(&batch, "/id").ok_or("the Batch API answered without an id")?);
    record.state = text(&batch, "/status").unwrap_or_else(|| "validating".into());
    save(record);
    Ok(())
}

/// The body of `POST /v1/batches` for `record` (Create batch: `input_file_id`,
/// `endpoint`, `completion_window` = `"24h"`, optional `metadata` of string
/// values).
pub(crate) fn create_request(record: &BatchRecord) -> Json {
    json!({
        "input_file_id": record.input_file_id,
        "endpoint": record.path,
        "completion_window": "24h",
        "metadata": {"sluice": record.key},
    })
}

pub(crate) async fn status(remote: &Remote, id: &str) -> Result<Status, String> {
    let b = remote
        .json(Method::GET, &format!("/batches/{id}"), None)
        .await?;
    Ok(read_status(&b))
}

/// A Batch object as a [`Status`].
pub(crate) fn read_status(b: &Json) -> Status {
    let errors = b
        .pointer("/errors/data")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .map(|e| BatchError {
            code: e["code"].as_str().unwrap_or("batch_error").to_string(),
            message: e["message"].as_str().unwrap_or("no message").to_string(),
            line: e["line"].as_u64(),
        })
        .collect();
    Status {
        state: text(b, "/status").unwrap_or_default(),
        succeeded: count(b, "/request_counts/completed"),
        errored: count(b, "/request_counts/failed"),
        expired: 0,
        output_file_id: text(b, "/output_file_id"),
        error_file_id: text(b, "/error_file_id"),
        results_url: None,
        errors,
    }
}

pub(crate) async fn results(
    remote: &Remote,
    record: &BatchRecord,
    dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for (file, kind) in [
        (&record.output_file_id, "output"),
        (&record.error_file_id, "errors"),
    ] {
        let Some(file) = file else { continue };
        let to = dir.join(format!("{}-{}-{kind}.jsonl", record.provider, record.seq));
        remote
            .download(&format!("/files/{file}/content"), &to)
            .await?;
        out.push(to);
    }
    Ok(out)
}

/// One line of an output or error file (the request output object: `id`,
/// `custom_id`, `response` {`status_code`, `request_id`, `body`}, `error`
/// {`code`, `message`}).
pub(crate) fn parse_line(line: &[u8]) -> Option<(String, LineResult)> {
    let v: Json = serde_json::from_slice(line).ok()?;
    let id = text(&v, "/custom_id")?;
    let result = match (v.get("response").filter(|r| r.is_object()), v.get("error")) {
        (Some(r), _) => {
            let status = r["status_code"].as_u64().unwrap_or(0) as u16;
            if (200..300).contains(&status) {
                LineResult::Ok {
                    status,
                    body: bytes::Bytes::from(r["body"].to_string()),
                }
            } else {
                let message = r
                    .pointer("/body/error/message")
                    .and_then(Json::as_str)
                    .unwrap_or("no message");
                LineResult::Err {
                    status: Some(status),
                    error: ItemError::new(
                        status_code_name(status),
                        format!("HTTP {status}: {message}"),
                    ),
                    retryable: retryable_status(status),
                }
            }
        }
        (None, Some(e)) if e.is_object() => {
            let code = e["code"].as_str().unwrap_or("batch_error");
            let message = e["message"].as_str().unwrap_or("no message");
            LineResult::Err {
                status: None,
                error: ItemError::new(code, message),
                // Expired (and cancelled) requests never ran: another try may.
                retryable: code != "invalid_request",
            }
        }
        _ => return None,
    };
    Some((id, result))
}

/// The batch made for `record` by a create call whose answer was lost:
/// newest first, page by page (`after` = the last id), until batches older
/// than the call; matched by the `metadata` sluice sends, or (a server that
/// drops metadata) by the uploaded input file. A batch the provider failed
/// (its enqueued-token limit) is not taken: it is the one being replaced.
pub(crate) async fn find(remote: &Remote, record: &BatchRecord) -> Result<Option<Json>, String> {
    let since = record.create_sent_at.unwrap_or(record.created_at) / 1000 - CLOCK_SKEW_SECS;
    let mut after: Option<String> = None;
    for _ in 0..MAX_LOOKUP_PAGES {
        let url = match &after {
            Some(last) => format!("/batches?limit=100&after={last}"),
            None => "/batches?limit=100".to_string(),
        };
        let page = remote.json(Method::GET, &url, None).await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        if let Some(found) = data.iter().find(|b| is_ours(b, record)) {
            return Ok(Some(found.clone()));
        }
        let older = data
            .iter()
            .any(|b| b["created_at"].as_i64().is_some_and(|t| t < since));
        let more = page["has_more"].as_bool().unwrap_or(false);
        after = data.last().and_then(|b| text(b, "/id"));
        if older || !more || after.is_none() {
            break;
        }
    }
    Ok(None)
}

fn is_ours(b: &Json, record: &BatchRecord) -> bool {
    if b["status"].as_str() == Some("failed") {
        return false;
    }
    match b.pointer("/metadata/sluice").and_then(Json::as_str) {
        Some(key) => key == record.key,
        None => {
            record.input_file_id.is_some()
                && b["input_file_id"].as_str() == record.input_file_id.as_deref()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_error_lines_are_sorted_into_results() {
        let ok = br#"{"id":"r1","custom_id":"a","response":{"status_code":200,"body":{"x":1}},"error":null}"#;
        let (id, r) = parse_line(ok).unwrap();
        assert_eq!(id, "a");
        assert_eq!(
            r,
            LineResult::Ok {
                status: 200,
                body: bytes::Bytes::from_static(br#"{"x":1}"#)
            }
        );
        let failed = br#"{"custom_id":"b","response":{"status_code":500,"body":{"error":{"message":"boom"}}},"error":null}"#;
        let (_, r) = parse_line(failed).unwrap();
        assert_eq!(
            r,
            LineResult::Err {
                status: Some(500),
                error: ItemError::new("server_error", "HTTP 500: boom"),
                retryable: true
            }
        );
        let bad = br#"{"custom_id":"d","response":{"status_code":400,"body":{"error":{"message":"no"}}}}"#;
        assert!(matches!(
            parse_line(bad).unwrap().1,
            LineResult::Err {
                retryable: false,
                ..
            }
        ));
        assert!(parse_line(b"not json").is_none());
    }
}
