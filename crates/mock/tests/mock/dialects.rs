//! Anthropic's Messages API, streamed answers and both batch APIs: shapes,
//! headers, the same reply for the same conversation on every path, and the
//! batch lifecycle with errors and expiry.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};
use sluice_mock::{BatchStats, MockConfig};

use crate::{Mock, Reply};

impl Mock {
    /// Sends with these headers; panics on a connection-level failure.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Reply {
        let headers: Vec<(&str, String)> =
            headers.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.send_with(method, path, &headers, body)
            .await
            .expect(path)
    }

    async fn anthropic(&self, path: &str, body: &Value) -> Reply {
        let headers = [
            ("content-type", "application/json"),
            ("x-api-key", "k"),
            ("anthropic-version", "2023-06-01"),
        ];
        self.exchange(Method::POST, path, Bytes::from(body.to_string()), &headers)
            .await
    }

    async fn anthropic_get(&self, path: &str) -> Reply {
        let headers = [("x-api-key", "k"), ("anthropic-version", "2023-06-01")];
        self.exchange(Method::GET, path, Bytes::new(), &headers)
            .await
    }

    async fn batch_stats(&self) -> BatchStats {
        serde_json::from_value(self.get("/_mock/batches").await.json()).unwrap()
    }
}

fn messages_body() -> Value {
    json!({"model": "claude-x", "max_tokens": 64, "system": "Be brief.",
           "messages": [{"role": "user", "content": "What is a sluice?"}]})
}

fn chat_equivalent() -> Value {
    json!({"model": "claude-x", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a sluice?"}]})
}

#[tokio::test]
async fn anthropic_messages_answer_in_their_shape_with_the_chat_reply() {
    let mock = Mock::start(MockConfig {
        api_key: Some("k".into()),
        ..MockConfig::default()
    })
    .await;
    let res = mock.anthropic("/v1/messages", &messages_body()).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let m = res.json();
    assert_eq!(
        (m["type"].as_str(), m["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert_eq!(m["stop_reason"], "end_turn");
    let chat = mock
        .send(
            Method::POST,
            "/v1/chat/completions",
            &chat_equivalent().to_string(),
            Some("k"),
        )
        .await
        .unwrap()
        .json();
    // The same conversation, the same reply and usage, whichever API carried it.
    assert_eq!(
        m["content"][0]["text"],
        chat["choices"][0]["message"]["content"]
    );
    assert_eq!(m["usage"]["input_tokens"], chat["usage"]["prompt_tokens"]);
    assert_eq!(
        m["usage"]["output_tokens"],
        chat["usage"]["completion_tokens"]
    );

    let no_version = mock
        .exchange(
            Method::POST,
            "/v1/messages",
            Bytes::from(messages_body().to_string()),
            &[("x-api-key", "k")],
        )
        .await;
    assert_eq!(no_version.status, 400);
    assert!(no_version.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("anthropic-version"));
    let bearer = mock
        .send(
            Method::POST,
            "/v1/messages",
            &messages_body().to_string(),
            Some("k"),
        )
        .await
        .unwrap();
    assert_eq!(bearer.status, 401, "Anthropic takes the key in x-api-key");
    let mut system_role = chat_equivalent();
    system_role["max_tokens"] = json!(5);
    let refused = mock.anthropic("/v1/messages", &system_role).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"]["type"], "invalid_request_error");
    let mut no_max = messages_body();
    no_max.as_object_mut().unwrap().remove("max_tokens");
    assert_eq!(mock.anthropic("/v1/messages", &no_max).await.status, 400);
}

#[tokio::test]
async fn anthropic_limits_and_overloads_look_like_anthropic() {
    let mock = Mock::start(MockConfig {
        rpm: Some(60),
        ..MockConfig::default()
    })
    .await;
    let first = mock.anthropic("/v1/messages", &messages_body()).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("anthropic-ratelimit-requests-limit"), "60");
    assert!(
        first
            .header("anthropic-ratelimit-requests-reset")
            .ends_with('Z'),
        "{first:?}"
    );
    let second = mock.anthropic("/v1/messages", &messages_body()).await;
    assert_eq!(second.status, 429);
    assert_eq!(second.json()["error"]["type"], "rate_limit_error");
    assert!(second.number("retry-after") >= 1);
    let failing = Mock::start(MockConfig {
        fail_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let res = failing.anthropic("/v1/messages", &messages_body()).await;
    assert_eq!(res.status, 529);
    assert_eq!(res.json()["error"]["type"], "overloaded_error");
}

/// The `data:` payloads of an event stream.
fn events(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn streamed_answers_are_events_paced_apart_with_the_same_text() {
    let mock = Mock::start(MockConfig {
        stream_interval_ms: 10,
        ..MockConfig::default()
    })
    .await;
    let whole = mock
        .post("/v1/chat/completions", &chat_equivalent())
        .await
        .json();
    let mut body = chat_equivalent();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let started = Instant::now();
    let res = mock.post("/v1/chat/completions", &body).await;
    let took = started.elapsed();
    assert_eq!(res.header("content-type"), "text/event-stream");
    let data = events(&res.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(chunks.last().unwrap()["usage"], whole["usage"]);
    // One event per 10 ms: the stream took at least that long per gap.
    assert!(
        took >= Duration::from_millis(10 * (data.len() as u64 - 1)),
        "{took:?}"
    );

    let mut m = messages_body();
    m["stream"] = json!(true);
    let res = mock.anthropic("/v1/messages", &m).await;
    let data = events(&res.body);
    let parsed: Vec<Value> = data
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(parsed[0]["type"], "message_start");
    assert_eq!(parsed.last().unwrap()["type"], "message_stop");
    let text: String = parsed
        .iter()
        .filter_map(|e| e.pointer("/delta/text").and_then(Value::as_str))
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
}

fn multipart(file: &str) -> (String, Bytes) {
    let body = format!(
        "--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--B\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{file}\r\n--B--\r\n"
    );
    ("multipart/form-data; boundary=B".into(), Bytes::from(body))
}

fn chat_line(id: &str, q: &str) -> String {
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "m", "messages": [{"role": "user", "content": q}]}})
    .to_string()
}

async fn wait_for(mock: &Mock, path: &str, anthropic: bool, done: &[&str]) -> Value {
    for _ in 0..200 {
        let b = if anthropic {
            mock.anthropic_get(path).await
        } else {
            mock.get(path).await
        }
        .json();
        let status = b["status"]
            .as_str()
            .or(b["processing_status"].as_str())
            .unwrap_or("");
        if done.contains(&status) {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never ended");
}

#[tokio::test]
async fn openai_batches_run_their_file_and_report_errors_and_expiry() {
    let mock = Mock::start(MockConfig {
        batch_delay_ms: 100,
        batch_expire_rate: 0.3,
        batch_error_rate: 0.2,
        seed: 3,
        ..MockConfig::default()
    })
    .await;
    let lines: Vec<String> = (0..20)
        .map(|i| chat_line(&format!("r{i}"), &format!("q{i}")))
        .collect();
    let (ct, body) = multipart(&lines.join("\n"));
    let file = mock
        .exchange(Method::POST, "/v1/files", body, &[("content-type", &ct)])
        .await
        .json();
    let file_id = file["id"].as_str().unwrap().to_string();
    let create = json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                        "completion_window": "24h", "metadata": {"sluice": "k1"}});
    let batch = mock.post("/v1/batches", &create).await.json();
    assert_eq!(batch["status"], "validating");
    let id = batch["id"].as_str().unwrap().to_string();
    let listed = mock.get("/v1/batches?limit=5").await.json();
    assert_eq!(listed["data"][0]["metadata"]["sluice"], "k1");
    let done = wait_for(
        &mock,
        &format!("/v1/batches/{id}"),
        false,
        &["completed", "expired"],
    )
    .await;
    assert_eq!(done["status"], "expired", "some requests expired: {done}");
    let counts = &done["request_counts"];
    assert_eq!(counts["total"], 20);
    let out = mock
        .get(&format!(
            "/v1/files/{}/content",
            done["output_file_id"].as_str().unwrap()
        ))
        .await;
    let errors = mock
        .get(&format!(
            "/v1/files/{}/content",
            done["error_file_id"].as_str().unwrap()
        ))
        .await;
    let parse = |b: &Bytes| -> Vec<Value> {
        b.split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    };
    let (ok, failed) = (parse(&out.body), parse(&errors.body));
    assert_eq!(ok.len() + failed.len(), 20);
    assert_eq!(ok.len() as u64, counts["completed"].as_u64().unwrap());
    let expired = failed
        .iter()
        .filter(|l| l["error"]["code"] == "batch_expired")
        .count();
    let errored = failed
        .iter()
        .filter(|l| l["response"]["status_code"] == 500)
        .count();
    assert!(expired > 0 && errored > 0, "{failed:?}");
    // A batched answer is the live answer.
    let first = &ok[0];
    let n: usize = first["custom_id"].as_str().unwrap()[1..].parse().unwrap();
    let live_body =
        json!({"model": "m", "messages": [{"role": "user", "content": format!("q{n}")}]});
    let live = mock.post("/v1/chat/completions", &live_body).await.json();
    let batched = &first["response"]["body"];
    assert_eq!(
        batched["choices"][0]["message"],
        live["choices"][0]["message"]
    );
    assert_eq!(batched["usage"], live["usage"]);
    let stats = mock.batch_stats().await;
    assert_eq!(
        (stats.files_uploaded, stats.batches_created, stats.requests),
        (1, 1, 20)
    );
    assert_eq!(stats.expired as usize, expired);
    assert_eq!(stats.repeated, 0);
}

#[tokio::test]
async fn an_invalid_file_makes_a_failed_batch() {
    let mock = Mock::start(MockConfig::default()).await;
    let (ct, body) = multipart(&[chat_line("same", "a"), chat_line("same", "b")].join("\n"));
    let file = mock
        .exchange(Method::POST, "/v1/files", body, &[("content-type", &ct)])
        .await
        .json();
    let create = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let id = mock.post("/v1/batches", &create).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = mock.get(&format!("/v1/batches/{id}")).await.json();
    assert_eq!(b["status"], "failed");
    // The reference's BatchError: `code`, `line` (of the input file), `message`, `param`.
    let error = &b["errors"]["data"][0];
    assert_eq!(
        (&error["code"], &error["line"]),
        (&json!("duplicate_custom_id"), &json!(2)),
        "{b}"
    );
    assert_eq!(error["param"], "custom_id");
    assert!(
        error["message"].as_str().unwrap().contains("repeated"),
        "{b}"
    );
    // Listed newest first, paged with `after`.
    let again = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let newer = mock.post("/v1/batches", &again).await.json()["id"].clone();
    let page = mock.get("/v1/batches?limit=1").await.json();
    assert_eq!(
        (&page["data"][0]["id"], &page["has_more"], &page["last_id"]),
        (&newer, &json!(true), &newer)
    );
    let next = mock
        .get(&format!(
            "/v1/batches?limit=1&after={}",
            newer.as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(
        (&next["data"][0]["id"], &next["has_more"]),
        (&json!(id), &json!(false))
    );
    let wrong_window = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "1h"});
    assert_eq!(mock.post("/v1/batches", &wrong_window).await.status, 400);
}

#[tokio::test]
async fn anthropic_message_batches_end_with_results_and_count_resubmissions() {
    let mock = Mock::start(MockConfig {
        batch_delay_ms: 50,
        batch_expire_rate: 0.5,
        seed: 1,
        ..MockConfig::default()
    })
    .await;
    let requests: Vec<Value> = (0..10)
        .map(|i| {
            json!({"custom_id": format!("c-{i}"), "params": {"model": "claude-x", "max_tokens": 16,
                        "messages": [{"role": "user", "content": format!("q{i}")}]}})
        })
        .collect();
    let created = mock
        .anthropic("/v1/messages/batches", &json!({"requests": requests}))
        .await
        .json();
    assert_eq!(created["processing_status"], "in_progress");
    let id = created["id"].as_str().unwrap().to_string();
    let early = mock
        .anthropic_get(&format!("/v1/messages/batches/{id}/results"))
        .await;
    assert_eq!(early.status, 400, "no results before the batch ends");
    let ended = wait_for(
        &mock,
        &format!("/v1/messages/batches/{id}"),
        true,
        &["ended"],
    )
    .await;
    let url = ended["results_url"].as_str().unwrap();
    let path = &url[url.find("/v1/").unwrap()..];
    let results = mock.anthropic_get(path).await;
    let lines: Vec<Value> = results
        .body
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    let expired: Vec<&Value> = lines
        .iter()
        .filter(|l| l["result"]["type"] == "expired")
        .collect();
    assert_eq!(
        expired.len() as u64,
        ended["request_counts"]["expired"].as_u64().unwrap()
    );
    assert!(!expired.is_empty());
    let ok = lines
        .iter()
        .find(|l| l["result"]["type"] == "succeeded")
        .unwrap();
    let n: usize = ok["custom_id"].as_str().unwrap()[2..].parse().unwrap();
    let live_body = json!({"model": "claude-x", "max_tokens": 16, "messages": [{"role": "user", "content": format!("q{n}")}]});
    let live = mock.anthropic("/v1/messages", &live_body).await.json();
    assert_eq!(ok["result"]["message"]["content"], live["content"]);
    // Sending one answered and one expired request again: both repeat, one was paid twice.
    let again = vec![
        json!({"custom_id": ok["custom_id"], "params": live_body}),
        json!({"custom_id": expired[0]["custom_id"], "params": live_body}),
    ];
    mock.anthropic("/v1/messages/batches", &json!({"requests": again}))
        .await;
    let stats = mock.batch_stats().await;
    assert_eq!((stats.batches_created, stats.requests), (2, 12));
    assert_eq!((stats.repeated, stats.answered_twice), (2, 1));
    let bad = json!({"requests": [{"custom_id": "has space", "params": live_body}]});
    let refused = mock.anthropic("/v1/messages/batches", &bad).await;
    assert_eq!(refused.status, 400);
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("custom_id"));
}
