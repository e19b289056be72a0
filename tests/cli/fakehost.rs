//! A small HTTP server for job tests, standing in for a GPU host or a CMS:
//! thread per connection, keep-alive, Content-Length bodies.
//!
//! Routes: `POST /upload` (multipart; answers `{"bytes","filename"}`),
//! `POST /stage/NAME` (JSON in, `{"stage": NAME, "input": body}` out),
//! `GET /image/N` (PNG bytes), `GET /items?limit=&offset=` (a CMS page of
//! `{"data":[...]}`), and every request is counted by path.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The running host.
pub(crate) struct FakeHost {
    pub(crate) port: u16,
    pub(crate) seen: Arc<Seen>,
    /// Webhook deliveries to `POST /hook`: (lower-cased headers, body).
    pub(crate) hooks: Arc<Hooks>,
}

/// Webhook deliveries seen.
pub(crate) type Hooks = Mutex<Vec<(HashMap<String, String>, Vec<u8>)>>;

/// What the host does besides its routes.
#[derive(Clone, Default)]
pub(crate) struct Behaviour {
    /// Answer 500 to every Nth `/stage` request (0 = never).
    pub(crate) fail_every: usize,
    /// Items served by `/items`.
    pub(crate) items: Vec<serde_json::Value>,
    /// Bearer token `/items` requires.
    pub(crate) token: Option<String>,
    /// Answer 503 to `/stage` for this long after its first request (an outage
    /// that ends).
    pub(crate) outage: Option<std::time::Duration>,
    /// When the first `/stage` request came.
    pub(crate) first_stage: Arc<Mutex<Option<std::time::Instant>>>,
}

impl FakeHost {
    pub(crate) fn start(behaviour: Behaviour) -> FakeHost {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let counter = Arc::new(AtomicUsize::new(0));
        let (s, h, b) = (seen.clone(), hooks.clone(), Arc::new(behaviour));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, h, b, c) = (s.clone(), h.clone(), b.clone(), counter.clone());
                std::thread::spawn(move || serve(stream, &s, &h, &b, &c));
            }
        });
        FakeHost { port, seen, hooks }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Requests seen whose path starts with `prefix`.
    pub(crate) fn count(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p, _)| p.starts_with(prefix))
            .count()
    }
}

/// Requests seen: (method, path, body).
type Seen = Mutex<Vec<(String, String, Vec<u8>)>>;

fn serve(
    stream: TcpStream,
    seen: &Seen,
    hooks: &Hooks,
    behaviour: &Behaviour,
    counter: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let path = target.split('?').next().unwrap_or("").to_string();
        seen.lock()
            .unwrap()
            .push((method.clone(), path.clone(), body.clone()));
        if path == "/hook" {
            hooks.lock().unwrap().push((headers.clone(), body.clone()));
        }
        let (status, content_type, payload) =
            route(&method, &target, &headers, &body, behaviour, counter);
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        );
        if writer
            .write_all(head.as_bytes())
            .and_then(|_| writer.write_all(&payload))
            .is_err()
        {
            return;
        }
    }
}

fn json(status: &str, v: serde_json::Value) -> (String, &'static str, Vec<u8>) {
    (
        status.to_string(),
        "application/json",
        v.to_string().into_bytes(),
    )
}

fn route(
    method: &str,
    target: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
    behaviour: &Behaviour,
    counter: &AtomicUsize,
) -> (String, &'static str, Vec<u8>) {
    let path = target.split('?').next().unwrap_or("");
    let query: HashMap<&str, &str> = target
        .split_once('?')
        .map(|(_, q)| q.split('&').filter_map(|kv| kv.split_once('=')).collect())
        .unwrap_or_default();
    if method == "POST" && path == "/upload" {
        let ct = headers.get("content-type").cloned().unwrap_or_default();
        let boundary = ct.split("boundary=").nth(1).unwrap_or("").to_string();
        let text = String::from_utf8_lossy(body);
        let filename = text
            .split("filename=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string();
        // The file part: between the blank line after its headers and the next boundary.
        let file_bytes = text
            .split(&format!("--{boundary}"))
            .find(|p| p.contains("filename="))
            .and_then(|p| p.split_once("\r\n\r\n"))
            .map(|(_, rest)| rest.trim_end_matches("\r\n").len())
            .unwrap_or(0);
        return json(
            "200 OK",
            serde_json::json!({"bytes": file_bytes, "filename": filename}),
        );
    }
    if method == "POST" && path.starts_with("/stage/") {
        if let Some(outage) = behaviour.outage {
            let first = *behaviour
                .first_stage
                .lock()
                .unwrap()
                .get_or_insert_with(std::time::Instant::now);
            if first.elapsed() < outage {
                return json(
                    "503 Service Unavailable",
                    serde_json::json!({"error": "down"}),
                );
            }
        }
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if behaviour.fail_every > 0 && n.is_multiple_of(behaviour.fail_every) {
            return json(
                "500 Internal Server Error",
                serde_json::json!({"error": "injected"}),
            );
        }
        let input: serde_json::Value =
            serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
        return json(
            "200 OK",
            serde_json::json!({"stage": &path[7..], "input": input}),
        );
    }
    if method == "GET" && path.starts_with("/image/") {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&path.as_bytes()[7..]);
        return ("200 OK".into(), "image/png", png);
    }
    if method == "GET" && path == "/items" {
        if let Some(token) = &behaviour.token {
            if headers.get("authorization") != Some(&format!("Bearer {token}")) {
                return json("401 Unauthorized", serde_json::json!({"error": "no token"}));
            }
        }
        let limit: usize = query
            .get("limit")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let offset: usize = query
            .get("offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let page: Vec<_> = behaviour
            .items
            .iter()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect();
        return json("200 OK", serde_json::json!({"data": page}));
    }
    if method == "POST" && path == "/hook" {
        return json("200 OK", serde_json::json!({"ok": true}));
    }
    json(
        "404 Not Found",
        serde_json::json!({"error": format!("no route {method} {path}")}),
    )
}
