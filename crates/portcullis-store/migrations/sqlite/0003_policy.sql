-- The responsible-messaging guard: suppressed recipients, consent records with proof, and
-- the policy events that explain every refusal, deferral, hold and opt-out. Numbers are
-- sealed, with a keyed blind index for lookups.
CREATE TABLE suppressions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    phone_sealed BLOB NOT NULL,
    phone_index TEXT NOT NULL,
    reason TEXT,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (app_id, phone_index)
);

CREATE TABLE consents (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    phone_sealed BLOB NOT NULL,
    phone_index TEXT NOT NULL,
    channel TEXT NOT NULL,
    scope TEXT NOT NULL,
    source TEXT NOT NULL,
    proof_sealed BLOB NOT NULL,
    ip TEXT,
    double_opt_in BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX consents_lookup ON consents(app_id, phone_index, channel);

CREATE TABLE policy_events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    message_id TEXT,
    phone_sealed BLOB,
    kind TEXT NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX policy_events_app ON policy_events(app_id, created_at, id);
