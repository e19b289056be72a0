//! The token: what a request presents (a bearer header, a Basic password, or
//! the dashboard's cookie), compared in constant time; how a browser gets
//! the cookie (the URL `sluice serve` prints, `/?token=…`, or the form of the
//! 401 page, `POST /login`), and the 401 answers. The token is never put in
//! a URL the server shows: the login answers with a redirect to `/`.

use axum::http::header::{
    ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE,
    WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// A new token: 32 random bytes from the operating system, as hex.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `a` equals `b`, taking time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request's headers carry `token` (header or cookie).
pub(crate) fn presents(headers: &HeaderMap, token: &str, cookie: &str) -> bool {
    let from_header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(from_authorization);
    let from_cookie = || {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| cookie_value(v, cookie))
            .map(|v| v.as_bytes().to_vec())
    };
    from_header
        .or_else(from_cookie)
        .is_some_and(|p| constant_time_eq(&p, token.as_bytes()))
}

/// The secret of an `Authorization` header: a bearer token, or a Basic
/// password (`curl -u :TOKEN`).
fn from_authorization(header: &str) -> Option<Vec<u8>> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.trim().as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(value.trim())?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Standard base64 (with or without padding); `None` if malformed.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The value of `key` in a query string or a form body
/// (`application/x-www-form-urlencoded`), decoded.
pub(crate) fn form_value(encoded: &str, key: &str) -> Option<String> {
    encoded.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The answer to a login with the right token: the cookie, and a redirect
/// to the dashboard (so the address bar never keeps the token).
pub(crate) fn logged_in(token: &str, cookie: &str) -> Response {
    // HttpOnly: the page's script never sees it; SameSite=Strict: no other
    // site's page makes the browser send it.
    let set = format!("{cookie}={token}; Path=/; HttpOnly; SameSite=Strict");
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(LOCATION, HeaderValue::from_static("/"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&set) {
        headers.insert(SET_COOKIE, v);
    }
    response
}

/// The 401 answer: for a browser asking for a page, a page that says how to
/// get in (with a form for the token); otherwise the JSON error.
pub(crate) fn unauthorized(headers: &HeaderMap, wrong_login: bool) -> Response {
    let browser = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser {
        let note = if wrong_login {
            "<p class=\"bad\">That token is not this server's.</p>"
        } else {
            ""
        };
        let page = LOGIN_PAGE.replace("{note}", note);
        let mut response = (StatusCode::UNAUTHORIZED, page).into_response();
        let h = response.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this server needs its token: send Authorization: Bearer <token> (the token in the URL `sluice serve` printed, or the value of its --token-env variable, SLUICE_TOKEN by default)",
    )
    .into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The 401 page: no script, posts the token to `/login`.
const LOGIN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sluice: token needed</title>
<style>body{font:15px system-ui,sans-serif;max-width:36em;margin:4em auto;color:#222}
input{font:inherit;width:100%;padding:.4em;margin:.5em 0}.bad{color:#b00}</style></head>
<body><h1>sluice: token needed</h1>
<p>Open the dashboard with the URL <code>sluice serve</code> printed when it started (it
carries the token once; this page then keeps it in a cookie), or enter the token here
(the value of the server's <code>--token-env</code> variable).</p>
{note}<form method="post" action="/login"><input type="password" name="token" autocomplete="current-password" autofocus aria-label="token">
<button type="submit">Open the dashboard</button></form></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn a_token_comes_as_bearer_basic_password_or_cookie() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert!(presents(&h, "abc", "c"));
        // "user:abc"
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjphYmM="),
        );
        assert!(presents(&h, "abc", "c"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Digest abc"));
        assert!(!presents(&h, "abc", "c"));
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("x=1; c=abc; y=2"));
        assert!(presents(&h, "abc", "c"));
        assert!(!presents(&h, "abc", "other"));
        assert!(!presents(&HeaderMap::new(), "abc", "c"));
    }

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(
            form_value("token=a%2Bb+c&x=1", "token").as_deref(),
            Some("a+b c")
        );
        assert_eq!(form_value("x=1", "token"), None);
        assert_eq!(form_value("token=100%", "token").as_deref(), Some("100%"));
        assert_eq!(form_value("token=%zz", "token").as_deref(), Some("%zz"));
    }

    #[test]
    fn new_tokens_are_long_and_different() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
