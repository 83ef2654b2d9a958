//! `/v1/audit-events`: who did what to the app, when, and from where.

use axum::Json;
use axum::extract::{Query, State};
use portcullis_store::audit::{self, AuditEvent, AuditFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Admin, Auth};
use crate::dto::{List, PageParams, rfc3339, time_param};
use crate::error::ApiError;

/// One recorded action.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    pub id: String,
    /// `api_key`, `cli` or `system`.
    pub actor_type: String,
    /// The key id (`key_…`) for `api_key`.
    pub actor_id: Option<String>,
    /// `key.created`, `key.rotated`, `key.revoked`, `webhook.created`, …
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<serde_json::Value>,
    pub created_at: String,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        AuditEventView {
            id: e.id,
            actor_type: e.actor_type,
            actor_id: e.actor_id,
            action: e.action,
            target_type: e.target_type,
            target_id: e.target_id,
            client_ip: e.client_ip,
            request_id: e.request_id,
            detail: e.detail.and_then(|d| serde_json::from_str(&d).ok()),
            created_at: rfc3339(e.created_at),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// RFC 3339: at or after.
    pub since: Option<String>,
    /// RFC 3339: before.
    pub until: Option<String>,
}

/// The app's audit trail, newest first.
#[utoipa::path(
    operation_id = "audit_list",
    get, path = "/v1/audit-events", tag = "audit", params(AuditParams),
    responses((status = 200, body = List<AuditEventView>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Query(q): Query<AuditParams>,
) -> Result<Json<List<AuditEventView>>, ApiError> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    };
    let filter = AuditFilter {
        action: q.action.map(|a| a.chars().take(64).collect()),
        since: time_param("since", q.since.as_deref())?,
        until: time_param("until", q.until.as_deref())?,
    };
    let result = audit::list(
        &state.store.db,
        &auth.app_id,
        &filter,
        page.cursor()?.as_ref(),
        page.limit()?,
    )
    .await?;
    Ok(Json(List::new(
        result.items.into_iter().map(Into::into).collect(),
        result.next,
    )))
}
