-- A read-only command's audit row also records the callback id of the message that ran
-- it, instead of a second row in `inbound_events`: one row per answered command, half the
-- writes of a busy bot. Recent ids are read back from both tables after a restart.
-- NULL for the shell (no platform id) and for commands with effects, whose id is kept in
-- `inbound_events` inside the transaction of their effects.
ALTER TABLE command_audit ADD COLUMN callback_id TEXT;

-- No query reads the audit trail by `at`: it is listed newest first by id, which grows
-- with time. The index cost every audited command an index insertion for nothing.
DROP INDEX IF EXISTS command_audit_at;

-- Callback ids are opaque platform strings: compare them as bytes. Under a libc locale
-- (C.UTF-8, en_US.UTF-8) every insertion into the primary key went through strcoll.
ALTER TABLE inbound_events
    ALTER COLUMN account TYPE TEXT COLLATE "C",
    ALTER COLUMN event_id TYPE TEXT COLLATE "C";
