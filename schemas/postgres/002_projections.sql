-- The read models on PostgreSQL: generated from dcp_projections.tables (ddl("postgres")); a
-- test checks that a fresh database equals the specs. Change a table with a new file.

CREATE TABLE IF NOT EXISTS projection_state (
    name text NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (name)
);

CREATE TABLE IF NOT EXISTS credentials (
    key_hash text NOT NULL,
    role text NOT NULL,
    subject_id text NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (key_hash)
);

CREATE TABLE IF NOT EXISTS renters (
    renter_id text NOT NULL,
    name text NOT NULL,
    email text NOT NULL,
    created_at_us bigint NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (renter_id)
);
CREATE INDEX IF NOT EXISTS renters_last_seq ON renters (last_seq);

CREATE TABLE IF NOT EXISTS providers (
    provider_id text NOT NULL,
    name text NOT NULL,
    email text NOT NULL,
    gpu_model text NOT NULL,
    gpu_count bigint NOT NULL,
    vram_gb bigint NOT NULL,
    approval_status text NOT NULL,
    paused smallint NOT NULL,
    suspended smallint NOT NULL,
    accepting_jobs smallint NOT NULL,
    daemon_version text NOT NULL,
    last_heartbeat_us bigint,
    gpus_json text NOT NULL,
    created_at_us bigint NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (provider_id)
);
CREATE INDEX IF NOT EXISTS providers_last_seq ON providers (last_seq);

CREATE TABLE IF NOT EXISTS jobs (
    job_id text NOT NULL,
    renter_id text NOT NULL,
    provider_id text,
    requested_provider_id text,
    status text NOT NULL,
    image text NOT NULL,
    command_json text NOT NULL,
    gpu_type text NOT NULL,
    min_vram_gb bigint NOT NULL,
    gpu_count bigint NOT NULL,
    priority text NOT NULL,
    max_duration_seconds bigint NOT NULL,
    rate_halala_per_hour bigint NOT NULL,
    cost_halala bigint NOT NULL,
    actual_cost_halala bigint,
    refunded_halala bigint,
    provider_earned_halala bigint,
    platform_fee_halala bigint,
    attempt bigint NOT NULL,
    lease_expires_us bigint,
    submitted_at_us bigint NOT NULL,
    assigned_at_us bigint,
    started_at_us bigint,
    ended_at_us bigint,
    exit_code bigint,
    error text,
    last_seq bigint NOT NULL,
    PRIMARY KEY (job_id)
);
CREATE INDEX IF NOT EXISTS jobs_renter ON jobs (renter_id, submitted_at_us);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE INDEX IF NOT EXISTS jobs_last_seq ON jobs (last_seq);

CREATE TABLE IF NOT EXISTS job_outputs (
    job_id text NOT NULL,
    exit_code bigint,
    stdout text NOT NULL,
    stderr text NOT NULL,
    truncated smallint NOT NULL,
    sha256 text NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (job_id)
);

CREATE TABLE IF NOT EXISTS accounts (
    account_id text NOT NULL,
    balance_halala bigint NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (account_id)
);
CREATE INDEX IF NOT EXISTS accounts_last_seq ON accounts (last_seq);

CREATE TABLE IF NOT EXISTS postings (
    seq bigint NOT NULL,
    idx bigint NOT NULL,
    account_id text NOT NULL,
    amount_halala bigint NOT NULL,
    event_type text NOT NULL,
    job_id text,
    recorded_at_us bigint NOT NULL,
    PRIMARY KEY (seq, idx)
);
CREATE INDEX IF NOT EXISTS postings_account ON postings (account_id, seq);

CREATE TABLE IF NOT EXISTS withdrawals (
    withdrawal_id text NOT NULL,
    provider_id text NOT NULL,
    amount_halala bigint NOT NULL,
    iban text NOT NULL,
    status text NOT NULL,
    requested_at_us bigint NOT NULL,
    decided_at_us bigint,
    last_seq bigint NOT NULL,
    PRIMARY KEY (withdrawal_id)
);
CREATE INDEX IF NOT EXISTS withdrawals_status ON withdrawals (status);
CREATE INDEX IF NOT EXISTS withdrawals_last_seq ON withdrawals (last_seq);

CREATE TABLE IF NOT EXISTS pricing (
    gpu_model text NOT NULL,
    halala_per_gpu_hour bigint NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (gpu_model)
);
CREATE INDEX IF NOT EXISTS pricing_last_seq ON pricing (last_seq);

CREATE TABLE IF NOT EXISTS image_allowlist (
    reference text NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (reference)
);

CREATE TABLE IF NOT EXISTS topups (
    topup_id text NOT NULL,
    renter_id text NOT NULL,
    amount_halala bigint NOT NULL,
    status text NOT NULL,
    invoice_id text,
    checkout_url text,
    payment_id text,
    reason text NOT NULL,
    gateway_amount_halala bigint,
    gateway_currency text,
    created_at_us bigint NOT NULL,
    updated_at_us bigint NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (topup_id)
);
CREATE INDEX IF NOT EXISTS topups_renter ON topups (renter_id, created_at_us);
CREATE INDEX IF NOT EXISTS topups_status ON topups (status, updated_at_us);
CREATE INDEX IF NOT EXISTS topups_last_seq ON topups (last_seq);
