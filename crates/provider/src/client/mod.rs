//! The HTTP client: a pool of kept-alive HTTP/1.1 connections per origin,
//! plain TCP or TLS (rustls with the system's roots), each call running its
//! exchange in its own task (see `wire`).

use std::collections::HashMap;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Uri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::dialect::Dialect;
use crate::outcome::{classify, Attempt, Failure, FailureKind};
use crate::wire::{exchange, WireError};

mod download;
mod streamed;

pub use download::Downloaded;

/// Errors building a client or an endpoint (bad URL, bad header value).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL does not parse or has no host.
    #[error("invalid URL {url:?}: {reason}; give a full URL such as http://127.0.0.1:8080/v1/chat/completions")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The API key contains characters that cannot go in an HTTP header.
    #[error("the API key in ${var} contains characters not allowed in an HTTP header (a newline?); fix the variable's value")]
    BadKey {
        /// Name of the environment variable (never its value).
        var: String,
    },
}

/// Where calls go: a parsed URL, built once and reused for every call.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The full request URI.
    pub uri: Uri,
    /// HTTP method (POST for every API call in quick mode).
    pub method: Method,
    /// The request line and `Host` header, written once: `POST /path HTTP/1.1\r\nHost: h\r\n`.
    head: Bytes,
    /// `scheme://host:port`, the connection pool's key.
    origin: String,
}

impl Endpoint {
    /// Parses `url` (must be absolute http or https).
    pub fn parse(url: &str, method: Method) -> Result<Endpoint, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(bad("the scheme must be http or https")),
        }
        if uri.host().is_none() {
            return Err(bad("it has no host"));
        }
        Endpoint::from_uri(uri, method).map_err(|reason| bad(&reason))
    }

    fn from_uri(uri: Uri, method: Method) -> Result<Endpoint, String> {
        let path = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        let path = if path.is_empty() { "/" } else { path };
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        if path
            .bytes()
            .chain(authority.bytes())
            .any(|b| b.is_ascii_control() || b == b' ')
        {
            return Err("it contains spaces or control characters".into());
        }
        let head = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\n");
        let origin = format!("{}://{authority}", uri.scheme_str().unwrap_or("http"));
        Ok(Endpoint {
            uri,
            method,
            head: Bytes::from(head),
            origin,
        })
    }

    /// The same origin with another path (a batch line's `url` such as `/v1/embeddings`).
    pub fn with_path(&self, path_and_query: &str) -> Result<Endpoint, ClientError> {
        let mut parts = self.uri.clone().into_parts();
        parts.path_and_query =
            Some(path_and_query.parse().map_err(|e: http::uri::InvalidUri| {
                ClientError::BadUrl {
                    url: path_and_query.to_string(),
                    reason: e.to_string(),
                }
            })?);
        let bad = |reason: String| ClientError::BadUrl {
            url: path_and_query.to_string(),
            reason,
        };
        let uri = Uri::from_parts(parts).map_err(|e| bad(e.to_string()))?;
        Endpoint::from_uri(uri, self.method.clone()).map_err(bad)
    }

    /// `host:port` for connecting (default ports filled in).
    pub fn host_port(&self) -> String {
        let host = self.uri.host().unwrap_or("");
        let port = self
            .uri
            .port_u16()
            .unwrap_or(if self.uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }
}

/// A socket, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A kept-alive connection and its read buffer.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

impl Conn {
    /// Whether the server closed (or wrote to) this idle connection: its socket
    /// became readable while nobody was waiting for a response. Uses the
    /// readiness the runtime already has, so it costs no system call.
    fn went_stale(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.stream.tcp().poll_read_ready(&mut cx).is_ready()
    }
}

/// Idle kept-alive connections to one origin (scheme + host + port).
#[derive(Default)]
struct Origin {
    idle: Mutex<Vec<Conn>>,
}

/// The TLS setup every client shares, made on the first https connection:
/// reading the system's root certificates takes longer than a whole run
/// against local http services (the mock, a GPU host on the LAN) should.
/// None found (a bare container) leaves https failing with a certificate
/// error that says so, while http works.
async fn tls_connector() -> Result<TlsConnector, String> {
    static TLS: OnceLock<Result<TlsConnector, String>> = OnceLock::new();
    if let Some(ready) = TLS.get() {
        return ready.clone();
    }
    // Reading files: off the runtime's threads (several first connections
    // may read at once; the first to finish is kept).
    let made = tokio::task::spawn_blocking(make_tls)
        .await
        .unwrap_or_else(|e| Err(format!("TLS setup failed: {e}")));
    TLS.get_or_init(|| made).clone()
}

fn make_tls() -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup failed: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A client with a connection pool per origin and the bearer token already
/// in header form. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    origins: Arc<Mutex<HashMap<String, Arc<Origin>>>>,
    max_idle: usize,
    /// `User-Agent` and `Authorization` lines, written once.
    /// Holds the API key: never logged or shown.
    fixed_headers: Arc<[u8]>,
    has_auth: bool,
    /// Longest wait for a TCP connection (and TLS handshake), within the
    /// call's own time-out: a host that does not answer fails fast.
    connect_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Client")
            .field("auth", &self.has_auth.then_some("<redacted>"))
            .finish()
    }
}

/// How a call differs from the default JSON POST.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions<'a> {
    /// Extra request headers (name, value).
    pub headers: &'a [(String, String)],
    /// `Content-Type` of the body; `None` = `application/json`.
    pub content_type: Option<&'a str>,
    /// Whether a 2xx must carry a JSON body (a non-JSON one is a retryable
    /// `BadBody`); `false` for files and plain text.
    pub expect_json: bool,
}

impl Default for CallOptions<'_> {
    fn default() -> Self {
        CallOptions {
            headers: &[],
            content_type: None,
            expect_json: true,
        }
    }
}

/// Why a call failed below HTTP.
enum Transport {
    Connect(String),
    Exchange(WireError),
}

impl Client {
    /// A client keeping up to `max_idle` idle connections per origin, sending
    /// `Authorization: Bearer <key>` when `api_key` is given as `(variable
    /// name, key)`; the name is only used in error messages.
    pub fn new(max_idle: usize, api_key: Option<(&str, &str)>) -> Result<Client, ClientError> {
        Client::for_dialect(Dialect::OpenAi, max_idle, api_key)
    }

    /// Like [`Client::new`], with the key sent the way `dialect` expects it
    /// (Anthropic: `x-api-key`).
    pub fn for_dialect(
        dialect: Dialect,
        max_idle: usize,
        api_key: Option<(&str, &str)>,
    ) -> Result<Client, ClientError> {
        let mut fixed = Vec::new();
        let _ = write!(
            fixed,
            "User-Agent: sluice/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some((var, key)) = api_key {
            if key.bytes().any(|b| b.is_ascii_control()) {
                return Err(ClientError::BadKey {
                    var: var.to_string(),
                });
            }
            fixed.extend_from_slice(auth_line(dialect, key).as_bytes());
        }
        Ok(Client {
            origins: Arc::new(Mutex::new(HashMap::new())),
            max_idle,
            fixed_headers: fixed.into(),
            has_auth: api_key.is_some(),
            connect_timeout: Duration::from_secs(10),
        })
    }

    fn origin(&self, endpoint: &Endpoint) -> Arc<Origin> {
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(origin) = origins.get(&endpoint.origin) {
            return origin.clone();
        }
        origins.entry(endpoint.origin.clone()).or_default().clone()
    }

    /// Sets the connect time-out (default 10 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Client {
        self.connect_timeout = timeout;
        self
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Conn, Transport> {
        match tokio::time::timeout(self.connect_timeout, self.connect_inner(endpoint)).await {
            Ok(result) => result,
            Err(_) => Err(Transport::Connect(format!(
                "no connection within {}",
                fmt_duration(self.connect_timeout)
            ))),
        }
    }

    async fn connect_inner(&self, endpoint: &Endpoint) -> Result<Conn, Transport> {
        let host = endpoint
            .uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tcp = TcpStream::connect(endpoint.host_port())
            .await
            .map_err(|e| Transport::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream = if endpoint.uri.scheme_str() == Some("https") {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| Transport::Connect(format!("bad TLS server name {host:?}: {e}")))?;
            let tls = tls_connector()
                .await
                .map_err(Transport::Connect)?
                .connect(name, tcp)
                .await
                .map_err(|e| Transport::Connect(format!("TLS handshake failed: {e}")))?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(8192),
        })
    }

    /// An idle connection that is still open, or a new one.
    async fn checkout(&self, origin: &Origin, endpoint: &Endpoint) -> Result<Conn, Transport> {
        loop {
            let idle = origin.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some(conn) if conn.went_stale() => continue,
                Some(conn) => return Ok(conn),
                None => return self.connect(endpoint).await,
            }
        }
    }

    fn checkin(&self, origin: &Origin, conn: Conn) {
        let mut idle = origin.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    /// Sends `body` as JSON to `endpoint` and sorts the result. `timeout` covers
    /// the whole exchange: connecting, waiting and reading the body, so a hung
    /// connection is cut.
    pub async fn send_json(&self, endpoint: &Endpoint, body: Bytes, timeout: Duration) -> Attempt {
        self.send(endpoint, body, timeout, &CallOptions::default())
            .await
    }

    /// Sends `body` to `endpoint` with `options` (extra headers, content type,
    /// whether a 2xx must be JSON) and sorts the result.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        body: Bytes,
        timeout: Duration,
        options: &CallOptions<'_>,
    ) -> Attempt {
        let started = Instant::now();
        let head = match self.head(endpoint, options, body.len()) {
            Ok(head) => head,
            Err(message) => {
                return Attempt::Failed(transport_failure(
                    FailureKind::Client,
                    message,
                    Duration::ZERO,
                ))
            }
        };
        let origin = self.origin(endpoint);
        // One exchange is one attempt, also when a kept-alive connection
        // closes before answering: the server may have read the request
        // (and charged for it), so a resend is a retry the caller counts
        // and limits, never a silent one here.
        let call = async {
            let mut conn = self.checkout(&origin, endpoint).await?;
            match exchange(&mut conn.stream, &mut conn.buf, &head, &body).await {
                Ok(response) => {
                    if response.keep_alive {
                        self.checkin(&origin, conn);
                    }
                    Ok(response)
                }
                Err(e) => Err(Transport::Exchange(e)),
            }
        };
        // A timed-out call drops its connection with the future: it may still
        // carry the old response.
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(r)) => classify(
                r.status,
                &r.headers,
                r.body,
                started.elapsed(),
                options.expect_json,
            ),
            Ok(Err(transport)) => transport_attempt(transport, endpoint, started),
            Err(_) => timed_out(timeout, started),
        }
    }
}

impl Client {
    /// The request head: line, fixed headers, `options`' headers, type and
    /// length; `Err` says which header cannot be sent.
    fn head(
        &self,
        endpoint: &Endpoint,
        options: &CallOptions<'_>,
        body_len: usize,
    ) -> Result<Vec<u8>, String> {
        let mut head = Vec::with_capacity(endpoint.head.len() + self.fixed_headers.len() + 64);
        head.extend_from_slice(&endpoint.head);
        head.extend_from_slice(&self.fixed_headers);
        for (name, value) in options.headers {
            // Checked by `CallOptions::check_headers` when the job is validated;
            // a control character here would split the request.
            if name
                .bytes()
                .chain(value.bytes())
                .any(|b| b == b'\r' || b == b'\n')
            {
                return Err(format!(
                    "header {name:?} contains a line break; fix the template that renders it"
                ));
            }
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let content_type = options.content_type.unwrap_or("application/json");
        let _ = write!(
            head,
            "Content-Type: {content_type}\r\nContent-Length: {body_len}\r\n\r\n"
        );
        Ok(head)
    }
}

/// The request header line carrying `key` the way `dialect` expects it.
fn auth_line(dialect: Dialect, key: &str) -> String {
    match dialect {
        Dialect::OpenAi => format!("Authorization: Bearer {key}\r\n"),
        Dialect::Anthropic => format!("x-api-key: {key}\r\n"),
    }
}

fn transport_attempt(transport: Transport, endpoint: &Endpoint, started: Instant) -> Attempt {
    match transport {
        Transport::Connect(detail) => Attempt::Failed(transport_failure(
            FailureKind::Connect,
            format!("cannot connect to {}: {detail}", endpoint.host_port()),
            started.elapsed(),
        )),
        Transport::Exchange(e) => Attempt::Failed(transport_failure(
            FailureKind::Connection,
            format!("connection error: {e}"),
            started.elapsed(),
        )),
    }
}

fn timed_out(timeout: Duration, started: Instant) -> Attempt {
    Attempt::Failed(transport_failure(
        FailureKind::Timeout,
        format!("no complete response within {}", fmt_duration(timeout)),
        started.elapsed(),
    ))
}

fn transport_failure(kind: FailureKind, message: String, latency: Duration) -> Failure {
    Failure {
        kind,
        status: None,
        message,
        body: None,
        retry_after: None,
        latency,
        signals: Default::default(),
        should_retry: None,
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn an_https_url_to_a_plain_http_server_fails_its_tls_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut hello = vec![0u8; 4096];
            let _ = socket.read(&mut hello).await;
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        let client = Client::new(1, None).unwrap();
        let url = format!("https://{addr}/v1/chat/completions");
        let endpoint = Endpoint::parse(&url, http::Method::POST).unwrap();
        let attempt = client
            .send(
                &endpoint,
                Bytes::from_static(b"{}"),
                Duration::from_secs(10),
                &CallOptions::default(),
            )
            .await;
        let Attempt::Failed(f) = attempt else {
            panic!("expected a failure");
        };
        assert_eq!(f.kind, FailureKind::Connect, "{}", f.message);
        assert!(f.message.contains("TLS handshake failed"), "{}", f.message);
    }
}
