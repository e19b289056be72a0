//! The HTTP/1.1 client (hyper + rustls) that sends one request per call over a
//! pool of kept-alive connections per origin.
//!
//! Built on hyper's connection API rather than reqwest or hyper-util's pooled
//! client: on this machine kind reqwest reached 43–61% of `wrk` against a
//! zero-latency server and hyper-util's client 65–80% (shared/PERFORMANCE.md).
//! A call here pops an idle connection from a stack, sends on it and pushes it
//! back — no pool keys, no per-request Host formatting — which is what the
//! engine's overhead target (60% of `wrk` with durable recording) needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use crate::outcome::{classify, Attempt, Failure, FailureKind};

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

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
    /// `/path?query`, what an HTTP/1.1 request line carries.
    origin_form: Uri,
    /// The `Host` header value.
    host: HeaderValue,
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
        let origin_form = match uri.path_and_query() {
            Some(pq) => pq.as_str().parse::<Uri>().map_err(|e| e.to_string())?,
            None => Uri::from_static("/"),
        };
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        let host = HeaderValue::from_str(authority).map_err(|e| e.to_string())?;
        Ok(Endpoint {
            uri,
            method,
            origin_form,
            host,
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

/// Idle kept-alive connections to one origin (scheme + host + port).
struct Origin {
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

/// A client with a connection pool per origin and the bearer token already
/// made into a header. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    connector: Https,
    origins: Arc<Mutex<HashMap<String, Arc<Origin>>>>,
    max_idle: usize,
    auth: Option<HeaderValue>,
    user_agent: HeaderValue,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Client")
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a call could not get a connection or lost it.
enum Transport {
    Connect(Box<dyn std::error::Error + Send + Sync>),
    Exchange(Box<dyn std::error::Error + Send + Sync>),
}

impl Client {
    /// A client keeping up to `max_idle` idle connections per origin, sending
    /// `Authorization: Bearer <key>` when `api_key` is given (`key_var` names its
    /// environment variable, for error messages only).
    pub fn new(max_idle: usize, api_key: Option<(&str, &str)>) -> Result<Client, ClientError> {
        let auth = match api_key {
            Some((var, key)) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| ClientError::BadKey { var: var.to_string() })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_native_roots() {
            Ok(b) => b,
            // No system certificates (a bare container): plain http still works,
            // https calls fail with a certificate error that says so.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::BadUrl {
                    url: "https".into(),
                    reason: e.to_string(),
                })?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            ),
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        Ok(Client {
            connector,
            origins: Arc::new(Mutex::new(HashMap::new())),
            max_idle,
            auth,
            user_agent: HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))),
        })
    }

    fn origin(&self, endpoint: &Endpoint) -> Arc<Origin> {
        let key = format!(
            "{}://{}",
            endpoint.uri.scheme_str().unwrap_or("http"),
            endpoint.uri.authority().map(|a| a.as_str()).unwrap_or("")
        );
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        origins
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Origin {
                    idle: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    /// An idle connection that is ready for a request, or a new one.
    async fn checkout(
        &self,
        origin: &Origin,
        endpoint: &Endpoint,
    ) -> Result<SendRequest<Full<Bytes>>, Transport> {
        loop {
            let idle = origin.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(mut sender) = idle else { break };
            // A connection the server closed while idle is dropped; `ready`
            // also waits for hyper to finish reading the previous response.
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let stream = self
            .connector
            .clone()
            .call(endpoint.uri.clone())
            .await
            .map_err(Transport::Connect)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(stream)
            .await
            .map_err(|e| Transport::Connect(Box::new(e)))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    fn checkin(&self, origin: &Origin, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = origin.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(sender);
        }
    }

    /// Sends `body` as JSON to `endpoint` and sorts the result. `timeout` covers
    /// the whole exchange: connecting, waiting and reading the body, so a hung
    /// connection is cut.
    pub async fn send_json(&self, endpoint: &Endpoint, body: Bytes, timeout: Duration) -> Attempt {
        let started = Instant::now();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = endpoint.method.clone();
        *request.uri_mut() = endpoint.origin_form.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, endpoint.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, self.user_agent.clone());
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        let origin = self.origin(endpoint);
        let exchange = async {
            let mut sender = self.checkout(&origin, endpoint).await?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| Transport::Exchange(Box::new(e)))?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| Transport::Exchange(Box::new(e)))?
                .to_bytes();
            // Only a connection whose exchange completed goes back to the pool;
            // a timed-out one is dropped with this future, which closes it.
            self.checkin(&origin, sender);
            Ok::<_, Transport>((parts, bytes))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((parts, bytes))) => classify(parts.status, &parts.headers, bytes, started.elapsed()),
            Ok(Err(Transport::Connect(error))) => {
                Attempt::Failed(transport_failure(&*error, true, started.elapsed()))
            }
            Ok(Err(Transport::Exchange(error))) => {
                Attempt::Failed(transport_failure(&*error, false, started.elapsed()))
            }
            Err(_) => Attempt::Failed(Failure {
                kind: FailureKind::Timeout,
                status: None,
                message: format!("no complete response within {}", fmt_duration(timeout)),
                body: None,
                retry_after: None,
                latency: started.elapsed(),
                signals: Default::default(),
            }),
        }
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Describes a transport error by its innermost cause ("connection refused",
/// "connection reset by peer"), which is what a user can act on.
fn transport_failure(
    error: &(dyn std::error::Error + 'static),
    connect: bool,
    latency: Duration,
) -> Failure {
    let mut cause: &(dyn std::error::Error + 'static) = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let detail = cause.to_string();
    let outer = error.to_string();
    let message = match (connect, detail == outer) {
        (true, _) => format!("cannot connect: {detail}"),
        (false, true) => format!("connection error: {detail}"),
        (false, false) => format!("connection error: {outer}: {detail}"),
    };
    Failure {
        kind: if connect {
            FailureKind::Connect
        } else {
            FailureKind::Connection
        },
        status: None,
        message,
        body: None,
        retry_after: None,
        latency,
        signals: Default::default(),
    }
}
