-- The append-only event log on PostgreSQL (SPEC section 6), the same columns and rules as
-- schemas/001_events.sql. Applied once per database by dcp_events.postgres_store at open (it
-- records the file in dcp_schema_files), under an advisory lock so that two nodes opening a
-- fresh database at once do not race; idempotent all the same.
CREATE TABLE IF NOT EXISTS events (
    seq             bigint  PRIMARY KEY CHECK (seq >= 1),  -- global sequence, 1, 2, 3, ... no gaps
    stream_id       text    NOT NULL,
    stream_version  bigint  NOT NULL CHECK (stream_version >= 1),
    type            text    NOT NULL,
    schema_version  integer NOT NULL CHECK (schema_version >= 1),
    payload         text    NOT NULL,  -- JSON, exactly the bytes that were hashed (not jsonb,
                                       -- which would re-serialise them and break the chain)
    recorded_at_us  bigint  NOT NULL,  -- microseconds since the Unix epoch, UTC
    actor           text    NOT NULL DEFAULT '',
    idempotency_key text,              -- set on every event of that append
    prev_hash       text    NOT NULL,  -- hex sha256 of the previous event
    hash            text    NOT NULL,  -- hex sha256(prev_hash || canonical)
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX IF NOT EXISTS events_idempotency ON events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The log's head: one row, updated by every committed batch in the batch's own transaction.
-- Every writer locks it (SELECT ... FOR UPDATE) before it numbers its events, so this row is at
-- once the lock that serialises batches, the counter and the expected-head check; see
-- docs/postgres.md for why a reader tailing the log can therefore never skip an event.
CREATE TABLE IF NOT EXISTS events_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq  bigint  NOT NULL CHECK (seq >= 0),
    hash text    NOT NULL
);
INSERT INTO events_head (one, seq, hash)
    VALUES (true, 0, '0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT (one) DO NOTHING;

-- Append-only: the schema itself refuses edits, whatever code or role runs against it.
CREATE OR REPLACE FUNCTION events_refuse_edit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE OR REPLACE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_edit();
CREATE OR REPLACE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_edit();
CREATE OR REPLACE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_edit();

-- The head only moves forward, and never to a sequence the log does not hold. (This first body
-- scanned the whole log in every batch; 003_events_head_check.sql replaces it, on old ledgers too.)
CREATE OR REPLACE FUNCTION events_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq < OLD.seq THEN
        RAISE EXCEPTION 'the log head may not move back (% -> %)', OLD.seq, NEW.seq
            USING ERRCODE = 'restrict_violation';
    END IF;
    -- One check per batch, not per row: the batch is dense, links to the old head, ends at the
    -- new one, and nothing lies beyond it.
    IF NEW.seq > OLD.seq AND (
        NOT EXISTS (SELECT 1 FROM events WHERE seq = NEW.seq AND hash = NEW.hash)
        OR (SELECT count(*) FROM events WHERE seq > OLD.seq AND seq <= NEW.seq)
            <> NEW.seq - OLD.seq
        OR (SELECT prev_hash FROM events WHERE seq = OLD.seq + 1) <> OLD.hash
        OR EXISTS (SELECT 1 FROM events WHERE seq > NEW.seq)
    ) THEN
        RAISE EXCEPTION 'the log head % -> % does not end a dense, linked batch', OLD.seq, NEW.seq
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE TRIGGER events_head_no_rewind BEFORE UPDATE ON events_head
    FOR EACH ROW EXECUTE FUNCTION events_head_forward();
CREATE OR REPLACE TRIGGER events_head_no_delete BEFORE DELETE OR TRUNCATE ON events_head
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_edit();
