-- The read and analytics copy of DCP's projections, in Supabase (or any PostgreSQL 15+).
-- Written only by the replicator (dcp_replicator); SQLite stays the source of truth, and every
-- row here can be rebuilt from the event log. Idempotent: safe to apply again.
--
-- Mirrored: renters, providers, jobs, accounts, postings, withdrawals, pricing, topups. Never mirrored:
-- credentials (API key hashes) and job_outputs (large, and the renter's own data).
-- Every mirrored row carries last_seq, the sequence of the last event that changed it; rows only
-- move forward (see dcp_forward_only below), so replaying a batch does no harm.
-- Row Level Security is on for every table and no policy is defined: the anon and
-- authenticated roles see nothing; the replicator writes as the service role (or the table
-- owner, over a direct connection), both of which bypass RLS.

CREATE TABLE IF NOT EXISTS dcp_replication_state (
    sink       TEXT PRIMARY KEY,                 -- e.g. postgres, supabase
    last_seq   BIGINT NOT NULL,                  -- every event <= last_seq is mirrored
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS dcp_renters (
    renter_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    email         TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    last_seq      BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS dcp_providers (
    provider_id       TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    email             TEXT NOT NULL,
    gpu_model         TEXT NOT NULL,
    gpu_count         BIGINT NOT NULL,
    vram_gb           BIGINT NOT NULL,
    approval_status   TEXT NOT NULL,
    paused            BOOLEAN NOT NULL,
    suspended         BOOLEAN NOT NULL,
    accepting_jobs    BOOLEAN NOT NULL,
    daemon_version    TEXT NOT NULL,
    last_heartbeat_us BIGINT,
    gpus              JSONB NOT NULL,               -- GPU inventory of the last heartbeat
    created_at_us     BIGINT NOT NULL,
    last_seq          BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS dcp_jobs (
    job_id                 TEXT PRIMARY KEY,
    renter_id              TEXT NOT NULL,
    provider_id            TEXT,
    requested_provider_id  TEXT,
    status                 TEXT NOT NULL,
    image                  TEXT NOT NULL,
    command                JSONB NOT NULL,
    gpu_type               TEXT NOT NULL,
    min_vram_gb            BIGINT NOT NULL,
    gpu_count              BIGINT NOT NULL,
    priority               TEXT NOT NULL,
    max_duration_seconds   BIGINT NOT NULL,
    rate_halala_per_hour   BIGINT NOT NULL,
    cost_halala            BIGINT NOT NULL,
    actual_cost_halala     BIGINT,
    refunded_halala        BIGINT,
    provider_earned_halala BIGINT,
    platform_fee_halala    BIGINT,
    attempt                BIGINT NOT NULL,
    lease_expires_us       BIGINT,
    submitted_at_us        BIGINT NOT NULL,
    submit_seq             BIGINT,                -- queue order (002_dcp_jobs_submit_seq.sql)
    assigned_at_us         BIGINT,
    started_at_us          BIGINT,
    ended_at_us            BIGINT,
    exit_code              BIGINT,
    error                  TEXT,
    last_seq               BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS dcp_jobs_renter ON dcp_jobs (renter_id, submitted_at_us);
CREATE INDEX IF NOT EXISTS dcp_jobs_provider ON dcp_jobs (provider_id);
CREATE INDEX IF NOT EXISTS dcp_jobs_status ON dcp_jobs (status);

CREATE TABLE IF NOT EXISTS dcp_accounts (
    account_id     TEXT PRIMARY KEY,             -- e.g. renter:<id>:available
    balance_halala BIGINT NOT NULL,
    last_seq       BIGINT NOT NULL
);

-- One row per posting (immutable); seq is the event that carried it, idx its position there.
CREATE TABLE IF NOT EXISTS dcp_postings (
    seq            BIGINT NOT NULL,
    idx            BIGINT NOT NULL,
    account_id     TEXT NOT NULL,
    amount_halala  BIGINT NOT NULL,
    event_type     TEXT NOT NULL,
    job_id         TEXT,
    recorded_at_us BIGINT NOT NULL,
    last_seq       BIGINT NOT NULL,              -- = seq: a posting never changes
    PRIMARY KEY (seq, idx)
);
CREATE INDEX IF NOT EXISTS dcp_postings_account ON dcp_postings (account_id, seq);
CREATE INDEX IF NOT EXISTS dcp_postings_job ON dcp_postings (job_id) WHERE job_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS dcp_withdrawals (
    withdrawal_id   TEXT PRIMARY KEY,
    provider_id     TEXT NOT NULL,
    amount_halala   BIGINT NOT NULL,
    iban            TEXT NOT NULL,
    status          TEXT NOT NULL,
    requested_at_us BIGINT NOT NULL,
    decided_at_us   BIGINT,
    last_seq        BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS dcp_pricing (
    gpu_model           TEXT PRIMARY KEY,
    halala_per_gpu_hour BIGINT NOT NULL,
    last_seq            BIGINT NOT NULL
);

-- Rows only move forward, whoever writes them. The PostgreSQL sink already says
-- `WHERE excluded.last_seq > t.last_seq` in its upsert; PostgREST's upsert cannot, so this
-- trigger skips any update that would not move a row forward (a replayed or late batch).
-- Gateway top-ups (docs/payments.md), in their latest status.
CREATE TABLE IF NOT EXISTS dcp_topups (
    topup_id              TEXT PRIMARY KEY,
    renter_id             TEXT NOT NULL,
    amount_halala         BIGINT NOT NULL,
    status                TEXT NOT NULL,
    invoice_id            TEXT,
    checkout_url          TEXT,
    payment_id            TEXT,
    reason                TEXT NOT NULL,
    gateway_amount_halala BIGINT,
    gateway_currency      TEXT,
    created_at_us         BIGINT NOT NULL,
    updated_at_us         BIGINT NOT NULL,
    last_seq              BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS dcp_topups_renter ON dcp_topups (renter_id, created_at_us);
CREATE INDEX IF NOT EXISTS dcp_topups_status ON dcp_topups (status);

CREATE OR REPLACE FUNCTION dcp_forward_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.last_seq <= OLD.last_seq THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['dcp_replication_state', 'dcp_renters', 'dcp_providers',
                             'dcp_jobs', 'dcp_accounts', 'dcp_postings', 'dcp_withdrawals',
                             'dcp_pricing', 'dcp_topups']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE OR REPLACE TRIGGER dcp_forward_only BEFORE UPDATE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION dcp_forward_only()', t);
        -- Supabase's API roles get nothing; plain PostgreSQL has no such roles.
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
            EXECUTE format('REVOKE ALL ON %I FROM anon', t);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
            EXECUTE format('REVOKE ALL ON %I FROM authenticated', t);
        END IF;
    END LOOP;
END
$$;
