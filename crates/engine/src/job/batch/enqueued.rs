//! Prompt tokens waiting in a provider's unfinished batches, per model, and
//! the limit they must stay under: OpenAI's "enqueued prompt tokens per
//! model" (Batch API guide, "Rate limits"), given as
//! `batch.max_enqueued_tokens` or learned from a batch the provider failed
//! with `token_limit_exceeded` ("Enqueued token limit reached for gpt-4o-mini
//! in organization org-…. Limit: 2,000,000 enqueued tokens. Please try again
//! once some in_progress batches have been completed."; openai-python #2084).
//!
//! A batch is admitted when its model's enqueued tokens plus its own stay
//! under the limit, or when nothing of that model is enqueued (a lone batch
//! is never held back by the limit: formation keeps it under it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// Enqueued tokens per model, and the limits.
#[derive(Debug, Default)]
pub(crate) struct Enqueued {
    inner: Mutex<Inner>,
    /// Woken when tokens leave the queue or a limit changes.
    changed: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// The limit for every model (`batch.max_enqueued_tokens`).
    configured: Option<u64>,
    /// Limits the provider announced, per model.
    learned: HashMap<String, u64>,
    /// Tokens of admitted, unfinished batches, per model.
    tokens: HashMap<String, u64>,
}

impl Enqueued {
    /// A tracker with `configured` as the limit of every model.
    pub(crate) fn new(configured: Option<u64>) -> Enqueued {
        Enqueued {
            inner: Mutex::new(Inner {
                configured,
                ..Inner::default()
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The limit of `model`: the lower of the configured and the learned one.
    pub(crate) fn limit(&self, model: &str) -> Option<u64> {
        let inner = self.lock();
        match (inner.configured, inner.learned.get(model)) {
            (Some(a), Some(&b)) => Some(a.min(b)),
            (a, b) => a.or(b.copied()),
        }
    }

    /// Tokens of `model` enqueued now.
    #[cfg(test)]
    pub(crate) fn tokens(&self, model: &str) -> u64 {
        self.lock().tokens.get(model).copied().unwrap_or(0)
    }

    /// Counts `tokens` of `model` as enqueued if they fit; whether they did.
    pub(crate) fn try_admit(&self, model: &str, tokens: u64) -> bool {
        let limit = self.limit(model);
        let mut inner = self.lock();
        let now = inner.tokens.get(model).copied().unwrap_or(0);
        let fits = now == 0 || limit.is_none_or(|l| now + tokens <= l);
        if fits {
            inner.tokens.insert(model.to_string(), now + tokens);
        }
        fits
    }

    /// Counts a batch the provider already holds (found on a rerun), fit or not.
    pub(crate) fn hold(&self, model: &str, tokens: u64) {
        *self.lock().tokens.entry(model.to_string()).or_default() += tokens;
    }

    /// A batch of `model` ended (or never reached the provider).
    pub(crate) fn release(&self, model: &str, tokens: u64) {
        {
            let mut inner = self.lock();
            if let Some(t) = inner.tokens.get_mut(model) {
                *t = t.saturating_sub(tokens);
            }
        }
        self.changed.notify_waiters();
    }

    /// The provider announced `limit` for `model`.
    pub(crate) fn learn(&self, model: &str, limit: u64) {
        self.lock().learned.insert(model.to_string(), limit);
        self.changed.notify_waiters();
    }

    /// Waits until tokens leave the queue or a limit changes, or `at_most`.
    pub(crate) async fn wait(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.changed.notified()).await;
    }
}

/// The limit in a `token_limit_exceeded` message ("Limit: 2,000,000 enqueued
/// tokens"), if it states one.
pub(crate) fn announced_limit(message: &str) -> Option<u64> {
    let after = &message[message.find("Limit:")? + "Limit:".len()..];
    let digits: String = after
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_in_the_providers_message_is_read() {
        // As quoted in openai-python #2084.
        let message = "Enqueued token limit reached for gpt-4o-mini in organization org-snq6hvcTYRCMyB87hjZjkoFr. Limit: 2,000,000 enqueued tokens. Please try again once some in_progress batches have been completed.";
        assert_eq!(announced_limit(message), Some(2_000_000));
        assert_eq!(
            announced_limit("Limit: 90000 enqueued tokens."),
            Some(90_000)
        );
        assert_eq!(announced_limit("Enqueued token limit reached."), None);
    }

    #[test]
    fn batches_are_admitted_while_they_fit_and_a_lone_one_always() {
        let q = Enqueued::new(Some(100));
        assert!(q.try_admit("m", 150), "nothing enqueued: a lone batch goes");
        assert!(!q.try_admit("m", 10));
        assert!(q.try_admit("other", 60), "limits are per model");
        assert!(!q.try_admit("other", 50));
        assert!(q.try_admit("other", 40));
        q.release("m", 150);
        assert!(q.try_admit("m", 60));
        q.learn("m", 50);
        assert_eq!(q.limit("m"), Some(50), "the lower limit holds");
        assert!(!q.try_admit("m", 1));
        assert_eq!(q.tokens("m"), 60);
        let unlimited = Enqueued::new(None);
        assert!(unlimited.try_admit("m", 1 << 40) && unlimited.try_admit("m", 1 << 40));
    }
}
