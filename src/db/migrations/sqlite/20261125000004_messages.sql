-- Messages sent over a route of channels (POST /api/v1/messages). Every step of the route
-- is resolved when the message is accepted (the channel, the recipient's address on it and
-- the content written for it), so falling back to the next channel is one insert in the
-- transaction that records the previous step's failure, with nothing left to decide then.
CREATE TABLE messages (
    id              TEXT    PRIMARY KEY,
    -- The caller's Idempotency-Key: the same key twice is one message.
    idempotency_key TEXT    UNIQUE,
    -- The request behind the key: the same key with another message is refused.
    request_sha256  TEXT    NOT NULL,
    -- The recipient object as given (addresses per platform), JSON.
    recipient       TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);

CREATE TABLE message_steps (
    message_id TEXT    NOT NULL REFERENCES messages (id),
    step       INTEGER NOT NULL,
    channel    TEXT    NOT NULL,
    -- The address this channel sends to; NULL when the recipient has none for it, in
    -- which case the step is skipped.
    recipient  TEXT,
    -- The content for this channel (channels::Message), JSON.
    payload    TEXT    NOT NULL,
    -- The outbox job of this step, once the route reached it.
    job_id     INTEGER,
    -- Why the route moved past this step without a delivery.
    skipped    TEXT,
    PRIMARY KEY (message_id, step)
);

CREATE INDEX message_steps_job ON message_steps (job_id);

-- Which message and route step a job delivers (NULL for jobs enqueued directly).
ALTER TABLE delivery_jobs ADD COLUMN message_id TEXT;
ALTER TABLE delivery_jobs ADD COLUMN step INTEGER;

-- The provider's id for what it accepted (message id, task id, SID): how delivery
-- receipts and read-status queries find their attempt.
ALTER TABLE delivery_attempts ADD COLUMN provider_ref TEXT;
CREATE INDEX delivery_attempts_provider_ref ON delivery_attempts (provider_ref);

-- Delivery receipts pushed by providers (Twilio status callbacks, SendGrid events),
-- recorded against the attempt whose provider_ref they name.
CREATE TABLE delivery_receipts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    channel      TEXT    NOT NULL,
    -- The provider's own event id (SendGrid sg_event_id) or, lacking one, the ref and
    -- status: a retried receipt is recorded once.
    event_key    TEXT    NOT NULL UNIQUE,
    provider_ref TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    detail       TEXT,
    job_id       INTEGER,
    attempt      INTEGER,
    received_at  INTEGER NOT NULL
);

CREATE INDEX delivery_receipts_ref ON delivery_receipts (provider_ref);
CREATE INDEX delivery_receipts_job ON delivery_receipts (job_id);
