//! A provider's batch API over HTTP: one exchange retried like a live call
//! and downloads to disk. What each dialect does with it is in `dialects`.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::Value as Json;
use sluice_limit::Backoff;
use sluice_provider::{Attempt, CallOptions, Client, Dialect, Endpoint};

use crate::job::lanes::Lane;

/// Uploads and status calls may be slow: at least this long per attempt.
const LONG_TIMEOUT: Duration = Duration::from_secs(600);
/// A result file may run to gigabytes: at least this long per download.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);
/// Attempts of a batch API call at least (polls must survive a bad minute).
const MIN_RETRIES: u32 = 5;

/// One entry of a failed batch's `errors.data` (OpenAI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchError {
    pub(crate) code: String,
    pub(crate) message: String,
    /// The line of the input file it is about (from 1), if any.
    pub(crate) line: Option<u64>,
}

/// What a status check says.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Status {
    pub(crate) state: String,
    pub(crate) succeeded: u64,
    pub(crate) errored: u64,
    pub(crate) expired: u64,
    pub(crate) output_file_id: Option<String>,
    pub(crate) error_file_id: Option<String>,
    pub(crate) results_url: Option<String>,
    /// Why the whole batch failed.
    pub(crate) errors: Vec<BatchError>,
}

/// One provider's batch API.
pub(crate) struct Remote {
    pub(crate) provider: String,
    pub(crate) dialect: Dialect,
    pub(crate) client: Client,
    /// The first base URL: a batch lives on one host.
    pub(crate) base: String,
    /// The base URL's path (`/v1`): OpenAI batch lines name whole paths.
    base_path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(super) retries: u32,
    pub(super) backoff: Backoff,
    pub(super) timeout: Duration,
}

impl Remote {
    /// The batch API of `lane`'s provider.
    pub(crate) fn new(lane: &Lane) -> Remote {
        let base = lane.first_base().to_string();
        let base_path = base
            .split("://")
            .nth(1)
            .and_then(|rest| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_default();
        Remote {
            provider: lane.name.clone(),
            dialect: lane.dialect,
            client: lane.client.clone(),
            base,
            base_path,
            headers: lane.headers.clone(),
            retries: lane.retries.max.max(MIN_RETRIES),
            backoff: Backoff {
                base_ms: lane.retries.base.as_millis() as u64,
                cap_ms: lane.retries.cap.as_millis() as u64,
            },
            timeout: lane.timeout,
        }
    }

    /// The whole API path of a step's path (`/chat/completions` → `/v1/chat/completions`).
    pub(crate) fn api_path(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }

    /// One request as it goes into a batch: an OpenAI JSONL line, or an
    /// element of Anthropic's `requests` list.
    pub(crate) fn line(&self, custom_id: &str, path: &str, body: &Json) -> String {
        let line = match self.dialect {
            Dialect::OpenAi => serde_json::json!({
                "custom_id": custom_id,
                "method": "POST",
                "url": path,
                "body": body,
            }),
            Dialect::Anthropic => serde_json::json!({"custom_id": custom_id, "params": body}),
        };
        line.to_string()
    }

    pub(super) fn endpoint(&self, url: &str, method: Method) -> Result<Endpoint, String> {
        let url = if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        Endpoint::parse(&url, method).map_err(|e| e.to_string())
    }

    /// `method` on `url` (absolute, or a path under the base URL), retried
    /// like a live call; the body of the 2xx, or what went wrong. Not for
    /// creating batches (see [`Remote::create`]).
    pub(crate) async fn exchange(
        &self,
        method: Method,
        url: &str,
        body: Bytes,
        content_type: Option<&str>,
        json: bool,
    ) -> Result<Bytes, String> {
        let endpoint = self.endpoint(url, method)?;
        let options = CallOptions {
            headers: &self.headers,
            content_type,
            expect_json: json,
        };
        let timeout = self.timeout.max(LONG_TIMEOUT);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .client
                .send(&endpoint, body.clone(), timeout, &options)
                .await
            {
                Attempt::Ok(success) => return Ok(success.body),
                Attempt::Failed(f) if f.is_retryable() && attempt <= self.retries => {
                    let delay = self.backoff.delay_ms(
                        attempt,
                        fastrand::f64(),
                        f.retry_after.map(|d| d.as_millis() as u64),
                    );
                    tracing::debug!(provider = %self.provider, "batch API call failed, retrying: {}", f.message);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                Attempt::Failed(f) => return Err(failed(&endpoint, &f.message, attempt)),
            }
        }
    }

    /// Downloads `url` into the file `to` (made afresh on every attempt),
    /// with no size limit; retried like [`Remote::exchange`]. Its size.
    pub(crate) async fn download(&self, url: &str, to: &Path) -> Result<u64, String> {
        let endpoint = self.endpoint(url, Method::GET)?;
        let options = CallOptions {
            headers: &self.headers,
            content_type: None,
            expect_json: false,
        };
        let timeout = self.timeout.max(DOWNLOAD_TIMEOUT);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let file = std::fs::File::create(to)
                .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut sink = |piece: &[u8]| out.write_all(piece);
            let result = self
                .client
                .download(&endpoint, Bytes::new(), timeout, &options, &mut sink)
                .await;
            let flushed = out
                .flush()
                .map_err(|e| format!("cannot write {}: {e}", to.display()));
            match result {
                Ok(done) => return flushed.map(|()| done.bytes),
                Err(f) if f.is_retryable() && attempt <= self.retries => {
                    let delay = self.backoff.delay_ms(
                        attempt,
                        fastrand::f64(),
                        f.retry_after.map(|d| d.as_millis() as u64),
                    );
                    tracing::debug!(provider = %self.provider, "batch download failed, retrying: {}", f.message);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                Err(f) => return Err(failed(&endpoint, &f.message, attempt)),
            }
        }
    }

    /// [`Remote::exchange`] of a JSON request, its answer parsed.
    pub(crate) async fn json(
        &self,
        method: Method,
        url: &str,
        body: Option<&Json>,
    ) -> Result<Json, String> {
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let answer = self.exchange(method, url, bytes, None, true).await?;
        serde_json::from_slice(&answer)
            .map_err(|e| format!("the batch API answered with invalid JSON: {e}"))
    }
}

fn failed(endpoint: &Endpoint, message: &str, attempt: u32) -> String {
    format!(
        "{} {} failed: {message} (after {attempt} attempt{})",
        endpoint.method,
        endpoint.uri.path(),
        if attempt == 1 { "" } else { "s" }
    )
}

/// The string at `pointer`, if any.
pub(crate) fn text(value: &Json, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Json::as_str)
        .map(str::to_string)
}

/// The number at `pointer`, 0 when absent.
pub(crate) fn count(value: &Json, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Json::as_u64).unwrap_or(0)
}

/// How far a provider's clock may be behind ours, in seconds, when a
/// look-up compares a batch's `created_at` with when we sent the create.
pub(crate) const CLOCK_SKEW_SECS: i64 = 300;

/// Pages of a list a look-up reads at most (100 batches each).
pub(crate) const MAX_LOOKUP_PAGES: usize = 50;
