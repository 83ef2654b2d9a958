//! Failures on purpose, compiled only with the `fault-injection` feature (test builds), and
//! even then answered only in dev mode: a binary built with `--all-targets` (which turns the
//! feature on through the test targets' dev-dependencies) still cannot be made to panic in
//! production.

use axum::body::Bytes;
use axum::extract::State;

use crate::AppState;
use crate::error::ApiError;

/// Panics with the request body in the panic message: the worst a careless `unwrap` or
/// `expect` could do with request data.
pub async fn panic(State(state): State<AppState>, body: Bytes) -> Result<&'static str, ApiError> {
    if !state.config.dev_mode {
        return Err(ApiError::not_found());
    }
    panic!("fault injected: {}", String::from_utf8_lossy(&body));
}
