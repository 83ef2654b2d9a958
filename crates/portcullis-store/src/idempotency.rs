//! `Idempotency-Key` records: the first response to a key is kept for 24 hours, written in
//! the same transaction as the message it describes, so a retried request can never create
//! a second message.

use portcullis_domain::AppId;

use crate::{StoreError, Tx, on_tx};

/// How long a key is remembered.
pub const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// The outcome of claiming a key.
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyClaim {
    /// The key was free; the caller's response is now stored under it.
    Fresh,
    /// The key was used before with the same request: answer what was answered then.
    Replay { status_code: u16, response: String },
    /// The key was used before with a different request.
    Mismatch,
}

/// Claims `key` for `request_hash`, storing `response` as what it will replay.
pub async fn claim(
    tx: &mut Tx,
    app: &AppId,
    key: &str,
    request_hash: &[u8; 32],
    status_code: u16,
    response: &str,
    now: i64,
) -> Result<IdempotencyClaim, StoreError> {
    let inserted = on_tx!(&mut *tx, |c| {
        sqlx::query(
        "INSERT INTO idempotency_keys (app_id, idem_key, request_hash, status_code, response, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (app_id, idem_key) DO NOTHING"
    )
    .bind(app.as_str())
    .bind(key)
    .bind(&request_hash[..])
    .bind(i64::from(status_code))
    .bind(response)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected())
    })?;
    if inserted == 1 {
        return Ok(IdempotencyClaim::Fresh);
    }
    let (hash, code, stored, created_at): (Vec<u8>, i64, String, i64) = on_tx!(&mut *tx, |c| {
        sqlx::query_as(
            "SELECT request_hash, status_code, response, created_at FROM idempotency_keys \
             WHERE app_id = $1 AND idem_key = $2",
        )
        .bind(app.as_str())
        .bind(key)
        .fetch_one(c)
        .await
    })?;
    if created_at + RETENTION_MS <= now {
        // Expired but not yet swept: the key is free again.
        on_tx!(&mut *tx, |c| {
            sqlx::query(
            "UPDATE idempotency_keys SET request_hash = $1, status_code = $2, response = $3, created_at = $4 \
             WHERE app_id = $5 AND idem_key = $6"
        )
        .bind(&request_hash[..])
        .bind(i64::from(status_code))
        .bind(response)
        .bind(now)
        .bind(app.as_str())
        .bind(key)
        .execute(c)
    .await
    .map(|r| r.rows_affected())
        })?;
        return Ok(IdempotencyClaim::Fresh);
    }
    if portcullis_crypto::constant_time_eq(&hash, request_hash) {
        Ok(IdempotencyClaim::Replay {
            status_code: u16::try_from(code).map_err(StoreError::corrupt)?,
            response: stored,
        })
    } else {
        Ok(IdempotencyClaim::Mismatch)
    }
}

/// Deletes records older than the retention period.
pub async fn sweep(db: &crate::Db, now: i64) -> Result<u64, StoreError> {
    let res = crate::on_pool!(db.write(), |p| sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at <= $1"
    )
    .bind(now - RETENTION_MS)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(res)
}

/// What is stored under a key, if it is still remembered: the fast path for a retried
/// request, answered before any other work (including the policy guard, whose verdict may
/// have changed since the first response).
pub async fn lookup(
    db: &crate::Db,
    app: &AppId,
    key: &str,
    request_hash: &[u8; 32],
    now: i64,
) -> Result<Option<IdempotencyClaim>, StoreError> {
    let row: Option<(Vec<u8>, i64, String, i64)> = crate::on_pool!(db.read(), |p| sqlx::query_as(
        "SELECT request_hash, status_code, response, created_at FROM idempotency_keys \
         WHERE app_id = $1 AND idem_key = $2"
    )
    .bind(app.as_str())
    .bind(key)
    .fetch_optional(p)
    .await)?;
    let Some((hash, code, response, created_at)) = row else {
        return Ok(None);
    };
    if created_at + RETENTION_MS <= now {
        return Ok(None);
    }
    Ok(Some(
        if portcullis_crypto::constant_time_eq(&hash, request_hash) {
            IdempotencyClaim::Replay {
                status_code: u16::try_from(code).map_err(StoreError::corrupt)?,
                response,
            }
        } else {
            IdempotencyClaim::Mismatch
        },
    ))
}
