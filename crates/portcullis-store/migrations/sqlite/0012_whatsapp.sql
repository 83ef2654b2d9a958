-- WhatsApp: a message may be a template (name, language, parameter values), sealed like
-- the body because the parameters carry personal data.
ALTER TABLE messages ADD COLUMN template_sealed BLOB;

-- The 24-hour customer service window: "did this person write to this app on WhatsApp
-- since T?", asked for every free-form WhatsApp send.
CREATE INDEX inbound_app_sender_channel
    ON inbound_messages(app_id, sender_index, channel, received_at);
