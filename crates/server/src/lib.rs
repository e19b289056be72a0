//! `sluice serve`: the REST API over the engine and the store, live progress
//! as server-sent events, Prometheus metrics and a dashboard.
//!
//! [`app`] builds the router (tests drive it without a socket); [`serve`]
//! runs it on a listener until shutdown, then cancels the runs it executes
//! and waits for them to record their state.

mod access;
mod advice;
mod api;
mod dashboard;
mod error;
mod events;
mod feeds;
mod history;
mod leftovers;
mod live_run;
mod metrics;
mod policy;
mod runner;
mod sse;
mod state;
mod uploads;
mod view;

use std::future::Future;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

pub use access::{new_token, parse_host, parse_origin};
pub use error::ApiError;
pub use live_run::LiveRun;
pub use policy::JobPolicy;
pub use runner::submitted_job;
pub use state::{AppState, ServerConfig, DEFAULT_MAX_RUNS};

/// The OpenAPI 3 description of every route.
pub const OPENAPI: &str = include_str!("api/openapi.json");

/// Every route of the server.
pub fn app(state: AppState) -> Router {
    let submit_limit = state.config().max_submit_bytes;
    let runs = Router::new()
        .route(
            "/v1/runs",
            get(api::list)
                .post(api::submit)
                .layer(DefaultBodyLimit::max(submit_limit)),
        )
        .route("/v1/runs/{id}", get(api::get))
        .route("/v1/runs/{id}/pause", post(api::pause))
        .route("/v1/runs/{id}/resume", post(api::resume))
        .route("/v1/runs/{id}/cancel", post(api::cancel))
        .route("/v1/runs/{id}/retry", post(api::retry))
        .route("/v1/runs/{id}/results", get(api::results::results))
        .route("/v1/runs/{id}/items/{item}", get(api::results::item))
        .route("/v1/runs/{id}/history", get(api::history::history))
        .route("/v1/runs/{id}/failures", get(api::failures::failures))
        .route("/v1/runs/{id}/export", get(api::failures::export))
        .route("/favicon.ico", get(dashboard::favicon))
        .route("/v1/runs/{id}/events", get(events::events));
    Router::new()
        .merge(runs)
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::script))
        .route("/assets/style.css", get(dashboard::style))
        .route("/assets/charts.js", get(dashboard::charts))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state::MAX_OTHER_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::guard,
        ))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {}; the API is described at /openapi.json",
        uri.path()
    ))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}

/// Serves `state` on `listener` until `shutdown` resolves; then cancels the
/// runs it executes (they end `interrupted`, resumable) and waits up to
/// `grace` for them to record their state. First it removes the uploads
/// that servers no longer running left behind.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    // Without a token only this machine may reach it (the CLI refuses
    // sooner; this holds for any embedding caller too).
    let local = listener.local_addr()?;
    if state.config().token.is_none() && !local.ip().is_loopback() {
        return Err(std::io::Error::other(format!(
            "serving {local} without a token would let anyone who reaches it run jobs; set a token"
        )));
    }
    let swept = state.inner.uploads.sweep();
    if swept > 0 {
        tracing::info!("removed the uploads of {swept} run(s) a stopped server left behind");
    }
    let router = app(state.clone());
    let (stopped_tx, stopped_rx) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = stopped_tx.send(true);
    };
    let server = axum::serve(listener, router).with_graceful_shutdown(signal);
    let runs_ended = async {
        let mut stopped = stopped_rx.clone();
        let _ = stopped.wait_for(|s| *s).await;
        // Streams end when their runs end: stop the runs first.
        let active = state.active_runs();
        for run in &active {
            run.cancel();
        }
        for run in &active {
            run.finished().await;
        }
        // Then give open connections (dashboards) a moment to close.
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served?,
        _ = runs_ended => {}
    }
    // A run cancelled while the server stopped on its own is waited for too.
    let active = state.active_runs();
    for run in &active {
        run.cancel();
    }
    let all = async {
        for run in &active {
            run.finished().await;
        }
    };
    let _ = tokio::time::timeout(grace * 4, all).await;
    state.inner.uploads.close();
    Ok(())
}
