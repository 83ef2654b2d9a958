-- Idempotency records held the first response in plain text, and the response holds the
-- message body and metadata. They are now sealed, and the request fingerprint is keyed
-- (HMAC), so a database reader cannot confirm a guessed number and body. Records live
-- 24 hours; the old ones are dropped rather than converted.
DROP TABLE idempotency_keys;
CREATE TABLE idempotency_keys (
    app_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status_code BIGINT NOT NULL,
    response_sealed BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, idem_key)
);
