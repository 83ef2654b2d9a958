//! What provider connections keep between restarts (OAuth tokens, webhook subscriptions),
//! one sealed value per connection and name. Values are opaque to the store; the AAD
//! binds each to its connection and name, so a value cannot be moved to another row.

use portcullis_domain::ConnectionId;

use crate::{Store, StoreError, now_ms, on_pool};

const VALUE: &str = "provider_tokens.value";

fn row_id(connection: &ConnectionId, name: &str) -> String {
    format!("{}/{name}", connection.as_str())
}

impl Store {
    /// The opened value kept under `name` for `connection`, if any.
    pub async fn provider_token(
        &self,
        connection: &ConnectionId,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let sealed: Option<Vec<u8>> = on_pool!(self.db.read(), |p| {
            sqlx::query_scalar(
                "SELECT value_sealed FROM provider_tokens WHERE connection_id = $1 AND name = $2",
            )
            .bind(connection.as_str())
            .bind(name)
            .fetch_optional(p)
            .await
        })?;
        sealed
            .map(|s| self.open_string(VALUE, &row_id(connection, name), &s))
            .transpose()
    }

    /// Keeps `value` under `name` for `connection`, sealed, replacing what was there.
    pub async fn put_provider_token(
        &self,
        connection: &ConnectionId,
        name: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        let sealed = self.seal(VALUE, &row_id(connection, name), value.as_bytes());
        let now = now_ms();
        on_pool!(self.db.write(), |p| sqlx::query(
            "INSERT INTO provider_tokens (connection_id, name, value_sealed, updated_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (connection_id, name) DO UPDATE \
             SET value_sealed = excluded.value_sealed, updated_at = excluded.updated_at"
        )
        .bind(connection.as_str())
        .bind(name)
        .bind(&sealed)
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }
}
