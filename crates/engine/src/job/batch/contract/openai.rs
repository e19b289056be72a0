//! OpenAI: Files, Batches and the batch file formats, as the references
//! print them.
//!
//! Pages transcribed:
//! - Batch API guide, platform.openai.com/docs/guides/batch (input file
//!   example, output file example, expired lines, limits).
//! - API reference, Batch: platform.openai.com/docs/api-reference/batch/create,
//!   …/batch/retrieve, …/batch/list, …/batch/object (errors: `code`, `line`,
//!   `message`, `param`).
//! - API reference, Files: platform.openai.com/docs/api-reference/files/create
//!   (multipart `file` and `purpose`; returns the File object).
//! - Where the references show no example: openai/openai-python #2084 (a
//!   `token_limit_exceeded` BatchError as the API sent it) and
//!   openai/openai-openapi #302 (an error-file line for a 400, captured).

use std::collections::HashSet;

use serde_json::{json, Value as Json};

use super::{keys, parsed, record, remote, Reference};
use crate::job::batch::enqueued::announced_limit;
use crate::job::batch::openai::read_status;
use crate::job::batch::state::LineResult;

/// Files API reference, "Upload file" returns the File object (the page's
/// example has a trailing comma after `purpose`, dropped here).
const FILE: &str = r#"{
  "id": "file-abc123",
  "object": "file",
  "bytes": 120000,
  "created_at": 1677610602,
  "expires_at": 1677614202,
  "filename": "mydata.jsonl",
  "purpose": "fine-tune"
}"#;

/// Batch reference, "Create batch" returns example.
const CREATED: &str = r#"{
  "id": "batch_abc123",
  "object": "batch",
  "endpoint": "/v1/chat/completions",
  "errors": null,
  "input_file_id": "file-abc123",
  "completion_window": "24h",
  "status": "validating",
  "output_file_id": null,
  "error_file_id": null,
  "created_at": 1711471533,
  "in_progress_at": null,
  "expires_at": null,
  "finalizing_at": null,
  "completed_at": null,
  "failed_at": null,
  "expired_at": null,
  "cancelling_at": null,
  "cancelled_at": null,
  "request_counts": {
    "total": 0,
    "completed": 0,
    "failed": 0
  },
  "metadata": {
    "customer_id": "user_123456789",
    "batch_description": "Nightly eval job"
  }
}"#;

/// Batch reference, "Retrieve batch" returns example.
const COMPLETED: &str = r#"{
  "id": "batch_abc123",
  "object": "batch",
  "endpoint": "/v1/completions",
  "errors": null,
  "input_file_id": "file-abc123",
  "completion_window": "24h",
  "status": "completed",
  "output_file_id": "file-cvaTdG",
  "error_file_id": "file-HOWS94",
  "created_at": 1711471533,
  "in_progress_at": 1711471538,
  "expires_at": 1711557933,
  "finalizing_at": 1711493133,
  "completed_at": 1711493163,
  "failed_at": null,
  "expired_at": null,
  "cancelling_at": null,
  "cancelled_at": null,
  "request_counts": {
    "total": 100,
    "completed": 95,
    "failed": 5
  },
  "metadata": {
    "customer_id": "user_123456789",
    "batch_description": "Nightly eval job"
  }
}"#;

/// Batch API guide, "Retrieve the results": the output file example.
const OUTPUT: &str = r#"{"id": "batch_req_123", "custom_id": "request-2", "response": {"status_code": 200, "request_id": "req_123", "body": {"id": "chatcmpl-123", "object": "chat.completion", "created": 1711652795, "model": "gpt-3.5-turbo-0125", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."}, "logprobs": null, "finish_reason": "stop"}], "usage": {"prompt_tokens": 22, "completion_tokens": 2, "total_tokens": 24}, "system_fingerprint": "fp_123"}}, "error": null}
{"id": "batch_req_456", "custom_id": "request-1", "response": {"status_code": 200, "request_id": "req_789", "body": {"id": "chatcmpl-abc", "object": "chat.completion", "created": 1711652789, "model": "gpt-3.5-turbo-0125", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I assist you today?"}, "logprobs": null, "finish_reason": "stop"}], "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}, "system_fingerprint": "fp_3ba"}}, "error": null}
"#;

/// Batch API guide, "Batch expiration": expired requests in the error file;
/// and an error-file line for a request the model refused (openai-openapi
/// #302, as the API wrote it).
const ERRORS: &str = r#"{"id": "batch_req_123", "custom_id": "request-3", "response": null, "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}
{"id": "batch_req_123", "custom_id": "request-7", "response": null, "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}
{"id": "batch_req_YTpodqz4ZJ8arId5Bm73lIEt", "custom_id": "request-5", "response": {"status_code": 400, "request_id": "0538a1cc8f8f8500bbe07250e6aa2b26", "body": {"error": {"message": "This model's maximum context length is 128000 tokens. However, you requested 1000024 tokens (24 in the messages, 1000000 in the completion). Please reduce the length of the messages or completion.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}}, "error": null}
"#;

/// Batch API guide, "Prepare your batch file": the input example's bodies.
fn guide_requests() -> Vec<(&'static str, Json)> {
    vec![
        (
            "request-1",
            json!({"model": "gpt-3.5-turbo-0125", "messages": [{"role": "system", "content": "You are a helpful assistant."},{"role": "user", "content": "Hello world!"}],"max_tokens": 1000}),
        ),
        (
            "request-2",
            json!({"model": "gpt-3.5-turbo-0125", "messages": [{"role": "system", "content": "You are an unhelpful assistant."},{"role": "user", "content": "Hello world!"}],"max_tokens": 1000}),
        ),
    ]
}

/// The endpoints the Create batch reference lists.
const ENDPOINTS: [&str; 8] = [
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
];

#[tokio::test]
async fn upload_create_poll_and_results_follow_the_reference() {
    let server = Reference::start(vec![
        ("POST", "/v1/files".into(), FILE.into()),
        ("POST", "/v1/batches".into(), CREATED.into()),
        ("GET", "/v1/batches/batch_abc123".into(), COMPLETED.into()),
        ("GET", "/v1/files/file-cvaTdG/content".into(), OUTPUT.into()),
        ("GET", "/v1/files/file-HOWS94/content".into(), ERRORS.into()),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let remote = remote(dir.path(), &server.base, "openai");
    let lines: Vec<String> = guide_requests()
        .iter()
        .map(|(id, body)| remote.line(id, &remote.api_path("/chat/completions"), body))
        .collect();
    let mut rec = record("/v1/chat/completions", 2);
    remote
        .submit(&mut rec, &lines, &HashSet::new(), &|_| {})
        .await
        .unwrap();
    assert_eq!(rec.input_file_id.as_deref(), Some("file-abc123"));
    assert_eq!(
        (rec.id.as_deref(), rec.state.as_str()),
        (Some("batch_abc123"), "validating")
    );

    let status = remote.status("batch_abc123").await.unwrap();
    assert_eq!(status.state, "completed");
    assert_eq!((status.succeeded, status.errored), (95, 5));
    assert_eq!(status.output_file_id.as_deref(), Some("file-cvaTdG"));
    assert_eq!(status.error_file_id.as_deref(), Some("file-HOWS94"));
    assert!(status.errors.is_empty());

    rec.output_file_id = status.output_file_id;
    rec.error_file_id = status.error_file_id;
    let files = remote.results(&rec, dir.path()).await.unwrap();
    let results = parsed(&remote, &files);
    let by_id = |id: &str| &results.iter().find(|(i, _)| i == id).unwrap().1;
    match by_id("request-2") {
        LineResult::Ok { status, body } => {
            let body: Json = serde_json::from_slice(body).unwrap();
            assert_eq!(*status, 200);
            assert_eq!(body["choices"][0]["message"]["content"], "Hello.");
            assert_eq!(body["usage"]["total_tokens"], 24);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(by_id("request-1"), LineResult::Ok { .. }));
    match by_id("request-3") {
        LineResult::Err {
            retryable, error, ..
        } => {
            assert!(
                *retryable,
                "an expired request never ran: another batch may"
            );
            assert_eq!(error.code, "batch_expired", "{error}");
        }
        other => panic!("{other:?}"),
    }
    match by_id("request-5") {
        LineResult::Err {
            retryable,
            status,
            error,
        } => {
            assert_eq!((*retryable, *status), (false, Some(400)));
            assert_eq!(error.code, "request_error");
            assert!(error.message.contains("maximum context length"), "{error}");
        }
        other => panic!("{other:?}"),
    }

    // The requests, field by field.
    let seen = server.seen();
    let upload = &seen[0];
    assert_eq!(
        (upload.method.as_str(), upload.target.as_str()),
        ("POST", "/v1/files")
    );
    let content_type = upload.header("content-type").unwrap();
    assert!(
        content_type.starts_with("multipart/form-data; boundary="),
        "{content_type}"
    );
    let body = String::from_utf8_lossy(&upload.body).to_string();
    assert!(
        body.contains("name=\"purpose\"\r\n\r\nbatch\r\n"),
        "purpose = batch: {body}"
    );
    assert!(
        body.contains("name=\"file\"; filename=\"") && body.contains(".jsonl\""),
        "{body}"
    );
    // Each line of the file: custom_id, method, url, body (the input format).
    let file_lines: Vec<Json> = body
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(file_lines.len(), 2);
    for (line, (id, request)) in file_lines.iter().zip(guide_requests()) {
        let expected: HashSet<String> = ["custom_id", "method", "url", "body"]
            .map(String::from)
            .into();
        assert_eq!(keys(line), expected);
        assert_eq!(line["custom_id"], id);
        assert_eq!(
            (line["method"].as_str(), line["url"].as_str()),
            (Some("POST"), Some("/v1/chat/completions"))
        );
        assert_eq!(line["body"], request);
    }
    let create = &seen[1];
    assert_eq!(
        (create.method.as_str(), create.target.as_str()),
        ("POST", "/v1/batches")
    );
    assert_eq!(create.header("content-type"), Some("application/json"));
    let create = create.json();
    let expected: HashSet<String> = ["input_file_id", "endpoint", "completion_window", "metadata"]
        .map(String::from)
        .into();
    assert_eq!(keys(&create), expected);
    assert_eq!(create["input_file_id"], "file-abc123");
    assert!(ENDPOINTS.contains(&create["endpoint"].as_str().unwrap()));
    assert_eq!(create["completion_window"], "24h", "only 24h is supported");
    // Metadata: at most 16 pairs, keys ≤ 64 characters, string values ≤ 512.
    let metadata = create["metadata"].as_object().unwrap();
    assert!(metadata.len() <= 16);
    for (k, v) in metadata {
        assert!(
            k.len() <= 64 && v.as_str().is_some_and(|v| v.len() <= 512),
            "{k}: {v}"
        );
    }
    assert_eq!(seen[2].target, "/v1/batches/batch_abc123");
    assert_eq!(seen[3].target, "/v1/files/file-cvaTdG/content");
}

#[tokio::test]
async fn a_failed_batch_is_read_by_its_error_codes_and_lines() {
    // The Batch object's `errors` (reference: `data` of BatchError with
    // `code`, `line`, `message`, `param`); the token_limit_exceeded entry as
    // openai-python #2084 quotes the API.
    let failed = json!({
        "id": "batch_abc123", "object": "batch", "endpoint": "/v1/chat/completions",
        "errors": {"object": "list", "data": [
            {"code": "token_limit_exceeded", "line": null, "param": null,
             "message": "Enqueued token limit reached for gpt-4o-mini in organization org-snq6hvcTYRCMyB87hjZjkoFr. Limit: 2,000,000 enqueued tokens. Please try again once some in_progress batches have been completed."},
            {"code": "invalid_request", "line": 3, "param": "body.model", "message": "The model differs from the batch's."}
        ]},
        "input_file_id": "file-abc123", "completion_window": "24h", "status": "failed",
        "output_file_id": null, "error_file_id": null, "created_at": 1711471533,
        "failed_at": 1711471540, "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": null
    });
    let status = read_status(&failed);
    assert_eq!(status.state, "failed");
    assert_eq!(status.errors.len(), 2);
    assert_eq!(
        (status.errors[0].code.as_str(), status.errors[0].line),
        ("token_limit_exceeded", None)
    );
    assert_eq!(announced_limit(&status.errors[0].message), Some(2_000_000));
    assert_eq!(
        (status.errors[1].code.as_str(), status.errors[1].line),
        ("invalid_request", Some(3))
    );
}

#[tokio::test]
async fn a_lost_create_is_found_by_paging_through_the_list() {
    // Batch reference, "List batch": `data`, `first_id`, `last_id`,
    // `has_more`; the next page is asked with `after` = the last id
    // (openai-python `SyncCursorPage`). The example's batches are given
    // today's `created_at` so that the look-up reads past the first page.
    let now = crate::clock::now_ms() / 1000;
    let page = |id: &str, key: &str| json!({"id": id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": null, "input_file_id": "file-other", "completion_window": "24h", "status": "in_progress", "created_at": now, "request_counts": {"total": 2, "completed": 0, "failed": 0}, "metadata": {"sluice": key}});
    let first = json!({"object": "list", "data": [page("batch_abc123", "someone-else"), page("batch_abc456", "run-1:p:2")], "first_id": "batch_abc123", "last_id": "batch_abc456", "has_more": true});
    let second = json!({"object": "list", "data": [page("batch_ours", "run-1:p:1")], "first_id": "batch_ours", "last_id": "batch_ours", "has_more": false});
    let server = Reference::start(vec![
        (
            "GET",
            "/v1/batches?limit=100&after=batch_abc456".into(),
            second.to_string(),
        ),
        ("GET", "/v1/batches?limit=100".into(), first.to_string()),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let remote = remote(dir.path(), &server.base, "openai");
    let mut rec = record("/v1/chat/completions", 2);
    rec.create_sent_at = Some(crate::clock::now_ms());
    let found = remote.find(&rec, &HashSet::new()).await.unwrap().unwrap();
    assert_eq!(found["id"], "batch_ours");
    let targets: Vec<String> = server.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        [
            "/v1/batches?limit=100",
            "/v1/batches?limit=100&after=batch_abc456"
        ]
    );
}
