-- Sends counted per channel account (and per recipient on it) per window, so quotas hold
-- across restarts and across several instances. A row is a counter of one window: reserving
-- locks the rows of the current windows (created at 0 if missing) and adds what it grants,
-- in the same transaction, committed before the provider is called.
CREATE TABLE channel_quota (
    channel      TEXT   NOT NULL,
    -- '' counts the account; otherwise the recipient's address on the channel.
    scope        TEXT   NOT NULL,
    unit         TEXT   NOT NULL CHECK (unit IN ('minute', 'day', 'month')),
    -- Unix milliseconds: the UTC minute, or local midnight / the first of the month in the
    -- quota time zone.
    window_start BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    PRIMARY KEY (channel, scope, unit, window_start)
);

-- The purge deletes ended windows by age without scanning every counter.
CREATE INDEX channel_quota_window ON channel_quota (window_start);
