//! A provider's batch API over HTTP: one exchange retried like a live call,
//! and — per dialect, in `openai` and `anthropic` — submitting a batch,
//! reading its status and fetching its results.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::Value as Json;
use sluice_limit::Backoff;
use sluice_provider::{Attempt, CallOptions, Client, Dialect, Endpoint};
use sluice_spec::BatchSpec;

use super::state::{BatchRecord, LineResult};
use crate::job::lanes::Lane;

/// Uploads and downloads may be large: at least this long per attempt.
const LONG_TIMEOUT: Duration = Duration::from_secs(600);
/// Attempts of a batch API call at least (polls must survive a bad minute).
const MIN_RETRIES: u32 = 5;

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
    pub(crate) error: Option<String>,
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
    retries: u32,
    backoff: Backoff,
    timeout: Duration,
    pub(crate) completion_window: Duration,
}

impl Remote {
    /// The batch API of `lane`'s provider.
    pub(crate) fn new(lane: &Lane, spec: &BatchSpec) -> Remote {
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
            completion_window: spec.completion_window,
        }
    }

    /// Most requests and bytes one batch may hold at this provider.
    pub(crate) fn limits(&self) -> (usize, usize) {
        match self.dialect {
            Dialect::OpenAi => (50_000, 200 * 1024 * 1024),
            Dialect::Anthropic => (100_000, 256 * 1024 * 1024),
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

    /// Sends the batch of `lines`, storing its progress with `save` (the file
    /// before the batch is created, the batch id as soon as it is known).
    pub(crate) async fn submit(
        &self,
        record: &mut BatchRecord,
        lines: &[String],
        save: &(dyn Fn(&BatchRecord) + Sync),
    ) -> Result<(), String> {
        match self.dialect {
            Dialect::OpenAi => super::openai::submit(self, record, lines, save).await,
            Dialect::Anthropic => super::anthropic::submit(self, record, lines, save).await,
        }
    }

    /// The batch's status now.
    pub(crate) async fn status(&self, id: &str) -> Result<Status, String> {
        match self.dialect {
            Dialect::OpenAi => super::openai::status(self, id).await,
            Dialect::Anthropic => super::anthropic::status(self, id).await,
        }
    }

    /// Every result of an ended batch, by custom id.
    pub(crate) async fn results(
        &self,
        record: &BatchRecord,
    ) -> Result<Vec<(String, LineResult)>, String> {
        match self.dialect {
            Dialect::OpenAi => super::openai::results(self, record).await,
            Dialect::Anthropic => super::anthropic::results(self, record).await,
        }
    }

    /// The id of the batch created with `key`, if the provider can tell
    /// (OpenAI keeps `metadata`; Anthropic cannot be asked).
    pub(crate) async fn find(&self, key: &str) -> Result<Option<String>, String> {
        match self.dialect {
            Dialect::OpenAi => super::openai::find(self, key).await,
            Dialect::Anthropic => Ok(None),
        }
    }

    /// `method` on `url` (absolute, or a path under the base URL), retried
    /// like a live call; the body of the 2xx, or what went wrong.
    pub(crate) async fn exchange(
        &self,
        method: Method,
        url: &str,
        body: Bytes,
        content_type: Option<&str>,
        json: bool,
    ) -> Result<Bytes, String> {
        let url = if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        let endpoint = Endpoint::parse(&url, method).map_err(|e| e.to_string())?;
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
                Attempt::Failed(f) => {
                    let path = endpoint.uri.path().to_string();
                    return Err(format!(
                        "{} {path} failed: {} (after {attempt} attempt{})",
                        endpoint.method,
                        f.message,
                        if attempt == 1 { "" } else { "s" }
                    ));
                }
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
