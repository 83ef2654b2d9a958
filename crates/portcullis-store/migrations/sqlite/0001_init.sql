-- Timestamps are unix milliseconds (BIGINT) on both backends so the same SQL and the same
-- Rust types serve SQLite and PostgreSQL. Personal data (recipient numbers, bodies,
-- metadata) is stored only sealed (AES-256-GCM, key version inside the blob); lookups by
-- recipient go through a keyed blind index.
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    senders TEXT NOT NULL,
    allowed_purposes TEXT NOT NULL,
    max_body_chars BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX apps_tenant ON apps(tenant_id, id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    app_id TEXT NOT NULL REFERENCES apps(id),
    prefix TEXT NOT NULL,
    hash BLOB NOT NULL,
    role TEXT NOT NULL,
    mode TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    rotated_at BIGINT,
    replaced_by TEXT,
    last_used_at BIGINT,
    last_used_ip TEXT
);
CREATE INDEX api_keys_prefix ON api_keys(prefix);
CREATE INDEX api_keys_app ON api_keys(app_id, id);

CREATE TABLE connections (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    config_sealed BLOB NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE app_routes (
    app_id TEXT NOT NULL REFERENCES apps(id),
    position BIGINT NOT NULL,
    connection_id TEXT NOT NULL REFERENCES connections(id),
    PRIMARY KEY (app_id, position)
);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    recipient_sealed BLOB NOT NULL,
    recipient_index TEXT NOT NULL,
    sender TEXT,
    channel TEXT NOT NULL,
    purpose TEXT NOT NULL,
    body_sealed BLOB NOT NULL,
    metadata_sealed BLOB,
    encoding TEXT NOT NULL,
    segments BIGINT NOT NULL,
    status TEXT NOT NULL,
    test_mode BIGINT NOT NULL,
    send_at BIGINT,
    connection_id TEXT,
    provider_message_id TEXT,
    error_code TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX messages_app_created ON messages(app_id, created_at, id);
CREATE INDEX messages_app_recipient ON messages(app_id, recipient_index, created_at);
CREATE INDEX messages_provider_ref ON messages(connection_id, provider_message_id);

-- The status history. The first entry (queued or scheduled at created_at) is derived from
-- the message row itself, so accepting a message writes one row fewer.
CREATE TABLE message_events (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    at BIGINT NOT NULL,
    connection_id TEXT,
    provider_message_id TEXT,
    part BIGINT,
    detail TEXT
);
CREATE INDEX message_events_message ON message_events(message_id, at);

-- Receipts we could not (yet) match to a message: kept, visible and re-applied when the
-- provider reference is recorded later (a receipt can overtake its submit response).
CREATE TABLE unmatched_receipts (
    id TEXT PRIMARY KEY,
    connection_id TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT,
    received_at BIGINT NOT NULL
);
CREATE INDEX unmatched_receipts_ref ON unmatched_receipts(connection_id, provider_message_id);

CREATE TABLE idempotency_keys (
    app_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status_code BIGINT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, idem_key)
);

CREATE TABLE inbound_messages (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    sender_sealed BLOB NOT NULL,
    sender_index TEXT NOT NULL,
    recipient TEXT NOT NULL,
    channel TEXT NOT NULL,
    body_sealed BLOB NOT NULL,
    received_at BIGINT NOT NULL,
    UNIQUE (connection_id, provider_message_id)
);
CREATE INDEX inbound_app_received ON inbound_messages(app_id, received_at, id);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    run_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    locked_until BIGINT,
    lease_owner TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_ready ON jobs(queue, state, run_at);
