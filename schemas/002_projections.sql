-- Read models kept beside the log, written in the same transaction as the events they come
-- from (dcp_app.readmodel). Every row carries last_seq, the sequence of the last event that
-- changed it; the replicator mirrors rows WHERE last_seq > its checkpoint. Rebuilding from an
-- empty database yields identical rows. Amounts are integer halala; times integer microseconds.

CREATE TABLE IF NOT EXISTS projection_state (
    name     TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
) STRICT;

-- Never mirrored: API key hashes and who they belong to.
CREATE TABLE IF NOT EXISTS credentials (
    key_hash   TEXT PRIMARY KEY,                  -- hex sha256 of the API key
    role       TEXT NOT NULL,                     -- renter | provider
    subject_id TEXT NOT NULL,
    last_seq   INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS renters (
    renter_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    email         TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS renters_last_seq ON renters (last_seq);

CREATE TABLE IF NOT EXISTS providers (
    provider_id       TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    email             TEXT NOT NULL,
    gpu_model         TEXT NOT NULL,
    gpu_count         INTEGER NOT NULL,
    vram_gb           INTEGER NOT NULL,
    approval_status   TEXT NOT NULL,              -- pending | approved
    paused            INTEGER NOT NULL,           -- 0 | 1
    suspended         INTEGER NOT NULL,           -- 0 | 1
    accepting_jobs    INTEGER NOT NULL,           -- 0 | 1, from the last heartbeat
    daemon_version    TEXT NOT NULL,
    last_heartbeat_us INTEGER,                    -- NULL until the first heartbeat
    gpus_json         TEXT NOT NULL,              -- GPU inventory of the last heartbeat
    created_at_us     INTEGER NOT NULL,
    last_seq          INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS providers_last_seq ON providers (last_seq);

CREATE TABLE IF NOT EXISTS jobs (
    job_id                 TEXT PRIMARY KEY,
    renter_id              TEXT NOT NULL,
    provider_id            TEXT,                  -- the current or last lease holder
    requested_provider_id  TEXT,                  -- provider_id asked for at submit, if any
    status                 TEXT NOT NULL,
    image                  TEXT NOT NULL,
    command_json           TEXT NOT NULL,
    gpu_type               TEXT NOT NULL,
    min_vram_gb            INTEGER NOT NULL,
    gpu_count              INTEGER NOT NULL,
    priority               TEXT NOT NULL,
    max_duration_seconds   INTEGER NOT NULL,
    rate_halala_per_hour   INTEGER NOT NULL,
    cost_halala            INTEGER NOT NULL,      -- the reserve of the current hold
    actual_cost_halala     INTEGER,               -- NULL until settled
    refunded_halala        INTEGER,
    provider_earned_halala INTEGER,
    platform_fee_halala    INTEGER,
    attempt                INTEGER NOT NULL,      -- fencing number of the current lease
    lease_expires_us       INTEGER,
    submitted_at_us        INTEGER NOT NULL,
    submit_seq             INTEGER NOT NULL,      -- seq of job.submitted: queue order (state.py)
    assigned_at_us         INTEGER,
    started_at_us          INTEGER,
    ended_at_us            INTEGER,
    exit_code              INTEGER,
    error                  TEXT,
    last_seq               INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS jobs_renter ON jobs (renter_id, submitted_at_us);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE INDEX IF NOT EXISTS jobs_last_seq ON jobs (last_seq);

-- Output of ended jobs (not mirrored: it can be large and is the renter's data).
CREATE TABLE IF NOT EXISTS job_outputs (
    job_id    TEXT PRIMARY KEY,
    exit_code INTEGER,
    stdout    TEXT NOT NULL,
    stderr    TEXT NOT NULL,
    truncated INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    last_seq  INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS accounts (
    account_id     TEXT PRIMARY KEY,              -- e.g. renter:<id>:available
    balance_halala INTEGER NOT NULL,
    last_seq       INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS accounts_last_seq ON accounts (last_seq);

-- One row per posting; seq is the event that carried it, idx its position in that event.
CREATE TABLE IF NOT EXISTS postings (
    seq           INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    account_id    TEXT NOT NULL,
    amount_halala INTEGER NOT NULL,
    event_type    TEXT NOT NULL,
    job_id        TEXT,
    recorded_at_us INTEGER NOT NULL,
    PRIMARY KEY (seq, idx)
) STRICT;
CREATE INDEX IF NOT EXISTS postings_account ON postings (account_id, seq);

CREATE TABLE IF NOT EXISTS withdrawals (
    withdrawal_id   TEXT PRIMARY KEY,
    provider_id     TEXT NOT NULL,
    amount_halala   INTEGER NOT NULL,
    iban            TEXT NOT NULL,
    status          TEXT NOT NULL,                -- pending | completed | rejected
    requested_at_us INTEGER NOT NULL,
    decided_at_us   INTEGER,
    last_seq        INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS withdrawals_status ON withdrawals (status);
CREATE INDEX IF NOT EXISTS withdrawals_last_seq ON withdrawals (last_seq);

CREATE TABLE IF NOT EXISTS pricing (
    gpu_model           TEXT PRIMARY KEY,
    halala_per_gpu_hour INTEGER NOT NULL,
    last_seq            INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS pricing_last_seq ON pricing (last_seq);

CREATE TABLE IF NOT EXISTS image_allowlist (
    reference TEXT PRIMARY KEY,
    last_seq  INTEGER NOT NULL
) STRICT;

-- Gateway top-ups (docs/payments.md): one row per top-up, in its latest status.
CREATE TABLE IF NOT EXISTS topups (
    topup_id              TEXT PRIMARY KEY,
    renter_id             TEXT NOT NULL,
    amount_halala         INTEGER NOT NULL,
    status                TEXT NOT NULL,          -- pending | paid | failed | expired | disputed | refunding | refunded
    invoice_id            TEXT,                   -- the gateway's invoice, once created
    checkout_url          TEXT,                   -- the invoice's hosted payment page
    payment_id            TEXT,                   -- the gateway payment credited (or disputed)
    reason                TEXT NOT NULL,          -- why failed, expired, disputed or reversed
    gateway_amount_halala INTEGER,                -- what the gateway said, for a dispute
    gateway_currency      TEXT,
    created_at_us         INTEGER NOT NULL,
    updated_at_us         INTEGER NOT NULL,
    last_seq              INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS topups_renter ON topups (renter_id, created_at_us);
CREATE INDEX IF NOT EXISTS topups_status ON topups (status, updated_at_us);
CREATE INDEX IF NOT EXISTS topups_last_seq ON topups (last_seq);
