//! What each dialect's batch API does, chosen by the provider's dialect:
//! submitting a batch (created at most once), reading its status, finding
//! it again, fetching and reading its results (`openai`, `anthropic`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::Value as Json;
use sluice_provider::{Attempt, CallOptions, Dialect, FailureKind};

use super::api::{Remote, Status};
use super::state::{BatchRecord, LineResult};
use super::{anthropic, openai};
use crate::clock::now_ms;

impl Remote {
    /// Sends the batch of `lines` (OpenAI: reusing an uploaded file),
    /// storing its progress with `save` (the file before the batch is
    /// created, the time of each create call, the batch id as soon as it is
    /// known). `known` are the ids of this run's other batches.
    pub(crate) async fn submit(
        &self,
        record: &mut BatchRecord,
        lines: &[String],
        known: &HashSet<String>,
        save: &(dyn Fn(&BatchRecord) + Sync),
    ) -> Result<(), String> {
        match self.dialect {
            Dialect::OpenAi => openai::submit(self, record, lines, known, save).await,
            Dialect::Anthropic => anthropic::submit(self, record, lines, known, save).await,
        }
    }

    /// The batch's status now.
    pub(crate) async fn status(&self, id: &str) -> Result<Status, String> {
        match self.dialect {
            Dialect::OpenAi => openai::status(self, id).await,
            Dialect::Anthropic => anthropic::status(self, id).await,
        }
    }

    /// Downloads the result files of an ended batch into `dir`; the files.
    pub(crate) async fn results(
        &self,
        record: &BatchRecord,
        dir: &Path,
    ) -> Result<Vec<PathBuf>, String> {
        match self.dialect {
            Dialect::OpenAi => openai::results(self, record, dir).await,
            Dialect::Anthropic => anthropic::results(self, record, dir).await,
        }
    }

    /// One line of a downloaded result file: its custom id and result.
    pub(crate) fn parse_line(&self, line: &[u8]) -> Option<(String, LineResult)> {
        match self.dialect {
            Dialect::OpenAi => openai::parse_line(line),
            Dialect::Anthropic => anthropic::parse_line(line),
        }
    }

    /// The batch `record` made by a create call whose answer was lost, if
    /// the provider has it (OpenAI by `metadata` or input file, Anthropic by
    /// size and time); its object.
    pub(crate) async fn find(
        &self,
        record: &BatchRecord,
        known: &HashSet<String>,
    ) -> Result<Option<Json>, String> {
        match self.dialect {
            Dialect::OpenAi => openai::find(self, record).await,
            Dialect::Anthropic => anthropic::find(self, record, known).await,
        }
    }

    /// Creates a batch with `body` at `path`, at most once: every create call
    /// is stored as sent before it goes out; one whose outcome is uncertain
    /// (a time-out, a reset, a 5xx: it may have reached the provider) is
    /// followed by a look-up, and only when that finds nothing by another
    /// create. Refusals (4xx) end it; 429s and failed connections (nothing
    /// was created) are retried. The created (or found) batch object.
    pub(crate) async fn create(
        &self,
        record: &mut BatchRecord,
        path: &str,
        body: Bytes,
        known: &HashSet<String>,
        save: &(dyn Fn(&BatchRecord) + Sync),
    ) -> Result<Json, String> {
        let endpoint = self.endpoint(path, Method::POST)?;
        let options = CallOptions {
            headers: &self.headers,
            content_type: None,
            expect_json: true,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            record.creates += 1;
            record.create_sent_at = Some(now_ms());
            save(record);
            // The provider's `timeout`: a create answers at once, and a lost
            // answer is looked up rather than waited for.
            let failure = match self
                .client
                .send(&endpoint, body.clone(), self.timeout, &options)
                .await
            {
                Attempt::Ok(success) => {
                    return serde_json::from_slice(&success.body)
                        .map_err(|e| format!("the batch API answered with invalid JSON: {e}"))
                }
                Attempt::Failed(f) => f,
            };
            let uncertain = matches!(
                failure.kind,
                FailureKind::Timeout
                    | FailureKind::Connection
                    | FailureKind::Server
                    | FailureKind::BadBody
            );
            if uncertain {
                tracing::info!(provider = %self.provider, "creating batch {} may have reached the provider ({}); looking it up before trying again", record.seq, failure.message);
                if let Ok(Some(found)) = self.find(record, known).await {
                    return Ok(found);
                }
            }
            if !failure.is_retryable() || attempt > self.retries {
                return Err(format!(
                    "POST {} failed: {} (after {attempt} attempt{})",
                    endpoint.uri.path(),
                    failure.message,
                    if attempt == 1 { "" } else { "s" }
                ));
            }
            let delay = self.backoff.delay_ms(
                attempt,
                fastrand::f64(),
                failure.retry_after.map(|d| d.as_millis() as u64),
            );
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
}
