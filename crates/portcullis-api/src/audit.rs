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
