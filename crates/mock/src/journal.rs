//! The request journal: the most recent requests as they arrived, for tests
//! and demos that must see what a client sent (`GET /_mock/requests`).
//!
//! Off unless [`crate::MockConfig::journal`] is set, so benchmarks pay nothing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use http::HeaderMap;

/// Most body bytes kept per entry; the length is always kept.
const MAX_BODY: usize = 64 * 1024;

/// One request as the mock received it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct JournalEntry {
    /// Arrival order, from 1.
    pub seq: u64,
    /// Milliseconds since the server started.
    pub at_ms: u64,
    /// Unix time in milliseconds, to line up the journals of several mocks.
    pub unix_ms: u64,
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-case; `authorization` is redacted.
    pub headers: BTreeMap<String, String>,
    /// The body as text (invalid UTF-8 replaced), at most 64 KiB of it.
    pub body: String,
    /// The body's whole length in bytes.
    pub body_bytes: usize,
    /// The status answered; `None` while in progress or with no response.
    pub status: Option<u16>,
}

/// The last `capacity` requests.
#[derive(Debug)]
pub(crate) struct Journal {
    capacity: usize,
    entries: Mutex<(u64, VecDeque<JournalEntry>)>,
}

impl Journal {
    pub(crate) fn new(capacity: usize) -> Journal {
        Journal {
            capacity,
            entries: Mutex::new((0, VecDeque::new())),
        }
    }

    /// Notes an arriving request; returns its sequence number (`None` when
    /// the journal is off).
    pub(crate) fn arrive(
        &self,
        at_ms: u64,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<u64> {
        if self.capacity == 0 {
            return None;
        }
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let value = if name == http::header::AUTHORIZATION {
                    "<redacted>".to_owned()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name.as_str().to_owned(), value)
            })
            .collect();
        let kept = &body[..body.len().min(MAX_BODY)];
        let mut guard = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        guard.0 += 1;
        let seq = guard.0;
        if guard.1.len() == self.capacity {
            guard.1.pop_front();
        }
        guard.1.push_back(JournalEntry {
            seq,
            at_ms,
            unix_ms: crate::state::unix_ms(),
            method: method.to_owned(),
            path: path.to_owned(),
            headers,
            body: String::from_utf8_lossy(kept).into_owned(),
            body_bytes: body.len(),
            status: None,
        });
        Some(seq)
    }

    /// Notes the status answered to request `seq`.
    pub(crate) fn answer(&self, seq: Option<u64>, status: u16) {
        let Some(seq) = seq else { return };
        let mut guard = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = &mut guard.1;
        // Sequence numbers grow by one, so the entry's place is arithmetic.
        let Some(first) = entries.front().map(|e| e.seq) else {
            return;
        };
        if let Some(entry) = seq
            .checked_sub(first)
            .and_then(|i| entries.get_mut(usize::try_from(i).ok()?))
        {
            entry.status = Some(status);
        }
    }

    /// The entries kept, oldest first, whose path starts with `prefix`.
    pub(crate) fn list(&self, prefix: &str) -> Vec<JournalEntry> {
        let guard = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .1
            .iter()
            .filter(|e| e.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Forgets every entry (the numbering restarts too).
    pub(crate) fn clear(&self) {
        *self.entries.lock().unwrap_or_else(PoisonError::into_inner) = (0, VecDeque::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_and_fills_in_statuses() {
        let journal = Journal::new(2);
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer secret".parse().unwrap());
        let a = journal.arrive(1, "POST", "/a", &headers, b"one");
        let b = journal.arrive(2, "POST", "/b", &HeaderMap::new(), b"two");
        let c = journal.arrive(3, "GET", "/a?x=1", &HeaderMap::new(), b"");
        journal.answer(a, 500);
        journal.answer(c, 200);
        let all = journal.list("");
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].seq, all[0].status), (2, None));
        assert_eq!((all[1].seq, all[1].status), (3, Some(200)));
        assert_eq!(journal.list("/a").len(), 1);
        let _ = b;
        let off = Journal::new(0);
        assert_eq!(off.arrive(0, "GET", "/", &headers, b""), None);
        let kept = Journal::new(1);
        kept.arrive(0, "POST", "/", &headers, b"x");
        assert_eq!(kept.list("")[0].headers["authorization"], "<redacted>");
    }
}
