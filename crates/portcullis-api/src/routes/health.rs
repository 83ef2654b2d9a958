//! `/healthz`, `/readyz` and `/metrics`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiError;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(
    operation_id = "healthz",get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ok` or `degraded`.
    pub status: String,
    pub checks: Checks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    pub database: String,
    /// Per running provider connection: `ok`, `down: <reason>` (`down: not bound` for an
    /// SMPP connection without a session, `down: circuit open`) or `probing: circuit
    /// half-open`.
    pub connections: BTreeMap<String, String>,
}

/// Readiness. A provider connection that is down makes the gateway `degraded` (still
/// serving: messages queue); a database that does not answer makes it not ready, a 503
/// (which, like every 5xx, carries only the opaque internal error body).
#[utoipa::path(
    operation_id = "readyz",
    get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, description = "Database unreachable"))
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    if let Err(e) = state.store.db.ping().await {
        tracing::warn!(error = %e, "readiness: database check failed");
        return Err(ApiError::internal("database unreachable"));
    }
    let connections: BTreeMap<String, String> = state
        .pipeline
        .routes()
        .connection_states()
        .into_iter()
        .map(|(id, s)| (id.as_str().to_owned(), s))
        .collect();
    let degraded = connections.values().any(|v| v != "ok");
    Ok(Json(Readiness {
        status: if degraded { "degraded" } else { "ok" }.to_owned(),
        checks: Checks {
            database: "ok".to_owned(),
            connections,
        },
    }))
}

/// Prometheus metrics. Outside dev mode a metrics token is required.
#[utoipa::path(
    operation_id = "metrics",
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")),
    security(("metrics_token" = []))
)]
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match &state.config.metrics_token {
        Some(token) => {
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !portcullis_crypto::constant_time_eq(presented.as_bytes(), token.expose().as_bytes())
            {
                return Err(ApiError::unauthorized());
            }
        }
        None if state.config.dev_mode => {}
        None => return Err(ApiError::not_found()),
    }
    if let Ok(depth) =
        portcullis_queue::depth(&state.store.db, portcullis_pipeline::SEND_QUEUE).await
    {
        metrics::gauge!("portcullis_queue_depth", "queue" => "send", "state" => "pending")
            .set(depth.pending as f64);
        metrics::gauge!("portcullis_queue_depth", "queue" => "send", "state" => "dead")
            .set(depth.dead as f64);
    }
    let text = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
