//! `Idempotency-Key` records: the first response to a key is kept for 24 hours, written in
//! the same transaction as the message it describes, so a retried request can never create
//! a second message.
//!
//! The stored response holds the message body, so it is sealed like every other copy of
//! it (AAD: app and key). The request fingerprint is a keyed hash computed by the caller
//! ([`Store::request_fingerprint`]), so it cannot be used to confirm a guessed request.

use portcullis_domain::AppId;

use crate::{Db, Store, StoreError, Tx, on_pool, on_tx};

/// How long a key is remembered.
pub const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

const RESPONSE: &str = "idempotency_keys.response";

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

fn row_id(app: &AppId, key: &str) -> String {
    format!("{}/{key}", app.as_str())
}

impl Store {
    /// A keyed fingerprint of a request body.
    pub fn request_fingerprint(&self, body: &[u8]) -> [u8; 32] {
        self.keyring().blind_index("idempotency-request", body)
    }

    /// Claims `key` for `request_hash`, storing `response` as what it will replay.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_idempotency_key(
        &self,
        tx: &mut Tx,
        app: &AppId,
        key: &str,
        request_hash: &[u8; 32],
        status_code: u16,
        response: &str,
        now: i64,
    ) -> Result<IdempotencyClaim, StoreError> {
        let sealed = self.seal(RESPONSE, &row_id(app, key), response.as_bytes());
        let inserted = on_tx!(&mut *tx, |c| {
            sqlx::query(
            "INSERT INTO idempotency_keys (app_id, idem_key, request_hash, status_code, response_sealed, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (app_id, idem_key) DO NOTHING"
        )
        .bind(app.as_str())
        .bind(key)
        .bind(&request_hash[..])
        .bind(i64::from(status_code))
        .bind(&sealed)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
        if inserted == 1 {
            return Ok(IdempotencyClaim::Fresh);
        }
        let row: (Vec<u8>, i64, Vec<u8>, i64) = on_tx!(&mut *tx, |c| {
            sqlx::query_as(
            "SELECT request_hash, status_code, response_sealed, created_at FROM idempotency_keys \
             WHERE app_id = $1 AND idem_key = $2"
        )
        .bind(app.as_str())
        .bind(key)
        .fetch_one(c)
        .await
        })?;
        if row.3 + RETENTION_MS <= now {
            // Expired but not yet swept: the key is free again.
            on_tx!(&mut *tx, |c| {
                sqlx::query(
                "UPDATE idempotency_keys SET request_hash = $1, status_code = $2, response_sealed = $3, created_at = $4 \
                 WHERE app_id = $5 AND idem_key = $6"
            )
            .bind(&request_hash[..])
            .bind(i64::from(status_code))
            .bind(&sealed)
            .bind(now)
            .bind(app.as_str())
            .bind(key)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
            })?;
            return Ok(IdempotencyClaim::Fresh);
        }
        self.judge(app, key, request_hash, row.0, row.1, row.2)
    }

    /// What is stored under a key, if it is still remembered: the fast path for a retried
    /// request, answered before any other work (including the policy guard, whose verdict
    /// may have changed since the first response).
    pub async fn lookup_idempotency_key(
        &self,
        app: &AppId,
        key: &str,
        request_hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<IdempotencyClaim>, StoreError> {
        let row: Option<(Vec<u8>, i64, Vec<u8>, i64)> = on_pool!(self.db.read(), |p| {
            sqlx::query_as(
            "SELECT request_hash, status_code, response_sealed, created_at FROM idempotency_keys \
             WHERE app_id = $1 AND idem_key = $2"
        )
        .bind(app.as_str())
        .bind(key)
        .fetch_optional(p)
        .await
        })?;
        match row {
            Some((hash, code, sealed, created_at)) if created_at + RETENTION_MS > now => self
                .judge(app, key, request_hash, hash, code, sealed)
                .map(Some),
            _ => Ok(None),
        }
    }

    fn judge(
        &self,
        app: &AppId,
        key: &str,
        request_hash: &[u8; 32],
        stored_hash: Vec<u8>,
        status_code: i64,
        sealed: Vec<u8>,
    ) -> Result<IdempotencyClaim, StoreError> {
        if !portcullis_crypto::constant_time_eq(&stored_hash, request_hash) {
            return Ok(IdempotencyClaim::Mismatch);
        }
        Ok(IdempotencyClaim::Replay {
            status_code: u16::try_from(status_code).map_err(StoreError::corrupt)?,
            response: self.open_string(RESPONSE, &row_id(app, key), &sealed)?,
        })
    }
}

/// Deletes records older than the retention period.
pub async fn sweep(db: &Db, now: i64) -> Result<u64, StoreError> {
    let res = on_pool!(db.write(), |p| sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at <= $1"
    )
    .bind(now - RETENTION_MS)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(res)
}

impl Store {
    /// Gives back a key claimed in this transaction whose request was then refused (a
    /// refused request is not remembered under its key).
    pub async fn release_idempotency_key(
        &self,
        tx: &mut Tx,
        app: &AppId,
        key: &str,
    ) -> Result<(), StoreError> {
        on_tx!(tx, |c| sqlx::query(
            "DELETE FROM idempotency_keys WHERE app_id = $1 AND idem_key = $2"
        )
        .bind(app.as_str())
        .bind(key)
        .execute(c)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}
