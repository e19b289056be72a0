//! Anthropic's Message Batches API: create (the requests in the body), poll,
//! fetch the results from `results_url`.

use http::Method;
use serde_json::Value as Json;

use super::api::{count, text, Remote, Status};
use super::state::{BatchRecord, LineResult};

pub(crate) async fn submit(
    remote: &Remote,
    record: &mut BatchRecord,
    lines: &[String],
    save: &(dyn Fn(&BatchRecord) + Sync),
) -> Result<(), String> {
    let body = format!("{{\"requests\":[{}]}}", lines.join(","));
    let answer = remote
        .exchange(
            Method::POST,
            "/messages/batches",
            bytes::Bytes::from(body),
            None,
            true,
        )
        .await?;
    let batch: Json = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
    record.id = Some(text(&batch, "/id").ok_or("the Message Batches API answered without an id")?);
    record.state = text(&batch, "/processing_status").unwrap_or_else(|| "in_progress".into());
    save(record);
    Ok(())
}

pub(crate) async fn status(remote: &Remote, id: &str) -> Result<Status, String> {
    let b = remote
        .json(Method::GET, &format!("/messages/batches/{id}"), None)
        .await?;
    Ok(Status {
        state: text(&b, "/processing_status").unwrap_or_default(),
        succeeded: count(&b, "/request_counts/succeeded"),
        errored: count(&b, "/request_counts/errored"),
        expired: count(&b, "/request_counts/expired") + count(&b, "/request_counts/canceled"),
        output_file_id: None,
        error_file_id: None,
        results_url: text(&b, "/results_url"),
        error: None,
    })
}

pub(crate) async fn results(
    remote: &Remote,
    record: &BatchRecord,
) -> Result<Vec<(String, LineResult)>, String> {
    let url = match (&record.results_url, &record.id) {
        (Some(u), _) => u.clone(),
        (None, Some(id)) => format!("/messages/batches/{id}/results"),
        (None, None) => return Ok(Vec::new()),
    };
    let body = remote
        .exchange(Method::GET, &url, bytes::Bytes::new(), None, false)
        .await?;
    Ok(body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_line)
        .collect())
}

/// One line of a results file.
fn parse_line(line: &[u8]) -> Option<(String, LineResult)> {
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
                | "permission_error"
                | "not_found_error"
                | "request_too_large" => ("request_error", false),
                "rate_limit_error" => ("rate_limited", true),
                _ => ("server_error", true),
            };
            LineResult::Err {
                status: None,
                error: format!("{code}: {kind}: {message}"),
                retryable,
            }
        }
        "expired" => LineResult::Err {
            status: None,
            error: "batch_expired: the batch ended before this request ran".into(),
            retryable: true,
        },
        "canceled" => LineResult::Err {
            status: None,
            error: "batch_cancelled: the batch was cancelled before this request ran".into(),
            retryable: true,
        },
        _ => return None,
    };
    Some((id, result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_types_become_results() {
        let ok =
            br#"{"custom_id":"a","result":{"type":"succeeded","message":{"id":"m","content":[]}}}"#;
        assert!(matches!(
            parse_line(ok).unwrap().1,
            LineResult::Ok { status: 200, .. }
        ));
        let overloaded = br#"{"custom_id":"b","result":{"type":"errored","error":{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}}}"#;
        assert_eq!(
            parse_line(overloaded).unwrap().1,
            LineResult::Err {
                status: None,
                error: "server_error: overloaded_error: Overloaded".into(),
                retryable: true
            }
        );
        let invalid = br#"{"custom_id":"c","result":{"type":"errored","error":{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}}}"#;
        assert!(matches!(
            parse_line(invalid).unwrap().1,
            LineResult::Err {
                retryable: false,
                ..
            }
        ));
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
