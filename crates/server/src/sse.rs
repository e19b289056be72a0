//! Server-sent events as the server writes them: each event framed once
//! (`Bytes`, so the clients of one feed share it instead of each holding a
//! copy) and sent through a bounded outbox per client, which a task fills
//! and the response drains. A client that leaves closes its outbox; one
//! that takes no event for [`SLOW`] while its outbox is full is dropped, so
//! a slow reader never makes the server buffer without limit.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// How long a client with a full outbox has to take an event before it is
/// dropped.
pub(crate) const SLOW: Duration = Duration::from_secs(30);

/// The event `name` with JSON `data` (compact JSON has no line breaks, so
/// it is one `data:` line).
pub(crate) fn frame(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Where a task puts the events of one client.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Bytes>,
}

impl Outbox {
    /// Queues `frame`; `false` when the client is gone, or was too slow
    /// (its outbox stayed full for [`SLOW`]) and is dropped: stop sending.
    pub(crate) async fn push(&self, frame: Bytes) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(frame)) => {
                let sent = tokio::time::timeout(SLOW, self.tx.send(frame)).await;
                if sent.is_err() {
                    tracing::info!("dropped an event stream client that read nothing for {SLOW:?}");
                }
                matches!(sent, Ok(Ok(())))
            }
        }
    }
}

/// An outbox of `capacity` events and the response that streams it (ends
/// when the outbox is dropped).
pub(crate) fn channel(capacity: usize) -> (Outbox, Response) {
    let (tx, rx) = mpsc::channel::<Bytes>(capacity);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    (Outbox { tx }, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_is_dropped_once_its_outbox_stays_full() {
        let (outbox, response) = channel(2);
        assert!(outbox.push(Bytes::from_static(b"1")).await);
        assert!(outbox.push(Bytes::from_static(b"2")).await);
        // Full: the third waits SLOW (paused time runs ahead), then gives up.
        let started = tokio::time::Instant::now();
        assert!(!outbox.push(Bytes::from_static(b"3")).await);
        assert!(started.elapsed() >= SLOW);
        drop(response);
        // A client that left: refused at once.
        assert!(!outbox.push(Bytes::from_static(b"4")).await);
    }

    #[test]
    fn events_are_one_line_of_json() {
        let f = frame("progress", &serde_json::json!({"a": "x\ny"}));
        assert_eq!(&f[..], b"event: progress\ndata: {\"a\":\"x\\ny\"}\n\n");
    }
}
