//! `/v1/app`: the calling key's app, and its kill switch.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use portcullis_pipeline::PauseTarget;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::{RequestCtx, record};
use crate::auth::{Admin, Auth, Reader};
use crate::dto::{parse_json, rfc3339};
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
    /// The pause in force over the app (its own, its tenant's or the gateway's), if any.
    pub pause: Option<PauseView>,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PauseView {
    /// `app`, `tenant` or `global`.
    pub scope: String,
    /// Messages already accepted wait too.
    pub stop_queue: bool,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    pub max_body_chars: u32,
    /// Whether every non-essential purpose needs a consent on record (marketing always does).
    pub consent_for_non_essential: bool,
    /// `defer` or `refuse` non-essential messages in the recipient's quiet hours.
    pub quiet_hours: String,
    /// ISO countries the app may send to (by default the countries of its senders); null:
    /// any.
    pub allowed_countries: Option<Vec<String>>,
    /// Sending is paused (see `pause`).
    pub paused: bool,
    /// Opt-out keywords added to the defaults.
    pub extra_opt_out_keywords: Vec<String>,
    /// Segment quotas of the app, and of its tenant (null: unlimited).
    pub daily_segment_quota: Option<u64>,
    pub monthly_segment_quota: Option<u64>,
    pub tenant_daily_segment_quota: Option<u64>,
    pub tenant_monthly_segment_quota: Option<u64>,
    /// At most this many non-essential messages per recipient per day.
    pub recipient_daily_cap: Option<u32>,
    /// Burst detection: a minute above `max(min, factor × previous hour's average minute)`
    /// holds messages for review; null: off.
    pub burst_min_per_minute: Option<u32>,
    pub burst_factor: Option<u32>,
    /// Messages per hour to high-risk prefixes before they are refused.
    pub high_risk_per_hour: u32,
    /// Messages are held for review after this many invalid-number failures in an hour.
    pub hold_after_invalid_failures: Option<u32>,
    pub block_url_shorteners: bool,
    pub blocked_domains: Vec<String>,
    /// The footer appended to non-essential messages; null: none.
    pub opt_out_footer: Option<String>,
}

/// The calling key's app.
#[utoipa::path(
    operation_id = "app_get",
    get, path = "/v1/app", tag = "app",
    responses((status = 200, body = AppView)),
    security(("api_key" = []))
)]
pub async fn get(State(state): State<AppState>, auth: Auth<Reader>) -> Json<AppView> {
    let board = state.pipeline.board();
    let pause = board.pause_for(&auth.tenant_id, &auth.app_id);
    let tenant = board.tenant_settings(&auth.tenant_id);
    let app = &auth.caller.app;
    let policy = app.policy(&tenant);
    Json(AppView {
        id: app.id.as_str().to_owned(),
        tenant_id: app.tenant_id.as_str().to_owned(),
        name: app.name.clone(),
        senders: app.senders.clone(),
        allowed_purposes: app
            .allowed_purposes
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        policy: PolicyView {
            max_body_chars: app.max_body_chars,
            consent_for_non_essential: policy.consent_for_non_essential,
            quiet_hours: app.policy.quiet_hours.clone(),
            allowed_countries: policy.allowed_countries.clone(),
            paused: pause.is_some(),
            extra_opt_out_keywords: app.policy.extra_opt_out_keywords.clone(),
            daily_segment_quota: policy.quotas.app_daily,
            monthly_segment_quota: policy.quotas.app_monthly,
            tenant_daily_segment_quota: policy.quotas.tenant_daily,
            tenant_monthly_segment_quota: policy.quotas.tenant_monthly,
            recipient_daily_cap: policy.recipient_daily_cap,
            burst_min_per_minute: policy.burst.map(|b| b.min_per_minute),
            burst_factor: policy.burst.map(|b| b.factor),
            high_risk_per_hour: policy.high_risk_per_hour,
            hold_after_invalid_failures: policy.hold_after_invalid_failures,
            block_url_shorteners: policy.links.block_shorteners,
            blocked_domains: policy.links.blocked_domains.clone(),
            opt_out_footer: policy.opt_out_footer.clone(),
        },
        pause: pause.map(|p| PauseView {
            scope: p.scope.as_str().to_owned(),
            stop_queue: p.stop_queue,
            reason: p.reason,
        }),
        created_at: rfc3339(app.created_at),
    })
}

/// Why the app is paused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Shown in refusals and the audit trail (at most 500 characters).
    pub reason: String,
    /// Also hold messages already accepted (default false: they still go out).
    #[serde(default)]
    pub stop_queue: bool,
}

const MAX_REASON_CHARS: usize = 500;

/// Pause the app's sending: new messages get `422 sending_paused`; with `stop_queue`,
/// messages already accepted wait too. The kill switch for a leaked key or a runaway job.
#[utoipa::path(
    operation_id = "app_pause",
    post, path = "/v1/app/pause", tag = "app",
    request_body = PauseRequest,
    responses((status = 200, body = AppView)),
    security(("api_key" = []))
)]
pub async fn pause(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    headers: axum::http::HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Json<AppView>, ApiError> {
    let req: PauseRequest = parse_json(&headers, &raw)?;
    let reason = req.reason.trim();
    if reason.is_empty()
        || reason.chars().count() > MAX_REASON_CHARS
        || reason.chars().any(char::is_control)
    {
        return Err(ApiError::unprocessable(
            "invalid_reason",
            "reason is required: 1 to 500 characters, no control characters",
        ));
    }
    state
        .pipeline
        .control()
        .pause(
            &PauseTarget::App(auth.app_id.clone()),
            req.stop_queue,
            reason,
            &format!("api_key:{}", auth.key_id.as_str()),
            None,
        )
        .await?;
    record(
        &state,
        &auth,
        &ctx,
        "app.paused",
        ("app", auth.app_id.as_str()),
        Some(serde_json::json!({ "reason": reason, "stop_queue": req.stop_queue })),
    )
    .await;
    Ok(get(State(state), auth_as_reader(auth)).await)
}

/// Lift the app's own pause (a tenant's or the gateway's is lifted by the operator).
#[utoipa::path(
    operation_id = "app_resume",
    post, path = "/v1/app/resume", tag = "app",
    responses((status = 200, body = AppView), (status = 409, description = "The app is not paused")),
    security(("api_key" = []))
)]
pub async fn resume(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
) -> Result<(StatusCode, Json<AppView>), ApiError> {
    let lifted = state
        .pipeline
        .control()
        .resume(&PauseTarget::App(auth.app_id.clone()))
        .await?;
    if !lifted {
        return Err(ApiError::conflict(
            "not_paused",
            "the app has no pause of its own to lift",
        ));
    }
    record(
        &state,
        &auth,
        &ctx,
        "app.resumed",
        ("app", auth.app_id.as_str()),
        None,
    )
    .await;
    Ok((
        StatusCode::OK,
        get(State(state), auth_as_reader(auth)).await,
    ))
}

fn auth_as_reader(auth: Auth<Admin>) -> Auth<Reader> {
    Auth::from_caller(auth.caller)
}
