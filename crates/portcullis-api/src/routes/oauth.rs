//! `POST /v1/oauth/token`: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4). The app's
//! API key is the client secret; the answer is a signed access token that works as a bearer
//! credential for 15 minutes (configurable), carrying the key's app, tenant and role (or a
//! narrower role asked for as `scope`). A process can then hold the long-lived key in one
//! place and hand out only tokens that expire on their own.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use portcullis_crypto::access_token::{self, AccessClaims};
use portcullis_domain::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::authenticate_key;
use crate::client_addr::ClientAddr;
use crate::error::ApiError;

/// The form fields of a token request (`application/x-www-form-urlencoded`).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    pub grant_type: Option<String>,
    /// Optional: the key's id (`key_…`). When given it must be the key's.
    pub client_id: Option<String>,
    /// The API key. May instead come as the password of HTTP Basic authentication.
    pub client_secret: Option<String>,
    /// Optional narrower role: `reader` or `sender` (never wider than the key's).
    pub scope: Option<String>,
}

/// A token response (RFC 6749 §5.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// The role the token carries.
    pub scope: String,
}

/// Exchange an API key for a short-lived access token.
#[utoipa::path(
    operation_id = "oauth_token",
    post, path = "/v1/oauth/token", tag = "keys",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "unsupported_grant_type, invalid_scope or invalid_request"),
        (status = 401, description = "Invalid client credentials"),
        (status = 415, description = "Not a form body"),
    )
)]
pub async fn token(
    State(state): State<AppState>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(HeaderMap, Json<TokenResponse>), ApiError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    let req: TokenRequest = serde_urlencoded::from_bytes(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body is not a valid form",
        )
    })?;
    if req.grant_type.as_deref() != Some("client_credentials") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        ));
    }
    let (basic_id, basic_secret) = basic_credentials(&headers)?;
    // One way of presenting the secret, not two that might disagree.
    let secret = match (basic_secret, req.client_secret) {
        (Some(s), None) | (None, Some(s)) => s,
        _ => return Err(ApiError::unauthorized()),
    };
    let client_id = basic_id.or(req.client_id).filter(|id| !id.is_empty());
    let caller = authenticate_key(&state, &secret, client.map(|Extension(c)| c.0)).await?;
    if client_id.is_some_and(|id| id != caller.key_id.as_str()) {
        return Err(ApiError::unauthorized());
    }
    let role = match req.scope.as_deref() {
        None | Some("") => caller.role,
        Some(s) => Role::parse(s)
            .ok()
            .filter(|r| caller.role.allows(*r))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "scope must be a role no wider than the key's: admin, sender or reader",
                )
            })?,
    };
    let ttl = state.config.access_token_ttl_secs;
    let claims = AccessClaims::new(
        caller.key_id.as_str(),
        caller.app_id.as_str(),
        caller.tenant_id.as_str(),
        role.as_str(),
        portcullis_store::now_ms() / 1000,
        i64::try_from(ttl).unwrap_or(i64::MAX / 2),
    );
    let token = access_token::issue(state.store.keyring(), &claims);
    tracing::info!(key_id = %caller.key_id, role = role.as_str(), "access token issued");
    let mut out = HeaderMap::new();
    out.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
    Ok((
        out,
        Json(TokenResponse {
            access_token: token.expose().clone(),
            token_type: "Bearer",
            expires_in: ttl,
            scope: role.as_str().to_owned(),
        }),
    ))
}

/// `Authorization: Basic base64(client_id:client_secret)`, if present (RFC 6749 §2.3.1;
/// both parts form-urlencoded). Any other `Authorization` is refused: a bearer key here
/// would be a client confused about what it is doing.
fn basic_credentials(headers: &HeaderMap) -> Result<(Option<String>, Option<String>), ApiError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok((None, None));
    };
    let encoded = v
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or_else(ApiError::unauthorized)?;
    let decoded = STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(ApiError::unauthorized)?;
    let (id, secret) = decoded.split_once(':').ok_or_else(ApiError::unauthorized)?;
    let unescape = |s: &str| -> Result<String, ApiError> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
            .ok()
            .and_then(|mut v| v.pop())
            .map(|(_, v)| v)
            .ok_or_else(ApiError::unauthorized)
    };
    Ok((Some(unescape(id)?), Some(unescape(secret)?)))
}
