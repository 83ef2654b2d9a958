-- Events for apps (webhooks and the realtime stream), written in the transaction of the
-- change they report. `event_outbox` lists the events not yet fanned out; the relay
-- deletes a row in the transaction that creates the event's deliveries.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    type TEXT NOT NULL,
    subject_id TEXT,
    -- A JSON snapshot of non-personal fields (status, provider ids, error code).
    data TEXT NOT NULL,
    -- recipient.* events: the number, sealed.
    phone_sealed BLOB,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_app_seq ON events(app_id, seq);
CREATE INDEX events_created ON events(created_at);

CREATE TABLE event_outbox (
    event_id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    url_sealed BLOB NOT NULL,
    -- JSON array of event types; empty: every type.
    events TEXT NOT NULL,
    description TEXT,
    enabled BIGINT NOT NULL,
    disabled_reason TEXT,
    -- Start of the current run of failed attempts; NULL after a success.
    failing_since BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_app ON webhook_endpoints(app_id, created_at);

-- One signing secret per app; during a rotation's overlap the previous one signs too.
CREATE TABLE webhook_secrets (
    app_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    secret_sealed BLOB NOT NULL,
    previous_sealed BLOB,
    previous_until BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    -- pending, succeeded, failed, blocked
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT,
    lease_until BIGINT,
    last_status_code BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_app ON webhook_deliveries(app_id, created_at, id);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, created_at);

CREATE TABLE webhook_attempts (
    seq INTEGER PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    -- sent, failed, blocked
    outcome TEXT NOT NULL,
    status_code BIGINT,
    latency_ms BIGINT,
    error_class TEXT,
    excerpt TEXT
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_id, seq);
