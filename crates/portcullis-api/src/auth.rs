//! Authentication: the `Authorization: Bearer pcl_…` header becomes an [`Auth`] whose type
//! parameter names the least role the route needs, so a handler's signature shows who may
//! call it.
//!
//! A presented key is format-checked before any lookup (a string that cannot be a key never
//! reaches the database); candidates sharing its 13-character prefix are compared by
//! SHA-256 hash in constant time, all of them, with no early exit. Every failure — absent,
//! malformed, unknown, revoked, expired, rotated out — is the same 401.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Mutex;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use portcullis_crypto::{hash_matches, parse_presented_key};
use portcullis_domain::{AppId, KeyId, Role, TenantId};
use portcullis_store::apps::App;
use portcullis_store::{keys, now_ms};

use crate::AppState;
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
    // Exactly "Bearer <key>": one space, nothing around it.
    let token = header
        .strip_prefix("Bearer ")
        .ok_or_else(ApiError::unauthorized)?;
    let presented = parse_presented_key(token).ok_or_else(ApiError::unauthorized)?;
    let candidates = keys::find_by_prefix_with_app(&state.store.db, presented.prefix()).await?;
    let hash = presented.hash();
    let mut found = None;
    for (record, stored, app) in candidates {
        // Every candidate is compared; the branch only records the match.
        if hash_matches(&stored, &hash) {
            found = Some((record, app));
        }
    }
    let now = now_ms();
    let (record, app) = found
        .filter(|(r, _)| r.usable(now))
        .ok_or_else(ApiError::unauthorized)?;
    let ip = parts
        .extensions
        .get::<ClientAddr>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    state.last_used.record(&record.id, now, ip);
    // After authentication, so an unknown key cannot spend a real key's allowance.
    state
        .ratelimits
        .check_caller(
            record.id.as_str(),
            record.app_id.as_str(),
            record.tenant_id.as_str(),
        )
        .map_err(ApiError::RateLimited)?;
    Ok(Caller {
        key_id: record.id,
        tenant_id: record.tenant_id,
        app_id: record.app_id,
        role: record.role,
        test: record.test,
        app,
    })
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
