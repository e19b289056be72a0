//! Anthropic's Message Batches API: create (the requests in the body), poll,
//! fetch the results from `results_url`; and find a batch whose create
//! answer was lost.
//!
//! References: Batch processing guide (docs.claude.com/en/docs/build-with-claude/batch-processing),
//! API reference: Create / Retrieve / List Message Batches, Retrieve Message
//! Batch results (docs.claude.com/en/api/…); errors (docs.claude.com/en/api/errors).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use http::Method;
use serde_json::Value as Json;

use super::api::{count, text, Remote, Status, CLOCK_SKEW_SECS, MAX_LOOKUP_PAGES};
use super::state::{BatchRecord, LineResult};
use crate::item_error::ItemError;

pub(crate) async fn submit(
    remote: &Remote,
    record: &mut BatchRecord,
    lines: &[String],
    known: &HashSet<String>,
    save: &(dyn Fn(&BatchRecord) + Sync),
) -> Result<(), String> {
    let body = bytes::Bytes::from(create_body(lines));
    let batch = remote
        .create(record, "/messages/batches", body, known, save)
        .await?;
    record.id = Some(text(&batch, "/id").ok_or("the Message Batches API answered without an id")?);
    record.state = text(&batch, "/processing_status").unwrap_or_else(|| "in_progress".into());
    save(record);
    Ok(())
}

/// The body of `POST /v1/messages/batches`: `{"requests": [{custom_id, params}, …]}`.
pub(crate) fn create_body(lines: &[String]) -> String {
    format!("{{\"requests\":[{}]}}", lines.join(","))
}

pub(crate) async fn status(remote: &Remote, id: &str) -> Result<Status, String> {
    let b = remote
        .json(Method::GET, &format!("/messages/batches/{id}"), None)
        .await?;
    Ok(read_status(&b))
}

/// A Message Batch object as a [`Status`].
pub(crate) fn read_status(b: &Json) -> Status {
    Status {
        state: text(b, "/processing_status").unwrap_or_default(),
        succeeded: count(b, "/request_counts/succeeded"),
        errored: count(b, "/request_counts/errored"),
        expired: count(b, "/request_counts/expired") + count(b, "/request_counts/canceled"),
        output_file_id: None,
        error_file_id: None,
        results_url: text(b, "/results_url"),
        errors: Vec::new(),
    }
}

pub(crate) async fn results(
    remote: &Remote,
    record: &BatchRecord,
    dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    // "The path for retrieving Message Batch results should be pulled from
    // the batch's `results_url`" (Retrieve Message Batch results).
    let url = match (&record.results_url, &record.id) {
        (Some(u), _) => u.clone(),
        (None, Some(id)) => format!("/messages/batches/{id}/results"),
        (None, None) => return Ok(Vec::new()),
    };
    let to = dir.join(format!("{}-{}-results.jsonl", record.provider, record.seq));
    remote.download(&url, &to).await?;
    Ok(vec![to])
}

/// One line of a results file: `custom_id` and `result` of type
/// `succeeded` (`message`), `errored` (`error`, the standard error shape),
/// `canceled` or `expired`.
pub(crate) fn parse_line(line: &[u8]) -> Option<(String, LineResult)> {
    let v: Json = serde_json::from_slice(line).ok()?;
    let id = text(&v, "/custom_id")?;
    let r = &v["result"];
    let result = match r["type"].as_str()? {
        "succeeded" => LineResult::Ok {
            status: 200,
            body: bytes::Bytes::from(r["message"].to_string()),
        },
        "errored" => {
            let kind = r
                .pointer("/error/error/type")
                .or_else(|| r.pointer("/error/type"))
                .and_then(Json::as_str)
                .unwrap_or("api_error");
            let message = r
                .pointer("/error/error/message")
                .or_else(|| r.pointer("/error/message"))
                .and_then(Json::as_str)
                .unwrap_or("no message");
            let (code, retryable) = match kind {
                "invalid_request_error"
                | "authentication_error"
                | "billing_error"
                | "permission_error"
                | "not_found_error"
                | "request_too_large" => ("request_error", false),
                "rate_limit_error" => ("rate_limited", true),
                _ => ("server_error", true),
            };
            LineResult::Err {
                status: None,
                error: ItemError::new(code, format!("{kind}: {message}")),
                retryable,
            }
        }
        "expired" => LineResult::Err {
            status: None,
            error: ItemError::new("batch_expired", "the batch ended before this request ran"),
            retryable: true,
        },
        "canceled" => LineResult::Err {
            status: None,
            error: ItemError::new(
                "batch_cancelled",
                "the batch was cancelled before this request ran",
            ),
            retryable: true,
        },
        _ => return None,
    };
    Some((id, result))
}

/// The batch made for `record` by a create call whose answer was lost.
/// Message batches carry no metadata, so it is the newest batch created
/// since the call (allowing for clock skew) that holds as many requests as
/// ours and is not one of this run's (`known`); the results it brings are
/// checked against our custom ids before they are used (`adopted`). Pages
/// are read with `after_id` = the last id while `has_more` (List Message
/// Batches).
pub(crate) async fn find(
    remote: &Remote,
    record: &BatchRecord,
    known: &HashSet<String>,
) -> Result<Option<Json>, String> {
    let since =
        (record.create_sent_at.unwrap_or(record.created_at) / 1000 - CLOCK_SKEW_SECS) as f64;
    let mut after: Option<String> = None;
    for _ in 0..MAX_LOOKUP_PAGES {
        let url = match &after {
            Some(last) => format!("/messages/batches?limit=100&after_id={last}"),
            None => "/messages/batches?limit=100".to_string(),
        };
        let page = remote.json(Method::GET, &url, None).await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        let created = |b: &Json| {
            b["created_at"]
                .as_str()
                .and_then(sluice_provider::rfc3339_unix)
        };
        let found = data.iter().find(|b| {
            let total: u64 = ["processing", "succeeded", "errored", "canceled", "expired"]
                .iter()
                .map(|k| count(b, &format!("/request_counts/{k}")))
                .sum();
            total == record.requests
                && created(b).is_some_and(|t| t >= since)
                && text(b, "/id").is_some_and(|id| !known.contains(&id))
        });
        if let Some(found) = found {
            return Ok(Some(found.clone()));
        }
        let older = data.iter().any(|b| created(b).is_some_and(|t| t < since));
        let more = page["has_more"].as_bool().unwrap_or(false);
        after = text(&page, "/last_id").or_else(|| data.last().and_then(|b| text(b, "/id")));
        if older || !more || after.is_none() {
            break;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_types_become_results() {
        let overloaded = br#"{"custom_id":"b","result":{"type":"errored","error":{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}}}"#;
        assert_eq!(
            parse_line(overloaded).unwrap().1,
            LineResult::Err {
                status: None,
                error: ItemError::new("server_error", "overloaded_error: Overloaded"),
                retryable: true
            }
        );
        let expired = br#"{"custom_id":"d","result":{"type":"expired"}}"#;
        assert!(matches!(
            parse_line(expired).unwrap().1,
            LineResult::Err {
                retryable: true,
                ..
            }
        ));
    }
}
