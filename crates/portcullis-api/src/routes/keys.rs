//! `/v1/keys`: the app's API keys. Listings show the prefix, never the key.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use portcullis_crypto::{KeyMode, NewApiKey};
use portcullis_domain::{IpAllowlist, KeyId, Role};
use portcullis_store::keys::{self, ApiKeyRecord, KeyLimits};
use portcullis_store::now_ms;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::{self, RequestCtx};
use crate::auth::{Admin, Auth};
use crate::dto::{IdPath, List, parse_json, rfc3339, rfc3339_opt};
use crate::error::ApiError;

const MAX_GRACE_SECONDS: u32 = 86_400;

/// A key as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    /// The first 13 characters, to recognise the key by.
    pub prefix: String,
    pub role: String,
    /// `active`, `rotated` (inside its grace period), `revoked` or `expired`.
    pub status: String,
    pub test: bool,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    /// The client address of the last authenticated use.
    pub last_used_ip: Option<String>,
    /// Networks the key may be used from; empty for anywhere.
    pub allowed_cidrs: Vec<String>,
    pub replaced_by: Option<String>,
}

impl KeyView {
    pub fn from_record(k: &ApiKeyRecord) -> KeyView {
        KeyView {
            id: k.id.as_str().to_owned(),
            prefix: k.prefix.clone(),
            role: k.role.as_str().to_owned(),
            status: k.status(now_ms()).to_owned(),
            test: k.test,
            created_at: rfc3339(k.created_at),
            expires_at: rfc3339_opt(k.expires_at),
            revoked_at: rfc3339_opt(k.revoked_at),
            last_used_at: rfc3339_opt(k.last_used_at),
            last_used_ip: k.last_used_ip.clone(),
            allowed_cidrs: k.allowed_cidrs.entries(),
            replaced_by: k.replaced_by.as_ref().map(|k| k.as_str().to_owned()),
        }
    }
}

/// A newly created key: the only response that ever contains the key itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: KeyView,
    /// The API key. Shown once; store it now.
    pub key: String,
}

impl CreatedKey {
    pub fn new(record: &ApiKeyRecord, new: &NewApiKey) -> CreatedKey {
        CreatedKey {
            view: KeyView::from_record(record),
            key: new.plaintext.expose().clone(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// `admin`, `sender` or `reader`.
    pub role: String,
    /// A `pcl_test_` key, whose messages only reach the simulator.
    #[serde(default)]
    pub test: bool,
    /// Optional RFC 3339 expiry.
    pub expires_at: Option<String>,
    /// Optional networks (CIDRs or addresses, at most 64) the key may be used from. A
    /// request from anywhere else is refused like an invalid key. Rotation keeps the list.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// Seconds the old key keeps working (0 to 86400; default 0).
    pub grace_seconds: Option<u32>,
}

/// Create a key for the calling key's app.
#[utoipa::path(
    operation_id = "keys_create",
    post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey)),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let req: CreateKey = parse_json(&headers, &raw)?;
    let role = Role::parse(&req.role).map_err(|_| {
        ApiError::unprocessable("invalid_role", "role must be admin, sender or reader")
    })?;
    let expires_at = match req.expires_at.as_deref() {
        None => None,
        Some(s) => {
            let ts: jiff::Timestamp = s.parse().map_err(|_| {
                ApiError::unprocessable(
                    "invalid_expires_at",
                    "expires_at must be an RFC 3339 timestamp",
                )
            })?;
            if ts.as_millisecond() <= now_ms() {
                return Err(ApiError::unprocessable(
                    "invalid_expires_at",
                    "expires_at must be in the future",
                ));
            }
            Some(ts.as_millisecond())
        }
    };
    let allowed_cidrs = IpAllowlist::parse(&req.allowed_cidrs)
        .map_err(|e| ApiError::unprocessable("invalid_allowed_cidrs", e.to_string()))?;
    let mode = if req.test {
        KeyMode::Test
    } else {
        KeyMode::Live
    };
    let limits = KeyLimits {
        expires_at,
        allowed_cidrs,
    };
    let (record, new) = keys::create(
        &state.store.db,
        &auth.tenant_id,
        &auth.app_id,
        role,
        mode,
        limits,
    )
    .await?;
    tracing::info!(key_id = %record.id, prefix = %record.prefix, role = role.as_str(), "api key created");
    audit::record(
        &state,
        &auth,
        &ctx,
        "key.created",
        ("key", record.id.as_str()),
        Some(serde_json::json!({
            "role": role.as_str(),
            "prefix": record.prefix,
            "test": req.test,
            "allowed_cidrs": record.allowed_cidrs.entries(),
        })),
    )
    .await;
    Ok((StatusCode::CREATED, Json(CreatedKey::new(&record, &new))))
}

/// List the app's keys.
#[utoipa::path(
    operation_id = "keys_list",
    get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = List<KeyView>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth<Admin>,
) -> Result<Json<List<KeyView>>, ApiError> {
    let keys = keys::list(&state.store.db, &auth.app_id).await?;
    Ok(Json(List::new(
        keys.iter().map(KeyView::from_record).collect(),
        None,
    )))
}

/// Rotate a key: a new key replaces it; the old one stops now or after `grace_seconds`.
#[utoipa::path(
    operation_id = "keys_rotate",
    post, path = "/v1/keys/{id}/rotate", tag = "keys", request_body = Option<RotateKey>,
    params(("id" = String, Path, description = "Key id (key_…)")),
    responses((status = 201, body = CreatedKey), (status = 404, description = "No such key"), (status = 409, description = "Key not active")),
    security(("api_key" = []))
)]
pub async fn rotate(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    IdPath(id): IdPath,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let id = KeyId::parse(&id).map_err(|_| ApiError::not_found())?;
    let req: RotateKey = if raw.is_empty() {
        RotateKey::default()
    } else {
        parse_json(&headers, &raw)?
    };
    let grace = req.grace_seconds.unwrap_or(0);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::unprocessable(
            "invalid_grace_seconds",
            "grace_seconds must be between 0 and 86400",
        ));
    }
    let (record, new) = keys::rotate(&state.store.db, &auth.app_id, &id, i64::from(grace) * 1000)
        .await
        .map_err(|e| match e {
            portcullis_store::StoreError::Conflict(m) => ApiError::conflict("key_not_active", m),
            other => other.into(),
        })?;
    if grace == 0 {
        state.realtime.revoke_key(&id);
    }
    tracing::info!(old_key_id = %id, key_id = %record.id, grace_seconds = grace, "api key rotated");
    audit::record(
        &state,
        &auth,
        &ctx,
        "key.rotated",
        ("key", id.as_str()),
        Some(serde_json::json!({"new_key_id": record.id.as_str(), "grace_seconds": grace})),
    )
    .await;
    Ok((StatusCode::CREATED, Json(CreatedKey::new(&record, &new))))
}

/// Revoke a key: it stops working on the next request.
#[utoipa::path(
    operation_id = "keys_revoke",
    delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id (key_…)")),
    responses((status = 200, body = KeyView), (status = 404, description = "No such key")),
    security(("api_key" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    ctx: RequestCtx,
    IdPath(id): IdPath,
) -> Result<Json<KeyView>, ApiError> {
    let id = KeyId::parse(&id).map_err(|_| ApiError::not_found())?;
    let record = keys::revoke(&state.store.db, &auth.app_id, &id).await?;
    state.realtime.revoke_key(&id);
    tracing::info!(key_id = %id, "api key revoked");
    audit::record(
        &state,
        &auth,
        &ctx,
        "key.revoked",
        ("key", id.as_str()),
        None,
    )
    .await;
    Ok(Json(KeyView::from_record(&record)))
}
