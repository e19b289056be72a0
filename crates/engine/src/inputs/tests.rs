//! Tests of every input kind, the url kind against a tiny local HTTP server.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use sluice_spec::{InputFormat, InputSource, Template};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

fn client() -> sluice_provider::Client {
    sluice_provider::Client::new(4, None).unwrap()
}

fn env() -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(json!({"env": {"TOKEN": "s3cret"}})))
}

async fn prepare_file(dir: &Path, name: &str, text: &str, format: InputFormat) -> Prepared {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let source = InputSource::File { path, format };
    prepare(&source, &client(), dir, &env()).await.unwrap()
}

fn all(p: &Prepared) -> Vec<Result<RawItem, BadItem>> {
    p.items().unwrap().collect()
}

#[tokio::test]
async fn jsonl_reports_bad_lines_with_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let text = "{\"a\":1}\n\n[1,2]\n{\"a\":\nnull\n{\"b\":\"x\"}\n";
    let p = prepare_file(dir.path(), "in.jsonl", text, InputFormat::Jsonl).await;
    assert_eq!((p.total, p.bad_count), (5, 3));
    assert_eq!(p.bad[0].line, Some(3));
    assert!(
        p.bad[0].message.contains("found an array"),
        "{}",
        p.bad[0].message
    );
    assert_eq!((p.bad[1].position, p.bad[1].line), (2, Some(4)));
    assert!(
        p.bad[1].message.starts_with("invalid JSON"),
        "{}",
        p.bad[1].message
    );
    let canonical = std::fs::canonicalize(dir.path().join("in.jsonl")).unwrap();
    assert_eq!(p.source_key, format!("file:{}", canonical.display()));
    let items = all(&p);
    assert_eq!(items.len(), 5);
    let last = items[4].as_ref().unwrap();
    assert_eq!((last.position, last.line), (4, Some(6)));
    assert_eq!(last.value, json!({"b": "x"}));
}

#[tokio::test]
async fn csv_quoted_commas_and_a_ragged_row() {
    let dir = tempfile::tempdir().unwrap();
    let text = "id,text\n1,\"hello, world\"\n2,a,b\n\n3,\"multi\nline\"\n4,z\n";
    let p = prepare_file(dir.path(), "in.csv", text, InputFormat::Csv).await;
    assert_eq!((p.total, p.bad_count), (4, 1));
    assert_eq!((p.bad[0].position, p.bad[0].line), (1, Some(3)));
    assert!(
        p.bad[0].message.contains("3 fields but the header has 2"),
        "{}",
        p.bad[0].message
    );
    let items = all(&p);
    let first = items[0].as_ref().unwrap();
    assert_eq!(first.value, json!({"id": "1", "text": "hello, world"}));
    assert_eq!(first.line, Some(2));
    let third = items[2].as_ref().unwrap();
    assert_eq!(third.value, json!({"id": "3", "text": "multi\nline"}));
    assert_eq!(items[3].as_ref().unwrap().line, Some(7));
}

#[tokio::test]
async fn csv_header_naming_a_column_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dup.csv");
    std::fs::write(&path, "a,b,a\n1,2,3\n").unwrap();
    let source = InputSource::File {
        path,
        format: InputFormat::Csv,
    };
    let e = prepare(&source, &client(), dir.path(), &env())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("\"a\" twice"), "{e}");
}

#[tokio::test]
async fn json_array_streams_objects_and_flags_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"[{"a":1}, 7, {"a":2}, "x"]"#;
    let p = prepare_file(dir.path(), "in.json", text, InputFormat::Json).await;
    assert_eq!((p.total, p.bad_count), (4, 2));
    assert_eq!(p.bad[0].position, 1);
    assert!(
        p.bad[0].message.contains("is a number"),
        "{}",
        p.bad[0].message
    );
    let items = all(&p);
    assert_eq!(items[2].as_ref().unwrap().value, json!({"a": 2}));
    assert_eq!(items[2].as_ref().unwrap().line, None);
}

#[tokio::test]
async fn json_that_is_not_one_array_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    for (text, wanted) in [
        (r#"{"a":1}"#, "expected a JSON array of objects"),
        ("[{\"a\":1},\n{\"a\":", "line 2 column"),
        ("[] []", "trailing characters"),
    ] {
        let path = dir.path().join("bad.json");
        std::fs::write(&path, text).unwrap();
        let source = InputSource::File {
            path,
            format: InputFormat::Json,
        };
        let e = prepare(&source, &client(), dir.path(), &env())
            .await
            .unwrap_err();
        assert!(e.to_string().contains(wanted), "{text}: {e}");
        assert!(e.to_string().contains("bad.json"), "{e}");
    }
}

#[tokio::test]
async fn a_big_json_array_is_counted_and_can_be_read_in_part() {
    let dir = tempfile::tempdir().unwrap();
    let many: Vec<_> = (0..10_000).map(|i| json!({ "i": i })).collect();
    let text = serde_json::to_string(&many).unwrap();
    let p = prepare_file(dir.path(), "big.json", &text, InputFormat::Json).await;
    assert_eq!(p.total, 10_000);
    let first: Vec<_> = p.items().unwrap().take(3).collect();
    assert_eq!(first[2].as_ref().unwrap().value, json!({"i": 2}));
}

#[tokio::test]
async fn glob_lists_regular_files_sorted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub.wav")).unwrap();
    std::fs::write(dir.path().join("b.wav"), b"12345").unwrap();
    std::fs::write(dir.path().join("a.wav"), b"1").unwrap();
    std::fs::write(dir.path().join("c.txt"), b"").unwrap();
    std::fs::write(dir.path().join(".hidden.wav"), b"").unwrap();
    let pattern = format!("{}/*.wav", dir.path().display());
    let source = InputSource::Glob {
        pattern: pattern.clone(),
    };
    let p = prepare(&source, &client(), dir.path(), &env())
        .await
        .unwrap();
    assert_eq!((p.total, p.bad_count), (2, 0));
    assert_eq!(p.source_key, format!("glob:{pattern}"));
    let items = all(&p);
    let b = &items[1].as_ref().unwrap().value;
    let b_path = dir.path().join("b.wav");
    assert_eq!(
        b,
        &json!({"path": b_path.to_str().unwrap(), "name": "b.wav", "stem": "b", "ext": "wav", "size": 5})
    );
    assert_eq!(items[0].as_ref().unwrap().value["name"], "a.wav");

    let none = InputSource::Glob {
        pattern: format!("{}/*.mp3", dir.path().display()),
    };
    let e = prepare(&none, &client(), dir.path(), &env())
        .await
        .unwrap_err();
    assert!(matches!(e, InputError::NoMatch { .. }), "{e}");
    assert!(e.to_string().contains("matched no files"), "{e}");
}

#[test]
fn stdin_spool_is_named_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"{\"a\":1}\n";
    let (p1, h1) = spool::stdin(&mut &data[..], dir.path(), InputFormat::Jsonl).unwrap();
    let (p2, h2) = spool::stdin(&mut &data[..], dir.path(), InputFormat::Jsonl).unwrap();
    assert_eq!((&p1, h1), (&p2, h2));
    assert!(p1
        .to_str()
        .unwrap()
        .ends_with(&format!("stdin-{h1:016x}.jsonl")));
    assert_eq!(std::fs::read(&p1).unwrap(), data);
    let (p3, _) = spool::stdin(&mut &b"x,y\n"[..], dir.path(), InputFormat::Csv).unwrap();
    assert!(p3.extension().is_some_and(|e| e == "csv"));
    // Only the two spools: no temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// Serves each request with `reply(request head)` on a fresh connection;
/// returns the base URL and every request head received.
async fn server(
    reply: impl Fn(&str) -> (u16, String) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (log, reply) = (log.clone(), reply.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let (status, body) = reply(&head);
                log.lock().unwrap().push(head);
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

fn url_source(url: &str, page_size: Option<u64>) -> InputSource {
    InputSource::Url {
        url: url.to_string(),
        pointer: Some("/data".into()),
        page_size,
        limit_param: "limit".into(),
        offset_param: "offset".into(),
        headers: vec![(
            "Authorization".into(),
            Template::standalone("input.headers.Authorization", "Bearer {{ env.TOKEN }}").unwrap(),
        )],
    }
}

#[tokio::test]
async fn url_pages_until_a_short_page_and_sends_the_header() {
    let (base, seen) = server(|head| {
        if !head.contains("Authorization: Bearer s3cret\r\n") {
            return (401, r#"{"error":{"message":"no token"}}"#.into());
        }
        let offset: u64 = head
            .split("offset=")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(99);
        let items: Vec<_> = (offset..(offset + 2).min(5))
            .map(|i| json!({ "n": i }))
            .collect();
        (200, json!({ "data": items }).to_string())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{base}/items?kind=a");
    let p = prepare(&url_source(&url, Some(2)), &client(), dir.path(), &env())
        .await
        .unwrap();
    assert_eq!((p.total, p.bad_count), (5, 0));
    assert_eq!(p.source_key, format!("url:{url}"));
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert!(
        heads[0].starts_with("GET /items?kind=a&limit=2&offset=0 "),
        "{}",
        heads[0]
    );
    assert!(
        heads[2].starts_with("GET /items?kind=a&limit=2&offset=4 "),
        "{}",
        heads[2]
    );
    let values: Vec<_> = all(&p).into_iter().map(|i| i.unwrap()).collect();
    assert_eq!(values[4].value, json!({"n": 4}));
    assert_eq!((values[4].position, values[4].line), (4, None));
}

#[tokio::test]
async fn url_retries_a_server_error_then_fails_on_a_client_error() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let (base, _) = server(move |head| {
        if head.starts_with("GET /denied") {
            return (403, r#"{"error":{"message":"forbidden"}}"#.into());
        }
        match counter.fetch_add(1, Ordering::SeqCst) {
            0 => (500, "oops".into()),
            _ => (200, r#"{"data":[{"a":1},"x"]}"#.into()),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = prepare(
        &url_source(&format!("{base}/list"), None),
        &client(),
        dir.path(),
        &env(),
    )
    .await
    .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!((p.total, p.bad_count), (2, 1));
    assert_eq!((p.bad[0].position, p.bad[0].line), (1, None));

    let denied = format!("{base}/denied");
    let e = prepare(&url_source(&denied, None), &client(), dir.path(), &env())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&denied) && text.contains("HTTP 403: forbidden"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}
