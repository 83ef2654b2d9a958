//! One module per resource; [`router`] mounts them all.

pub mod app;
pub mod audit;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod health;
pub mod inbound;
pub mod keys;
pub mod messages;
pub mod oauth;
pub mod policy;
pub mod providers;
pub mod realtime;
pub mod reviews;
pub mod ringcentral;
pub mod webhooks;
pub mod whatsapp;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::AppState;

pub fn router() -> Router<AppState> {
    let router = Router::new();
    #[cfg(feature = "fault-injection")]
    let router = router.route("/v1/__fault/panic", post(fault::panic));
    router
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(crate::openapi::serve))
        .route("/v1/app", get(app::get))
        .route("/v1/app/pause", post(app::pause))
        .route("/v1/app/resume", post(app::resume))
        .route("/v1/admin/reviews", get(reviews::list))
        .route("/v1/admin/reviews/{id}/approve", post(reviews::approve))
        .route("/v1/admin/reviews/{id}/reject", post(reviews::reject))
        .route("/v1/messages", post(messages::send).get(messages::list))
        .route("/v1/messages/{id}", get(messages::get))
        .route("/v1/messages/{id}/cancel", post(messages::cancel))
        .route("/v1/inbound", get(inbound::list))
        .route("/v1/simulator/inbound", post(inbound::inject))
        .route("/v1/oauth/token", post(oauth::token))
        .route("/v1/keys", post(keys::create).get(keys::list))
        .route("/v1/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/v1/keys/{id}/rotate", post(keys::rotate))
        .route(
            "/v1/suppressions",
            post(policy::create_suppression).get(policy::list_suppressions),
        )
        .route(
            "/v1/suppressions/{id}",
            axum::routing::delete(policy::delete_suppression),
        )
        .route(
            "/v1/consents",
            post(policy::create_consent).get(policy::list_consents),
        )
        .route(
            "/v1/consents/{id}",
            axum::routing::delete(policy::delete_consent),
        )
        .route("/v1/policy-events", get(policy::list_policy_events))
        .route("/v1/audit-events", get(audit::list))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/v1/webhooks/secret/rotate", post(webhooks::rotate_secret))
        .route("/v1/webhooks/deliveries", get(webhooks::list_deliveries))
        .route(
            "/v1/webhooks/deliveries/{id}/replay",
            post(webhooks::replay),
        )
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route("/v1/webhooks/{id}/recover", post(webhooks::recover))
        .route("/v1/realtime/tokens", post(realtime::create_token))
        .route("/v1/realtime", get(realtime::stream))
        // Provider callbacks: authenticated by the provider's signature, not an API key.
        .route(
            "/providers/twilio/{conn_id}/status",
            post(providers::twilio_status)
                .layer(DefaultBodyLimit::max(providers::MAX_CALLBACK_BODY)),
        )
        .route(
            "/providers/twilio/{conn_id}/inbound",
            post(providers::twilio_inbound)
                .layer(DefaultBodyLimit::max(providers::MAX_CALLBACK_BODY)),
        )
        .route(
            "/providers/ringcentral/{conn_id}",
            post(ringcentral::notification)
                .layer(DefaultBodyLimit::max(providers::MAX_CALLBACK_BODY)),
        )
        .route(
            "/providers/whatsapp/{conn_id}",
            get(whatsapp::handshake)
                .post(whatsapp::events)
                .layer(DefaultBodyLimit::max(providers::MAX_CALLBACK_BODY)),
        )
}
