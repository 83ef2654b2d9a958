-- The guard's second half: tenant settings (quotas, time zone), usage counters for quotas
-- and velocity, kill switches, and lookups of policy events by recipient.
ALTER TABLE tenants ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';

-- One row per counter and period, e.g. `a:<app>:d:2026-11-23` (segments today). A new
-- period is a new key, so nothing has to reset at midnight; rows past `expires_at` are
-- pruned.
CREATE TABLE usage_counters (
    key TEXT PRIMARY KEY,
    count BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX usage_counters_expiry ON usage_counters(expires_at);

-- Kill switches: scope `global` (target ''), `tenant`, `app` or `connection`. `until_at`
-- ends a pause by itself (the failure-storm breaker's pauses of connections).
CREATE TABLE pauses (
    scope TEXT NOT NULL,
    target TEXT NOT NULL,
    stop_queue BIGINT NOT NULL,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    until_at BIGINT,
    PRIMARY KEY (scope, target)
);

ALTER TABLE policy_events ADD COLUMN phone_index TEXT;
CREATE INDEX policy_events_phone ON policy_events(app_id, phone_index, created_at);
-- A message's history explains its first entry with the guard's reason.
CREATE INDEX policy_events_message ON policy_events(message_id) WHERE message_id IS NOT NULL;

-- The review queue: held messages are few, so a partial index keeps finding them cheap.
CREATE INDEX messages_held ON messages(app_id, created_at, id) WHERE status = 'held';
