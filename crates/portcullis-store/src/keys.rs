//! API keys. Only the SHA-256 hash and the 13-character identification prefix are stored;
//! the plaintext exists once, in the response that created it.

use portcullis_crypto::{KeyMode, NewApiKey, generate_api_key};
use portcullis_domain::{AppId, IpAllowlist, KeyId, Role, TenantId};
use serde::Serialize;
use sqlx::QueryBuilder;

use crate::apps::{App, AppRow};
use crate::{Db, ReadVia, StoreError, Tx, found, now_ms, on_pool, on_read, on_tx};

/// A key as listed: never the key itself.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyRecord {
    pub id: KeyId,
    pub tenant_id: TenantId,
    pub app_id: AppId,
    pub prefix: String,
    pub role: Role,
    pub test: bool,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub rotated_at: Option<i64>,
    pub replaced_by: Option<KeyId>,
    pub last_used_at: Option<i64>,
    pub last_used_ip: Option<String>,
    /// Networks the key may be used from; empty for anywhere.
    #[serde(skip)]
    pub allowed_cidrs: IpAllowlist,
}

impl ApiKeyRecord {
    /// `active`, `rotated` (still inside its grace), `revoked` or `expired` at `now`.
    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else if self.rotated_at.is_some() {
            "rotated"
        } else {
            "active"
        }
    }

    /// Whether the key authenticates at `now`.
    pub fn usable(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    tenant_id: String,
    app_id: String,
    prefix: String,
    hash: Vec<u8>,
    role: String,
    mode: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    rotated_at: Option<i64>,
    replaced_by: Option<String>,
    last_used_at: Option<i64>,
    last_used_ip: Option<String>,
    allowed_cidrs: String,
}

const COLUMNS: &str = "id, tenant_id, app_id, prefix, hash, role, mode, created_at, expires_at, \
     revoked_at, rotated_at, replaced_by, last_used_at, last_used_ip, allowed_cidrs";

impl KeyRow {
    fn into_record(self) -> Result<(ApiKeyRecord, Vec<u8>), StoreError> {
        let role = Role::parse(&self.role).map_err(StoreError::corrupt)?;
        let allowed_cidrs =
            IpAllowlist::from_stored(&self.allowed_cidrs).map_err(StoreError::corrupt)?;
        Ok((
            ApiKeyRecord {
                id: KeyId::from_trusted(self.id),
                tenant_id: TenantId::from_trusted(self.tenant_id),
                app_id: AppId::from_trusted(self.app_id),
                prefix: self.prefix,
                role,
                test: self.mode == "test",
                created_at: self.created_at,
                expires_at: self.expires_at,
                revoked_at: self.revoked_at,
                rotated_at: self.rotated_at,
                replaced_by: self.replaced_by.map(KeyId::from_trusted),
                last_used_at: self.last_used_at,
                last_used_ip: self.last_used_ip,
                allowed_cidrs,
            },
            self.hash,
        ))
    }
}

fn mode_str(mode: KeyMode) -> &'static str {
    match mode {
        KeyMode::Live => "live",
        KeyMode::Test => "test",
    }
}

/// Where and until when a key may be used.
#[derive(Debug, Clone, Default)]
pub struct KeyLimits {
    pub expires_at: Option<i64>,
    pub allowed_cidrs: IpAllowlist,
}

/// Creates a key for an app of `tenant`. Returns the record and the one-time plaintext.
pub async fn create(
    db: &Db,
    tenant: &TenantId,
    app: &AppId,
    role: Role,
    mode: KeyMode,
    limits: KeyLimits,
) -> Result<(ApiKeyRecord, NewApiKey), StoreError> {
    let mut tx = db.begin().await?;
    let created = insert(&mut tx, tenant, app, role, mode, limits).await?;
    tx.commit().await?;
    Ok(created)
}

async fn insert(
    tx: &mut Tx,
    tenant: &TenantId,
    app: &AppId,
    role: Role,
    mode: KeyMode,
    limits: KeyLimits,
) -> Result<(ApiKeyRecord, NewApiKey), StoreError> {
    let new = generate_api_key(mode);
    let record = ApiKeyRecord {
        id: KeyId::new(),
        tenant_id: tenant.clone(),
        app_id: app.clone(),
        prefix: new.prefix.clone(),
        role,
        test: matches!(mode, KeyMode::Test),
        created_at: now_ms(),
        expires_at: limits.expires_at,
        revoked_at: None,
        rotated_at: None,
        replaced_by: None,
        last_used_at: None,
        last_used_ip: None,
        allowed_cidrs: limits.allowed_cidrs,
    };
    // INSERT … SELECT FROM apps scoped by tenant: a key can only be minted for an app of
    // the tenant that asks.
    let res = on_tx!(tx, |c| {
        sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, app_id, prefix, hash, role, mode, created_at, expires_at, allowed_cidrs)
         SELECT $1, tenant_id, id, $4, $5, $6, $7, $8, $9, $10 FROM apps WHERE id = $2 AND tenant_id = $3"
    )
    .bind(record.id.as_str())
    .bind(app.as_str())
    .bind(tenant.as_str())
    .bind(&record.prefix)
    .bind(&new.hash[..])
    .bind(role.as_str())
    .bind(mode_str(mode))
    .bind(record.created_at)
    .bind(record.expires_at)
    .bind(record.allowed_cidrs.to_stored())
    .execute(c)
    .await
    .map(|r| r.rows_affected())
    })?;
    if res == 0 {
        return Err(StoreError::NotFound);
    }
    Ok((record, new))
}

/// Keys joined with their apps; `$filter` starts the WHERE clause (a query builder may
/// complete it). A macro so the query text is one static string on this hot path.
macro_rules! key_with_app_sql {
    ($filter:literal) => {
        concat!(
            "SELECT k.id, k.tenant_id, k.app_id, k.prefix, k.hash, k.role, k.mode, k.created_at, ",
            "k.expires_at, k.revoked_at, k.rotated_at, k.replaced_by, k.last_used_at, ",
            "k.last_used_ip, k.allowed_cidrs, a.name AS app_name, a.senders AS app_senders, ",
            "a.allowed_purposes AS app_allowed_purposes, a.max_body_chars AS app_max_body_chars, ",
            "a.policy AS app_policy, a.created_at AS app_created_at FROM api_keys k ",
            "JOIN apps a ON a.id = k.app_id AND a.tenant_id = k.tenant_id WHERE ",
            $filter
        )
    };
}

#[derive(sqlx::FromRow)]
struct KeyAppRow {
    #[sqlx(flatten)]
    key: KeyRow,
    app_name: String,
    app_senders: String,
    app_allowed_purposes: String,
    app_max_body_chars: i64,
    app_policy: String,
    app_created_at: i64,
}

/// A key as authentication sees it: the record, its stored hash (for the caller to
/// compare in constant time) and its app.
pub type Candidate = (ApiKeyRecord, Vec<u8>, App);

impl KeyAppRow {
    fn into_candidate(self) -> Result<Candidate, StoreError> {
        let app = App::try_from(AppRow {
            id: self.key.app_id.clone(),
            tenant_id: self.key.tenant_id.clone(),
            name: self.app_name,
            senders: self.app_senders,
            allowed_purposes: self.app_allowed_purposes,
            max_body_chars: self.app_max_body_chars,
            policy: self.app_policy,
            created_at: self.app_created_at,
        })?;
        let (key, hash) = self.key.into_record()?;
        Ok((key, hash, app))
    }
}

/// Candidate keys for identification prefixes, each with its app, in one round trip: the
/// unscoped lookup by which a request's tenant and app are established.
/// Authentication is on the path of every request, so callers look up the prefixes of
/// requests that arrive together at once.
pub async fn find_by_prefixes_with_app(
    via: ReadVia<'_>,
    prefixes: &[&str],
) -> Result<Vec<Candidate>, StoreError> {
    if prefixes.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<KeyAppRow> = on_read!(via, |p| {
        let mut qb = QueryBuilder::new(key_with_app_sql!("k.prefix IN ("));
        let mut sep = qb.separated(", ");
        for prefix in prefixes {
            sep.push_bind(*prefix);
        }
        qb.push(")");
        qb.build_query_as().fetch_all(p).await
    })?;
    rows.into_iter().map(KeyAppRow::into_candidate).collect()
}

/// A key and its app by key id: how a signed access token, which names its key, finds
/// whether that key still stands.
pub async fn find_by_id_with_app(
    db: &Db,
    id: &KeyId,
) -> Result<Option<(ApiKeyRecord, App)>, StoreError> {
    let row: Option<KeyAppRow> = on_pool!(db.read(), |p| {
        sqlx::query_as(key_with_app_sql!("k.id = $1"))
            .bind(id.as_str())
            .fetch_optional(p)
            .await
    })?;
    row.map(|r| r.into_candidate().map(|(k, _, a)| (k, a)))
        .transpose()
}

/// The keys of one app, newest first.
pub async fn list(db: &Db, app: &AppId) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let rows: Vec<KeyRow> = on_pool!(db.read(), |p| sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE app_id = $1 ORDER BY created_at DESC, id DESC"
    )))
    .bind(app.as_str())
    .fetch_all(p)
    .await)?;
    rows.into_iter()
        .map(|r| r.into_record().map(|(k, _)| k))
        .collect()
}

/// One key of an app.
pub async fn get(db: &Db, app: &AppId, id: &KeyId) -> Result<ApiKeyRecord, StoreError> {
    let row: Option<KeyRow> = on_pool!(db.read(), |p| sqlx::query_as(sqlx::AssertSqlSafe(
        format!("SELECT {COLUMNS} FROM api_keys WHERE app_id = $1 AND id = $2")
    ))
    .bind(app.as_str())
    .bind(id.as_str())
    .fetch_optional(p)
    .await)?;
    Ok(row.ok_or(StoreError::NotFound)?.into_record()?.0)
}

/// Revokes a key of an app. Revoking twice is not an error (the first time stands).
pub async fn revoke(db: &Db, app: &AppId, id: &KeyId) -> Result<ApiKeyRecord, StoreError> {
    let now = now_ms();
    let res = on_pool!(db.write(), |p| {
        sqlx::query(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE app_id = $2 AND id = $3"
    )
    .bind(now)
    .bind(app.as_str())
    .bind(id.as_str())
    .execute(p)
    .await
    .map(|r| r.rows_affected())
    })?;
    if res == 0 {
        return Err(StoreError::NotFound);
    }
    get(db, app, id).await
}

/// Revokes a key by id alone: the operator CLI's `keys revoke`.
pub async fn revoke_any_app(db: &Db, id: &KeyId) -> Result<(), StoreError> {
    let res = on_pool!(db.write(), |p| sqlx::query(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2"
    )
    .bind(now_ms())
    .bind(id.as_str())
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    found(res)
}

/// The app a key belongs to, by key id alone (operator CLI).
pub async fn owner(db: &Db, id: &KeyId) -> Result<(TenantId, AppId), StoreError> {
    let row: Option<(String, String)> = on_pool!(db.read(), |p| sqlx::query_as(
        "SELECT tenant_id, app_id FROM api_keys WHERE id = $1"
    )
    .bind(id.as_str())
    .fetch_optional(p)
    .await)?;
    let (t, a) = row.ok_or(StoreError::NotFound)?;
    Ok((TenantId::from_trusted(t), AppId::from_trusted(a)))
}

/// Rotates an active key: a new key with the same app and role replaces it. The old key
/// keeps working for `grace_ms` (zero: it stops at once), and any grace still running for
/// the key *it* replaced ends now.
pub async fn rotate(
    db: &Db,
    app: &AppId,
    id: &KeyId,
    grace_ms: i64,
) -> Result<(ApiKeyRecord, NewApiKey), StoreError> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    let row: Option<KeyRow> = on_tx!(&mut tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE app_id = $1 AND id = $2"
    )))
    .bind(app.as_str())
    .bind(id.as_str())
    .fetch_optional(c)
    .await)?;
    let (old, _) = row.ok_or(StoreError::NotFound)?.into_record()?;
    if !old.usable(now) || old.rotated_at.is_some() {
        return Err(StoreError::Conflict(
            "only an active key can be rotated".to_owned(),
        ));
    }
    let mode = if old.test {
        KeyMode::Test
    } else {
        KeyMode::Live
    };
    // The new key inherits the old one's allowlist, and its expiry only if it had one of
    // its own.
    let limits = KeyLimits {
        expires_at: old.expires_at,
        allowed_cidrs: old.allowed_cidrs.clone(),
    };
    let (new_record, new_key) =
        insert(&mut tx, &old.tenant_id, app, old.role, mode, limits).await?;
    on_tx!(&mut tx, |c| {
        sqlx::query(
            "UPDATE api_keys SET expires_at = $1 WHERE replaced_by = $2 AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(now)
        .bind(id.as_str())
        .execute(&mut *c)
        .await?;
        sqlx::query(
            "UPDATE api_keys SET rotated_at = $1, replaced_by = $2, expires_at = $3 WHERE id = $4",
        )
        .bind(now)
        .bind(new_record.id.as_str())
        .bind(now + grace_ms.max(0))
        .bind(id.as_str())
        .execute(&mut *c)
        .await?;
        Ok::<(), sqlx::Error>(())
    })?;
    tx.commit().await?;
    Ok((new_record, new_key))
}

/// Records when and from where keys were last used. Called in batches by a background
/// flusher so authentication never waits on a write.
pub async fn touch_last_used(db: &Db, uses: &[(KeyId, i64, String)]) -> Result<(), StoreError> {
    if uses.is_empty() {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, |c| {
        for (id, at, ip) in uses {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1, last_used_ip = $2 WHERE id = $3 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(*at)
            .bind(ip)
            .bind(id.as_str())
            .execute(&mut *c)
            .await?;
        }
        Ok::<(), sqlx::Error>(())
    })?;
    tx.commit().await
}
