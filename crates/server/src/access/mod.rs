//! Who may talk to the server, checked before any route runs, in this order:
//! the `Host` (421 for a name that is not this server's: DNS rebinding), the
//! `Origin` (403 for a page of another site, unless the operator listed it
//! with `--allow-origin`; such an origin gets CORS headers and preflights),
//! the token (401), and the body's declared size (413 from the headers, the
//! body unread). `/healthz` is exempt from all of them. Every answer carries
//! headers that keep other sites from framing or reading it.

pub(crate) mod rules;
mod token;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD,
    CONNECTION, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, ORIGIN,
    REFERRER_POLICY, VARY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::{AppState, MAX_OTHER_BYTES};

pub use rules::{parse_host, parse_origin};
pub use token::new_token;

/// The route a browser posts the token to (the 401 page's form).
const LOGIN: &str = "/login";

/// The middleware.
pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/healthz" {
        return secured(next.run(request).await, None);
    }
    let config = state.config();
    let host = request
        .headers()
        .get(HOST)
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    // Browsers always send Host; a client without one is no web page.
    if let Some(host) = &host {
        if !state.inner.hosts.allows(host) {
            return secured(misdirected(host, config.bound), None);
        }
    }
    let cors = match request.headers().get(ORIGIN) {
        None => None,
        Some(value) => {
            let origin = value.to_str().unwrap_or("null");
            if rules::same_origin(origin, host.as_deref()) {
                None
            } else if rules::listed_origin(origin, &config.allow_origins) {
                Some(origin.to_owned())
            } else {
                return secured(foreign(origin), None);
            }
        }
    };
    let cors = cors.as_deref();
    if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    {
        return secured(preflight(cors), cors);
    }
    if let Some(refused) = over_size(&request, config.max_submit_bytes) {
        return secured(refused, cors);
    }
    if let Some(token) = &config.token {
        let cookie = config.cookie_name();
        if let Some(answer) = login(request.method(), request.uri(), token, &cookie) {
            return secured(answer, cors);
        }
        if request.method() == Method::POST && request.uri().path() == LOGIN {
            let headers = request.headers().clone();
            let body = axum::body::to_bytes(request.into_body(), MAX_OTHER_BYTES)
                .await
                .unwrap_or_default();
            let sent = token::form_value(&String::from_utf8_lossy(&body), "token");
            let answer = match sent {
                Some(t) if token::constant_time_eq(t.as_bytes(), token.as_bytes()) => {
                    token::logged_in(token, &cookie)
                }
                _ => token::unauthorized(&headers, true),
            };
            return secured(answer, cors);
        }
        if !token::presents(request.headers(), token, &cookie) {
            return secured(token::unauthorized(request.headers(), false), cors);
        }
    }
    secured(next.run(request).await, cors)
}

/// `GET /?token=…` (the URL `sluice serve` prints): the cookie and a
/// redirect to `/`, or the 401 page for a wrong token.
fn login(method: &Method, uri: &axum::http::Uri, token: &str, cookie: &str) -> Option<Response> {
    if method != Method::GET || uri.path() != "/" {
        return None;
    }
    let sent = token::form_value(uri.query()?, "token")?;
    Some(
        if token::constant_time_eq(sent.as_bytes(), token.as_bytes()) {
            token::logged_in(token, cookie)
        } else {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                axum::http::header::ACCEPT,
                HeaderValue::from_static("text/html"),
            );
            token::unauthorized(&headers, true)
        },
    )
}

/// 413 when the body's declared length is past the route's limit: answered
/// before a byte of it is read, and the connection closed.
fn over_size(request: &Request, max_submit: usize) -> Option<Response> {
    let length: u64 = request
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let submission = request.method() == Method::POST && request.uri().path() == "/v1/runs";
    let limit = if submission {
        max_submit
    } else {
        MAX_OTHER_BYTES
    };
    if length <= limit as u64 {
        return None;
    }
    let mut response = ApiError::too_large().into_response();
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    Some(response)
}

/// 421: the request names a host that is not this server's.
fn misdirected(host: &str, bound: Option<std::net::SocketAddr>) -> Response {
    let shown: String = host.chars().take(100).collect();
    let port = bound.map_or(String::new(), |b| format!(":{}", b.port()));
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "unknown_host",
        format!(
            "this server does not answer to the host {shown:?} (a page whose name was made to point at this machine looks like this); use http://127.0.0.1{port}/ or http://localhost{port}/, or start the server with --allow-host NAME for a name of yours"
        ),
    )
    .into_response()
}

/// 403: a page of another site.
fn foreign(origin: &str) -> Response {
    let shown: String = origin.chars().take(100).collect();
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden_origin",
        format!(
            "requests from pages of another site ({shown}) are refused: a web page must not drive this server; start it with --allow-origin {shown} to let a frontend you trust call it"
        ),
    )
    .into_response()
}

/// The answer to a CORS preflight from a listed origin (or, harmlessly, the
/// server's own).
fn preflight(cors: Option<&str>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if cors.is_some() {
        let h = response.headers_mut();
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, last-event-id"),
        );
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}

/// Headers on every answer: nothing here may be framed, sniffed or read by
/// another site's page (only listed origins get CORS headers).
fn secured(mut response: Response<Body>, cors: Option<&str>) -> Response {
    let html = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"));
    let h = response.headers_mut();
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if html {
        h.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        );
    }
    if let Some(origin) = cors.and_then(|o| HeaderValue::from_str(o).ok()) {
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(VARY, HeaderValue::from_static("origin"));
        h.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("location, retry-after, x-next-offset"),
        );
    }
    response
}
