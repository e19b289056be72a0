//! The mock driven over a real socket on 127.0.0.1, as sluice's client sees it.

mod api;
mod dialects;
mod faults;
mod limits;
mod routes;
#[path = "../../../../tests/support/watchdog.rs"]
mod watchdog;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use sluice_mock::{MockConfig, MockServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A mock server and a pooled keep-alive client pointed at it.
pub(crate) struct Mock {
    pub(crate) server: MockServer,
    client: Client<HttpConnector, Full<Bytes>>,
    /// The test's time limit (`SLUICE_TEST_TIMEOUT_SECS`).
    _watchdog: watchdog::Watchdog,
}

/// A whole response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    /// The body as JSON; panics when it is not.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    /// A header as text, or "" when absent.
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// A numeric header; panics when absent.
    pub(crate) fn number(&self, name: &str) -> u64 {
        self.header(name)
            .parse()
            .unwrap_or_else(|_| panic!("header {name}: {self:?}"))
    }
}

impl Mock {
    pub(crate) async fn start(cfg: MockConfig) -> Mock {
        let watchdog = watchdog::Watchdog::start();
        let server = MockServer::start(0, cfg).await.expect("bind 127.0.0.1:0");
        let client = Client::builder(TokioExecutor::new()).build_http();
        Mock {
            server,
            client,
            _watchdog: watchdog,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Sends one request; `Err` is a connection-level failure.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: &str,
        key: Option<&str>,
    ) -> Result<Reply, String> {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(key) = key {
            headers.push(("authorization", format!("Bearer {key}")));
        }
        self.send_with(method, path, &headers, Bytes::from(body.to_owned()))
            .await
    }

    /// Sends one request with these headers and body.
    pub(crate) async fn send_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Reply, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr()));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// POSTs `body` as JSON; panics on a connection-level failure.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, &body.to_string(), None)
            .await
            .expect(path)
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, "", None).await.expect(path)
    }

    /// A one-message chat request.
    pub(crate) async fn chat(&self, content: &str) -> Reply {
        self.post("/v1/chat/completions", &chat_body(content)).await
    }
}

pub(crate) fn chat_body(content: &str) -> Value {
    json!({"model": "gpt-mock", "messages": [{"role": "user", "content": content}]})
}

/// What came back on a raw connection.
#[derive(Debug)]
pub(crate) struct Raw {
    pub(crate) bytes: Vec<u8>,
    /// How the connection ended: `None` if it was still open at the timeout.
    pub(crate) end: Option<std::io::Result<()>>,
}

/// Sends a raw HTTP/1.1 chat request over a fresh connection and reads until
/// the server closes it or `timeout` passes.
pub(crate) async fn raw_exchange(addr: SocketAddr, body: &str, timeout: Duration) -> Raw {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut bytes = Vec::new();
    loop {
        let end = match tokio::time::timeout_at(deadline, stream.read_buf(&mut bytes)).await {
            Err(_) => None,
            Ok(Ok(0)) => Some(Ok(())),
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => Some(Err(e)),
        };
        return Raw { bytes, end };
    }
}

/// The inode of the socket listening on 127.0.0.1:`port` (`/proc/net/tcp`),
/// or `None` where /proc cannot say. A closed listener is then checked by
/// its inode, never by connecting to its port: once freed, the port may be
/// handed to another test's listener, which would answer.
pub(crate) fn listener_inode(port: u16) -> Option<u64> {
    listeners()?
        .into_iter()
        .find(|(p, _)| *p == port)
        .map(|(_, inode)| inode)
}

/// Whether the listening socket `inode` is still open.
pub(crate) fn still_listening(inode: u64) -> bool {
    listeners().is_some_and(|l| l.iter().any(|(_, i)| *i == inode))
}

/// (port, inode) of every IPv4 listening socket on this host.
fn listeners() -> Option<Vec<(u16, u64)>> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    Some(
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                // local address, state 0A (LISTEN), inode.
                let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
                (*f.get(3)? == "0A").then_some(())?;
                Some((port, f.get(9)?.parse().ok()?))
            })
            .collect(),
    )
}
