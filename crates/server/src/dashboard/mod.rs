//! The dashboard: one page, its two scripts (the page, the charts), its
//! style and icon, compiled into the binary (no framework, no CDN, works
//! offline). It lists runs and, for one run, draws its history
//! (`/v1/runs/{id}/history`) and live points (`/v1/runs/{id}/events`) on
//! canvases, its summary, its failures with retries, and its downloads.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const CHARTS: &str = include_str!("charts.js");
const STYLE: &str = include_str!("style.css");
const ICON: &str = include_str!("icon.svg");

fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, kind), (CACHE_CONTROL, "no-cache")], body)
}

/// `GET /`.
pub(crate) async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /assets/app.js`.
pub(crate) async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /assets/charts.js`.
pub(crate) async fn charts() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", CHARTS)
}

/// `GET /assets/style.css`.
pub(crate) async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /favicon.ico` (an SVG: browsers take it whatever the name).
pub(crate) async fn favicon() -> impl IntoResponse {
    asset("image/svg+xml", ICON)
}
