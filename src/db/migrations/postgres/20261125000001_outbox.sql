-- The durable outbox: a delivery job is a row before anything is sent, so a crash at any
-- point leaves every accepted message either delivered or still claimable.
-- Instants are Unix milliseconds (BIGINT) so SQLite and PostgreSQL share one store.
CREATE TABLE delivery_jobs (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- One row per logical send; enqueueing the same key twice is one job.
    idempotency_key TEXT    NOT NULL UNIQUE,
    channel         TEXT    NOT NULL,
    recipient       TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    state           TEXT    NOT NULL
        CHECK (state IN ('queued', 'leased', 'sent', 'retry_wait', 'failed', 'dead')),
    -- Claims so far, including one whose outcome a crash made unknowable.
    attempts        BIGINT  NOT NULL DEFAULT 0,
    -- Retryable failures so far: the index into the retry schedule. Rate-limit waits do
    -- not count, so a throttled channel does not burn its retry budget.
    failures        BIGINT  NOT NULL DEFAULT 0,
    run_at          BIGINT  NOT NULL,
    lease_until     BIGINT,
    lease_owner     TEXT,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    -- After this instant the job is dead rather than retried (the policy's maximum age).
    expires_at      BIGINT  NOT NULL
);

CREATE INDEX delivery_jobs_due ON delivery_jobs (run_at) WHERE state IN ('queued', 'retry_wait');
CREATE INDEX delivery_jobs_leases ON delivery_jobs (lease_until) WHERE state = 'leased';
CREATE INDEX delivery_jobs_state ON delivery_jobs (state, updated_at);

-- Every call to a provider, and every call whose outcome was lost to a crash ('abandoned').
CREATE TABLE delivery_attempts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      BIGINT  NOT NULL REFERENCES delivery_jobs (id),
    attempt     BIGINT  NOT NULL,
    worker      TEXT    NOT NULL,
    started_at  BIGINT  NOT NULL,
    duration_ms BIGINT,
    outcome     TEXT    NOT NULL,
    status      BIGINT,
    -- The provider's answer or the error, truncated.
    detail      TEXT
);

CREATE INDEX delivery_attempts_job ON delivery_attempts (job_id, attempt);

-- Who ran which chat command, where, and what came of it.
CREATE TABLE command_audit (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT  NOT NULL,
    platform   TEXT    NOT NULL,
    account    TEXT    NOT NULL,
    chat       TEXT    NOT NULL,
    sender     TEXT    NOT NULL,
    command    TEXT    NOT NULL,
    outcome    TEXT    NOT NULL
);

CREATE INDEX command_audit_at ON command_audit (at);

-- Platform event ids already processed, so a retried callback never runs a command twice,
-- also across restarts.
CREATE TABLE inbound_events (
    account     TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    received_at BIGINT  NOT NULL,
    PRIMARY KEY (account, event_id)
);

CREATE INDEX inbound_events_received ON inbound_events (received_at);
