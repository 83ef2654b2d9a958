//! Recording privileged actions from the HTTP edge, with who, from where and in which
//! request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use portcullis_store::audit::{self, Actor, NewAuditEvent};

use crate::AppState;
use crate::auth::Caller;
use crate::middleware::RequestId;

/// Where a request came from, for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct RequestCtx {
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestCtx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestCtx {
            request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()),
            client_ip: parts
                .extensions
                .get::<crate::client_addr::ClientAddr>()
                .map(|c| c.0.to_string()),
        })
    }
}

/// Records an action the caller took. The action has already happened: a failure to
/// record it is logged loudly (the security log) rather than turned into an error the
/// caller would read as "nothing happened".
pub async fn record(
    state: &AppState,
    caller: &Caller,
    ctx: &RequestCtx,
    action: &'static str,
    target: (&'static str, &str),
    detail: Option<serde_json::Value>,
) {
    let event = NewAuditEvent {
        tenant_id: Some(caller.tenant_id.clone()),
        app_id: Some(caller.app_id.clone()),
        actor: Actor::ApiKey(caller.key_id.as_str().to_owned()),
        action,
        target_type: Some(target.0),
        target_id: Some(target.1.to_owned()),
        client_ip: ctx.client_ip.clone(),
        request_id: ctx.request_id.clone(),
        detail,
    };
    if let Err(e) = audit::record(&state.store.db, &event).await {
        metrics::counter!("portcullis_audit_failures_total").increment(1);
        tracing::error!(target: "security", error = %e, action, "recording an audit event failed");
    }
}

/// Tells an app that its keys are being tried from many addresses: a
/// `security.auth_failures` event for its webhooks and stream, and an audit entry.
pub async fn raise_auth_alert(
    state: &AppState,
    alert: &crate::alerts::Alert,
) -> Result<(), portcullis_store::StoreError> {
    let detail = serde_json::json!({
        "failures": alert.failures,
        "addresses": alert.addresses,
        "window_seconds": crate::alerts::WINDOW_MS / 1000,
    });
    let now = portcullis_store::now_ms();
    state
        .store
        .emit_app_events(&[portcullis_store::events::NewEvent {
            id: portcullis_domain::EventId::new(),
            tenant_id: alert.tenant_id.clone(),
            app_id: alert.app_id.clone(),
            kind: portcullis_domain::EventType::AuthFailures,
            subject_id: None,
            data: detail.clone(),
            phone: None,
            created_at: now,
        }])
        .await?;
    state.pipeline.events_written().notify_one();
    audit::record(
        &state.store.db,
        &NewAuditEvent {
            tenant_id: Some(alert.tenant_id.clone()),
            app_id: Some(alert.app_id.clone()),
            actor: Actor::System,
            action: "security.auth_failures",
            target_type: Some("app"),
            target_id: Some(alert.app_id.as_str().to_owned()),
            client_ip: None,
            request_id: None,
            detail: Some(detail),
        },
    )
    .await
}
