//! One HTTP/1.1 exchange on a kept-alive connection, in the calling task.
//!
//! Why not hyper here: hyper drives each connection from its own task, so a
//! call costs several cross-task wake-ups, and at zero latency that was most
//! of the client's CPU (BENCHMARKS.md). This module writes the request and
//! reads the response in the task that made the call — one write and usually
//! one read system call — with `httparse` parsing the head. It supports what
//! API responses use: `Content-Length`, chunked bodies, close-delimited bodies,
//! interim 1xx responses, and keep-alive; no pipelining, no upgrades.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest response body accepted: API answers are far smaller; a larger one
/// is an error rather than an unbounded allocation.
pub(crate) const MAX_BODY: usize = 256 * 1024 * 1024;
const MAX_HEADERS: usize = 96;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// Reading or writing failed (reset, broken pipe).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection before a complete response.
    #[error("the server closed the connection {0}")]
    Closed(&'static str),
    /// Not a valid HTTP/1.x response.
    #[error("invalid HTTP response: {0}")]
    Protocol(String),
    /// A streamed body's sink could not take it (a download's disk is full).
    #[error("could not write the body: {0}")]
    Sink(std::io::Error),
}

const BEFORE_RESPONDING: &str = "before responding";

/// A parsed response.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    /// Only the headers callers read: `retry-after*`, `*ratelimit*`,
    /// `x-should-retry` and `content-type`.
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Whether the connection may carry another request.
    pub(crate) keep_alive: bool,
    /// The body went to the caller's sink as it arrived (`body` is empty).
    pub(crate) streamed: bool,
}

/// Sends `head` + `body` and reads one response. `buf` is the connection's
/// read buffer (kept between calls to avoid reallocating).
pub(crate) async fn exchange<S>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    head: &[u8],
    body: &[u8],
) -> Result<Response, WireError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if body.len() <= 16 * 1024 {
        // One write for small requests: head and body in one segment.
        let mut whole = Vec::with_capacity(head.len() + body.len());
        whole.extend_from_slice(head);
        whole.extend_from_slice(body);
        stream.write_all(&whole).await?;
    } else {
        stream.write_all(head).await?;
        stream.write_all(body).await?;
    }
    stream.flush().await?;
    buf.clear();
    read_response(stream, buf).await
}

/// Reads more bytes into `buf`; `Ok(false)` at end of stream.
async fn fill<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(8192);
    }
    let n = stream.read_buf(buf).await?;
    Ok(n > 0)
}

struct Head {
    status: StatusCode,
    headers: HeaderMap,
    length: Option<usize>,
    chunked: bool,
    keep_alive: bool,
    len: usize,
}

fn parse_head(data: &[u8]) -> Result<Option<Head>, WireError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let len = match response.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(WireError::Protocol(e.to_string())),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| WireError::Protocol(format!("status code {code}")))?;
    let http11 = response.version == Some(1);
    let mut head = Head {
        status,
        headers: HeaderMap::new(),
        length: None,
        chunked: false,
        keep_alive: http11,
        len,
    };
    for h in response.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).unwrap_or("").trim();
            let n: usize = text
                .parse()
                .map_err(|_| WireError::Protocol(format!("content-length {text:?}")))?;
            if head.length.is_some_and(|m| m != n) {
                return Err(WireError::Protocol(
                    "conflicting content-length headers".into(),
                ));
            }
            head.length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let text = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            head.chunked = text.split(',').any(|t| t.trim() == "chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let text = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if text.split(',').any(|t| t.trim() == "close") {
                head.keep_alive = false;
            } else if text.split(',').any(|t| t.trim() == "keep-alive") {
                head.keep_alive = true;
            }
        } else if wanted(name) {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) {
                head.headers.append(n, v);
            }
        }
    }
    Ok(Some(head))
}

/// Headers the caller reads; the rest are skipped without allocating.
fn wanted(name: &str) -> bool {
    let lower = |prefix: &str| {
        name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    lower("retry-after")
        || lower("x-ratelimit-")
        || lower("anthropic-ratelimit-")
        || name.eq_ignore_ascii_case("x-should-retry")
        || name.eq_ignore_ascii_case("content-type")
}

async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Response, WireError> {
    let head = read_head(stream, buf).await?;
    let (body, keep_alive) = read_body(stream, buf, &head).await?;
    Ok(Response {
        status: head.status,
        headers: head.headers,
        body,
        keep_alive,
        streamed: false,
    })
}

/// The final response head, past any interim 1xx responses.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Head, WireError> {
    loop {
        let head = loop {
            if let Some(head) = parse_head(buf)? {
                break head;
            }
            if buf.len() > MAX_HEAD {
                return Err(WireError::Protocol(
                    "response head larger than 64 KB".into(),
                ));
            }
            if !fill(stream, buf).await? {
                return Err(WireError::Closed(if buf.is_empty() {
                    BEFORE_RESPONDING
                } else {
                    "in the middle of the response head"
                }));
            }
        };
        if head.status.is_informational() {
            if head.status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(WireError::Protocol(
                    "unexpected 101 Switching Protocols".into(),
                ));
            }
            buf.drain(..head.len);
            continue;
        }
        return Ok(head);
    }
}

/// The whole body after `head`, and whether the connection may be reused.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    head: &Head,
) -> Result<(Bytes, bool), WireError> {
    let no_body = head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED;
    Ok(if no_body {
        (Bytes::new(), head.keep_alive && buf.len() == head.len)
    } else if head.chunked {
        let mut body = Vec::new();
        let mut collect = |chunk: &[u8]| {
            body.extend_from_slice(chunk);
            Ok(())
        };
        read_chunked(stream, buf, head.len, Some(MAX_BODY), &mut collect).await?;
        (Bytes::from(body), head.keep_alive)
    } else if let Some(length) = head.length {
        if length > MAX_BODY {
            return Err(WireError::Protocol(format!(
                "body of {length} bytes is too large"
            )));
        }
        while buf.len() < head.len + length {
            if !fill(stream, buf).await? {
                return Err(WireError::Closed("in the middle of the response body"));
            }
        }
        let extra = buf.len() > head.len + length;
        (
            Bytes::copy_from_slice(&buf[head.len..head.len + length]),
            head.keep_alive && !extra,
        )
    } else {
        // No length: the body runs to the end of the connection.
        while fill(stream, buf).await? {
            if buf.len() - head.len > MAX_BODY {
                return Err(WireError::Protocol("body is too large".into()));
            }
        }
        (Bytes::copy_from_slice(&buf[head.len..]), false)
    })
}

/// Takes a streamed body piece by piece; an error ends the exchange.
type Pieces<'a> = Box<dyn FnMut(&[u8]) -> std::io::Result<()> + Send + 'a>;

/// Where [`exchange_streaming`] hands a 2xx body as it arrives.
pub(crate) enum Sink<'a> {
    /// Only a `text/event-stream` 2xx is streamed (a live answer read as it
    /// is generated), capped like any body.
    Events(&'a mut (dyn FnMut(&[u8]) + Send)),
    /// Any 2xx is streamed, with no size limit (a batch's result file runs to
    /// gigabytes); the sink may fail (a full disk), which ends the exchange.
    Download(&'a mut (dyn FnMut(&[u8]) -> std::io::Result<()> + Send)),
}

/// Like [`exchange`], but a 2xx body that `sink` takes is handed to it piece
/// by piece as it arrives (a chunk's data, or what one read returned) instead
/// of being collected; such a response comes back with an empty body and
/// `streamed` set. Any other response is read whole.
pub(crate) async fn exchange_streaming<S>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    head: &[u8],
    body: &[u8],
    sink: Sink<'_>,
) -> Result<Response, WireError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(head).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    buf.clear();
    let head = read_head(stream, buf).await?;
    let events = head.status.is_success()
        && head
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim_start().starts_with("text/event-stream"));
    let (cap, on_data): (_, Pieces<'_>) = match sink {
        Sink::Events(on) if events => (
            Some(MAX_BODY),
            Box::new(move |piece: &[u8]| {
                on(piece);
                Ok(())
            }),
        ),
        Sink::Download(on) if head.status.is_success() => (None, Box::new(on)),
        _ => {
            let (body, keep_alive) = read_body(stream, buf, &head).await?;
            return Ok(Response {
                status: head.status,
                headers: head.headers,
                body,
                keep_alive,
                streamed: false,
            });
        }
    };
    let keep_alive = stream_body(stream, buf, &head, cap, on_data).await?;
    Ok(Response {
        status: head.status,
        headers: head.headers,
        body: Bytes::new(),
        keep_alive,
        streamed: true,
    })
}

/// Hands the body after `head` to `on_data` as it arrives, keeping at most
/// about one read's worth in `buf`; whether the connection may be reused.
async fn stream_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    head: &Head,
    cap: Option<usize>,
    mut on_data: Pieces<'_>,
) -> Result<bool, WireError> {
    if head.chunked {
        read_chunked(stream, buf, head.len, cap, &mut *on_data).await?;
        return Ok(head.keep_alive);
    }
    buf.drain(..head.len);
    let mut seen = 0usize;
    loop {
        let upto = head.length.map_or(buf.len(), |n| buf.len().min(n - seen));
        if upto > 0 {
            on_data(&buf[..upto]).map_err(WireError::Sink)?;
            seen += upto;
            buf.drain(..upto);
        }
        if head.length.is_some_and(|n| seen >= n) {
            return Ok(head.keep_alive && buf.is_empty());
        }
        if cap.is_some_and(|c| seen > c) {
            return Err(WireError::Protocol("body is too large".into()));
        }
        if !fill(stream, buf).await? {
            if head.length.is_some() {
                return Err(WireError::Closed("in the middle of the response body"));
            }
            return Ok(false);
        }
    }
}

/// Decodes a chunked body starting at `start` in `buf`, reading as needed and
/// handing each chunk's data to `on_chunk` as it arrives (a large chunk in
/// pieces); consumed bytes leave `buf`, so a body of any size streams through
/// a small buffer. `cap` bounds the whole body.
async fn read_chunked<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    start: usize,
    cap: Option<usize>,
    on_chunk: &mut (dyn FnMut(&[u8]) -> std::io::Result<()> + Send + '_),
) -> Result<(), WireError> {
    let mut total = 0usize;
    let mut pos = start;
    loop {
        let line_end = line_at(stream, buf, pos).await?;
        let line = std::str::from_utf8(&buf[pos..line_end])
            .map_err(|_| WireError::Protocol("chunk size is not text".into()))?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| WireError::Protocol(format!("chunk size {hex:?}")))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = line_at(stream, buf, pos).await?;
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Ok(());
                }
            }
        }
        total = total.saturating_add(size);
        if cap.is_some_and(|c| total > c) {
            return Err(WireError::Protocol("body is too large".into()));
        }
        let mut left = size;
        while left > 0 {
            if buf.len() <= pos {
                buf.clear();
                pos = 0;
                if !fill(stream, buf).await? {
                    return Err(WireError::Closed("in the middle of a chunked body"));
                }
                continue;
            }
            let take = left.min(buf.len() - pos);
            on_chunk(&buf[pos..pos + take]).map_err(WireError::Sink)?;
            pos += take;
            left -= take;
        }
        while buf.len() < pos + 2 {
            if !fill(stream, buf).await? {
                return Err(WireError::Closed("in the middle of a chunked body"));
            }
        }
        if &buf[pos..pos + 2] != b"\r\n" {
            return Err(WireError::Protocol("chunk not followed by CRLF".into()));
        }
        pos += 2;
        if pos >= 64 * 1024 {
            buf.drain(..pos);
            pos = 0;
        }
    }
}

/// The index of the next CRLF at or after `pos`, reading more as needed.
async fn line_at<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    pos: usize,
) -> Result<usize, WireError> {
    loop {
        if let Some(i) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
            return Ok(pos + i);
        }
        if buf.len() - pos > 4096 {
            return Err(WireError::Protocol("chunk line longer than 4 KB".into()));
        }
        if !fill(stream, buf).await? {
            return Err(WireError::Closed("in the middle of a chunked body"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    /// Runs one exchange against a peer that answers with `reply`, written in
    /// pieces of `piece` bytes, then optionally closes.
    async fn against(
        reply: &'static [u8],
        piece: usize,
        close: bool,
    ) -> Result<Response, WireError> {
        let (mut client, mut server) = duplex(1 << 20);
        let peer = tokio::spawn(async move {
            let mut request = vec![0u8; 1024];
            let n = server.read(&mut request).await.unwrap();
            assert!(request[..n].starts_with(b"POST / HTTP/1.1\r\n"));
            for chunk in reply.chunks(piece) {
                server.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            if !close {
                // Keep the stream open until the client is done.
                let _ = server.read(&mut request).await;
            }
        });
        let mut buf = Vec::new();
        let result = exchange(&mut client, &mut buf, b"POST / HTTP/1.1\r\n\r\n", b"{}").await;
        drop(client);
        peer.await.unwrap();
        result
    }

    #[tokio::test]
    async fn content_length_in_small_pieces() {
        let r = against(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nRetry-After: 3\r\nX-Other: y\r\n\r\n{\"a\":1}", 3, false)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"{\"a\":1}");
        assert!(r.keep_alive);
        assert_eq!(r.headers.get("retry-after").unwrap(), "3");
        assert!(r.headers.get("x-other").is_none());
    }

    #[tokio::test]
    async fn chunked_with_extensions_and_trailers() {
        let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nTrailer: t\r\n\r\n";
        for piece in [1, 5, 1000] {
            let r = against(reply, piece, false).await.unwrap();
            assert_eq!(&r.body[..], b"{\"a\":1}", "piece {piece}");
            assert!(r.keep_alive);
        }
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let r = against(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", 1000, false)
            .await
            .unwrap();
        assert_eq!(r.status, 429);
        assert!(!r.keep_alive);
    }

    #[tokio::test]
    async fn close_delimited_body_reads_to_the_end() {
        let r = against(b"HTTP/1.0 200 OK\r\n\r\nhello world", 4, true)
            .await
            .unwrap();
        assert_eq!(&r.body[..], b"hello world");
        assert!(!r.keep_alive);
    }

    #[tokio::test]
    async fn truncated_responses_are_errors_that_say_where() {
        let e = against(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"a\"",
            100,
            true,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("middle of the response body"), "{e}");
        let e = against(b"", 1, true).await.unwrap_err();
        assert!(e.to_string().contains("before responding"), "{e}");
        let e = against(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            100,
            true,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("chunked"), "{e}");
        let e = against(b"garbage\r\n\r\n", 100, true).await.unwrap_err();
        assert!(matches!(e, WireError::Protocol(_)), "{e}");
    }

    #[tokio::test]
    async fn no_content_has_no_body() {
        let r = against(b"HTTP/1.1 204 No Content\r\n\r\n", 100, false)
            .await
            .unwrap();
        assert!(r.body.is_empty());
        assert!(r.keep_alive);
    }
}
