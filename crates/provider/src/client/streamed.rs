//! Streamed calls: the same connection pool and time-out as [`Client::send`],
//! with the answer's server-sent events read as they arrive (see `crate::stream`).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    timed_out, transport_attempt, transport_failure, CallOptions, Client, Endpoint, Transport,
};
use crate::dialect::Dialect;
use crate::outcome::{classify, Attempt, Failure, FailureKind};
use crate::stream::{Collector, StreamError};
use crate::wire::{exchange_streaming, Sink};

impl Client {
    /// Like [`Client::send`] for a request that asked for a streamed answer
    /// (`stream: true` in `dialect`'s shape): server-sent events are read as
    /// they arrive, the answer is put back together as the non-streamed body,
    /// and the success carries [`crate::StreamStats`]. A server that answers
    /// without streaming is read as usual (no stats).
    pub async fn send_stream(
        &self,
        endpoint: &Endpoint,
        body: Bytes,
        timeout: Duration,
        options: &CallOptions<'_>,
        dialect: Dialect,
    ) -> Attempt {
        let started = Instant::now();
        let head = match self.head(endpoint, options, body.len()) {
            Ok(head) => head,
            Err(message) => {
                return Attempt::Failed(transport_failure(
                    FailureKind::Client,
                    message,
                    Duration::ZERO,
                ))
            }
        };
        let origin = self.origin(endpoint);
        // One exchange is one attempt (see `send`).
        let call = async {
            let mut conn = self.checkout(&origin, endpoint).await?;
            let mut collector = Collector::new(dialect, started);
            let mut sink = |piece: &[u8]| collector.feed(piece);
            let result = exchange_streaming(
                &mut conn.stream,
                &mut conn.buf,
                &head,
                &body,
                Sink::Events(&mut sink),
            )
            .await;
            match result {
                Ok(response) => {
                    if response.keep_alive {
                        self.checkin(&origin, conn);
                    }
                    Ok((response, collector))
                }
                Err(e) => Err(Transport::Exchange(e)),
            }
        };
        let (response, collector) = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(done)) => done,
            Ok(Err(transport)) => return transport_attempt(transport, endpoint, started),
            Err(_) => return timed_out(timeout, started),
        };
        if !response.streamed {
            return classify(
                response.status,
                &response.headers,
                response.body,
                started.elapsed(),
                options.expect_json,
            );
        }
        let status = Some(response.status.as_u16());
        match collector.finish() {
            Ok((body, stats)) => match classify(
                response.status,
                &response.headers,
                body,
                started.elapsed(),
                true,
            ) {
                Attempt::Ok(mut success) => {
                    success.stream = Some(stats);
                    Attempt::Ok(success)
                }
                failed => failed,
            },
            Err(StreamError::Provider(message)) => Attempt::Failed(Failure {
                status,
                ..transport_failure(
                    FailureKind::Server,
                    format!("the stream ended with an error event: {message}"),
                    started.elapsed(),
                )
            }),
            Err(StreamError::Incomplete) => Attempt::Failed(Failure {
                status,
                ..transport_failure(
                    FailureKind::BadBody,
                    "the stream ended before its last event (no [DONE] / message_stop)".into(),
                    started.elapsed(),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serves one connection: reads a request, then writes `head` and each
    /// of `pieces` as an HTTP chunk, `gap` apart.
    async fn serve(head: &'static str, pieces: Vec<String>, gap: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let _ = socket.read(&mut request).await.unwrap();
            socket.write_all(head.as_bytes()).await.unwrap();
            for piece in pieces {
                let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
                socket.write_all(chunk.as_bytes()).await.unwrap();
                tokio::time::sleep(gap).await;
            }
            socket.write_all(b"0\r\n\r\n").await.unwrap();
            let _ = socket.read(&mut request).await;
        });
        format!("http://{addr}/v1/chat/completions")
    }

    const SSE_HEAD: &str =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

    async fn call(url: &str, dialect: Dialect) -> Attempt {
        let client = Client::new(1, None).unwrap();
        let endpoint = Endpoint::parse(url, http::Method::POST).unwrap();
        client
            .send_stream(
                &endpoint,
                Bytes::from_static(b"{}"),
                Duration::from_secs(30),
                &CallOptions::default(),
                dialect,
            )
            .await
    }

    #[tokio::test]
    async fn a_streamed_answer_is_timed_and_reassembled() {
        let delta = |t: &str| {
            format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}}}}]}}\n\n")
        };
        let pieces = vec![
            delta("a"),
            delta("b"),
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".into(),
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n".into(),
        ];
        let url = serve(SSE_HEAD, pieces, Duration::from_millis(30)).await;
        let Attempt::Ok(success) = call(&url, Dialect::OpenAi).await else {
            panic!("expected a success");
        };
        let answer = crate::dialect::chat_answer(Dialect::OpenAi, &success.body).unwrap();
        assert_eq!(answer.text, "ab");
        assert_eq!(
            (success.prompt_tokens, success.completion_tokens),
            (Some(4), Some(2))
        );
        let stats = success.stream.expect("stream stats");
        let first = stats.first_token.expect("a first token");
        // Three 30 ms gaps separate the first text from the stream's end.
        assert!(
            stats.total >= first + Duration::from_millis(60),
            "{stats:?}"
        );
    }

    #[tokio::test]
    async fn an_error_event_is_a_retryable_failure_and_a_429_is_read_as_usual() {
        let overloaded = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let url = serve(SSE_HEAD, vec![overloaded.into()], Duration::ZERO).await;
        let Attempt::Failed(f) = call(&url, Dialect::Anthropic).await else {
            panic!("expected a failure");
        };
        assert_eq!(f.kind, FailureKind::Server);
        assert!(f.message.contains("overloaded_error"), "{}", f.message);
        let limited = "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nretry-after: 2\r\nTransfer-Encoding: chunked\r\n\r\n";
        let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
        let url = serve(limited, vec![body.into()], Duration::ZERO).await;
        let Attempt::Failed(f) = call(&url, Dialect::Anthropic).await else {
            panic!("expected a failure");
        };
        assert_eq!(f.kind, FailureKind::RateLimited);
        assert_eq!(f.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(f.message, "HTTP 429: slow down");
    }
}
