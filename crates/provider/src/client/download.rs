//! Downloads: the same connection pool and time-out as [`Client::send`], with
//! a 2xx body written to the caller's sink as it arrives and no size limit
//! (a batch's result file can be far larger than any answer).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    timed_out, transport_attempt, transport_failure, CallOptions, Client, Endpoint, Transport,
};
use crate::outcome::{classify, Attempt, Failure, FailureKind};
use crate::wire::{exchange_streaming, Sink, WireError};

/// A body that went to the sink.
#[derive(Debug, Clone, Copy)]
pub struct Downloaded {
    /// HTTP status (2xx).
    pub status: u16,
    /// Bytes handed to the sink.
    pub bytes: u64,
    /// Time from sending to the last byte.
    pub latency: Duration,
}

impl Client {
    /// Sends `body` to `endpoint` and hands a 2xx body to `sink` piece by
    /// piece as it arrives. Any other answer is read whole and sorted like a
    /// call's ([`Failure::kind`] says whether to try again). On a failure the
    /// sink may have taken part of a body: a retry starts its file afresh. A
    /// sink error (a full disk) is a [`FailureKind::Client`] failure.
    pub async fn download(
        &self,
        endpoint: &Endpoint,
        body: Bytes,
        timeout: Duration,
        options: &CallOptions<'_>,
        sink: &mut (dyn FnMut(&[u8]) -> std::io::Result<()> + Send),
    ) -> Result<Downloaded, Failure> {
        let started = Instant::now();
        let head = self
            .head(endpoint, options, body.len())
            .map_err(|m| transport_failure(FailureKind::Client, m, Duration::ZERO))?;
        let origin = self.origin(endpoint);
        let mut bytes = 0u64;
        // One exchange is one attempt (see `send`): a dropped kept-alive
        // connection is the caller's to retry.
        let call = async {
            let mut conn = self.checkout(&origin, endpoint).await?;
            let mut counted = |piece: &[u8]| {
                bytes += piece.len() as u64;
                sink(piece)
            };
            let result = exchange_streaming(
                &mut conn.stream,
                &mut conn.buf,
                &head,
                &body,
                Sink::Download(&mut counted),
            )
            .await;
            match result {
                Ok(response) => {
                    if response.keep_alive {
                        self.checkin(&origin, conn);
                    }
                    Ok(response)
                }
                Err(e) => Err(Transport::Exchange(e)),
            }
        };
        let response = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(Transport::Exchange(WireError::Sink(e)))) => {
                return Err(transport_failure(
                    FailureKind::Client,
                    format!("could not write the download: {e}"),
                    started.elapsed(),
                ))
            }
            Ok(Err(transport)) => {
                return Err(failed(transport_attempt(transport, endpoint, started)))
            }
            Err(_) => return Err(failed(timed_out(timeout, started))),
        };
        if response.streamed {
            return Ok(Downloaded {
                status: response.status.as_u16(),
                bytes,
                latency: started.elapsed(),
            });
        }
        match classify(
            response.status,
            &response.headers,
            response.body,
            started.elapsed(),
            false,
        ) {
            // A 2xx is always streamed; this is only for completeness.
            Attempt::Ok(success) => Ok(Downloaded {
                status: success.status,
                bytes,
                latency: success.latency,
            }),
            Attempt::Failed(f) => Err(f),
        }
    }
}

fn failed(attempt: Attempt) -> Failure {
    match attempt {
        Attempt::Failed(f) => f,
        Attempt::Ok(_) => transport_failure(
            FailureKind::Connection,
            "unexpected success".into(),
            Duration::ZERO,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serves one response made of `head` then `body` written in 64 KiB
    /// pieces; the URL to ask.
    async fn serve(head: String, body: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let _ = socket.read(&mut request).await.unwrap();
            socket.write_all(head.as_bytes()).await.unwrap();
            for piece in body.chunks(64 * 1024) {
                socket.write_all(piece).await.unwrap();
            }
            let _ = socket.read(&mut request).await;
        });
        format!("http://{addr}/v1/files/file-1/content")
    }

    /// Order-sensitive digest of `bytes` (cheaper than keeping a copy).
    fn digest(mut state: u64, bytes: &[u8]) -> u64 {
        for &b in bytes {
            state = (state ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        state
    }

    /// Downloads `url`: the result, the body's digest and its largest piece.
    async fn fetch(url: &str) -> (Result<Downloaded, Failure>, u64, usize) {
        let client = Client::new(1, None).unwrap();
        let endpoint = Endpoint::parse(url, http::Method::GET).unwrap();
        let mut got = 0xcbf2_9ce4_8422_2325;
        let mut largest_piece = 0;
        let mut sink = |piece: &[u8]| {
            largest_piece = largest_piece.max(piece.len());
            got = digest(got, piece);
            Ok(())
        };
        let options = CallOptions {
            expect_json: false,
            ..CallOptions::default()
        };
        let r = client
            .download(
                &endpoint,
                Bytes::new(),
                Duration::from_secs(30),
                &options,
                &mut sink,
            )
            .await;
        (r, got, largest_piece)
    }

    /// Lines of JSON, `n` bytes in all.
    fn jsonl(n: usize) -> Vec<u8> {
        let line = b"{\"custom_id\":\"x\",\"response\":{\"status_code\":200}}\n";
        line.iter().copied().cycle().take(n).collect()
    }

    #[tokio::test]
    async fn a_body_larger_than_any_answer_streams_through_in_pieces() {
        // Larger than the cap on answers read whole, by Content-Length and chunked.
        let size = crate::wire::MAX_BODY + 3 * 1024 * 1024;
        let body = jsonl(size);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n");
        let (r, got, largest) = fetch(&serve(head, body.clone()).await).await;
        assert_eq!(r.unwrap().bytes, size as u64);
        let whole = digest(0xcbf2_9ce4_8422_2325, &body);
        assert_eq!(got, whole, "the bytes arrive intact and in order");
        assert!(largest <= 4 << 20, "handed over as it arrives: {largest}");

        let mut chunked = Vec::new();
        for piece in body.chunks(5 << 20) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string();
        let (r, got, largest) = fetch(&serve(head, chunked).await).await;
        assert_eq!(r.unwrap().bytes, size as u64);
        assert_eq!(got, whole);
        assert!(
            largest < 5 << 20,
            "a large chunk is handed over in pieces: {largest}"
        );
    }

    #[tokio::test]
    async fn an_error_answer_is_read_whole_and_sorted() {
        let body = br#"{"error":{"message":"No such File object: file-1","type":"invalid_request_error"}}"#;
        let head = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let (r, got, largest) = fetch(&serve(head, body.to_vec()).await).await;
        let f = r.unwrap_err();
        assert_eq!((f.kind, f.status), (FailureKind::Client, Some(404)));
        assert_eq!(
            (got, largest),
            (0xcbf2_9ce4_8422_2325, 0),
            "nothing of an error goes to the sink"
        );
    }

    #[tokio::test]
    async fn a_sink_that_cannot_write_ends_the_download_for_good() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_string();
        let url = serve(head, b"0123456789".to_vec()).await;
        let client = Client::new(1, None).unwrap();
        let endpoint = Endpoint::parse(&url, http::Method::GET).unwrap();
        let mut full = |_: &[u8]| Err(std::io::Error::other("No space left on device"));
        let f = client
            .download(
                &endpoint,
                Bytes::new(),
                Duration::from_secs(30),
                &CallOptions::default(),
                &mut full,
            )
            .await
            .unwrap_err();
        assert_eq!(f.kind, FailureKind::Client);
        assert!(f.message.contains("No space left"), "{}", f.message);
    }
}
