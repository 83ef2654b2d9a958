//! `/v1/admin/reviews`: messages the guard held on a risk signal (a burst far above the
//! app's baseline, a run of invalid-number failures), for an admin of the app to approve
//! or reject. Every decision is audited and recorded as a policy event.
//!
//! Reviews need the `admin` role: a leaked `sender` key is exactly what holds defend
//! against, so it must not be able to release its own messages.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use portcullis_domain::{MessageId, MessageStatus};
use portcullis_store::StoreError;
use portcullis_store::messages::MessageFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::messages::MessageView;
use crate::AppState;
use crate::audit::{RequestCtx, record};
use crate::auth::{Admin, Auth};
use crate::dto::{IdPath, List, PageParams, parse_json};
use crate::error::ApiError;

/// A held message and why it was held.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewView {
    /// The message (recipient masked).
    pub message: MessageView,
    /// The risk signal: `burst_detected`, `invalid_number_failures`, …
    pub hold_code: Option<String>,
    /// What the guard saw.
    pub hold_reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReviewParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Held messages awaiting review, newest first.
#[utoipa::path(
    operation_id = "reviews_list",
    get, path = "/v1/admin/reviews", tag = "policy", params(ReviewParams),
    responses((status = 200, body = List<ReviewView>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Query(q): Query<ReviewParams>,
) -> Result<Json<List<ReviewView>>, ApiError> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    };
    let filter = MessageFilter {
        status: Some(MessageStatus::Held),
        to: None,
    };
    let result = state
        .store
        .list_messages(
            &auth.app_id,
            &filter,
            page.cursor()?.as_ref(),
            page.limit()?,
        )
        .await?;
    let ids: Vec<&str> = result.items.iter().map(|m| m.id.as_str()).collect();
    let mut reasons = state.store.hold_reasons(&auth.app_id, &ids).await?;
    let data = result
        .items
        .into_iter()
        .map(|m| {
            let why = reasons.remove(m.id.as_str());
            ReviewView {
                message: MessageView::from_record(m, None),
                hold_code: why.as_ref().map(|w| w.0.clone()),
                hold_reason: why.map(|w| w.1),
            }
        })
        .collect();
    Ok(Json(List::new(data, result.next)))
}

/// A reviewer's note.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewDecision {
    /// Kept in the message history, the policy event and the audit trail (at most 500
    /// characters).
    pub note: Option<String>,
}

/// Approve a held message: it is queued and sent (still subject to the send-time checks:
/// opt-outs, pauses, quiet hours).
#[utoipa::path(
    operation_id = "reviews_approve",
    post, path = "/v1/admin/reviews/{id}/approve", tag = "policy",
    params(("id" = String, Path, description = "Message id")),
    request_body = Option<ReviewDecision>,
    responses((status = 200, body = MessageView), (status = 409, description = "Not held")),
    security(("api_key" = []))
)]
pub async fn approve(
    state: State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    id: IdPath,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Json<MessageView>, ApiError> {
    decide(state, auth, ctx, id, &headers, &raw, true).await
}

/// Reject a held message: it is canceled and never sent.
#[utoipa::path(
    operation_id = "reviews_reject",
    post, path = "/v1/admin/reviews/{id}/reject", tag = "policy",
    params(("id" = String, Path, description = "Message id")),
    request_body = Option<ReviewDecision>,
    responses((status = 200, body = MessageView), (status = 409, description = "Not held")),
    security(("api_key" = []))
)]
pub async fn reject(
    state: State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    id: IdPath,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Json<MessageView>, ApiError> {
    decide(state, auth, ctx, id, &headers, &raw, false).await
}

async fn decide(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    IdPath(id): IdPath,
    headers: &HeaderMap,
    raw: &[u8],
    approve: bool,
) -> Result<Json<MessageView>, ApiError> {
    let id = MessageId::parse(&id).map_err(|_| ApiError::not_found())?;
    let req: ReviewDecision = if raw.is_empty() {
        ReviewDecision::default()
    } else {
        parse_json(headers, raw)?
    };
    let note = req.note.as_deref().map(str::trim).unwrap_or("");
    if note.chars().count() > 500 || note.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_note",
            "note must be at most 500 characters, without control characters",
        ));
    }
    let verb = if approve { "approved" } else { "rejected" };
    let detail = if note.is_empty() {
        format!("{verb} in review by {}", auth.key_id.as_str())
    } else {
        format!("{verb} in review by {}: {note}", auth.key_id.as_str())
    };
    let result = state
        .pipeline
        .control()
        .review(&auth.tenant_id, &auth.app_id, &id, approve, &detail)
        .await;
    let msg = match result {
        Ok(msg) => msg,
        Err(portcullis_pipeline::PipelineError::Store(StoreError::NotFound)) => {
            // Another app's or unknown: 404; this app's but no longer held: 409.
            let current = state.store.get_message(&auth.app_id, &id).await?;
            return Err(ApiError::conflict(
                "not_held",
                format!(
                    "the message is {}, not held for review",
                    current.status.as_str()
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    record(
        &state,
        &auth,
        &ctx,
        if approve {
            "review.approved"
        } else {
            "review.rejected"
        },
        ("message", id.as_str()),
        (!note.is_empty()).then(|| serde_json::json!({ "note": note })),
    )
    .await;
    let msg = state.store.get_message(&auth.app_id, &msg.id).await?;
    let history = state.store.message_history(&msg).await?;
    Ok(Json(MessageView::from_record(msg, Some(history))))
}
