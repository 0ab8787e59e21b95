-- The append-only event log (SPEC section 6). Applied by dcp_events.sqlite_store at open.
CREATE TABLE IF NOT EXISTS events (
    seq             INTEGER PRIMARY KEY,           -- global sequence, 1, 2, 3, ... no gaps
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version >= 1),
    type            TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 1),
    payload         TEXT    NOT NULL,              -- JSON, exactly the bytes that were hashed
    recorded_at_us  INTEGER NOT NULL,              -- microseconds since the Unix epoch, UTC
    actor           TEXT    NOT NULL DEFAULT '',
    idempotency_key TEXT,                          -- set on every event of that append
    prev_hash       TEXT    NOT NULL,              -- hex sha256 of the previous event
    hash            TEXT    NOT NULL,              -- hex sha256(prev_hash || canonical)
    UNIQUE (stream_id, stream_version)
) STRICT;

CREATE INDEX IF NOT EXISTS events_idempotency ON events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Append-only: the schema itself refuses edits, whatever code runs against it.
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE refused');
END;

CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE refused');
END;
