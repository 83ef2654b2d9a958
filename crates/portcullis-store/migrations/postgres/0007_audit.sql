-- Who did what, when, from where. Append-only: a trigger refuses every UPDATE and DELETE,
-- so not even a compromised application connection can rewrite history quietly.
CREATE TABLE audit_events (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    tenant_id TEXT,
    app_id TEXT,
    -- api_key, cli, system
    actor_type TEXT NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id TEXT,
    client_ip TEXT,
    request_id TEXT,
    detail TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_events_app ON audit_events(app_id, created_at, id);

CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
