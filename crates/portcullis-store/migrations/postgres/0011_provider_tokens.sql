-- What a provider connection learns from its provider and needs again after a restart
-- (OAuth tokens, a webhook subscription and its verification token), sealed under the
-- keyring like the connection's configuration. Gone with its connection.
CREATE TABLE provider_tokens (
    connection_id TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value_sealed BYTEA NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (connection_id, name)
);
