//! The pooled HTTP/1.1 client (hyper + rustls) that sends one request per call.
//!
//! hyper-util's client is used directly rather than reqwest: on this machine kind
//! it measured 65–80% of `wrk` against a zero-latency server where reqwest reached
//! 43–61% (shared/PERFORMANCE.md), and the engine's overhead target is 60%.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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
        Ok(Endpoint { uri, method })
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
        let uri = Uri::from_parts(parts).map_err(|e| ClientError::BadUrl {
            url: path_and_query.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Endpoint {
            uri,
            method: self.method.clone(),
        })
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

/// A pooled client with the bearer token already made into a header.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<Https, Full<Bytes>>,
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

impl Client {
    /// A client keeping up to `max_idle` idle connections per host, sending
    /// `Authorization: Bearer <key>` when `api_key` is given (`key_var` names its
    /// environment variable, for error messages only).
    pub fn new(max_idle: usize, api_key: Option<(&str, &str)>) -> Result<Client, ClientError> {
        let auth = match api_key {
            Some((var, key)) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    ClientError::BadKey {
                        var: var.to_string(),
                    }
                })?;
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
                rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
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
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_idle)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Client {
            inner,
            auth,
            user_agent: HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))),
        })
    }

    /// Sends `body` as JSON to `endpoint` and sorts the result. `timeout` covers
    /// the whole exchange: connecting, waiting and reading the body, so a hung
    /// connection is cut.
    pub async fn send_json(&self, endpoint: &Endpoint, body: Bytes, timeout: Duration) -> Attempt {
        let started = Instant::now();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = endpoint.method.clone();
        *request.uri_mut() = endpoint.uri.clone();
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, self.user_agent.clone());
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        let exchange = async {
            let response = self.inner.request(request).await?;
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((parts, bytes))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((parts, bytes))) => {
                classify(parts.status, &parts.headers, bytes, started.elapsed())
            }
            Ok(Err(error)) => Attempt::Failed(transport_failure(&*error, started.elapsed())),
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
fn transport_failure(error: &(dyn std::error::Error + 'static), latency: Duration) -> Failure {
    let mut cause: &(dyn std::error::Error + 'static) = error;
    let mut connect = false;
    loop {
        if let Some(e) = cause.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= e.is_connect();
        }
        match cause.source() {
            Some(next) => cause = next,
            None => break,
        }
    }
    let detail = cause.to_string();
    let message = if connect {
        format!("cannot connect: {detail}")
    } else if detail == error.to_string() {
        format!("connection error: {detail}")
    } else {
        format!("connection error: {error}: {detail}")
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
