//! The listener: accepts connections, serves HTTP/1.1 with keep-alive, routes.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::MockConfig;
use crate::handler::{self, ConnectionReset};
use crate::request::Api;
use crate::response::{self, Body};
use crate::routes;
use crate::state::Shared;
use crate::stats::{MockStats, Outcome};

/// A running mock: its address and live stats.
///
/// Dropping it (or calling [`MockServer::shutdown`]) stops the server and closes
/// its open connections.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<io::Result<()>>,
}

impl MockServer {
    /// Binds 127.0.0.1:`port` (0 = any free port) and serves in a spawned tokio
    /// task on the current runtime.
    pub async fn start(port: u16, cfg: MockConfig) -> io::Result<MockServer> {
        if cfg.tpm.is_some() {
            // Before the first request can arrive (see `warm_tokenizers`).
            tokio::task::spawn_blocking(crate::count::warm_tokenizers)
                .await
                .map_err(io::Error::other)?;
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(cfg, addr.to_string())?);
        let task = tokio::spawn(run(listener, Arc::clone(&shared)));
        Ok(MockServer { addr, shared, task })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of the stats.
    pub fn stats(&self) -> MockStats {
        self.shared.stats()
    }

    /// The accepted requests' rates over windows of `window_ms` (see
    /// [`crate::WindowRates`]).
    pub fn rates(&self, window_ms: u64) -> crate::WindowRates {
        self.shared.rates(window_ms)
    }

    /// What the batch APIs saw.
    pub fn batch_stats(&self) -> crate::BatchStats {
        self.shared.offload.stats()
    }

    /// The journal's requests whose path starts with `prefix`, oldest first
    /// (empty unless [`MockConfig::journal`] is set).
    pub fn requests(&self, prefix: &str) -> Vec<crate::JournalEntry> {
        self.shared.journal.list(prefix)
    }

    /// Every item of CMS collection `name` (empty when there is none).
    pub fn items(&self, name: &str) -> Vec<serde_json::Value> {
        let (_, page) =
            self.shared
                .cms
                .handle(&Method::GET, &format!("/items/{name}"), "limit=-1", b"");
        page["data"].as_array().cloned().unwrap_or_default()
    }

    /// Stops accepting and aborts the accept loop, closing open connections.
    pub fn shutdown(self) {
        // Drop does the work.
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the mock on `listener` until the future is dropped (used by the CLI's
/// foreground `sluice mock`); dropping it closes open connections too.
///
/// Accept errors (a client that went away, too many open files) are waited out,
/// not returned, so in practice this never returns.
pub async fn serve(listener: TcpListener, cfg: MockConfig) -> io::Result<()> {
    let host = listener.local_addr()?.to_string();
    run(listener, Arc::new(Shared::new(cfg, host)?)).await
}

async fn run(listener: TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    // Connections live in the set so that dropping the accept loop ends them.
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder.keep_alive(true);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors, or a connection aborted before
                // accept: nothing to answer, so pause rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small request/response pairs: waiting to coalesce only adds latency.
        let _ = stream.set_nodelay(true);
        while connections.try_join_next().is_some() {}
        let shared = Arc::clone(&shared);
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move {
                    let gap = Duration::from_millis(shared.cfg.stream_interval_ms);
                    route(shared, req)
                        .await
                        .map(|res| crate::sse::pace(res, gap))
                }
            }),
        );
        connections.spawn(async move {
            // A connection error is the client's business (or an injected reset).
            let _ = conn.await;
        });
    }
}

/// Largest request body read; larger ones get 400.
const MAX_BODY_BYTES: usize = 32 << 20;

async fn route(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ConnectionReset> {
    if crate::batches::owns(req.uri().path()) {
        return crate::batches::route(&shared, req).await;
    }
    let arrived = Instant::now();
    let api = match req.uri().path() {
        "/v1/chat/completions" => Some(Api::Chat),
        "/v1/completions" => Some(Api::Completions),
        "/v1/embeddings" => Some(Api::Embeddings),
        "/healthz" if req.method() == Method::GET => {
            let mut res = Response::new(Full::new(bytes::Bytes::from_static(b"ok")));
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return Ok(res);
        }
        "/_mock/stats" if req.method() == Method::GET => {
            let mut stats = shared.stats();
            // `?window_ms=N`: the rates over windows of that length too.
            stats.window = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|p| p.strip_prefix("window_ms="))
                .and_then(|v| v.parse().ok())
                .map(|ms| shared.rates(ms));
            let body = response::to_json(&stats);
            return Ok(response::json(StatusCode::OK, body));
        }
        "/_mock/reset" if req.method() == Method::POST => {
            shared.reset();
            let mut res = Response::new(Full::default());
            *res.status_mut() = StatusCode::NO_CONTENT;
            return Ok(res);
        }
        "/_mock/requests" if req.method() == Method::GET => {
            return Ok(routes::journal(&shared, req.uri().query().unwrap_or("")));
        }
        "/healthz" | "/_mock/stats" | "/_mock/reset" | "/_mock/requests" => {
            return Ok(method_not_allowed(req.method(), req.uri().path()));
        }
        path if routes::is_generic(path) => None,
        path => {
            let msg = format!("Unknown request URL: {} {path}.", req.method());
            let res = response::error(
                StatusCode::NOT_FOUND,
                &msg,
                "invalid_request_error",
                Some("unknown_url"),
            );
            return Ok(res);
        }
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let msg =
                format!("Could not read the request body (at most {MAX_BODY_BYTES} bytes): {e}.");
            let mut res = response::bad_request(&msg);
            if api.is_some() {
                let rates = shared.refuse(Outcome::BadRequest);
                response::add_rate_headers(res.headers_mut(), &rates);
            }
            return Ok(res);
        }
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let seq = shared.journal.arrive(
        shared.elapsed_ms(),
        parts.method.as_str(),
        target,
        &parts.headers,
        &body,
    );
    let result = match api {
        Some(_) if parts.method != Method::POST => {
            let rates = shared.refuse(Outcome::BadRequest);
            let mut res = method_not_allowed(&parts.method, parts.uri.path());
            response::add_rate_headers(res.headers_mut(), &rates);
            Ok(res)
        }
        Some(api) => handler::api(&shared, api, arrived, &parts.headers, body).await,
        None => routes::generic(&shared, arrived, &parts, body).await,
    };
    if let Ok(res) = &result {
        shared.journal.answer(seq, res.status().as_u16());
    }
    result
}

fn method_not_allowed(method: &Method, path: &str) -> Response<Body> {
    let msg = format!("{method} is not allowed on {path}.");
    response::error(
        StatusCode::METHOD_NOT_ALLOWED,
        &msg,
        "invalid_request_error",
        None,
    )
}
