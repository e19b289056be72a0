//! OpenAI's Batch API: upload a JSONL file (Files API, purpose `batch`),
//! create the batch, poll it, download its output and error files.

use http::Method;
use serde_json::{json, Value as Json};

use super::api::{count, text, Remote, Status};
use super::state::{retryable_status, status_code_name, BatchRecord, LineResult};

pub(crate) async fn submit(
    remote: &Remote,
    record: &mut BatchRecord,
    lines: &[String],
    save: &(dyn Fn(&BatchRecord) + Sync),
) -> Result<(), String> {
    if record.input_file_id.is_none() {
        let mut file = lines.join("\n").into_bytes();
        file.push(b'\n');
        let fields = [("purpose".to_string(), "batch".to_string())];
        let name = format!("sluice-{}.jsonl", record.key.replace(':', "-"));
        let (content_type, body) =
            crate::steps::multipart::encode(&fields, "file", &name, "application/jsonl", &file);
        let answer = remote
            .exchange(Method::POST, "/files", body, Some(&content_type), true)
            .await?;
        let value: Json = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
        let id = text(&value, "/id").ok_or("the Files API answered without an id")?;
        record.input_file_id = Some(id);
        save(record);
    }
    let hours = remote.completion_window.as_secs().div_ceil(3600).max(1);
    let request = json!({
        "input_file_id": record.input_file_id,
        "endpoint": record.path,
        "completion_window": format!("{hours}h"),
        "metadata": {"sluice": record.key},
    });
    let batch = remote
        .json(Method::POST, "/batches", Some(&request))
        .await?;
    record.id = Some(text(&batch, "/id").ok_or("the Batch API answered without an id")?);
    record.state = text(&batch, "/status").unwrap_or_else(|| "validating".into());
    save(record);
    Ok(())
}

pub(crate) async fn status(remote: &Remote, id: &str) -> Result<Status, String> {
    let b = remote
        .json(Method::GET, &format!("/batches/{id}"), None)
        .await?;
    let errors: Vec<String> = b
        .pointer("/errors/data")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    Ok(Status {
        state: text(&b, "/status").unwrap_or_default(),
        succeeded: count(&b, "/request_counts/completed"),
        errored: count(&b, "/request_counts/failed"),
        expired: 0,
        output_file_id: text(&b, "/output_file_id"),
        error_file_id: text(&b, "/error_file_id"),
        results_url: None,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    })
}

pub(crate) async fn results(
    remote: &Remote,
    record: &BatchRecord,
) -> Result<Vec<(String, LineResult)>, String> {
    let mut out = Vec::new();
    for file in [&record.output_file_id, &record.error_file_id]
        .into_iter()
        .flatten()
    {
        let url = format!("/files/{file}/content");
        let body = remote
            .exchange(Method::GET, &url, bytes::Bytes::new(), None, false)
            .await?;
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if let Some(parsed) = parse_line(line) {
                out.push(parsed);
            }
        }
    }
    Ok(out)
}

/// One line of an output or error file.
fn parse_line(line: &[u8]) -> Option<(String, LineResult)> {
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
                    error: format!("{}: HTTP {status}: {message}", status_code_name(status)),
                    retryable: retryable_status(status),
                }
            }
        }
        (None, Some(e)) if e.is_object() => {
            let code = e["code"].as_str().unwrap_or("batch_error");
            let message = e["message"].as_str().unwrap_or("no message");
            LineResult::Err {
                status: None,
                error: format!("{code}: {message}"),
                // Expired (and cancelled) requests never ran: another try may.
                retryable: code != "invalid_request",
            }
        }
        _ => return None,
    };
    Some((id, result))
}

pub(crate) async fn find(remote: &Remote, key: &str) -> Result<Option<String>, String> {
    let list = remote.json(Method::GET, "/batches?limit=100", None).await?;
    Ok(list["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b.pointer("/metadata/sluice").and_then(Json::as_str) == Some(key))
        .and_then(|b| text(b, "/id")))
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
                error: "server_error: HTTP 500: boom".into(),
                retryable: true
            }
        );
        let expired = br#"{"custom_id":"c","response":null,"error":{"code":"batch_expired","message":"too late"}}"#;
        let (_, r) = parse_line(expired).unwrap();
        assert!(
            matches!(r, LineResult::Err { retryable: true, ref error, .. } if error == "batch_expired: too late")
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
