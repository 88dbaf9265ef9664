//! Fan-out jobs: one outbox row for many recipients of the same content, sent through a
//! batching channel in as few provider calls as its batch size allows. Claiming and
//! recording cost one row per call instead of one per recipient, which is what lets a
//! campaign go out faster than one call per person.
//!
//! What a call does not deliver is not lost in the row: each such recipient becomes a job
//! of its own (key `<fan-out key>/<address>`), created in the transaction that records the
//! call, with this call as its first attempt; from there it retries, waits for its quota or
//! fails like any other job. The key makes that idempotent: recording the same call twice
//! (a retried commit) or a later claim of the same fan-out (after a lost lease) cannot make
//! a second job for anyone.

use std::sync::LazyLock;

use sqlx::AnyConnection;

use super::Outbox;
use super::queue::{Enqueued, NewJobSql, QueuedRow};
use crate::clock::{UnixMillis, millis};
use crate::db::Backend;
use crate::delivery::policy::Next;

/// A fan-out to queue: `recipients` get `payload` through `channel`.
#[derive(Debug, Clone)]
pub struct NewFanOut<'a> {
    /// Stable across re-submissions: the same key twice is one fan-out.
    pub idempotency_key: &'a str,
    pub channel: &'a str,
    pub payload: &'a str,
    pub recipients: &'a [&'a str],
}

/// The recipients one fan-out call did not deliver, to be queued as jobs of their own.
#[derive(Debug, Clone)]
pub struct FanOutRemainder {
    /// The fan-out job's key, channel, content and maximum age, which its recipients'
    /// jobs inherit.
    pub idempotency_key: String,
    pub channel: String,
    pub payload: String,
    pub expires_at: UnixMillis,
    pub worker: String,
    pub started_at: UnixMillis,
    pub duration_ms: i64,
    pub recipients: Vec<RecipientOutcome>,
}

/// How the call went for one recipient, and what happens to it next.
#[derive(Debug, Clone)]
pub struct RecipientOutcome {
    pub recipient: String,
    pub outcome: &'static str,
    pub status: Option<i64>,
    pub detail: String,
    pub next: Next,
}

impl Outbox {
    /// Queues one fan-out job as part of the caller's transaction. An empty recipient list
    /// or an address holding a line break (which no provider accepts) is refused.
    pub async fn enqueue_fan_out(
        conn: &mut AnyConnection,
        job: &NewFanOut<'_>,
        now: UnixMillis,
        max_age: std::time::Duration,
    ) -> Result<Enqueued, sqlx::Error> {
        if job.recipients.is_empty() {
            return Err(refused("a fan-out job needs at least one recipient"));
        }
        if job
            .recipients
            .iter()
            .any(|r| r.is_empty() || r.contains(['\n', '\r']))
        {
            return Err(refused(
                "a fan-out recipient must be a non-empty address without line breaks",
            ));
        }
        let recipients = serde_json::to_string(job.recipients)
            .map_err(|error| refused(&format!("recipients: {error}")))?;
        let row = QueuedRow {
            idempotency_key: job.idempotency_key,
            channel: job.channel,
            recipient: "",
            recipients: Some(&recipients),
            payload: job.payload,
            expires_at: now.saturating_add(millis(max_age)),
            route: None,
        };
        Self::insert_queued(conn, &row, now).await
    }

    /// Queues `recipients` for `payload` through `channel` in one transaction, as fan-out
    /// jobs of at most `per_job` recipients, keyed `<key_prefix>#<n>`. Answers how many
    /// jobs were created. `per_job` should be the channel's batch size: a job is then one
    /// provider call, and a crash mid-call repeats that call only; a larger job is sent in
    /// several calls and a crash repeats all of them.
    #[allow(clippy::too_many_arguments)]
    pub async fn fan_out(
        &self,
        key_prefix: &str,
        channel: &str,
        payload: &str,
        recipients: &[&str],
        per_job: usize,
        now: UnixMillis,
        max_age: std::time::Duration,
    ) -> Result<usize, sqlx::Error> {
        let mut tx = self.db.writer().begin().await?;
        let mut created = 0;
        for (index, chunk) in recipients.chunks(per_job.max(1)).enumerate() {
            let key = format!("{key_prefix}#{index}");
            let job = NewFanOut {
                idempotency_key: &key,
                channel,
                payload,
                recipients: chunk,
            };
            if Self::enqueue_fan_out(&mut tx, &job, now, max_age)
                .await?
                .created
            {
                created += 1;
            }
        }
        tx.commit().await?;
        Ok(created)
    }

    /// Gives every undelivered recipient of a fan-out call its own job, with this call as
    /// its first attempt (see the module documentation).
    pub(super) async fn split_fan_out(
        tx: &mut AnyConnection,
        remainder: &FanOutRemainder,
        now: UnixMillis,
    ) -> Result<(), sqlx::Error> {
        static SPLIT: LazyLock<NewJobSql> = LazyLock::new(|| {
            NewJobSql::new(
                "channel, recipient, payload, state, attempts, failures, run_at, last_error, \
                 created_at, updated_at, expires_at",
                "$2, $3, $4, $5, 1, $6, $7, $8, $9, $9, $10",
            )
        });
        let split_sql = SPLIT.on(Backend::of(tx));
        for one in &remainder.recipients {
            let key = format!("{}/{}", remainder.idempotency_key, one.recipient);
            let (state, run_at, failures) = match one.next {
                Next::Retry {
                    run_at,
                    counts_as_failure,
                } => ("retry_wait", run_at, i64::from(counts_as_failure)),
                Next::Sent => ("sent", now, 0),
                Next::Failed => ("failed", now, 1),
                Next::Dead => ("dead", now, 1),
            };
            let inserted: Option<(i64,)> = sqlx::query_as(split_sql)
                .bind(&key)
                .bind(&remainder.channel)
                .bind(&one.recipient)
                .bind(&remainder.payload)
                .bind(state)
                .bind(failures)
                .bind(run_at)
                .bind(&one.detail)
                .bind(now)
                .bind(remainder.expires_at)
                .fetch_optional(&mut *tx)
                .await?;
            // An existing job is this recipient's from an earlier record of the same
            // fan-out: it has its history already.
            let Some((job_id,)) = inserted else {
                continue;
            };
            sqlx::query(
                "INSERT INTO delivery_attempts \
                 (job_id, attempt, worker, started_at, duration_ms, outcome, status, detail) \
                 VALUES ($1, 1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(job_id)
            .bind(&remainder.worker)
            .bind(remainder.started_at)
            .bind(remainder.duration_ms)
            .bind(one.outcome)
            .bind(one.status)
            .bind(&one.detail)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

fn refused(message: &str) -> sqlx::Error {
    sqlx::Error::InvalidArgument(message.to_string())
}
