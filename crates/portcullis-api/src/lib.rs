//! Portcullis's HTTP API: the axum router, one module per resource under [`routes`], the
//! authentication extractors ([`auth`]), the error type ([`error`]) and the perimeter
//! middleware ([`middleware`]). No business logic lives here: handlers parse input into
//! domain types, call the store or the pipeline, and shape the answer.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod bruteforce;
pub mod client_addr;
pub mod dto;
pub mod error;
pub mod key_reads;
pub mod middleware;
pub mod openapi;
pub mod ratelimit;
pub mod realtime;
pub mod routes;
pub mod shared_counters;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use metrics_exporter_prometheus::PrometheusHandle;
use portcullis_crypto::Secret;
use portcullis_pipeline::Pipeline;
use portcullis_store::Store;
use portcullis_webhooks::Webhooks;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;

pub use error::ApiError;

/// Settings of the HTTP edge.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub dev_mode: bool,
    /// Largest accepted request body in bytes.
    pub body_limit: usize,
    /// Bearer token for `/metrics` (open in dev mode when unset).
    pub metrics_token: Option<Secret<String>>,
    /// Peers whose `X-Forwarded-*` / `Forwarded` headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Lifetime of access tokens from `POST /v1/oauth/token`.
    pub access_token_ttl_secs: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            dev_mode: false,
            body_limit: 102_400,
            metrics_token: None,
            trusted_proxies: Vec::new(),
            access_token_ttl_secs: 900,
        }
    }
}

/// What every handler can reach. axum clones the state for every extractor and layer that
/// takes it, several times per request, so it is one shared allocation rather than a
/// dozen reference counts to bump each time.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    pub store: Store,
    pub pipeline: Arc<Pipeline>,
    pub config: Arc<ApiConfig>,
    pub metrics: Option<PrometheusHandle>,
    pub last_used: Arc<auth::LastUsed>,
    /// API-key lookups, batched across concurrent requests.
    pub key_reads: key_reads::KeyReads,
    pub webhooks: Arc<Webhooks>,
    pub realtime: Arc<realtime::RealtimeTokens>,
    pub bruteforce: Arc<bruteforce::BruteForce>,
    /// Failed authentications per app, for the distributed-failure alert.
    pub auth_alerts: Arc<alerts::AuthFailureAlerts>,
    pub ratelimits: Arc<ratelimit::RateLimits>,
    /// Cancelled when the server shuts down (long-lived streams close on it).
    pub shutdown: CancellationToken,
}

/// The complete application router with its perimeter.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    Router::new()
        .merge(routes::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            bruteforce::guard,
        ))
        .with_state(state.clone())
        // Layers run bottom-up on the way in: the request id first, so every later layer
        // (and the error shape) can name it.
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        // Before anything that needs the client's address, and the HTTPS refusal before
        // anything reads a credential.
        .layer(axum::middleware::from_fn_with_state(
            state,
            client_addr::client_addr,
        ))
        .layer(axum::middleware::from_fn(middleware::header_limit))
        .layer(axum::middleware::from_fn(middleware::track_metrics))
        .layer(axum::middleware::from_fn(middleware::error_shape))
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .layer(axum::middleware::from_fn(middleware::request_id))
}
