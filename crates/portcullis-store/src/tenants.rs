//! Tenants: the organisations that own apps.

use portcullis_domain::TenantId;
use serde::Serialize;

use crate::{Db, StoreError, now_ms, on_pool};

#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub settings: TenantSettings,
    pub created_at: i64,
}

/// A tenant's own settings. Every field has a default, so settings written by an older
/// version still load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TenantSettings {
    /// IANA zone whose midnight starts the tenant's quota days (UTC when unset).
    pub timezone: Option<String>,
    /// Segments per day, all the tenant's apps together (`None`: unlimited).
    pub daily_segment_quota: Option<u64>,
    /// Segments per month.
    pub monthly_segment_quota: Option<u64>,
}

impl TenantSettings {
    /// The zone quota periods are counted in.
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        self.timezone
            .as_deref()
            .and_then(|z| jiff::tz::TimeZone::get(z).ok())
            .unwrap_or(jiff::tz::TimeZone::UTC)
    }
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    name: String,
    settings: String,
    created_at: i64,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;
    fn try_from(r: TenantRow) -> Result<Self, StoreError> {
        Ok(Tenant {
            id: TenantId::from_trusted(r.id),
            name: r.name,
            settings: serde_json::from_str(&r.settings).map_err(StoreError::corrupt)?,
            created_at: r.created_at,
        })
    }
}

pub async fn create(db: &Db, name: &str) -> Result<Tenant, StoreError> {
    let t = Tenant {
        id: TenantId::new(),
        name: name.to_owned(),
        settings: TenantSettings::default(),
        created_at: now_ms(),
    };
    on_pool!(db.write(), |p| sqlx::query(
        "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)"
    )
    .bind(t.id.as_str())
    .bind(&t.name)
    .bind(t.created_at)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(t)
}

/// Every tenant: an operator (CLI) listing, not reachable through the tenant API.
pub async fn list(db: &Db) -> Result<Vec<Tenant>, StoreError> {
    let rows: Vec<TenantRow> = on_pool!(db.read(), |p| sqlx::query_as(
        "SELECT id, name, settings, created_at FROM tenants ORDER BY created_at, id"
    )
    .fetch_all(p)
    .await)?;
    rows.into_iter().map(Tenant::try_from).collect()
}

pub async fn get(db: &Db, id: &TenantId) -> Result<Tenant, StoreError> {
    let row: Option<TenantRow> = on_pool!(db.read(), |p| sqlx::query_as(
        "SELECT id, name, settings, created_at FROM tenants WHERE id = $1"
    )
    .bind(id.as_str())
    .fetch_optional(p)
    .await)?;
    row.ok_or(StoreError::NotFound).and_then(Tenant::try_from)
}

pub async fn count(db: &Db) -> Result<i64, StoreError> {
    let n: (i64,) = on_pool!(db.read(), |p| sqlx::query_as(
        "SELECT COUNT(*) FROM tenants"
    )
    .fetch_one(p)
    .await)?;
    Ok(n.0)
}

/// Replaces a tenant's settings.
pub async fn set_settings(
    db: &Db,
    id: &TenantId,
    settings: &TenantSettings,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(settings).map_err(StoreError::corrupt)?;
    let n = on_pool!(db.write(), |p| sqlx::query(
        "UPDATE tenants SET settings = $1 WHERE id = $2"
    )
    .bind(&json)
    .bind(id.as_str())
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    crate::found(n)
}

/// The settings of every tenant that has any: what the guard's board keeps in memory.
pub async fn all_settings(db: &Db) -> Result<Vec<(TenantId, TenantSettings)>, StoreError> {
    let rows: Vec<(String, String)> = on_pool!(db.read(), |p| sqlx::query_as(
        "SELECT id, settings FROM tenants WHERE settings <> '{}'"
    )
    .fetch_all(p)
    .await)?;
    rows.into_iter()
        .map(|(id, s)| {
            Ok((
                TenantId::from_trusted(id),
                serde_json::from_str(&s).map_err(StoreError::corrupt)?,
            ))
        })
        .collect()
}
