//! Provider connections: a type, a name and a sealed configuration (credentials included),
//! platform-wide or owned by one tenant.

use portcullis_domain::{ConnectionId, TenantId};
use serde::Serialize;

use crate::{Store, StoreError, found, now_ms, on_pool};

const CONFIG: &str = "connections.config";

/// A connection as shown to operators: never its configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    pub id: ConnectionId,
    pub tenant_id: Option<TenantId>,
    pub kind: String,
    pub name: String,
    pub created_at: i64,
}

/// Receipts kept unmatched for a connection.
#[derive(Debug, Clone, Serialize)]
pub struct UnmatchedReceipts {
    pub count: i64,
    /// The most recent, newest first.
    pub recent: Vec<KeptReceipt>,
}

/// One receipt kept unmatched: the provider's reference and what it said (never a number
/// or a text: receipts are stored without them).
#[derive(Debug, Clone, Serialize)]
pub struct KeptReceipt {
    /// `None` for a receipt that named no message.
    pub provider_message_id: Option<String>,
    pub status: String,
    pub detail: Option<String>,
    pub received_at: i64,
}

#[derive(sqlx::FromRow)]
struct ConnectionRow {
    id: String,
    tenant_id: Option<String>,
    kind: String,
    name: String,
    config_sealed: Vec<u8>,
    created_at: i64,
}

impl ConnectionRow {
    fn public(&self) -> Connection {
        Connection {
            id: ConnectionId::from_trusted(self.id.clone()),
            tenant_id: self.tenant_id.clone().map(TenantId::from_trusted),
            kind: self.kind.clone(),
            name: self.name.clone(),
            created_at: self.created_at,
        }
    }
}

impl Store {
    pub async fn create_connection(
        &self,
        tenant: Option<&TenantId>,
        kind: &str,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Connection, StoreError> {
        let id = ConnectionId::new();
        let sealed = self.seal(CONFIG, id.as_str(), config.to_string().as_bytes());
        let now = now_ms();
        on_pool!(self.db.write(), |p| sqlx::query(
            "INSERT INTO connections (id, tenant_id, kind, name, config_sealed, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        )
        .bind(id.as_str())
        .bind(tenant.map(|t| t.as_str()))
        .bind(kind)
        .bind(name)
        .bind(&sealed)
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(Connection {
            id,
            tenant_id: tenant.cloned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            created_at: now,
        })
    }

    pub async fn list_connections(&self) -> Result<Vec<Connection>, StoreError> {
        let rows: Vec<ConnectionRow> = on_pool!(self.db.read(), |p| {
            sqlx::query_as(
            "SELECT id, tenant_id, kind, name, config_sealed, created_at FROM connections ORDER BY created_at, id"
        )
        .fetch_all(p)
        .await
        })?;
        Ok(rows.iter().map(ConnectionRow::public).collect())
    }

    /// A connection without its configuration: its type and the tenant that owns it.
    pub async fn connection(&self, id: &ConnectionId) -> Result<Connection, StoreError> {
        let row: Option<ConnectionRow> = on_pool!(self.db.read(), |p| {
            sqlx::query_as(
            "SELECT id, tenant_id, kind, name, config_sealed, created_at FROM connections WHERE id = $1"
        )
        .bind(id.as_str())
        .fetch_optional(p)
        .await
        })?;
        row.map(|r| r.public()).ok_or(StoreError::NotFound)
    }

    /// A connection with its opened configuration, for the process that drives it.
    pub async fn connection_with_config(
        &self,
        id: &ConnectionId,
    ) -> Result<(Connection, serde_json::Value), StoreError> {
        let row: Option<ConnectionRow> = on_pool!(self.db.read(), |p| {
            sqlx::query_as(
            "SELECT id, tenant_id, kind, name, config_sealed, created_at FROM connections WHERE id = $1"
        )
        .bind(id.as_str())
        .fetch_optional(p)
        .await
        })?;
        let row = row.ok_or(StoreError::NotFound)?;
        let config =
            serde_json::from_str(&self.open_string(CONFIG, &row.id, &row.config_sealed)?)
                .map_err(StoreError::corrupt)?;
        Ok((row.public(), config))
    }

    /// Replaces a connection's configuration (sealed like the first).
    pub async fn update_connection_config(
        &self,
        id: &ConnectionId,
        config: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let sealed = self.seal(CONFIG, id.as_str(), config.to_string().as_bytes());
        let res = on_pool!(self.db.write(), |p| sqlx::query(
            "UPDATE connections SET config_sealed = $1 WHERE id = $2"
        )
        .bind(&sealed)
        .bind(id.as_str())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        found(res)
    }

    /// The receipts kept for a connection because no message (or part) had their
    /// reference: how many, and the most recent `limit`.
    pub async fn unmatched_receipts(
        &self,
        id: &ConnectionId,
        limit: u32,
    ) -> Result<UnmatchedReceipts, StoreError> {
        let (count,): (i64,) = on_pool!(self.db.read(), |p| sqlx::query_as(
            "SELECT COUNT(*) FROM unmatched_receipts WHERE connection_id = $1"
        )
        .bind(id.as_str())
        .fetch_one(p)
        .await)?;
        let recent: Vec<(String, String, Option<String>, i64)> =
            on_pool!(self.db.read(), |p| sqlx::query_as(
                "SELECT provider_message_id, status, detail, received_at FROM unmatched_receipts \
                 WHERE connection_id = $1 ORDER BY received_at DESC, id DESC LIMIT $2"
            )
            .bind(id.as_str())
            .bind(i64::from(limit))
            .fetch_all(p)
            .await)?;
        Ok(UnmatchedReceipts {
            count,
            recent: recent
                .into_iter()
                .map(
                    |(provider_message_id, status, detail, received_at)| KeptReceipt {
                        provider_message_id: Some(provider_message_id).filter(|p| !p.is_empty()),
                        status,
                        detail,
                        received_at,
                    },
                )
                .collect(),
        })
    }

    pub async fn delete_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        let res = on_pool!(self.db.write(), |p| sqlx::query(
            "DELETE FROM connections WHERE id = $1"
        )
        .bind(id.as_str())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        found(res)
    }
}
