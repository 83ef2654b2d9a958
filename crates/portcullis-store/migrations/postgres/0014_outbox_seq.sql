-- The outbox names events by position (`events.seq`) instead of by id, and the schema fills
-- it (see the SQLite migration of the same name for why). One trigger run per statement:
-- the pipeline's writers insert events hundreds at a time.
CREATE TABLE event_outbox_by_seq (
    seq BIGINT PRIMARY KEY
);
INSERT INTO event_outbox_by_seq (seq)
    SELECT e.seq FROM event_outbox o JOIN events e ON e.id = o.event_id;
DROP TABLE event_outbox;
ALTER TABLE event_outbox_by_seq RENAME TO event_outbox;

CREATE FUNCTION events_to_outbox() RETURNS trigger AS $$
BEGIN
    INSERT INTO event_outbox (seq) SELECT seq FROM new_events;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER events_to_outbox AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION events_to_outbox();
