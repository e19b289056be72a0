//! Contract tests: the providers' own documented example responses, transcribed
//! by hand from their reference pages (each test names its page), served by a
//! one-shot HTTP server on 127.0.0.1 and read by the real client — so a
//! misreading of the API fails here, not only against `sluice mock`, which
//! the same hands wrote.
//!
//! Pages read (November–December 2026 versions):
//! - OpenAI API reference, "Create chat completion", "The chat completion
//!   object", "The chat completion chunk object", "Create embeddings":
//!   platform.openai.com/docs/api-reference/chat, …/embeddings
//! - OpenAI guides: "Function calling" (streaming), "Rate limits" (headers),
//!   "Error codes": platform.openai.com/docs/guides/…
//! - Anthropic: "Messages", "Streaming Messages", "Errors", "Rate limits":
//!   docs.anthropic.com/en/api/messages, …/en/docs/build-with-claude/streaming,
//!   …/en/api/errors, …/en/api/rate-limits
//!
//! Where the pages are silent (`x-should-retry`, `retry-after` bounds) the
//! behaviour follows the official Python SDKs, which openai-python and
//! anthropic-sdk-python generate from one template (`_base_client.py`:
//! `_should_retry` obeys `x-should-retry: true|false` before the status
//! rule of 408, 409, 429 and ≥ 500; `_calculate_retry_timeout` reads
//! `retry-after-ms`, then `retry-after` as seconds or an HTTP date). sluice
//! waits for a `retry-after` up to 5 minutes (the SDKs ignore one over 60 s)
//! and, like them, treats 0 as no request.

mod anthropic;
mod openai;
#[path = "../../../../tests/support/watchdog.rs"]
mod watchdog;

use std::time::Duration;

use bytes::Bytes;
use sluice_provider::{Attempt, CallOptions, Client, Dialect, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One documented response: status line, headers, body (sent whole, or as
/// server-sent events in chunks when `stream`).
pub(crate) struct Reply<'a> {
    pub(crate) status: &'a str,
    pub(crate) headers: &'a [(&'a str, &'a str)],
    pub(crate) body: &'a str,
    pub(crate) stream: bool,
}

/// Serves `reply` to one request and returns what the client made of it.
pub(crate) async fn exchange(dialect: Dialect, reply: Reply<'_>) -> Attempt {
    // The test's time limit: the exchange is all a contract test waits on.
    let _limit = watchdog::Watchdog::start();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut head = format!("HTTP/1.1 {}\r\n", reply.status);
    for (k, v) in reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let wire = if reply.stream {
        head.push_str("Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut out = head.into_bytes();
        // Chunks of 37 bytes: events split mid-line, as networks split them.
        for piece in reply.body.as_bytes().chunks(37) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    } else {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            reply.body.len()
        ));
        let mut out = head.into_bytes();
        out.extend_from_slice(reply.body.as_bytes());
        out
    };
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 16 * 1024];
        let _ = socket.read(&mut request).await;
        socket.write_all(&wire).await.unwrap();
        let _ = socket.read(&mut request).await;
    });
    let client = Client::for_dialect(dialect, 1, None).unwrap();
    let endpoint = Endpoint::parse(&format!("http://{addr}/v1/x"), http::Method::POST).unwrap();
    let body = Bytes::from_static(b"{}");
    let timeout = Duration::from_secs(30);
    let options = CallOptions::default();
    if reply.stream {
        client
            .send_stream(&endpoint, body, timeout, &options, dialect)
            .await
    } else {
        client.send(&endpoint, body, timeout, &options).await
    }
}

/// The success inside `attempt`, or a panic saying what it was.
pub(crate) fn ok(attempt: Attempt) -> sluice_provider::Success {
    match attempt {
        Attempt::Ok(s) => s,
        Attempt::Failed(f) => panic!("expected a success, got {f:?}"),
    }
}

/// The failure inside `attempt`.
pub(crate) fn failed(attempt: Attempt) -> sluice_provider::Failure {
    match attempt {
        Attempt::Failed(f) => f,
        Attempt::Ok(s) => panic!("expected a failure, got HTTP {}", s.status),
    }
}
