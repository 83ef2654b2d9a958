//! `/v1/app`: the calling key's app.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Auth, Reader};
use crate::dto::rfc3339;
use crate::error::ApiError;

#[derive(Debug, Serialize, ToSchema)]
pub struct AppView {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// E.164 numbers or alphanumeric sender ids the app sends from.
    pub senders: Vec<String>,
    pub allowed_purposes: Vec<String>,
    /// Policy settings.
    pub policy: PolicyView,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    pub max_body_chars: u32,
    /// Whether every non-essential purpose needs a consent on record (marketing always does).
    pub consent_for_non_essential: bool,
    /// `defer` or `refuse` non-essential messages in the recipient's quiet hours.
    pub quiet_hours: String,
    /// ISO countries the app may send to; null: any.
    pub allowed_countries: Option<Vec<String>>,
    /// Sending is paused.
    pub paused: bool,
    /// Opt-out keywords added to the defaults.
    pub extra_opt_out_keywords: Vec<String>,
}

/// The calling key's app.
#[utoipa::path(
    operation_id = "app_get",
    get, path = "/v1/app", tag = "app",
    responses((status = 200, body = AppView)),
    security(("api_key" = []))
)]
pub async fn get(auth: Auth<Reader>) -> Result<Json<AppView>, ApiError> {
    let app = auth.caller.app;
    Ok(Json(AppView {
        id: app.id.as_str().to_owned(),
        tenant_id: app.tenant_id.as_str().to_owned(),
        name: app.name,
        senders: app.senders,
        allowed_purposes: app
            .allowed_purposes
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        policy: PolicyView {
            max_body_chars: app.max_body_chars,
            consent_for_non_essential: app.policy.consent_for_non_essential,
            quiet_hours: app.policy.quiet_hours,
            allowed_countries: app.policy.allowed_countries,
            paused: app.policy.paused,
            extra_opt_out_keywords: app.policy.extra_opt_out_keywords,
        },
        created_at: rfc3339(app.created_at),
    }))
}
