//! Property tests of the hand-written parsers: the HTTP/1.1 response reader
//! and the server-sent-events collector, fed generated input in every split.
//!
//! Cases per property: `SLUICE_PROPTEST_CASES` (default 64, kept modest so
//! CI on 2 cores stays fast; a nightly or manual run raises it). A failure
//! prints the shrunk input and its seed; proptest keeps the seed under
//! `proptest-regressions/`, and the cases found so far are kept below as
//! plain regression tests.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::stream::Collector;
use crate::wire::{exchange, exchange_streaming, Sink, WireError, MAX_BODY};
use crate::Dialect;

#[path = "../../../tests/support/watchdog.rs"]
mod watchdog;

fn config() -> ProptestConfig {
    // Called on the test's thread before any case: the test's time limit
    // (`SLUICE_TEST_TIMEOUT_SECS`), so a case that hangs names its test.
    watchdog::once_per_test();
    let cases = std::env::var("SLUICE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// A peer that answers with fixed pieces, one per read, then end of stream;
/// it counts what the client read so a test can bound it.
struct Peer {
    pieces: VecDeque<Vec<u8>>,
    read: usize,
}

impl Peer {
    fn new(bytes: &[u8], cuts: &[usize]) -> Peer {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = VecDeque::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            if c > at {
                pieces.push_back(bytes[at..c].to_vec());
                at = c;
            }
        }
        Peer { pieces, read: 0 }
    }
}

impl AsyncRead for Peer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(mut piece) = self.pieces.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            self.read += n;
            if n < piece.len() {
                self.pieces.push_front(piece.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Peer {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// What one exchange came to, comparable across splits.
#[derive(Debug, PartialEq)]
enum Seen {
    Ok {
        status: u16,
        body: Vec<u8>,
        keep_alive: bool,
        retry_after: Option<Vec<u8>>,
    },
    Err(String),
}

fn run(bytes: &[u8], cuts: &[usize]) -> (Seen, usize) {
    let mut peer = Peer::new(bytes, cuts);
    let mut buf = Vec::new();
    let result = block_on(exchange(
        &mut peer,
        &mut buf,
        b"POST / HTTP/1.1\r\n\r\n",
        b"{}",
    ));
    (seen(result), peer.read)
}

fn seen(result: Result<crate::wire::Response, WireError>) -> Seen {
    match result {
        Ok(r) => Seen::Ok {
            status: r.status.as_u16(),
            body: r.body.to_vec(),
            keep_alive: r.keep_alive,
            retry_after: r.headers.get("retry-after").map(|v| v.as_bytes().to_vec()),
        },
        // The error's kind, not its text: where a truncation is noticed may
        // differ by split, whether it is an error may not.
        Err(e) => Seen::Err(
            match e {
                WireError::Io(_) => "io",
                WireError::Closed(_) => "closed",
                WireError::Protocol(_) => "protocol",
                WireError::Sink(_) => "sink",
            }
            .into(),
        ),
    }
}

/// How a generated body is framed on the wire.
#[derive(Debug, Clone)]
enum Framing {
    Length,
    /// Chunk sizes (cycled over the body), with an extension on some.
    Chunked(Vec<usize>, bool),
    Close,
}

prop_compose! {
    fn response()(
        status in prop::sample::select(vec![200u16, 201, 400, 404, 429, 500, 503]),
        body in prop::collection::vec(any::<u8>(), 0..600),
        framing in prop_oneof![
            Just(Framing::Length),
            (prop::collection::vec(1usize..80, 1..6), any::<bool>())
                .prop_map(|(s, e)| Framing::Chunked(s, e)),
            Just(Framing::Close),
        ],
        interim in any::<bool>(),
        retry in prop::option::of(0u32..100),
        noise in prop::collection::vec("[a-z][a-z-]{0,12}", 0..5),
    ) -> (Vec<u8>, Vec<u8>, Framing, Option<u32>, u16) {
        let mut out = Vec::new();
        if interim {
            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let version = if matches!(framing, Framing::Close) { "1.0" } else { "1.1" };
        out.extend_from_slice(format!("HTTP/{version} {status} X\r\n").as_bytes());
        for (i, name) in noise.iter().enumerate() {
            out.extend_from_slice(format!("x-{name}: v{i}\r\n").as_bytes());
        }
        if let Some(r) = retry {
            out.extend_from_slice(format!("Retry-After: {r}\r\n").as_bytes());
        }
        match &framing {
            Framing::Length => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(&body);
            }
            Framing::Chunked(sizes, ext) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut at = 0;
                let mut i = 0;
                while at < body.len() {
                    let n = sizes[i % sizes.len()].min(body.len() - at);
                    let extension = if *ext && i % 2 == 0 { ";name=v" } else { "" };
                    out.extend_from_slice(format!("{n:x}{extension}\r\n").as_bytes());
                    out.extend_from_slice(&body[at..at + n]);
                    out.extend_from_slice(b"\r\n");
                    at += n;
                    i += 1;
                }
                out.extend_from_slice(b"0\r\n");
                if *ext {
                    out.extend_from_slice(b"Trailer-Name: t\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
            Framing::Close => {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&body);
            }
        }
        (out, body, framing, retry, status)
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any split of a valid response parses to the same response, and that
    /// is the response that was written.
    #[test]
    fn any_split_of_a_valid_response_parses_identically(
        (wire, body, framing, retry, status) in response(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let (whole, _) = run(&wire, &[]);
        let (split, _) = run(&wire, &cuts);
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(whole, Seen::Ok {
            status,
            body,
            keep_alive: !matches!(framing, Framing::Close),
            retry_after: retry.map(|r| r.to_string().into_bytes()),
        });
    }

    /// Any prefix of a valid response is an error (the peer closed early),
    /// never a panic and never a response — except a close-delimited body,
    /// whose end is wherever the peer closes.
    #[test]
    fn a_truncated_response_is_an_error(
        (wire, _body, framing, _retry, _status) in response(),
        keep in any::<prop::sample::Index>(),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let cut = keep.index(wire.len());
        let (result, _) = run(&wire[..cut], &cuts);
        if !matches!(framing, Framing::Close) {
            prop_assert!(matches!(result, Seen::Err(_)), "{:?}", result);
        }
    }

    /// Garbage never panics and the reader never takes more than its limits
    /// allow: a head past 64 KB and a chunk line past 4 KB are refused after
    /// at most one more read.
    #[test]
    fn garbage_never_panics_nor_reads_past_the_limits(
        prefix in prop_oneof![
            Just(Vec::new()),
            Just(b"HTTP/1.1 200 OK\r\n".to_vec()),
            Just(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
            Just(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec()),
        ],
        garbage in prop::collection::vec(any::<u8>(), 0..300),
        repeat in 1usize..400,
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut wire = prefix;
        for _ in 0..repeat {
            wire.extend_from_slice(&garbage);
        }
        let (_, read) = run(&wire, &cuts);
        prop_assert!(read <= wire.len());
        // At most the head limit, a chunk line's limit, and one read's buffer.
        prop_assert!(read <= 64 * 1024 + 4096 + 16 * 1024 || read == wire.len());
    }

    /// Chunk sizes are read as numbers of any size: too large is refused by
    /// the body limit (or, streamed, runs to the end of the stream), never
    /// an overflow.
    #[test]
    fn any_chunk_size_is_refused_or_read_never_overflows(
        size in prop_oneof![any::<u64>().prop_map(|n| format!("{n:x}")), "[0-9a-fA-F+ -]{1,40}"],
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        wire.extend_from_slice(size.as_bytes());
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&tail);
        let (_, _) = run(&wire, &[]);
        // The download path has no cap at all.
        let mut peer = Peer::new(&wire, &[]);
        let mut buf = Vec::new();
        let mut got = 0usize;
        let mut sink = |piece: &[u8]| { got += piece.len(); Ok(()) };
        let _ = block_on(exchange_streaming(&mut peer, &mut buf, b"GET / HTTP/1.1\r\n\r\n", b"", Sink::Download(&mut sink)));
        prop_assert!(got <= tail.len());
    }
}

/// The chunked bodies above were built with a body shorter than the cap:
/// one at the cap's edge is refused when declared larger.
#[test]
fn a_declared_chunk_past_the_body_cap_is_refused_before_reading_it() {
    let wire = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\nab",
        MAX_BODY + 1
    );
    let (result, read) = run(wire.as_bytes(), &[]);
    assert_eq!(result, Seen::Err("protocol".into()));
    assert_eq!(read, wire.len());
}

/// An SSE stream of `events` (OpenAI shape), ending as real ones do.
fn openai_stream(pieces: &[String], crlf: bool) -> String {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    for (i, p) in pieces.iter().enumerate() {
        let delta = serde_json::json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": p}}]});
        if i % 3 == 1 {
            out.push_str(&format!(": keep-alive{nl}event: chunk{nl}"));
        }
        out.push_str(&format!("data: {delta}{nl}{nl}"));
    }
    let last = serde_json::json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": pieces.len()}});
    out.push_str(&format!("data: {last}{nl}{nl}data: [DONE]{nl}{nl}"));
    out
}

fn collect(bytes: &[u8], cuts: &[usize]) -> Result<Vec<u8>, String> {
    let mut c = Collector::new(Dialect::OpenAi, Instant::now());
    let peer = Peer::new(bytes, cuts);
    for piece in peer.pieces {
        c.feed(&piece);
    }
    c.finish()
        .map(|(b, _)| b.to_vec())
        .map_err(|e| format!("{e:?}"))
}

proptest! {
    #![proptest_config(config())]

    /// Any split of a stream, even inside a multi-byte character or between
    /// CR and LF, puts back the same answer: the text is the pieces joined.
    #[test]
    fn any_split_of_an_sse_stream_gives_the_same_answer(
        pieces in prop::collection::vec("\\PC{0,12}", 0..12),
        crlf in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..60),
    ) {
        let stream = openai_stream(&pieces, crlf);
        let whole = collect(stream.as_bytes(), &[]);
        let split = collect(stream.as_bytes(), &cuts);
        prop_assert_eq!(&whole, &split);
        let body: serde_json::Value = serde_json::from_slice(&whole.expect("a complete stream")).expect("JSON");
        let joined = pieces.concat();
        prop_assert_eq!(body.pointer("/choices/0/message/content").and_then(|v| v.as_str()), Some(joined.as_str()));
    }

    /// Any bytes, in any split, end in an answer or an error, never a panic.
    #[test]
    fn sse_garbage_never_panics(
        bytes in prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\n'), Just(b':')], 0..400),
        prefix in prop::sample::select(vec!["", "data: ", "data: {\"choices\":[{\"delta\":", "event: x\ndata: {\"type\":\"content_block_delta\",\"index\":"]),
        anthropic in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut wire = prefix.as_bytes().to_vec();
        wire.extend_from_slice(&bytes);
        let dialect = if anthropic { Dialect::Anthropic } else { Dialect::OpenAi };
        let mut c = Collector::new(dialect, Instant::now());
        for piece in Peer::new(&wire, &cuts).pieces {
            c.feed(&piece);
        }
        let _ = c.finish();
    }
}
