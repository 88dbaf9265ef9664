-- Platform events that are not chat messages (read receipts, card button clicks,
-- template-send reports), verified like messages and kept for the delivery and campaign
-- layers. The payload is the platform's JSON as received, after decryption.
CREATE TABLE platform_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    platform    TEXT    NOT NULL,
    account     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    event_id    TEXT,
    payload     TEXT    NOT NULL,
    received_at BIGINT NOT NULL
);

CREATE INDEX platform_events_kind ON platform_events (kind, received_at);

-- People who asked not to be messaged any more through one inbound account's platform.
-- One row per person and account: the first opt-out is confirmed, repeats are not.
CREATE TABLE opt_outs (
    platform   TEXT    NOT NULL,
    account    TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    keyword    TEXT    NOT NULL,
    opted_at   BIGINT NOT NULL,
    PRIMARY KEY (platform, account, user_id)
);

-- What non-operators wrote to the bot that was neither a command nor an opt-out.
CREATE TABLE feedback (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    platform    TEXT    NOT NULL,
    account     TEXT    NOT NULL,
    chat        TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    received_at BIGINT NOT NULL
);

CREATE INDEX feedback_received ON feedback (received_at);
