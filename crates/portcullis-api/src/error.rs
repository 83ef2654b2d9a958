//! The one error type of the HTTP edge.
//!
//! Handlers return `Result<_, ApiError>`. An `ApiError` is either a client error with a
//! status, a snake_case `code` and a human message, or [`ApiError::Internal`], whose cause
//! is logged here and never shown: every 5xx body is exactly
//! `{"error":"Internal server error","code":"internal","request_id":…}`.
//!
//! The body is rendered by [`crate::middleware::error_shape`], which knows the request id;
//! it also gives the same shape to errors that never passed through a handler (unknown
//! routes, wrong methods, oversized bodies, panics).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use portcullis_store::StoreError;

/// The `error`/`code` pair of an error response, attached to the response as an extension
/// so the middleware can add the request id.
#[derive(Debug, Clone)]
pub struct ErrorBody {
    pub error: String,
    pub code: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    #[error("internal: {0}")]
    Internal(String),
    /// Over a rate limit: `429` with `Retry-After` and the `RateLimit-*` headers.
    #[error("rate limited ({})", .0.scope)]
    RateLimited(crate::ratelimit::Limited),
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Client {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found() -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found")
    }

    pub fn unauthorized() -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid API key")
    }

    pub fn forbidden() -> ApiError {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(cause.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Conflict(m) => ApiError::conflict("conflict", m),
            other => ApiError::internal(other),
        }
    }
}

impl From<portcullis_pipeline::PipelineError> for ApiError {
    fn from(e: portcullis_pipeline::PipelineError) -> Self {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Client {
                status,
                code,
                message,
            } => (
                status,
                ErrorBody {
                    error: message,
                    code,
                },
            ),
            ApiError::Internal(cause) => {
                tracing::error!(cause = %cause, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, internal_body())
            }
            ApiError::RateLimited(limited) => return rate_limited(&limited),
        };
        let mut res = status.into_response();
        res.extensions_mut().insert(body);
        res
    }
}

fn rate_limited(l: &crate::ratelimit::Limited) -> Response {
    metrics::counter!("portcullis_rate_limited_total", "scope" => l.scope).increment(1);
    let secs = l.retry_after_secs().max(1);
    too_many_requests(
        "rate_limited",
        secs,
        &[
            ("ratelimit-limit", l.limit.to_string()),
            ("ratelimit-remaining", "0".to_owned()),
            ("ratelimit-reset", secs.to_string()),
            (
                "ratelimit-policy",
                format!("{};w={}", l.limit, l.window.as_secs().max(1)),
            ),
        ],
    )
}

/// A `429` with `Retry-After` (whole seconds, at least 1) and any further headers.
pub(crate) fn too_many_requests(
    code: &'static str,
    retry_after_secs: u64,
    headers: &[(&'static str, String)],
) -> Response {
    let mut res = StatusCode::TOO_MANY_REQUESTS.into_response();
    let retry = retry_after_secs.max(1).to_string();
    for (name, value) in std::iter::once(&("retry-after", retry)).chain(headers) {
        if let Ok(v) = axum::http::HeaderValue::from_str(value) {
            res.headers_mut().insert(*name, v);
        }
    }
    res.extensions_mut().insert(ErrorBody {
        error: "Too many requests".to_owned(),
        code,
    });
    res
}

pub(crate) fn internal_body() -> ErrorBody {
    ErrorBody {
        error: "Internal server error".to_owned(),
        code: "internal",
    }
}

/// The default body for an error status that carries no [`ErrorBody`].
pub(crate) fn default_body(status: StatusCode) -> ErrorBody {
    let (code, error) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", "Bad request"),
        StatusCode::UNAUTHORIZED => ("unauthorized", "Invalid API key"),
        StatusCode::FORBIDDEN => ("forbidden", "Forbidden"),
        StatusCode::NOT_FOUND => ("not_found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "Method not allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "Payload too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "Content-Type must be application/json",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid_request", "Invalid request"),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "Too many requests"),
        s if s.is_server_error() => return internal_body(),
        _ => ("error", "Request failed"),
    };
    ErrorBody {
        error: error.to_owned(),
        code,
    }
}
