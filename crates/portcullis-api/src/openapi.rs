//! The OpenAPI 3.1 document, generated from the handlers' annotations. A copy is checked
//! in at `openapi.json` and a test fails when the two differ, so the API never drifts
//! silently.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    app, audit, health, inbound, keys, messages, oauth, policy, realtime, reviews, webhooks,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis",
        description = "Security-first messaging gateway: send SMS and WhatsApp through one API, with policy, encryption at rest and signed webhooks.",
        license(name = "Apache-2.0")
    ),
    paths(
        health::healthz, health::readyz, health::metrics,
        app::get, app::pause, app::resume,
        messages::send, messages::get, messages::list, messages::cancel,
        inbound::list, inbound::inject,
        keys::create, keys::list, keys::rotate, keys::revoke, oauth::token,
        policy::create_suppression, policy::list_suppressions, policy::delete_suppression,
        policy::create_consent, policy::list_consents, policy::delete_consent,
        policy::list_policy_events,
        reviews::list, reviews::approve, reviews::reject,
        webhooks::create, webhooks::list, webhooks::get, webhooks::update, webhooks::delete,
        webhooks::rotate_secret, webhooks::list_deliveries, webhooks::replay, webhooks::recover,
        realtime::create_token, realtime::stream,
        audit::list,
    ),
    components(schemas(crate::dto::ErrorResponse)),
    modifiers(&Security),
    tags(
        (name = "messages", description = "Send and track messages"),
        (name = "inbound", description = "Messages received from recipients"),
        (name = "keys", description = "API keys of the app"),
        (name = "app", description = "The calling key's app"),
        (name = "policy", description = "Suppressions, consents and the guard's decisions"),
        (name = "webhooks", description = "Signed webhook endpoints and their delivery log"),
        (name = "realtime", description = "The WebSocket event stream"),
        (name = "audit", description = "Who did what, when, from where"),
        (name = "simulator", description = "The built-in simulator provider"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("pcl_live_… or pcl_test_…")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as pretty JSON (what `portcullis openapi` prints and the repo holds).
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// `GET /v1/openapi.json`.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
