-- How long a message may wait to be handed to a provider before it expires instead of
-- going out late (an OTP delivered hours late does harm).
ALTER TABLE messages ADD COLUMN expires_at BIGINT;
