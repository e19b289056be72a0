//! The generic routes: stages, the CMS, the webhook receiver and the journal.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::Method;
use serde_json::{json, Value};
use sluice_mock::MockConfig;

use crate::Mock;

fn form(boundary: &str, file: &[u8]) -> Bytes {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"lang\"\r\n\r\nen\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
         Content-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Bytes::from(body)
}

async fn upload(mock: &Mock, path: &str, boundary: &str, file: &[u8]) -> crate::Reply {
    let headers = [(
        "content-type",
        format!("multipart/form-data; boundary={boundary}"),
    )];
    mock.send_with(Method::POST, path, &headers, form(boundary, file))
        .await
        .expect(path)
}

#[tokio::test]
async fn stages_read_uploads_and_json_and_answer_media_files() {
    let mock = Mock::start(MockConfig {
        max_upload_bytes: Some(100),
        ..MockConfig::default()
    })
    .await;
    let res = upload(&mock, "/stages/upload", "b1", b"RIFF-audio").await;
    assert_eq!(res.status, 200);
    let v = res.json();
    assert_eq!(v["stage"], "upload");
    assert_eq!(v["host"], mock.addr().to_string());
    assert_eq!(
        v["file"],
        json!({"field": "file", "name": "a.wav", "type": "audio/wav", "bytes": 10})
    );
    assert_eq!(v["fields"], json!({"lang": "en"}));
    // The same content under another boundary is the same upload.
    let again = upload(&mock, "/stages/upload", "other", b"RIFF-audio").await;
    assert_eq!(again.json()["id"], v["id"]);
    let big = upload(&mock, "/stages/upload", "b2", &[7u8; 101]).await;
    assert_eq!(big.status, 413, "{:?}", big.body);

    let res = mock.post("/stages/denoise", &json!({"file": "x"})).await;
    assert_eq!(res.json()["input"], json!({"file": "x"}));
    assert!(res.json()["text"].as_str().is_some_and(|t| !t.is_empty()));
    let png = mock
        .post("/stages/scene.png", &json!({"prompt": "sea"}))
        .await;
    assert_eq!(png.header("content-type"), "image/png");
    assert!(png.body.starts_with(b"\x89PNG\r\n\x1a\n"));
    let tail = &png.body[png.body.iter().position(|&b| b == b'\n').unwrap() + 1..];
    let tail = &tail[tail.iter().position(|&b| b == b'\n').unwrap() + 1..];
    let described: Value = serde_json::from_slice(tail).expect("json after the magic");
    assert_eq!(described["stage"], "scene");
    assert_eq!(described["input"]["prompt"], "sea");

    let stats = mock.server.stats();
    assert_eq!(stats.requests, 5);
    assert_eq!((stats.ok, stats.rejected), (4, 1));
    let uploads = &stats.routes["/stages/upload"];
    assert_eq!(uploads.requests, 3);
    assert_eq!((uploads.statuses["200"], uploads.statuses["413"]), (2, 1));
    assert_eq!(
        stats.duplicate_requests, 1,
        "the same upload was accepted twice"
    );
}

#[tokio::test]
async fn reject_rate_refuses_the_same_requests_on_every_host() {
    let cfg = MockConfig {
        reject_rate: 0.3,
        seed: 5,
        ..MockConfig::default()
    };
    let (a, b) = (Mock::start(cfg.clone()).await, Mock::start(cfg).await);
    let mut refused = Vec::new();
    for i in 0..60 {
        let body = json!({"prompt": format!("scene {i}")});
        let (x, y) = (
            a.post("/stages/img.png", &body).await.status,
            b.post("/stages/img.png", &body).await.status,
        );
        assert_eq!(x, y, "request {i}");
        assert_eq!(
            a.post("/stages/img.png", &body).await.status,
            x,
            "retry of {i}"
        );
        if x == 422 {
            refused.push(i);
        }
    }
    assert!((8..=30).contains(&refused.len()), "{refused:?}");
    assert_eq!(a.server.stats().rejected, 2 * refused.len() as u64);
}

#[tokio::test]
async fn the_cms_pages_collections_from_a_directory_and_takes_writes() {
    let dir = tempfile_dir();
    let items: Vec<Value> = (1..=5)
        .map(|i| json!({"id": i, "q": format!("q{i}")}))
        .collect();
    std::fs::write(
        dir.join("prompts.json"),
        json!({ "data": items }).to_string(),
    )
    .unwrap();
    let mock = Mock::start(MockConfig {
        cms_dir: Some(dir.clone()),
        ..MockConfig::default()
    })
    .await;
    let page = mock.get("/items/prompts?limit=2&offset=4").await;
    assert_eq!(page.json(), json!({"data": [{"id": 5, "q": "q5"}]}));
    let put = mock
        .send(
            Method::PUT,
            "/items/transcripts/a",
            r#"{"text":"hi"}"#,
            None,
        )
        .await
        .unwrap();
    assert_eq!(put.json()["data"], json!({"id": "a", "text": "hi"}));
    // A second PUT of the same id replaces it: writing a record is idempotent.
    mock.send(
        Method::PUT,
        "/items/transcripts/a",
        r#"{"text":"hi!"}"#,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        mock.server.items("transcripts"),
        [json!({"id": "a", "text": "hi!"})]
    );
    assert_eq!(mock.get("/items/nothing").await.status, 404);
    let stats = mock.server.stats();
    assert_eq!(stats.requests, 0, "the CMS is not the API");
    assert_eq!(stats.routes["/items/transcripts/a"].statuses["200"], 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-mock-cms-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn hooks_check_signatures_and_the_journal_keeps_what_came() {
    let mock = Mock::start(MockConfig {
        hook_secret: Some(b"whsec".to_vec()),
        journal: 3,
        ..MockConfig::default()
    })
    .await;
    let body = r#"{"event":"item.finished"}"#;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"whsec").unwrap();
    mac.update(format!("1700000000.{body}").as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let signed = [
        ("x-sluice-timestamp", "1700000000".to_owned()),
        ("x-sluice-signature", signature),
        ("authorization", "Bearer secret-token".to_owned()),
    ];
    let ok = mock
        .send_with(Method::POST, "/hooks/audio", &signed, Bytes::from(body))
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let forged = [
        ("x-sluice-timestamp", "1700000001".to_owned()),
        signed[1].clone(),
    ];
    let bad = mock
        .send_with(Method::POST, "/hooks/audio", &forged, Bytes::from(body))
        .await
        .unwrap();
    assert_eq!(bad.status, 401);
    let stats = mock.server.stats();
    assert_eq!(
        (
            stats.hooks.received,
            stats.hooks.verified,
            stats.hooks.refused
        ),
        (2, 1, 1)
    );

    mock.chat("one").await;
    mock.chat("two").await;
    let journal = mock.get("/_mock/requests").await.json();
    let requests = journal["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 3, "the last three");
    assert_eq!(requests[0]["path"], "/hooks/audio");
    assert_eq!(requests[0]["status"], 401);
    assert_eq!(requests[1]["status"], 200);
    assert!(requests[2]["body"].as_str().unwrap().contains("two"));
    let only = mock.get("/_mock/requests?path=/v1/").await.json();
    assert_eq!(only["requests"].as_array().unwrap().len(), 2);
    let first = &mock.server.requests("/hooks/")[0];
    assert_eq!(first.headers["x-sluice-timestamp"], "1700000001");
    let kept = mock.server.requests("");
    assert!(kept.iter().all(|e| e
        .headers
        .get("authorization")
        .is_none_or(|v| v == "<redacted>")));
}
