//! Contract tests: sluice's batch code fed the example responses the
//! providers' references print — transcribed by hand, each citing its page —
//! by a server of the test's own that answers only those (not `sluice mock`,
//! written by the same hands as the client), and the requests sluice sends
//! checked field by field against the documented request schema.

mod anthropic;
mod openai;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::api::Remote;
use super::state::{BatchRecord, SUBMITTING};
use crate::job::lanes::Lanes;

/// A request the reference server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    target: String,
    /// Lower-cased header names with their values.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).expect("a JSON request body")
    }
}

/// Answers `(method, target prefix) → body` (200, JSON unless the body is
/// JSONL), in order of the list; records every request. `{BASE}` in a body
/// becomes the server's own `http://host:port`.
struct Reference {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Reference {
    async fn start(routes: Vec<(&'static str, String, String)>) -> Reference {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Vec<(String, String, String)> = routes
            .into_iter()
            .map(|(m, p, b)| (m.to_string(), p, b.replace("{BASE}", &base)))
            .collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (routes, log) = (Arc::new(routes), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (routes, log) = (routes.clone(), log.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(req) = read_request(&mut socket, &mut buf).await {
                        let answer = routes
                            .iter()
                            .find(|(m, p, _)| {
                                *m == req.method && req.target.starts_with(p.as_str())
                            })
                            .map(|(_, _, b)| b.clone());
                        log.lock().unwrap().push(req);
                        let (status, body) = match answer {
                            Some(b) => ("200 OK", b),
                            None => ("404 Not Found", r#"{"error":{"message":"no such route","type":"invalid_request_error"}}"#.to_string()),
                        };
                        let head = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        if socket.write_all(head.as_bytes()).await.is_err()
                            || socket.write_all(body.as_bytes()).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Reference { base, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// One HTTP/1.1 request with a Content-Length body, or `None` at the end.
async fn read_request(socket: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 65536];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + 4 + length {
        let mut chunk = [0u8; 65536];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end + 4..head_end + 4 + length].to_vec();
    buf.drain(..head_end + 4 + length);
    Some(Seen {
        method,
        target,
        headers,
        body,
    })
}

/// The batch API of a provider at `base` speaking `api`.
fn remote(dir: &std::path::Path, base: &str, api: &str) -> Remote {
    let text = format!(
        "[input]\npath = \"x.jsonl\"\n[providers.p]\nbase_url = \"{base}/v1\"\napi = \"{api}\"\nmode = \"batch\"\nretries = {{ max = 0 }}\n[[steps]]\nname = \"a\"\nkind = \"chat\"\nprovider = \"p\"\nmodel = \"m\"\nmessages = [{{ role = \"user\", content = \"hi\" }}]\n"
    );
    let job = sluice_spec::parse_str(&text, &dir.join("job.toml"), &[]).unwrap();
    let env = minijinja::Value::from(minijinja::value::Serde(json!({"env": {}})));
    let lanes = Lanes::new(&crate::engine::Engine::new(), &job, &env, 0).unwrap();
    Remote::new(lanes.get("p").unwrap())
}

/// A sealed batch's record as the lane makes it.
fn record(path: &str, requests: u64) -> BatchRecord {
    BatchRecord {
        provider: "p".into(),
        api: "openai".into(),
        seq: 1,
        path: path.into(),
        state: SUBMITTING.into(),
        id: None,
        input_file_id: None,
        output_file_id: None,
        error_file_id: None,
        results_url: None,
        requests,
        succeeded: 0,
        errored: 0,
        expired: 0,
        created_at: crate::clock::now_ms(),
        updated_at: crate::clock::now_ms(),
        ended_at: None,
        collected: false,
        error: None,
        key: "run-1:p:1".into(),
        model: Some("gpt-3.5-turbo-0125".into()),
        tokens: 0,
        creates: 0,
        create_sent_at: None,
        adopted: false,
    }
}

/// Every line of the downloaded `files`, parsed by `remote`.
fn parsed(
    remote: &Remote,
    files: &[std::path::PathBuf],
) -> Vec<(String, super::state::LineResult)> {
    files
        .iter()
        .flat_map(|f| {
            std::fs::read(f)
                .unwrap()
                .split(|&b| b == b'\n')
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| remote.parse_line(&l))
        .collect()
}

/// Keys of a JSON object.
fn keys(v: &Json) -> HashSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}
