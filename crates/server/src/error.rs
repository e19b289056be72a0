//! The server's errors: each carries its HTTP status and a stable code, and
//! answers `{"error": {"code", "message"}}`. Internal failures are logged and
//! answered with a generic message (no paths, SQL or secrets leak out).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to a client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code (`invalid_job`, `not_found`, …).
    pub code: &'static str,
    /// What went wrong and what to do, for a person.
    pub message: String,
    /// Extra structured detail (e.g. each problem of a job file), if any.
    pub details: Option<serde_json::Value>,
    /// Seconds after which trying again may succeed (`Retry-After`), if any.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// 400: the request is wrong.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404: no such run, item or route.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the run is not in a state that allows this.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 500: logged in full here, answered without detail.
    pub fn internal(what: &str, error: impl std::fmt::Display) -> ApiError {
        tracing::error!("{what}: {error}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what} failed inside the server; see its log"),
        )
    }

    /// 400 for a job file that is not valid, naming each problem's line
    /// and column (paths shown relative to `base`: the server's directories
    /// are its own).
    pub fn invalid_job(e: sluice_spec::SpecError, base: &std::path::Path) -> ApiError {
        let details = match &e {
            sluice_spec::SpecError::Invalid(list) => serde_json::Value::Array(
                list.iter()
                    .map(|d| json!({"line": d.line, "column": d.column, "message": d.message}))
                    .collect(),
            ),
            sluice_spec::SpecError::Read { .. } => serde_json::Value::Array(Vec::new()),
        };
        let prefix = format!("{}/", base.display());
        ApiError::bad_request("invalid_job", e.to_string().replace(&prefix, ""))
            .with_details(details)
    }

    /// 413: the body is past the server's limit.
    pub fn too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request body is larger than this server accepts (see --max-body); send fewer items or files per run",
        )
    }

    /// With a `Retry-After` of `secs`.
    pub fn with_retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// With structured `details`.
    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }
}

impl From<sluice_store::Error> for ApiError {
    fn from(e: sluice_store::Error) -> ApiError {
        ApiError::internal("reading the store", e)
    }
}

impl From<sluice_engine::Error> for ApiError {
    fn from(e: sluice_engine::Error) -> ApiError {
        match e {
            sluice_engine::Error::Store(e) => e.into(),
            e if e.is_invalid_input() => ApiError::bad_request("invalid_input", e.to_string()),
            e => ApiError::internal("the run", e),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> ApiError {
        ApiError::internal("a blocking task", e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// Handlers' result.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
