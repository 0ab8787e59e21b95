-- dcp_jobs.submit_seq: the sequence of the job's submit event, the domain's queue order within
-- a priority (the local jobs table has it since this release). A target created by an older
-- 001_dcp_mirror.sql lacks the column; this adds it. Nullable: rows mirrored before keep NULL
-- until their job changes again. Idempotent: safe to apply again.
ALTER TABLE dcp_jobs ADD COLUMN IF NOT EXISTS submit_seq BIGINT;
