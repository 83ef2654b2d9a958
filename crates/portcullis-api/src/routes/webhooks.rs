//! `/v1/webhooks`: endpoints, the app's signing secret, and the delivery log.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use portcullis_domain::{DeliveryId, EventType, WebhookEndpointId};
use portcullis_store::now_ms;
use portcullis_store::webhooks::{
    Attempt, Delivery, DeliveryFilter, Endpoint, EndpointPatch, NewEndpoint,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::audit::{self, RequestCtx};
use crate::auth::{Admin, Auth};
use crate::dto::{IdPath, List, PageParams, parse_json, rfc3339, rfc3339_opt, time_param};
use crate::error::ApiError;

const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 500;
/// How long a rotated-out secret keeps signing alongside the new one.
const SECRET_OVERLAP_MS: i64 = 24 * 3600 * 1000;

/// A webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    /// Event types delivered; empty means all.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why the gateway disabled it (410 Gone, failing for 5 days), if it did.
    pub disabled_reason: Option<String>,
    pub failing_since: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The app's signing secret: only in the response that created it (the app's first
    /// endpoint), never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<Endpoint> for EndpointView {
    fn from(e: Endpoint) -> Self {
        EndpointView {
            id: e.id.to_string(),
            url: e.url,
            events: e.events.iter().map(|t| t.as_str().to_owned()).collect(),
            description: e.description,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            failing_since: rfc3339_opt(e.failing_since),
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
            secret: None,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    pub url: String,
    /// Event types to deliver; omitted or empty: all.
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    #[serde(default, with = "serde_with_null")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// Distinguishes an absent field (leave it) from `null` (clear it).
mod serde_with_null {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

fn event_types(names: Option<Vec<String>>) -> Result<Vec<EventType>, ApiError> {
    let mut out = Vec::new();
    for n in names.unwrap_or_default() {
        let t = EventType::parse(&n).map_err(|_| {
            ApiError::unprocessable(
                "invalid_event_type",
                format!(
                    "unknown event type {n:?}; expected one of {}",
                    EventType::ALL
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

fn description(d: Option<String>) -> Result<Option<String>, ApiError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION || d.chars().any(|c| c.is_control()) => {
            Err(ApiError::unprocessable(
                "invalid_request",
                format!(
                    "description must be at most {MAX_DESCRIPTION} characters without control characters"
                ),
            ))
        }
        d => Ok(d),
    }
}

/// Checks a URL as it is saved: the SSRF guard's static rules and every address the host
/// resolves to now. Connections are checked again, address by address.
async fn vet_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    if url.len() > MAX_URL {
        return Err(ApiError::unprocessable(
            "invalid_webhook_url",
            format!("url must be at most {MAX_URL} characters"),
        ));
    }
    state
        .webhooks
        .egress()
        .vet_url(url)
        .await
        .map(|u| u.to_string())
        .map_err(|b| {
            metrics::counter!("portcullis_security_events_total", "kind" => "ssrf_refused")
                .increment(1);
            tracing::info!(target: "security", code = b.code(), "webhook URL refused");
            ApiError::unprocessable("invalid_webhook_url", format!("url refused: {b}"))
        })
}

/// Add an endpoint. The app's first endpoint also creates its signing secret, returned
/// here once as `secret`.
#[utoipa::path(
    operation_id = "webhooks_create",
    post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateEndpoint,
    responses((status = 201, body = EndpointView), (status = 422, description = "URL refused or invalid event type")),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<EndpointView>), ApiError> {
    let req: CreateEndpoint = parse_json(&headers, &raw)?;
    let events = event_types(req.events)?;
    let description = description(req.description)?;
    let url = vet_url(&state, &req.url).await?;
    let (endpoint, secret) = state
        .store
        .create_endpoint(
            &auth.tenant_id,
            &auth.app_id,
            &NewEndpoint {
                url,
                events,
                description,
                enabled: req.enabled.unwrap_or(true),
            },
        )
        .await?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint created");
    audit::record(
        &state,
        &auth,
        &ctx,
        "webhook.created",
        ("webhook_endpoint", endpoint.id.as_str()),
        Some(serde_json::json!({"secret_created": secret.is_some()})),
    )
    .await;
    let mut view = EndpointView::from(endpoint);
    view.secret = secret.map(|s| s.expose().clone());
    Ok((StatusCode::CREATED, Json(view)))
}

/// List the app's endpoints, newest first.
#[utoipa::path(
    operation_id = "webhooks_list",
    get, path = "/v1/webhooks", tag = "webhooks", params(PageParams),
    responses((status = 200, body = List<EndpointView>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Query(page): Query<PageParams>,
) -> Result<Json<List<EndpointView>>, ApiError> {
    let result = state
        .store
        .list_endpoints(&auth.app_id, page.cursor()?.as_ref(), page.limit()?)
        .await?;
    Ok(Json(List::new(
        result.items.into_iter().map(Into::into).collect(),
        result.next,
    )))
}

fn endpoint_id(id: &str) -> Result<WebhookEndpointId, ApiError> {
    WebhookEndpointId::parse(id).map_err(|_| ApiError::not_found())
}

/// One endpoint.
#[utoipa::path(
    operation_id = "webhooks_get",
    get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id (whe_…)")),
    responses((status = 200, body = EndpointView), (status = 404)),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    IdPath(id): IdPath,
) -> Result<Json<EndpointView>, ApiError> {
    let e = state
        .store
        .get_endpoint(&auth.app_id, &endpoint_id(&id)?)
        .await?;
    Ok(Json(e.into()))
}

/// Change an endpoint's URL, events, description or `enabled`. Enabling a disabled
/// endpoint clears its failure streak.
#[utoipa::path(
    operation_id = "webhooks_update",
    patch, path = "/v1/webhooks/{id}", tag = "webhooks", request_body = UpdateEndpoint,
    params(("id" = String, Path, description = "Endpoint id (whe_…)")),
    responses((status = 200, body = EndpointView), (status = 404), (status = 422)),
    security(("api_key" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    IdPath(id): IdPath,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Json<EndpointView>, ApiError> {
    let id = endpoint_id(&id)?;
    // 404 before 422: another app's endpoint must not be probed through validation.
    state.store.get_endpoint(&auth.app_id, &id).await?;
    let req: UpdateEndpoint = parse_json(&headers, &raw)?;
    let url = match req.url {
        Some(u) => Some(vet_url(&state, &u).await?),
        None => None,
    };
    let patch = EndpointPatch {
        url,
        events: req.events.map(|e| event_types(Some(e))).transpose()?,
        description: req.description.map(description).transpose()?,
        enabled: req.enabled,
    };
    let e = state
        .store
        .update_endpoint(&auth.app_id, &id, &patch)
        .await?;
    audit::record(
        &state,
        &auth,
        &ctx,
        "webhook.updated",
        ("webhook_endpoint", id.as_str()),
        Some(serde_json::json!({
            "url_changed": patch.url.is_some(),
            "events_changed": patch.events.is_some(),
            "enabled": patch.enabled,
        })),
    )
    .await;
    Ok(Json(e.into()))
}

/// Delete an endpoint; its pending deliveries end as failed.
#[utoipa::path(
    operation_id = "webhooks_delete",
    delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id (whe_…)")),
    responses((status = 204), (status = 404)),
    security(("api_key" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    let id = endpoint_id(&id)?;
    state.store.delete_endpoint(&auth.app_id, &id).await?;
    audit::record(
        &state,
        &auth,
        &ctx,
        "webhook.deleted",
        ("webhook_endpoint", id.as_str()),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    /// `whsec_…`, shown once.
    pub secret: String,
    /// Until then the previous secret also signs every delivery.
    pub previous_valid_until: String,
}

/// Replace the app's signing secret. The old one keeps signing alongside for 24 hours
/// (two `v1,` signatures), so receivers can switch without losing a delivery.
#[utoipa::path(
    operation_id = "webhooks_rotate_secret",
    post, path = "/v1/webhooks/secret/rotate", tag = "webhooks",
    responses((status = 200, body = RotatedSecret)),
    security(("api_key" = []))
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
) -> Result<Json<RotatedSecret>, ApiError> {
    let secret = state
        .store
        .rotate_webhook_secret(&auth.tenant_id, &auth.app_id, SECRET_OVERLAP_MS)
        .await?;
    tracing::info!(app_id = %auth.app_id, "webhook signing secret rotated");
    audit::record(
        &state,
        &auth,
        &ctx,
        "webhook.secret_rotated",
        ("app", auth.app_id.as_str()),
        None,
    )
    .await;
    Ok(Json(RotatedSecret {
        secret: secret.expose().clone(),
        previous_valid_until: rfc3339(now_ms() + SECRET_OVERLAP_MS),
    }))
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i64,
    pub at: String,
    /// `sent`, `failed` or `blocked`.
    pub outcome: String,
    pub status_code: Option<i64>,
    pub latency_ms: Option<i64>,
    /// `http_<status>`, `timeout`, `connect`, `tls`, `blocked`, `other`.
    pub error_class: Option<String>,
    /// A short, sanitized excerpt of the response or error.
    pub excerpt: Option<String>,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        AttemptView {
            attempt: a.attempt,
            at: rfc3339(a.at),
            outcome: a.outcome,
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            error_class: a.error_class,
            excerpt: a.excerpt,
        }
    }
}

/// One event's delivery to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    pub endpoint_id: String,
    /// The event id, sent as `webhook-id` on every attempt and replay.
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `succeeded`, `failed` or `blocked`.
    pub status: String,
    pub attempt_count: i64,
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub attempts: Vec<AttemptView>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            id: d.id.to_string(),
            endpoint_id: d.endpoint_id.to_string(),
            event_id: d.event_id,
            event_type: d.event_type.as_str().to_owned(),
            next_attempt_at: rfc3339_opt(d.next_attempt_at.filter(|_| d.status == "pending")),
            status: d.status,
            attempt_count: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
            attempts: d.log.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub endpoint_id: Option<String>,
    pub event_id: Option<String>,
    /// `pending`, `succeeded`, `failed` or `blocked`.
    pub status: Option<String>,
    pub event_type: Option<String>,
    /// RFC 3339; deliveries created at or after.
    pub since: Option<String>,
    /// RFC 3339; deliveries created before.
    pub until: Option<String>,
}

/// The delivery log: every delivery with its attempts, newest first.
#[utoipa::path(
    operation_id = "webhooks_list_deliveries",
    get, path = "/v1/webhooks/deliveries", tag = "webhooks", params(DeliveryParams),
    responses((status = 200, body = List<DeliveryView>)),
    security(("api_key" = []))
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Query(q): Query<DeliveryParams>,
) -> Result<Json<List<DeliveryView>>, ApiError> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    };
    let status = match q.status.as_deref() {
        None => None,
        Some(s @ ("pending" | "succeeded" | "failed" | "blocked")) => Some(s.to_owned()),
        Some(_) => {
            return Err(ApiError::unprocessable(
                "invalid_status",
                "status must be pending, succeeded, failed or blocked",
            ));
        }
    };
    let filter = DeliveryFilter {
        // An id of the wrong shape matches nothing, like another app's id.
        endpoint_id: q
            .endpoint_id
            .map(|e| WebhookEndpointId::from_trusted(e.chars().take(64).collect())),
        event_id: q.event_id.map(|e| e.chars().take(64).collect()),
        status,
        event_type: q
            .event_type
            .map(|t| event_types(Some(vec![t])).map(|v| v[0]))
            .transpose()?,
        since: time_param("since", q.since.as_deref())?,
        until: time_param("until", q.until.as_deref())?,
    };
    let result = state
        .store
        .list_deliveries(
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

/// Send a delivery's event again to its endpoint, as a new delivery due now. The
/// `webhook-id` stays the event's, so receivers that already have it can tell.
#[utoipa::path(
    operation_id = "webhooks_replay_delivery",
    post, path = "/v1/webhooks/deliveries/{id}/replay", tag = "webhooks",
    params(("id" = String, Path, description = "Delivery id (dlv_…)")),
    responses((status = 202, body = DeliveryView), (status = 404)),
    security(("api_key" = []))
)]
pub async fn replay(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    IdPath(id): IdPath,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let id = DeliveryId::parse(&id).map_err(|_| ApiError::not_found())?;
    let d = state.store.get_delivery(&auth.app_id, &id).await?;
    let new = state
        .store
        .redeliver(
            &auth.tenant_id,
            &auth.app_id,
            &[(d.endpoint_id, d.event_id, d.event_type)],
        )
        .await?;
    state.webhooks.wake();
    audit::record(
        &state,
        &auth,
        &ctx,
        "webhook.delivery_replayed",
        ("webhook_delivery", id.as_str()),
        None,
    )
    .await;
    let d = state.store.get_delivery(&auth.app_id, &new[0]).await?;
    Ok((StatusCode::ACCEPTED, Json(d.into())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// RFC 3339: deliveries created at or after.
    pub since: String,
    /// RFC 3339: deliveries created before (default: now).
    pub until: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recovered {
    /// Events queued for delivery again.
    pub queued: usize,
}

/// Send again every event whose delivery to this endpoint failed or was blocked in a time
/// range (after the receiver was fixed). At most 10,000 per call.
#[utoipa::path(
    operation_id = "webhooks_recover",
    post, path = "/v1/webhooks/{id}/recover", tag = "webhooks", request_body = Recover,
    params(("id" = String, Path, description = "Endpoint id (whe_…)")),
    responses((status = 202, body = Recovered), (status = 404)),
    security(("api_key" = []))
)]
pub async fn recover(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    IdPath(id): IdPath,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<Recovered>), ApiError> {
    let id = endpoint_id(&id)?;
    state.store.get_endpoint(&auth.app_id, &id).await?;
    let req: Recover = parse_json(&headers, &raw)?;
    let since = time_param("since", Some(&req.since))?.unwrap_or(0);
    let until = time_param("until", req.until.as_deref())?.unwrap_or_else(now_ms);
    let failed = state
        .store
        .unsuccessful_deliveries(&auth.app_id, &id, since, until)
        .await?;
    if !failed.is_empty() {
        state
            .store
            .redeliver(&auth.tenant_id, &auth.app_id, &failed)
            .await?;
        state.webhooks.wake();
    }
    audit::record(
        &state,
        &auth,
        &ctx,
        "webhook.recovered",
        ("webhook_endpoint", id.as_str()),
        Some(serde_json::json!({"queued": failed.len()})),
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(Recovered {
            queued: failed.len(),
        }),
    ))
}
