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

-- The idempotency keys get a table of their own, written once when a job is queued. As a
-- unique index of the jobs table, every state change of every job inserted a new entry
-- into it (a job's updates are not HOT, see above): the text index was the largest part of
-- what a claim and a delivery wrote. Jobs keep their key as a plain column for reading.
CREATE TABLE delivery_job_keys (
    idempotency_key TEXT COLLATE "C" PRIMARY KEY,
    job_id          BIGINT NOT NULL
);
INSERT INTO delivery_job_keys (idempotency_key, job_id)
    SELECT idempotency_key, id FROM delivery_jobs;
ALTER TABLE delivery_jobs DROP CONSTRAINT delivery_jobs_idempotency_key_key;
