//! The perimeter every response passes through: request ids, the JSON error shape,
//! security headers and request metrics.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::{ErrorBody, default_body, internal_body};

/// The id of the request being served, in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Assigns every request a fresh id. A client-supplied `X-Request-Id` is not trusted: it
/// would let callers write arbitrary text into our logs and collide with other requests.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = format!("req_{}", portcullis_crypto::random_token("", 20).expose());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id);
    let mut res = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    res.extensions_mut().insert(RequestId(id));
    res
}

/// Gives every error response the JSON shape `{"error","code","request_id"}`; every 5xx
/// becomes exactly the opaque internal error.
pub async fn error_shape(req: Request, next: Next) -> Response {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let body = if status.is_server_error() {
        internal_body()
    } else {
        match res.extensions().get::<ErrorBody>() {
            Some(b) => b.clone(),
            None => default_body(status),
        }
    };
    let json = serde_json::json!({
        "error": body.error,
        "code": body.code,
        "request_id": request_id,
    });
    let (mut parts, _) = res.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(json.to_string()))
}

const SECURITY_HEADERS: [(&str, &str); 7] = [
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("x-xss-protection", "0"),
    ("content-security-policy", "default-src 'none'"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// Sets the security headers on every response, errors included.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    // Grown once, not doubled insert by insert: each regrowth is a reallocation large
    // enough that glibc first consolidates its free lists (seen in the send path's profile).
    headers.reserve(SECURITY_HEADERS.len());
    for (name, value) in SECURITY_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    res
}

/// Most bytes the request line's target and all header names and values may take together.
/// hyper itself refuses more than 100 headers or ~400 KB of head with a bare 431; this
/// answers well before that, in our error shape, for the one huge header (a cookie, a forged
/// `Authorization`) a client may send.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses requests whose head is larger than [`MAX_HEADER_BYTES`] with `431`.
pub async fn header_limit(req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let size = target
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if size > MAX_HEADER_BYTES {
        return crate::ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers exceed {MAX_HEADER_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// Counts requests by route template (never the raw path, which holds ids) and status.
pub async fn track_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("portcullis_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("portcullis_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed());
    res
}

/// The response to a panic inside a handler: the opaque 500, the panic's text only in
/// the log (it may hold request data, so it is not echoed).
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}
