//! `/v1/suppressions`, `/v1/consents` and `/v1/policy-events`: the guard's records.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use portcullis_domain::{Channel, ConsentId, E164, MessageId, SuppressionId};
use portcullis_store::policy::{
    Consent, NewConsent, NewPolicyEvent, PolicyEvent, PolicyEventFilter, Suppression,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::audit::{self, RequestCtx};
use crate::auth::{Admin, Auth};
use crate::dto::{IdPath, List, PageParams, parse_json, rfc3339};
use crate::error::ApiError;

const MAX_TEXT: usize = 2000;

fn phone(s: &str) -> Result<E164, ApiError> {
    E164::parse(s).map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))
}

fn bounded(
    field: &'static str,
    s: Option<String>,
    required: bool,
) -> Result<Option<String>, ApiError> {
    match s {
        None if required => Err(ApiError::unprocessable(
            "invalid_request",
            format!("{field} is required"),
        )),
        None => Ok(None),
        Some(v) if v.trim().is_empty() && required => Err(ApiError::unprocessable(
            "invalid_request",
            format!("{field} must not be empty"),
        )),
        Some(v)
            if v.chars().count() > MAX_TEXT
                || v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') =>
        {
            Err(ApiError::unprocessable(
                "invalid_request",
                format!("{field} must be at most {MAX_TEXT} characters without control characters"),
            ))
        }
        Some(v) => Ok(Some(v)),
    }
}

/// A suppressed recipient.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionView {
    pub id: String,
    /// Masked number.
    pub phone: String,
    pub reason: Option<String>,
    /// `api` or `inbound_keyword`.
    pub source: String,
    pub created_at: String,
}

impl From<Suppression> for SuppressionView {
    fn from(s: Suppression) -> Self {
        SuppressionView {
            id: s.id.to_string(),
            phone: s.phone.masked(),
            reason: s.reason,
            source: s.source,
            created_at: rfc3339(s.created_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSuppression {
    pub phone: String,
    pub reason: Option<String>,
}

/// Suppress a recipient: from now on only essential messages reach them.
#[utoipa::path(
    operation_id = "policy_create_suppression",
    post, path = "/v1/suppressions", tag = "policy", request_body = CreateSuppression,
    responses((status = 201, body = SuppressionView), (status = 200, body = SuppressionView, description = "Already suppressed")),
    security(("api_key" = []))
)]
pub async fn create_suppression(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<SuppressionView>), ApiError> {
    let req: CreateSuppression = parse_json(&headers, &raw)?;
    let phone = phone(&req.phone)?;
    let reason = bounded("reason", req.reason, false)?;
    let mut tx = state.store.db.begin().await?;
    let (s, created) = state
        .store
        .suppress(
            &mut tx,
            &auth.tenant_id,
            &auth.app_id,
            &phone,
            reason.as_deref(),
            "api",
        )
        .await?;
    tx.commit().await?;
    if created {
        audit::record(
            &state,
            &auth,
            &ctx,
            "suppression.created",
            ("suppression", s.id.as_str()),
            None,
        )
        .await;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(s.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SuppressionParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Only this number (E.164).
    pub phone: Option<String>,
}

/// List suppressed recipients, newest first.
#[utoipa::path(
    operation_id = "policy_list_suppressions",
    get, path = "/v1/suppressions", tag = "policy", params(SuppressionParams),
    responses((status = 200, body = List<SuppressionView>)),
    security(("api_key" = []))
)]
pub async fn list_suppressions(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Query(q): Query<SuppressionParams>,
) -> Result<Json<List<SuppressionView>>, ApiError> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    };
    let phone = q.phone.as_deref().map(phone).transpose()?;
    let result = state
        .store
        .list_suppressions(
            &auth.app_id,
            phone.as_ref(),
            page.cursor()?.as_ref(),
            page.limit()?,
        )
        .await?;
    Ok(Json(List::new(
        result.items.into_iter().map(Into::into).collect(),
        result.next,
    )))
}

/// Lift a suppression.
#[utoipa::path(
    operation_id = "policy_delete_suppression",
    delete, path = "/v1/suppressions/{id}", tag = "policy",
    params(("id" = String, Path, description = "Suppression id (sup_…)")),
    responses((status = 204), (status = 404, description = "No such suppression")),
    security(("api_key" = []))
)]
pub async fn delete_suppression(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    let id = SuppressionId::parse(&id).map_err(|_| ApiError::not_found())?;
    state.store.delete_suppression(&auth.app_id, &id).await?;
    audit::record(
        &state,
        &auth,
        &ctx,
        "suppression.deleted",
        ("suppression", id.as_str()),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A consent record with its proof.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentView {
    pub id: String,
    /// Masked number.
    pub phone: String,
    pub channel: String,
    /// `transactional` or `marketing`.
    pub scope: String,
    pub source: String,
    pub proof: String,
    pub ip: Option<String>,
    pub double_opt_in: bool,
    pub created_at: String,
}

impl From<Consent> for ConsentView {
    fn from(c: Consent) -> Self {
        ConsentView {
            id: c.id.to_string(),
            phone: c.phone.masked(),
            channel: c.channel.as_str().to_owned(),
            scope: c.scope,
            source: c.source,
            proof: c.proof,
            ip: c.ip,
            double_opt_in: c.double_opt_in,
            created_at: rfc3339(c.created_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConsent {
    pub phone: String,
    /// `sms` or `whatsapp`.
    pub channel: String,
    /// `transactional` or `marketing`.
    pub scope: String,
    /// Where the consent was given (e.g. "checkout form v3").
    pub source: Option<String>,
    /// Evidence: the text agreed to, a URL, a form submission id.
    pub proof: Option<String>,
    /// The address the consent was given from.
    pub ip: Option<String>,
    /// Confirmed by a second step (double opt-in).
    #[serde(default)]
    pub double_opt_in: bool,
}

/// Record a consent.
#[utoipa::path(
    operation_id = "policy_create_consent",
    post, path = "/v1/consents", tag = "policy", request_body = CreateConsent,
    responses((status = 201, body = ConsentView)),
    security(("api_key" = []))
)]
pub async fn create_consent(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<ConsentView>), ApiError> {
    let req: CreateConsent = parse_json(&headers, &raw)?;
    let phone = phone(&req.phone)?;
    let channel = Channel::parse(&req.channel).map_err(|_| {
        ApiError::unprocessable("invalid_channel", "channel must be \"sms\" or \"whatsapp\"")
    })?;
    if !matches!(req.scope.as_str(), "transactional" | "marketing") {
        return Err(ApiError::unprocessable(
            "invalid_scope",
            "scope must be \"transactional\" or \"marketing\"",
        ));
    }
    let source = bounded("source", req.source, true)?.unwrap_or_default();
    let proof = bounded("proof", req.proof, true)?.unwrap_or_default();
    let ip = match req.ip {
        None => None,
        Some(ip) => Some(
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| {
                    ApiError::unprocessable("invalid_ip", "ip must be an IPv4 or IPv6 address")
                })?
                .to_string(),
        ),
    };
    let consent = state
        .store
        .create_consent(
            &auth.tenant_id,
            &auth.app_id,
            &NewConsent {
                phone,
                channel,
                scope: req.scope,
                source,
                proof,
                ip,
                double_opt_in: req.double_opt_in,
            },
        )
        .await?;
    audit::record(
        &state,
        &auth,
        &ctx,
        "consent.created",
        ("consent", consent.id.as_str()),
        None,
    )
    .await;
    Ok((StatusCode::CREATED, Json(consent.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsentParams {
    /// The recipient (E.164).
    pub phone: String,
}

/// The consents on record for a recipient.
#[utoipa::path(
    operation_id = "policy_list_consents",
    get, path = "/v1/consents", tag = "policy", params(ConsentParams),
    responses((status = 200, body = List<ConsentView>)),
    security(("api_key" = []))
)]
pub async fn list_consents(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Query(q): Query<ConsentParams>,
) -> Result<Json<List<ConsentView>>, ApiError> {
    let phone = phone(&q.phone)?;
    let consents = state.store.consents_for(&auth.app_id, &phone).await?;
    Ok(Json(List::new(
        consents.into_iter().map(Into::into).collect(),
        None,
    )))
}

/// Withdraw a consent (the record and its proof are kept, marked withdrawn).
#[utoipa::path(
    operation_id = "policy_delete_consent",
    delete, path = "/v1/consents/{id}", tag = "policy",
    params(("id" = String, Path, description = "Consent id (cns_…)")),
    responses((status = 204), (status = 404, description = "No such consent")),
    security(("api_key" = []))
)]
pub async fn delete_consent(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    let id = ConsentId::parse(&id).map_err(|_| ApiError::not_found())?;
    state.store.revoke_consent(&auth.app_id, &id).await?;
    audit::record(
        &state,
        &auth,
        &ctx,
        "consent.revoked",
        ("consent", id.as_str()),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A decision of the policy guard.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyEventView {
    pub id: String,
    /// `refused`, `deferred`, `allowed_exempt`, `opted_out`, `opted_in`, `possible_opt_out`.
    pub kind: String,
    pub code: String,
    pub reason: String,
    pub message_id: Option<String>,
    /// Masked number.
    pub phone: Option<String>,
    pub created_at: String,
}

impl From<PolicyEvent> for PolicyEventView {
    fn from(e: PolicyEvent) -> Self {
        PolicyEventView {
            id: e.id.to_string(),
            kind: e.kind,
            code: e.code,
            reason: e.reason,
            message_id: e.message_id.map(|m| m.to_string()),
            phone: e.phone.map(|p| p.masked()),
            created_at: rfc3339(e.created_at),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicyEventParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// `refused`, `deferred`, `held`, `allowed_exempt`, `opted_out`, `opted_in`,
    /// `possible_opt_out`, `approved`, `rejected`, `paused`.
    pub kind: Option<String>,
    /// e.g. `recipient_suppressed`, `quota_exceeded`, `burst_detected`.
    pub code: Option<String>,
    pub message_id: Option<String>,
    /// Events about this recipient (E.164; matched exactly, never listed unmasked).
    pub phone: Option<String>,
    /// RFC 3339: events at or after.
    pub since: Option<String>,
    /// RFC 3339: events before.
    pub until: Option<String>,
}

/// What the guard refused, deferred or noted, and why; newest first.
#[utoipa::path(
    operation_id = "policy_list_policy_events",
    get, path = "/v1/policy-events", tag = "policy", params(PolicyEventParams),
    responses((status = 200, body = List<PolicyEventView>)),
    security(("api_key" = []))
)]
pub async fn list_policy_events(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Query(q): Query<PolicyEventParams>,
) -> Result<Json<List<PolicyEventView>>, ApiError> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    };
    let filter = PolicyEventFilter {
        kind: q.kind,
        code: q.code,
        message_id: q
            .message_id
            .map(|m| {
                MessageId::parse(&m).map_err(|_| {
                    ApiError::unprocessable("invalid_message_id", "message_id is not a message id")
                })
            })
            .transpose()?,
        phone: q
            .phone
            .as_deref()
            .map(|p| E164::parse(p).map_err(|e| ApiError::unprocessable(e.code(), e.to_string())))
            .transpose()?,
        since: crate::dto::time_param("since", q.since.as_deref())?,
        until: crate::dto::time_param("until", q.until.as_deref())?,
    };
    let result = state
        .store
        .list_policy_events(
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

/// A policy event about a message of the calling app.
pub(crate) fn event(
    auth: &crate::auth::Caller,
    message_id: Option<&MessageId>,
    phone: &E164,
    kind: &str,
    code: &str,
    reason: &str,
) -> NewPolicyEvent {
    NewPolicyEvent {
        tenant_id: auth.tenant_id.clone(),
        app_id: auth.app_id.clone(),
        message_id: message_id.cloned(),
        phone: Some(phone.clone()),
        kind: kind.to_owned(),
        code: code.to_owned(),
        reason: reason.to_owned(),
    }
}
