//! Failures on purpose, compiled only with the `fault-injection` feature (tests).

use axum::body::Bytes;

/// Panics with the request body in the panic message: the worst a careless `unwrap` or
/// `expect` could do with request data.
pub async fn panic(body: Bytes) -> &'static str {
    panic!("fault injected: {}", String::from_utf8_lossy(&body));
}
