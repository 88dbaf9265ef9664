-- Fewer writes per delivered job on PostgreSQL.
--
-- The foreign key from attempts to jobs made every recorded attempt run a referential
-- check that locks its job row (FOR KEY SHARE, a tuple write of its own) just before the
-- same transaction updates that row: recording a batch of attempts cost twice as much
-- with it. Attempts are written only by the outbox, for a job it holds the lease of, and
-- jobs are never deleted, so the check guarded nothing the code can do.
ALTER TABLE delivery_attempts DROP CONSTRAINT IF EXISTS delivery_attempts_job_id_fkey;

-- Idempotency keys are opaque bytes: compare them as bytes. Under a libc locale (C.UTF-8,
-- en_US.UTF-8) every comparison went through strcoll, and every state change of a job
-- inserts a new entry into this index (a job's updates are not HOT: `state` decides the
-- partial indexes it belongs to).
ALTER TABLE delivery_jobs ALTER COLUMN idempotency_key TYPE TEXT COLLATE "C";

-- A queue table turns over its rows all day: vacuum it after 2 % of them changed rather
-- than the default 20 %, so claims do not wade through dead index entries of jobs that
-- were claimed long ago.
ALTER TABLE delivery_jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02);
