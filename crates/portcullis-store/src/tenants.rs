//! Tenants: the organisations that own apps.

use portcullis_domain::TenantId;
use serde::Serialize;

use crate::{Db, StoreError, now_ms, on_pool};

#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    name: String,
    created_at: i64,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Self {
        Tenant {
            id: TenantId::from_trusted(r.id),
            name: r.name,
            created_at: r.created_at,
        }
    }
}

pub async fn create(db: &Db, name: &str) -> Result<Tenant, StoreError> {
    let t = Tenant {
        id: TenantId::new(),
        name: name.to_owned(),
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
        "SELECT id, name, created_at FROM tenants ORDER BY created_at, id"
    )
    .fetch_all(p)
    .await)?;
    Ok(rows.into_iter().map(Tenant::from).collect())
}

pub async fn get(db: &Db, id: &TenantId) -> Result<Tenant, StoreError> {
    let row: Option<TenantRow> = on_pool!(db.read(), |p| sqlx::query_as(
        "SELECT id, name, created_at FROM tenants WHERE id = $1"
    )
    .bind(id.as_str())
    .fetch_optional(p)
    .await)?;
    row.map(Tenant::from).ok_or(StoreError::NotFound)
}

pub async fn count(db: &Db) -> Result<i64, StoreError> {
    let n: (i64,) = on_pool!(db.read(), |p| sqlx::query_as(
        "SELECT COUNT(*) FROM tenants"
    )
    .fetch_one(p)
    .await)?;
    Ok(n.0)
}
