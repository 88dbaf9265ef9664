//! The read side of the outbox: counts, lag, job listings with their attempts, and the
//! operator's requeue of a failed or dead job.

use serde::{Serialize, Serializer};
use sqlx::{Row, any::AnyRow};

use super::{JobState, Outbox};
use crate::clock::{UnixMillis, millis};
use crate::db::Backend;

/// Counts per state and how far behind the queue is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OutboxSummary {
    pub queued: i64,
    pub leased: i64,
    pub sent: i64,
    pub retry_wait: i64,
    pub failed: i64,
    pub dead: i64,
    /// How long the oldest due job has waited, in milliseconds (0 when none is due).
    pub lag_ms: i64,
}

/// A job as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct JobRow {
    pub id: i64,
    pub idempotency_key: String,
    pub channel: String,
    /// Empty for a fan-out job, which carries `fan_out_size` recipients instead.
    pub recipient: String,
    /// How many recipients a fan-out job carries (absent for a job of one recipient).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fan_out_size: Option<usize>,
    pub state: JobState,
    pub attempts: i64,
    pub failures: i64,
    /// Why it last failed, or why it is dead.
    pub last_error: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub run_at: UnixMillis,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UnixMillis,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: UnixMillis,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: UnixMillis,
}

/// One call to a provider, or one whose outcome a crash made unknowable (`abandoned`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AttemptRow {
    pub attempt: i64,
    pub worker: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: UnixMillis,
    pub duration_ms: Option<i64>,
    pub outcome: String,
    pub status: Option<i64>,
    pub detail: Option<String>,
}

/// What `requeue` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    Requeued,
    NotFound,
    /// Only failed and dead jobs can be requeued; the job is in this state.
    NotFinal(JobState),
}

fn rfc3339<S: Serializer>(ms: &UnixMillis, serializer: S) -> Result<S::Ok, S::Error> {
    match jiff::Timestamp::from_millisecond(*ms) {
        Ok(at) => serializer.serialize_str(&at.to_string()),
        Err(_) => serializer.serialize_i64(*ms),
    }
}

const JOB_COLUMNS: &str = "id, idempotency_key, channel, recipient, recipients, state, attempts, \
     failures, last_error, run_at, created_at, updated_at, expires_at";

fn job_row(row: &AnyRow) -> Result<JobRow, sqlx::Error> {
    let state: String = row.try_get("state")?;
    Ok(JobRow {
        id: row.try_get("id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        channel: row.try_get("channel")?,
        recipient: row.try_get("recipient")?,
        fan_out_size: row.try_get::<Option<String>, _>("recipients")?.map(|list| {
            serde_json::from_str::<Vec<serde::de::IgnoredAny>>(&list).map_or(0, |list| list.len())
        }),
        state: JobState::parse(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown job state `{state}`").into()))?,
        attempts: row.try_get("attempts")?,
        failures: row.try_get("failures")?,
        last_error: row.try_get("last_error")?,
        run_at: row.try_get("run_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

impl Outbox {
    /// Counts per state and the queue's lag, for `/metrics` and the admin API.
    pub async fn summary(&self, now: UnixMillis) -> Result<OutboxSummary, sqlx::Error> {
        let counts: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM delivery_jobs GROUP BY state")
                .fetch_all(self.db.reader())
                .await?;
        let mut summary = OutboxSummary::default();
        for (state, count) in counts {
            match JobState::parse(&state) {
                Some(JobState::Queued) => summary.queued = count,
                Some(JobState::Leased) => summary.leased = count,
                Some(JobState::Sent) => summary.sent = count,
                Some(JobState::RetryWait) => summary.retry_wait = count,
                Some(JobState::Failed) => summary.failed = count,
                Some(JobState::Dead) => summary.dead = count,
                None => {}
            }
        }
        // The partial index of due jobs answers MIN(run_at) at once; SQLite's planner
        // would otherwise read every queued row through the state index.
        let hint = match self.db.backend() {
            Backend::Sqlite => "INDEXED BY delivery_jobs_due",
            Backend::Postgres => "",
        };
        let (oldest,): (Option<i64>,) = sqlx::query_as(&format!(
            "SELECT MIN(run_at) FROM delivery_jobs {hint} \
             WHERE state IN ('queued', 'retry_wait') AND run_at <= $1"
        ))
        .bind(now)
        .fetch_one(self.db.reader())
        .await?;
        summary.lag_ms = oldest.map_or(0, |at| now.saturating_sub(at).max(0));
        Ok(summary)
    }

    /// Jobs in id order after `after`, optionally in one state (keyset pagination).
    pub async fn list_jobs(
        &self,
        state: Option<JobState>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<JobRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM delivery_jobs WHERE id > $1 AND ($2 = '' OR state = $2) \
             ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(after.unwrap_or(0))
            .bind(state.map_or("", JobState::as_str))
            .bind(limit)
            .fetch_all(self.db.reader())
            .await?;
        rows.iter().map(job_row).collect()
    }

    /// One job and its attempts log, oldest attempt first.
    pub async fn job(&self, id: i64) -> Result<Option<(JobRow, Vec<AttemptRow>)>, sqlx::Error> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM delivery_jobs WHERE id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.db.reader())
            .await?
        else {
            return Ok(None);
        };
        let job = job_row(&row)?;
        let attempts = sqlx::query(
            "SELECT attempt, worker, started_at, duration_ms, outcome, status, detail \
             FROM delivery_attempts WHERE job_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(self.db.reader())
        .await?
        .iter()
        .map(|row| {
            Ok(AttemptRow {
                attempt: row.try_get("attempt")?,
                worker: row.try_get("worker")?,
                started_at: row.try_get("started_at")?,
                duration_ms: row.try_get("duration_ms")?,
                outcome: row.try_get("outcome")?,
                status: row.try_get("status")?,
                detail: row.try_get("detail")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some((job, attempts)))
    }

    /// Puts a failed or dead job back in the queue with a fresh maximum age, after an
    /// operator fixed the cause.
    pub async fn requeue(
        &self,
        id: i64,
        now: UnixMillis,
        max_age: std::time::Duration,
    ) -> Result<Requeue, sqlx::Error> {
        let updated = sqlx::query(
            "UPDATE delivery_jobs SET state = 'queued', run_at = $1, updated_at = $1, \
             expires_at = $2, failures = 0 WHERE id = $3 AND state IN ('failed', 'dead')",
        )
        .bind(now)
        .bind(now.saturating_add(millis(max_age)))
        .bind(id)
        .execute(self.db.writer())
        .await?;
        if updated.rows_affected() > 0 {
            return Ok(Requeue::Requeued);
        }
        let state: Option<(String,)> =
            sqlx::query_as("SELECT state FROM delivery_jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(self.db.writer())
                .await?;
        Ok(match state.and_then(|(s,)| JobState::parse(&s)) {
            Some(state) => Requeue::NotFinal(state),
            None => Requeue::NotFound,
        })
    }
}
