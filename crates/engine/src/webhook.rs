//! Webhook notifications: a signed JSON POST per finished item or run,
//! retried with backoff, whose outcome is a value the caller records.
//!
//! Receivers check `X-Sluice-Signature: sha256=<hex>`, an HMAC-SHA256 over
//! `"{X-Sluice-Timestamp}.{body}"`: binding the timestamp means a captured
//! body replayed later with a fresh timestamp no longer verifies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use sluice_limit::Backoff;
use sluice_provider::{Attempt, CallOptions, Client, Endpoint, Failure};

type HmacSha256 = Hmac<Sha256>;

/// Where and how to notify.
pub(crate) struct WebhookTarget {
    /// Absolute http(s) URL the JSON is POSTed to.
    pub(crate) url: String,
    /// Extra request headers, already rendered; values may hold tokens, so
    /// they never appear in messages.
    pub(crate) headers: Vec<(String, String)>,
    /// HMAC key read from the env var; `None` sends no signature. Never logged.
    pub(crate) secret: Option<Vec<u8>>,
    /// Retries after the first attempt, so at most `max_retries + 1` POSTs.
    pub(crate) max_retries: u32,
    /// Delay between attempts; also caps a receiver's `retry-after`.
    pub(crate) backoff: Backoff,
    /// Limit on one whole exchange, so a hung receiver cannot stall the run.
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values and the key may be credentials: names only.
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("headers", &names)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The outcome of one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The receiver answered 2xx.
    Delivered {
        /// POSTs made, including the successful one.
        attempts: u32,
        /// The receiver's 2xx status.
        status: u16,
    },
    /// Given up: a final 4xx, retries exhausted, or an invalid URL (0 attempts).
    Failed {
        /// POSTs made.
        attempts: u32,
        /// One line naming the URL and the last failure; never secrets.
        error: String,
    },
}

/// Posts `body` (JSON) to the target, signed, retrying retryable failures
/// (5xx, 429 honouring retry-after, timeouts, connection errors) with
/// backoff; 4xx other than 408/429 fail at once. Never panics; never returns
/// an error: the caller records the Delivery.
///
/// `client` must be one built without an API key (`Client::new(n, None)`):
/// a provider client's `Authorization` header would go to the receiver.
pub(crate) async fn deliver(client: &Client, target: &WebhookTarget, body: &Value) -> Delivery {
    let endpoint = match Endpoint::parse(&target.url, http::Method::POST) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            return Delivery::Failed {
                attempts: 0,
                error: format!("webhook not sent: {e}"),
            }
        }
    };
    let shown = display_url(&endpoint);
    let body = Bytes::from(body.to_string());
    // One id for every retry, so the receiver can drop duplicates.
    let delivery_id = format!("{:032x}", fastrand::u128(..));
    let mut attempts: u32 = 0;
    loop {
        attempts = attempts.saturating_add(1);
        let headers = request_headers(target, &delivery_id, &body);
        let options = CallOptions {
            headers: &headers,
            content_type: None,
            // Receivers often answer `ok` or nothing; any 2xx counts.
            expect_json: false,
        };
        let failure = match client
            .send(&endpoint, body.clone(), target.timeout, &options)
            .await
        {
            Attempt::Ok(success) => {
                return Delivery::Delivered {
                    attempts,
                    status: success.status,
                }
            }
            Attempt::Failed(failure) => failure,
        };
        if !retryable(&failure) || attempts > target.max_retries {
            return Delivery::Failed {
                attempts,
                error: format!(
                    "webhook to {shown} failed after {attempts} attempt(s): {}",
                    failure.message
                ),
            };
        }
        // Capped: a receiver asking for an hour would hold the run's end open.
        let retry_after = failure
            .retry_after
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map(|ms| ms.min(target.backoff.cap_ms));
        let wait = target
            .backoff
            .delay_ms(attempts, fastrand::f64(), retry_after);
        let reason = &failure.message;
        tracing::debug!(url = %shown, attempts, wait_ms = wait, "webhook retry: {reason}");
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// Whether a failed POST is worth repeating. Stricter than the provider
/// classification: a 409 from a webhook receiver is an answer, not contention.
fn retryable(failure: &Failure) -> bool {
    match failure.status {
        Some(408 | 429) => true,
        Some(400..=499) => false,
        _ => failure.kind.is_retryable(),
    }
}

/// The user's headers plus the delivery id, a fresh timestamp and, with a
/// key, the signature; re-signed per attempt so a receiver's freshness window
/// does not reject late retries.
fn request_headers(
    target: &WebhookTarget,
    delivery_id: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut headers = target.headers.clone();
    headers.push(("X-Sluice-Delivery".into(), delivery_id.into()));
    headers.push(("X-Sluice-Timestamp".into(), timestamp.to_string()));
    if let Some(key) = &target.secret {
        headers.push(("X-Sluice-Signature".into(), sign(key, timestamp, body)));
    }
    headers
}

/// The URL for messages: no user-info and no query, where tokens often sit.
fn display_url(endpoint: &Endpoint) -> String {
    let uri = &endpoint.uri;
    let query = if uri.query().is_some() { "?…" } else { "" };
    format!(
        "{}://{}{}{query}",
        uri.scheme_str().unwrap_or("http"),
        endpoint.host_port(),
        uri.path()
    )
}

/// The MAC over `"{timestamp}.{body}"`.
fn mac(key: &[u8], timestamp: u64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `sha256=<hex of HMAC-SHA256(key, "{timestamp}.{body}")>`, sent as
/// `X-Sluice-Signature` alongside `X-Sluice-Timestamp: <unix seconds>`.
pub(crate) fn sign(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    let digest = mac(key, timestamp, body).finalize().into_bytes();
    format!("sha256={}", hex::encode(digest))
}

/// Whether `signature` is `sign(key, timestamp, body)`, compared in constant
/// time; for tests and for users' docs.
pub(crate) fn verify(key: &[u8], timestamp: u64, body: &[u8], signature: &str) -> bool {
    let digest = signature
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok());
    digest.is_some_and(|d| mac(key, timestamp, body).verify_slice(&d).is_ok())
}

/// `{"event":"item.finished","run":run_id,"id":unit_id,"status":"done"|"failed","error":...,"output":...}`
pub(crate) fn item_event(
    run_id: &str,
    unit_id: &str,
    status: &str,
    error: Option<&str>,
    output: &Value,
) -> Value {
    json!({
        "event": "item.finished",
        "run": run_id,
        "id": unit_id,
        "status": status,
        "error": error,
        "output": output,
    })
}

/// `{"event":"run.finished","run":run_id,"done":n,"failed":n,"pending":n,"interrupted":bool}`
pub(crate) fn run_event(
    run_id: &str,
    done: u64,
    failed: u64,
    pending: u64,
    interrupted: bool,
) -> Value {
    json!({
        "event": "run.finished",
        "run": run_id,
        "done": done,
        "failed": failed,
        "pending": pending,
        "interrupted": interrupted,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// One request as the test server saw it (header names lower-cased).
    struct Received {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Received {
        fn header(&self, name: &str) -> &str {
            let found = self.headers.iter().find(|(n, _)| n == name);
            found.map_or("", |(_, v)| v.as_str())
        }
    }

    type Log = Arc<Mutex<Vec<Received>>>;

    /// Answers `statuses` in turn (the last repeats), one request per
    /// connection; with `key`, a request whose signature fails gets 401.
    async fn serve(statuses: Vec<u16>, key: Option<&'static [u8]>) -> (String, Log) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let seen = Log::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let request = read_request(&mut sock).await;
                let signed = key.is_none_or(|key| {
                    let ts = request.header("x-sluice-timestamp").parse().unwrap_or(0);
                    verify(key, ts, &request.body, request.header("x-sluice-signature"))
                });
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(request);
                    log.len()
                };
                let status = if signed {
                    statuses[(n - 1).min(statuses.len() - 1)]
                } else {
                    401
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                sock.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        (url, seen)
    }

    async fn read_request(sock: &mut TcpStream) -> Received {
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = sock.read_buf(&mut buf).await.unwrap();
            assert!(n > 0, "closed mid-head");
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let headers: Vec<(String, String)> = (head.lines().skip(1))
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect();
        let body = buf.split_off(end);
        let mut request = Received { headers, body };
        let have = request.body.len();
        request
            .body
            .resize(request.header("content-length").parse().unwrap(), 0);
        sock.read_exact(&mut request.body[have..]).await.unwrap();
        request
    }

    const KEY: &[u8] = b"s3cret-key";

    fn target(url: &str, max_retries: u32) -> WebhookTarget {
        WebhookTarget {
            url: url.to_string(),
            headers: vec![("X-Team".into(), "blue-team-token".into())],
            secret: Some(KEY.to_vec()),
            max_retries,
            backoff: Backoff {
                base_ms: 1,
                cap_ms: 5,
            },
            timeout: Duration::from_secs(5),
        }
    }

    async fn send(url: &str, max_retries: u32, body: &Value) -> Delivery {
        let client = Client::new(4, None).unwrap();
        deliver(&client, &target(url, max_retries), body).await
    }

    fn delivered(attempts: u32) -> Delivery {
        Delivery::Delivered {
            attempts,
            status: 200,
        }
    }

    #[tokio::test]
    async fn sign_verify_round_trip_and_tamper_detection() {
        const TS: u64 = 1_700_000_000;
        let body = br#"{"a":1}"#;
        let sig = sign(b"key", TS, body);
        // Pins the documented construction: HMAC-SHA256(key, "1700000000.{body}").
        let hex = "a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03";
        assert_eq!(sig, format!("sha256={hex}"));
        assert!(verify(b"key", TS, body, &sig));
        assert!(!verify(b"key", TS, br#"{"a":2}"#, &sig), "body");
        assert!(!verify(b"key", TS + 1, body, &sig), "timestamp");
        assert!(!verify(b"kez", TS, body, &sig), "key");
        assert!(!verify(b"key", TS, body, hex), "no prefix");
        assert!(!verify(b"key", TS, body, &sig[..20]), "truncated");
        assert!(!verify(b"key", TS, body, "sha256=zz"), "not hex");
    }

    #[tokio::test]
    async fn a_signed_delivery_verifies_at_the_receiver() {
        let (url, seen) = serve(vec![200], Some(KEY)).await;
        let payload = item_event("r1", "u7", "failed", Some("HTTP 400"), &json!({"x": 1}));
        assert_eq!(send(&url, 0, &payload).await, delivered(1));
        let seen = seen.lock().unwrap();
        let request = &seen[0];
        assert_eq!(
            serde_json::from_slice::<Value>(&request.body).unwrap(),
            payload
        );
        assert_eq!(request.header("x-team"), "blue-team-token");
        assert_eq!(request.header("content-type"), "application/json");
        let id = request.header("x-sluice-delivery");
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }

    #[tokio::test]
    async fn retryable_answers_are_retried_under_one_delivery_id() {
        let (url, seen) = serve(vec![503, 429, 200], Some(KEY)).await;
        let outcome = send(&url, 5, &run_event("r1", 3, 1, 0, false)).await;
        assert_eq!(outcome, delivered(3));
        let seen = seen.lock().unwrap();
        let ids: Vec<&str> = seen.iter().map(|r| r.header("x-sluice-delivery")).collect();
        assert_eq!(ids, [ids[0]; 3]);
    }

    #[tokio::test]
    async fn a_client_error_fails_at_once() {
        // 409 too: the provider client retries it, a webhook must not.
        for status in [400, 409] {
            let (url, seen) = serve(vec![status], None).await;
            let outcome = send(&url, 3, &json!({})).await;
            let Delivery::Failed { attempts: 1, error } = outcome else {
                panic!("{status}: {outcome:?}")
            };
            assert!(error.contains(&format!("HTTP {status}")), "{error}");
            assert_eq!(seen.lock().unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn an_unreachable_receiver_fails_after_every_retry_without_leaking() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/hook?token=query-secret");
        let outcome = send(&url, 2, &json!({})).await;
        let Delivery::Failed { attempts: 3, error } = outcome else {
            panic!("{outcome:?}")
        };
        assert!(
            error.contains(&format!("http://127.0.0.1:{port}/hook?…")),
            "{error}"
        );
        for secret in ["s3cret-key", "blue-team-token", "query-secret"] {
            assert!(!error.contains(secret), "{error}");
        }
    }

    #[tokio::test]
    async fn an_invalid_url_is_not_attempted() {
        let outcome = send("ftp://example.com/x", 3, &json!({})).await;
        assert!(
            matches!(outcome, Delivery::Failed { attempts: 0, .. }),
            "{outcome:?}"
        );
    }
}
