//! Anthropic: Message Batches as the references print them.
//!
//! Pages transcribed:
//! - Batch processing guide, docs.claude.com/en/docs/build-with-claude/batch-processing
//!   (create request, the `in_progress` answer, the results example, listing
//!   with `after_id` = `last_id` while `has_more`; "If your result has an
//!   error, its `result.error` will be set to the standard error shape").
//! - API reference: Retrieve a Message Batch (docs.claude.com/en/api/retrieving-message-batches),
//!   Retrieve Message Batch results (…/retrieving-message-batch-results),
//!   Create a Message Batch (`custom_id` matching `^[a-zA-Z0-9_-]{1,64}$`).
//! - Errors, docs.claude.com/en/api/errors (the error shape).

use std::collections::HashSet;

use serde_json::{json, Value as Json};

use super::{keys, parsed, record, remote, Reference};
use crate::job::batch::anthropic::read_status;
use crate::job::batch::state::LineResult;

/// Batch processing guide: "When a batch is first created, the response
/// will have a processing status of `in_progress`."
const CREATED: &str = r#"{
  "id": "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d",
  "type": "message_batch",
  "processing_status": "in_progress",
  "request_counts": {
    "processing": 2,
    "succeeded": 0,
    "errored": 0,
    "canceled": 0,
    "expired": 0
  },
  "ended_at": null,
  "created_at": "2024-09-24T18:37:24.100435Z",
  "expires_at": "2024-09-25T18:37:24.100435Z",
  "cancel_initiated_at": null,
  "results_url": null
}"#;

/// Retrieve a Message Batch, "Response 200" example.
const RETRIEVED: &str = r#"{
  "id": "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
  "archived_at": "2024-08-20T18:37:24.100435Z",
  "cancel_initiated_at": "2024-08-20T18:37:24.100435Z",
  "created_at": "2024-08-20T18:37:24.100435Z",
  "ended_at": "2024-08-20T18:37:24.100435Z",
  "expires_at": "2024-08-20T18:37:24.100435Z",
  "processing_status": "in_progress",
  "request_counts": {
    "canceled": 10,
    "errored": 30,
    "expired": 10,
    "processing": 100,
    "succeeded": 50
  },
  "results_url": "https://api.anthropic.com/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF/results",
  "type": "message_batch"
}"#;

/// Retrieve Message Batch results, "200" example; then an `errored` line
/// whose `error` is the error shape of the Errors page.
const RESULTS: &str = r#"{"custom_id":"my-second-request","result":{"type":"succeeded","message":{"id":"msg_014VwiXbi91y3JMjcpyGBHX5","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hello again! It's nice to see you. How can I assist you today? Is there anything specific you'd like to chat about or any questions you have?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":36}}}}
{"custom_id":"my-first-request","result":{"type":"succeeded","message":{"id":"msg_01FqfsLoHwgeFbguDgpz48m7","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hello! How can I assist you today? Feel free to ask me any questions or let me know if there's anything you'd like to chat about."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":34}}}}
{"custom_id":"my-third-request","result":{"type":"errored","error":{"type":"error","error":{"type":"not_found_error","message":"The requested resource could not be found."},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}}}
{"custom_id":"my-fourth-request","result":{"type":"expired"}}
"#;

#[tokio::test]
async fn create_poll_and_results_follow_the_reference() {
    // The batch once ended: the Retrieve example with `processing_status`
    // "ended" and a `results_url` on this server.
    let ended = RETRIEVED
        .replace("\"in_progress\"", "\"ended\"")
        .replace("https://api.anthropic.com", "{BASE}");
    let server = Reference::start(vec![
        ("POST", "/v1/messages/batches".into(), CREATED.into()),
        (
            "GET",
            "/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF/results".into(),
            RESULTS.into(),
        ),
        (
            "GET",
            "/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF".into(),
            ended,
        ),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let remote = remote(dir.path(), &server.base, "anthropic");
    // The guide's create request.
    let requests = [
        (
            "my-first-request",
            json!({"model": "claude-opus-4-6", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hello, world"}]}),
        ),
        (
            "my-second-request",
            json!({"model": "claude-opus-4-6", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hi again, friend"}]}),
        ),
    ];
    let lines: Vec<String> = requests
        .iter()
        .map(|(id, body)| remote.line(id, "/v1/messages", body))
        .collect();
    let mut rec = record("/v1/messages", 2);
    remote
        .submit(&mut rec, &lines, &HashSet::new(), &|_| {})
        .await
        .unwrap();
    assert_eq!(rec.id.as_deref(), Some("msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d"));
    assert_eq!(rec.state, "in_progress");

    // The documented counts: canceled and expired both never ran.
    let documented = read_status(&serde_json::from_str(RETRIEVED).unwrap());
    assert_eq!(
        (documented.succeeded, documented.errored, documented.expired),
        (50, 30, 20)
    );
    let status = remote
        .status("msgbatch_013Zva2CMHLNnXjNJJKqJ2EF")
        .await
        .unwrap();
    assert_eq!(status.state, "ended");
    rec.id = Some("msgbatch_013Zva2CMHLNnXjNJJKqJ2EF".into());
    rec.results_url = status.results_url;
    let files = remote.results(&rec, dir.path()).await.unwrap();
    let results = parsed(&remote, &files);
    assert_eq!(results.len(), 4);
    let by_id = |id: &str| &results.iter().find(|(i, _)| i == id).unwrap().1;
    match by_id("my-second-request") {
        LineResult::Ok { body, .. } => {
            let message: Json = serde_json::from_slice(body).unwrap();
            assert_eq!(message["usage"]["output_tokens"], 36);
            assert_eq!(message["stop_reason"], "end_turn");
        }
        other => panic!("{other:?}"),
    }
    match by_id("my-third-request") {
        LineResult::Err {
            retryable, error, ..
        } => {
            assert!(!retryable);
            assert_eq!(error.code, "request_error");
            assert!(
                error
                    .message
                    .contains("not_found_error: The requested resource could not be found."),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        by_id("my-fourth-request"),
        LineResult::Err {
            retryable: true,
            ..
        }
    ));

    // The create request, field by field.
    let seen = server.seen();
    let create = &seen[0];
    assert_eq!(
        (create.method.as_str(), create.target.as_str()),
        ("POST", "/v1/messages/batches")
    );
    assert_eq!(create.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(create.header("content-type"), Some("application/json"));
    let body = create.json();
    assert_eq!(keys(&body), HashSet::from(["requests".to_string()]));
    let sent = body["requests"].as_array().unwrap();
    assert!((1..=100_000).contains(&sent.len()));
    for (element, (id, params)) in sent.iter().zip(requests) {
        assert_eq!(
            keys(element),
            HashSet::from(["custom_id".to_string(), "params".to_string()])
        );
        let custom_id = element["custom_id"].as_str().unwrap();
        assert_eq!(custom_id, id);
        assert!(
            (1..=64).contains(&custom_id.len())
                && custom_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
        assert_eq!(element["params"], params);
    }
    // Results are fetched from `results_url`, as the reference asks.
    assert_eq!(
        seen.last().unwrap().target,
        "/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF/results"
    );
}

#[tokio::test]
async fn a_lost_create_is_found_by_size_and_time_paging_with_after_id() {
    // List Message Batches: `data`, `has_more`, `first_id`, `last_id`; the
    // guide pages with `after_id` = `last_id`. Times are made recent.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stamp = rfc3339(now);
    let batch = |id: &str, processing: u64| json!({"id": id, "type": "message_batch", "processing_status": "in_progress", "request_counts": {"processing": processing, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}, "ended_at": null, "created_at": stamp, "expires_at": stamp, "cancel_initiated_at": null, "results_url": null});
    let first = json!({"data": [batch("msgbatch_other", 7), batch("msgbatch_mine_already", 2)], "has_more": true, "first_id": "msgbatch_other", "last_id": "msgbatch_mine_already"});
    let second = json!({"data": [batch("msgbatch_lost", 2)], "has_more": false, "first_id": "msgbatch_lost", "last_id": "msgbatch_lost"});
    let server = Reference::start(vec![
        (
            "GET",
            "/v1/messages/batches?limit=100&after_id=msgbatch_mine_already".into(),
            second.to_string(),
        ),
        (
            "GET",
            "/v1/messages/batches?limit=100".into(),
            first.to_string(),
        ),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let remote = remote(dir.path(), &server.base, "anthropic");
    let mut rec = record("/v1/messages", 2);
    rec.create_sent_at = Some(crate::clock::now_ms());
    // `msgbatch_mine_already` is another batch of this run: never taken.
    let known = HashSet::from(["msgbatch_mine_already".to_string()]);
    let found = remote.find(&rec, &known).await.unwrap().unwrap();
    assert_eq!(found["id"], "msgbatch_lost");
}

/// Unix seconds as RFC 3339 (UTC).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
