//! The generic routes beside the OpenAI API: processing stages
//! (`/stages/NAME`), a CMS (`/items/NAME`), a webhook receiver
//! (`/hooks/NAME`), and the request journal (`/_mock/requests`).
//!
//! Stages are API requests (auth, limits, faults, latency, the outcome
//! counters); the CMS and hooks answer at once and are counted per route only.

use std::time::Instant;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::json;
use sha2::Sha256;

use crate::handler::{self, ConnectionReset, JSON};
use crate::response::{self, Body};
use crate::stage::{self, Received};
use crate::state::Shared;

/// Whether `path` is one of the generic routes.
pub(crate) fn is_generic(path: &str) -> bool {
    ["/stages/", "/items/", "/hooks/"]
        .iter()
        .any(|prefix| path.len() > prefix.len() && path.starts_with(prefix))
}

/// Answers a generic route and counts its status under its path.
pub(crate) async fn generic(
    shared: &Shared,
    arrived: Instant,
    parts: &Parts,
    body: Bytes,
) -> Result<Response<Body>, ConnectionReset> {
    let path = parts.uri.path();
    let result = if path.starts_with("/stages/") {
        stage(shared, arrived, parts, body).await
    } else if path.starts_with("/items/") {
        let query = parts.uri.query().unwrap_or("");
        let (status, value) = shared.cms.handle(&parts.method, path, query, &body);
        Ok(response::json(status, response::to_json(&value)))
    } else {
        Ok(hook(shared, parts, &body))
    };
    shared.count_route(path, result.as_ref().ok().map(|r| r.status().as_u16()));
    result
}

async fn stage(
    shared: &Shared,
    arrived: Instant,
    parts: &Parts,
    body: Bytes,
) -> Result<Response<Body>, ConnectionReset> {
    let name = parts.uri.path().trim_start_matches("/stages/");
    if parts.method != Method::POST {
        let msg = format!(
            "{} is not allowed on /stages/{name}; POST to it.",
            parts.method
        );
        return Ok(response::error(
            StatusCode::METHOD_NOT_ALLOWED,
            &msg,
            "invalid_request_error",
            None,
        ));
    }
    if let Some(res) = handler::unauthorized(shared, &parts.headers) {
        return Ok(res);
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let received = Received::parse(content_type, &body, shared.cfg.seed);
    if let Some(max) = shared.cfg.max_upload_bytes {
        if received.size as u64 > max {
            let msg = format!(
                "The upload is {} bytes; this host accepts at most {max} (--max-upload-bytes).",
                received.size
            );
            return Ok(handler::rejected(
                shared,
                StatusCode::PAYLOAD_TOO_LARGE,
                &msg,
            ));
        }
    }
    if shared.rejects(received.hash) {
        return Ok(handler::rejected(
            shared,
            StatusCode::UNPROCESSABLE_ENTITY,
            handler::REJECTED,
        ));
    }
    let stage_name = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    handler::answer(shared, arrived, 0, received.hash, |_| {
        let text = crate::reply::text(received.hash, 8);
        let value = received.answer(stage_name, &shared.host, text);
        match stage::media(name) {
            Some((kind, magic)) => {
                let mut out = magic.to_vec();
                out.push(b'\n');
                out.extend_from_slice(&response::to_json(&value));
                (kind, out)
            }
            None => (JSON, response::to_json(&value)),
        }
    })
    .await
}

/// A webhook delivery: with a hook secret, its `X-Sluice-Signature` must be
/// the HMAC-SHA256 of `"{X-Sluice-Timestamp}.{body}"`, else 401.
fn hook(shared: &Shared, parts: &Parts, body: &[u8]) -> Response<Body> {
    if parts.method != Method::POST {
        let msg = format!(
            "{} is not allowed on {}; POST to it.",
            parts.method,
            parts.uri.path()
        );
        return response::error(
            StatusCode::METHOD_NOT_ALLOWED,
            &msg,
            "invalid_request_error",
            None,
        );
    }
    let Some(key) = &shared.cfg.hook_secret else {
        shared.count_hook(None);
        return response::json(StatusCode::OK, response::to_json(&json!({"ok": true})));
    };
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let verified = signed(
        key,
        header("x-sluice-timestamp"),
        body,
        header("x-sluice-signature"),
    );
    shared.count_hook(Some(verified));
    if verified {
        let body = json!({"ok": true, "verified": true});
        response::json(StatusCode::OK, response::to_json(&body))
    } else {
        response::error(
            StatusCode::UNAUTHORIZED,
            "The X-Sluice-Signature header is missing or does not match the hook secret.",
            "invalid_request_error",
            Some("bad_signature"),
        )
    }
}

/// Whether `signature` is `sha256=<hex HMAC-SHA256(key, "{timestamp}.{body}")>`.
fn signed(key: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(digest) = signature
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

/// `GET /_mock/requests[?path=PREFIX]`: `{"requests": [...]}`, oldest first.
pub(crate) fn journal(shared: &Shared, query: &str) -> Response<Body> {
    let prefix = query
        .split('&')
        .find_map(|p| p.strip_prefix("path="))
        .unwrap_or("");
    let entries = shared.journal.list(prefix);
    let body = json!({"enabled": shared.cfg.journal > 0, "requests": entries});
    response::json(StatusCode::OK, response::to_json(&body))
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_cover_the_timestamp_and_body() {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"17.{}");
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(super::signed(b"k", "17", b"{}", &good));
        assert!(!super::signed(b"k", "18", b"{}", &good));
        assert!(!super::signed(b"other", "17", b"{}", &good));
        assert!(!super::signed(b"k", "17", b"{}", "sha256=zz"));
        assert!(super::is_generic("/stages/a") && !super::is_generic("/stages/"));
    }
}
