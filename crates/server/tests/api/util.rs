//! Helpers: a mock provider, a server over a scratch store, requests to the
//! router without a socket, and a raw HTTP/SSE client for a real socket.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sluice_mock::{MockConfig, MockServer};
use sluice_server::{app, AppState, ServerConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tower::ServiceExt;

/// A server over a scratch store, and a mock provider.
pub(crate) struct Setup {
    pub(crate) state: AppState,
    pub(crate) mock: MockServer,
    pub(crate) dir: tempfile::TempDir,
    /// The test's time limit (`SLUICE_TEST_TIMEOUT_SECS`).
    _watchdog: crate::watchdog::Watchdog,
}

impl Setup {
    pub(crate) async fn new(mock: MockConfig) -> Setup {
        Setup::with(mock, |_| {}).await
    }

    pub(crate) async fn with(mock: MockConfig, tune: impl FnOnce(&mut ServerConfig)) -> Setup {
        let watchdog = crate::watchdog::Watchdog::start();
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().join("store.db").into());
        config.workdir = dir.path().to_path_buf();
        config.tick_ms = 100;
        // The jobs of these tests read files from their scratch directory.
        config.jobs.allow_dir(dir.path()).unwrap();
        tune(&mut config);
        let mock = MockServer::start(0, mock).await.unwrap();
        Setup {
            state: AppState::new(config),
            mock,
            dir,
            _watchdog: watchdog,
        }
    }

    /// The mock's base URL.
    pub(crate) fn base(&self) -> String {
        format!("http://{}/v1", self.mock.addr())
    }

    /// A JSON submission of `n` items, one chat step on the mock.
    pub(crate) fn job(&self, n: usize, provider: Value) -> Value {
        let mut provider = provider;
        provider["base_url"] = json!(self.base());
        json!({
            "name": "t",
            "items": (0..n).map(|i| json!({"id": format!("i{i:04}"), "q": format!("question {i}")})).collect::<Vec<_>>(),
            "id": "{{ item.id }}",
            "provider": provider,
            "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "{{ item.q }}"}]},
        })
    }

    /// Sends one request to the router.
    pub(crate) async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<(&str, String)>,
    ) -> Reply {
        self.call_with(method, uri, body, &[]).await
    }

    pub(crate) async fn call_with(
        &self,
        method: &str,
        uri: &str,
        body: Option<(&str, String)>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = match body {
            Some((content_type, text)) => request
                .header("content-type", content_type)
                .body(Body::from(text)),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// Submits `job` (JSON) without waiting; returns the run id.
    pub(crate) async fn submit(&self, job: &Value) -> String {
        let r = self
            .call(
                "POST",
                "/v1/runs",
                Some(("application/json", job.to_string())),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        r.json()["id"].as_str().unwrap().to_owned()
    }

    /// Polls the run until `done(view)` holds (hang guard: 60 s).
    pub(crate) async fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let view = self
                .call("GET", &format!("/v1/runs/{id}"), None)
                .await
                .json();
            if done(&view) {
                return view;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run never got there: {view}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Serves the router on 127.0.0.1 (for streams over a real socket).
    pub(crate) async fn listen(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app(self.state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        addr
    }
}

/// A response.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) text: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Asserts the standard error shape and returns its code.
    pub(crate) fn error_code(&self) -> String {
        let v = self.json();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        v["error"]["code"].as_str().unwrap().to_owned()
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub(crate) struct Sse {
    pub(crate) event: String,
    pub(crate) data: Value,
}

/// A raw HTTP/1.1 connection reading server-sent events.
pub(crate) struct SseClient {
    reader: BufReader<tokio::net::TcpStream>,
    /// When reading it must have ended: a stream that keeps sending
    /// progress (a run that never ends) fails by this, not by a loop of
    /// the test's that never ends.
    deadline: tokio::time::Instant,
}

/// How long a test may read one event stream, however many events come.
const STREAM_LIMIT: Duration = Duration::from_secs(120);

impl SseClient {
    /// Sends `method path` with `body` and reads the response head.
    pub(crate) async fn open(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> SseClient {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        tokio::time::timeout(Duration::from_secs(60), reader.read_line(&mut status))
            .await
            .expect("a response within 60 s")
            .unwrap();
        assert!(status.contains(" 200 "), "{status}");
        loop {
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(60), reader.read_line(&mut line))
                .await
                .expect("the response head within 60 s")
                .unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        SseClient {
            reader,
            deadline: tokio::time::Instant::now() + STREAM_LIMIT,
        }
    }

    /// The next event (chunked framing skipped); `None` at the end of the stream.
    pub(crate) async fn next(&mut self) -> Option<Sse> {
        let (mut event, mut data) = (String::new(), String::new());
        loop {
            assert!(
                tokio::time::Instant::now() < self.deadline,
                "the event stream was still open after {STREAM_LIMIT:?}"
            );
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(60), self.reader.read_line(&mut line))
                .await
                .expect("an event within 60 s")
                .unwrap();
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            } else if line.is_empty() && !event.is_empty() {
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(Sse { event, data });
            } else if line == "0" {
                // The chunked body's last chunk (the connection stays open).
                return None;
            }
        }
    }
}
