-- The head's batch check of 001_events.sql, replaced (a new file, so that a ledger created
-- before it gets it on its next open; CREATE OR REPLACE FUNCTION takes no lock on the tables,
-- and the trigger events_head_no_rewind calls the new body from the next batch on).
--
-- Same rules, one change: "nothing lies beyond the new head" was EXISTS (... WHERE seq > new),
-- which PL/pgSQL plans generically, without the value; the planner then guessed a third of the
-- table matched and scanned all of it, sequentially, in every batch (8 ms at 60,000 events,
-- growing with the log). max(seq) is one probe of the primary key's end whatever the plan.
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
        OR (SELECT prev_hash FROM events WHERE seq = OLD.seq + 1) IS DISTINCT FROM OLD.hash
        OR (SELECT max(seq) FROM events) > NEW.seq
    ) THEN
        RAISE EXCEPTION 'the log head % -> % does not end a dense, linked batch', OLD.seq, NEW.seq
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;
