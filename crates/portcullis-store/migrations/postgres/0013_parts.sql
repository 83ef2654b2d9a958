-- The parts of a message sent as separately acknowledged parts (SMPP concatenation).
-- Receipts come per part; the message is delivered when every part is, and undelivered or
-- failed as soon as one part is. A part accepted by an attempt that broke off half-way is
-- kept, so the retry does not send it again.
CREATE TABLE message_parts (
    message_id TEXT NOT NULL,
    part BIGINT NOT NULL,
    connection_id TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, part)
);
CREATE INDEX message_parts_provider_ref ON message_parts(connection_id, provider_message_id);

-- Parts of concatenated inbound messages, kept sealed until the message is whole. `set_key`
-- is a keyed digest of the connection, both numbers, the sender's reference and the part
-- count, so no number is kept in clear. Completed sets stay a while (body emptied) so a
-- part the SMSC delivers again is recognised instead of starting a new message; a set
-- that never completes is recorded with what arrived, so no part is lost.
CREATE TABLE inbound_parts (
    set_key TEXT NOT NULL,
    seq BIGINT NOT NULL,
    total BIGINT NOT NULL,
    tenant_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    sender_sealed BYTEA NOT NULL,
    recipient TEXT NOT NULL,
    channel TEXT NOT NULL,
    body_sealed BYTEA NOT NULL,
    received_at BIGINT NOT NULL,
    completed_at BIGINT,
    PRIMARY KEY (set_key, seq)
);
CREATE INDEX inbound_parts_received ON inbound_parts(received_at);
