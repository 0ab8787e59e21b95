-- dcp_topups.idempotency_key: the renter's Idempotency-Key of the top-up request (the local
-- topups table has it since this release, so a request reusing a key finds its top-up once the
-- top-up has left memory). A target created by an older 001_dcp_mirror.sql lacks the column;
-- this adds it. Nullable: rows mirrored before keep NULL until their top-up changes again.
-- Idempotent: safe to apply again.
ALTER TABLE dcp_topups ADD COLUMN IF NOT EXISTS idempotency_key TEXT;
