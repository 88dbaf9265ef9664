-- Fan-out jobs: one row for many recipients of the same content on a batching channel,
-- sent in one provider call (a campaign's WeCom app message to 1000 members, say), so a
-- million-recipient campaign is a thousand rows to claim and record, not a million.
-- `recipients` is a JSON array of addresses; `recipient` is '' on such a row. Recipients
-- the call does not deliver get a job of their own (key `<fan-out key>/<address>`), made
-- in the transaction that records the call, and retry or fail on their own from there.
ALTER TABLE delivery_jobs ADD COLUMN recipients TEXT;

-- Every state change of every job had to update this index, and nothing needs it: claims
-- and reaps walk the partial indexes above, the per-state counts read the whole table
-- either way, and listings go by id.
DROP INDEX delivery_jobs_state;

-- Receipts look attempts up by a provider's reference; most attempts (failures, providers
-- without one) have none, and need no entry.
DROP INDEX delivery_attempts_provider_ref;
CREATE INDEX delivery_attempts_provider_ref ON delivery_attempts (provider_ref)
    WHERE provider_ref IS NOT NULL;
