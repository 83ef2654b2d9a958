//! Authentication: the `Authorization: Bearer pcl_…` header becomes an [`Auth`] whose type
//! parameter names the least role the route needs, so a handler's signature shows who may
//! call it.
//!
//! The credential is an API key or a short-lived access token minted from one
//! (`POST /v1/oauth/token`). A presented key is format-checked before any lookup (a string
//! that cannot be a key never reaches the database); candidates sharing its 13-character
//! prefix are compared by SHA-256 hash in constant time, all of them, with no early exit.
//! Every failure — absent, malformed, unknown, revoked, expired, rotated out, outside the
//! key's IP allowlist, a bad or expired token — is the same 401.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Mutex;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::net::IpAddr;

use portcullis_crypto::{access_token, hash_matches, parse_presented_key};
use portcullis_domain::{AppId, KeyId, Role, TenantId};
use portcullis_store::apps::App;
use portcullis_store::keys::ApiKeyRecord;
use portcullis_store::{keys, now_ms};

use crate::AppState;
use crate::bruteforce::ClientKey;
use crate::client_addr::ClientAddr;
use crate::error::ApiError;

/// Who is calling: established from the key alone.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: KeyId,
    pub tenant_id: TenantId,
    pub app_id: AppId,
    pub role: Role,
    /// A `pcl_test_` key: its messages only ever reach the simulator.
    pub test: bool,
    /// The key's app, read with the key.
    pub app: App,
}

/// The least role a route requires.
pub trait RequiredRole: Send + Sync + 'static {
    const ROLE: Role;
}

pub struct Reader;
pub struct Sender;
pub struct Admin;

impl RequiredRole for Reader {
    const ROLE: Role = Role::Reader;
}
impl RequiredRole for Sender {
    const ROLE: Role = Role::Sender;
}
impl RequiredRole for Admin {
    const ROLE: Role = Role::Admin;
}

/// An authenticated caller holding at least role `R`.
pub struct Auth<R: RequiredRole> {
    pub caller: Caller,
    _role: PhantomData<R>,
}

impl<R: RequiredRole> Auth<R> {
    /// The same caller seen under a role it already holds (roles nest: an admin is a
    /// reader). Only for reusing a handler of a weaker role after the stronger check.
    pub(crate) fn from_caller(caller: Caller) -> Self {
        Auth {
            caller,
            _role: PhantomData,
        }
    }
}

impl<R: RequiredRole> std::ops::Deref for Auth<R> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl<R: RequiredRole> FromRequestParts<AppState> for Auth<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticate(parts, state).await?;
        if !caller.role.allows(R::ROLE) {
            return Err(ApiError::forbidden());
        }
        Ok(Auth {
            caller,
            _role: PhantomData,
        })
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(ApiError::unauthorized)?;
    // Exactly "Bearer <credential>": one space, nothing around it.
    let token = header
        .strip_prefix("Bearer ")
        .ok_or_else(ApiError::unauthorized)?;
    let ip = parts.extensions.get::<ClientAddr>().map(|c| c.0);
    let now = now_ms();
    let (record, app, role) = if access_token::is_access_token(token) {
        from_access_token(state, token, now).await?
    } else {
        let (record, app) = from_api_key(state, token, ip).await?;
        let role = record.role;
        (record, app, role)
    };
    admit(state, record, app, role, ip, now).await
}

/// Authenticates an API key presented other than as a bearer header (the OAuth client
/// secret), with every check a bearer key gets.
pub async fn authenticate_key(
    state: &AppState,
    key: &str,
    ip: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    let now = now_ms();
    let (record, app) = from_api_key(state, key, ip).await?;
    let role = record.role;
    admit(state, record, app, role, ip, now).await
}

/// The checks every credential passes once its key is known: the key still stands, the
/// client is inside its allowlist, the key's allowance is not spent.
async fn admit(
    state: &AppState,
    record: ApiKeyRecord,
    app: App,
    role: Role,
    ip: Option<IpAddr>,
    now: i64,
) -> Result<Caller, ApiError> {
    let refused = if !record.usable(now) {
        Some("revoked or expired key")
    } else if !record.allowed_cidrs.is_empty()
        // No known address (never, behind our middleware) fails closed.
        && ip.is_none_or(|ip| !record.allowed_cidrs.permits(ip))
    {
        Some("key used from outside its allowlist")
    } else {
        None
    };
    if let Some(reason) = refused {
        security_event(reason, &record.id, ip);
        note_failure(state, &record.app_id, &record.tenant_id, ip);
        return Err(ApiError::unauthorized());
    }
    let ip_text = ip.map(|i| i.to_string()).unwrap_or_default();
    state.last_used.record(&record.id, now, ip_text);
    // After authentication, so an unknown key cannot spend a real key's allowance.
    state
        .ratelimits
        .check_caller(
            record.id.as_str(),
            record.app_id.as_str(),
            record.tenant_id.as_str(),
        )
        .await
        .map_err(ApiError::RateLimited)?;
    Ok(Caller {
        key_id: record.id,
        tenant_id: record.tenant_id,
        app_id: record.app_id,
        role,
        test: record.test,
        app,
    })
}

/// An API key (`pcl_…`): format-checked, then every candidate sharing its prefix compared
/// by hash in constant time.
async fn from_api_key(
    state: &AppState,
    token: &str,
    ip: Option<IpAddr>,
) -> Result<(ApiKeyRecord, App), ApiError> {
    let presented = parse_presented_key(token).ok_or_else(ApiError::unauthorized)?;
    let candidates = state
        .key_reads
        .find(presented.prefix())
        .await
        .map_err(ApiError::internal)?;
    let hash = presented.hash();
    let mut found = None;
    for (record, stored, app) in candidates.iter() {
        // Every candidate is compared; the branch only records the match.
        if hash_matches(stored, &hash) {
            found = Some((record.clone(), app.clone()));
        }
    }
    if found.is_none() {
        // The prefix names real keys but the secret is wrong: someone holds part of a key,
        // or is guessing at one. That is the apps' business.
        for (record, _, _) in candidates.iter() {
            note_failure(state, &record.app_id, &record.tenant_id, ip);
        }
    }
    found.ok_or_else(ApiError::unauthorized)
}

/// A short-lived access token from `POST /v1/oauth/token`. Its signature and expiry are
/// checked without the database; the key that minted it is then read, so revoking,
/// rotating out or expiring the key ends its tokens on the very next request, on every
/// instance.
async fn from_access_token(
    state: &AppState,
    token: &str,
    now: i64,
) -> Result<(ApiKeyRecord, App, Role), ApiError> {
    let claims = access_token::verify(state.store.keyring(), token, now / 1000)
        .ok_or_else(ApiError::unauthorized)?;
    let key_id = KeyId::parse(&claims.sub).map_err(|_| ApiError::unauthorized())?;
    let role = Role::parse(&claims.role).map_err(|_| ApiError::unauthorized())?;
    let (record, app) = keys::find_by_id_with_app(&state.store.db, &key_id)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    if record.app_id.as_str() != claims.app
        || record.tenant_id.as_str() != claims.tnt
        || !record.role.allows(role)
    {
        return Err(ApiError::unauthorized());
    }
    Ok((record, app, role))
}

/// A failure attributable to an app; raises the app's alert when it completes a pattern.
fn note_failure(state: &AppState, app: &AppId, tenant: &TenantId, ip: Option<IpAddr>) {
    let Some(ip) = ip else { return };
    let Some(alert) = state
        .auth_alerts
        .record(app, tenant, ClientKey::from(ip), now_ms())
    else {
        return;
    };
    metrics::counter!("portcullis_security_events_total", "kind" => "auth_failure_alert")
        .increment(1);
    tracing::warn!(
        target: "security",
        app_id = %alert.app_id,
        failures = alert.failures,
        addresses = alert.addresses,
        "authentication failures against one app from many addresses"
    );
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::audit::raise_auth_alert(&state, &alert).await {
            tracing::error!(error = %e, "recording an authentication-failure alert");
        }
    });
}

/// One line on the security stream for a refused credential: the key's id, never the key.
fn security_event(reason: &'static str, key: &KeyId, ip: Option<IpAddr>) {
    metrics::counter!("portcullis_security_events_total", "kind" => "refused_key").increment(1);
    tracing::warn!(target: "security", key_id = %key, client = ?ip, reason, "credential refused");
}

/// Remembers when each key was last used, in memory, for a background task to flush in
/// batches: writing `last_used_at` on every request would put a database write on the
/// path of every read.
#[derive(Default)]
pub struct LastUsed {
    pending: Mutex<HashMap<KeyId, (i64, String)>>,
}

impl LastUsed {
    fn record(&self, key: &KeyId, at: i64, ip: String) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), (at, ip));
    }

    /// Takes what was recorded since the last call.
    pub fn drain(&self) -> Vec<(KeyId, i64, String)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.drain().map(|(k, (at, ip))| (k, at, ip)).collect()
    }
}
