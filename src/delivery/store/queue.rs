//! The write path of the outbox: enqueue, claim, reap, complete.

use std::sync::LazyLock;

use sqlx::{AnyConnection, Row};

use super::Outbox;
use super::fan_out::FanOutRemainder;
use crate::clock::{UnixMillis, millis};
use crate::db::Backend;
use crate::delivery::policy::Next;

/// A job to put in the outbox.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// Stable across retries and re-submissions: the same key twice is one job.
    pub idempotency_key: &'a str,
    pub channel: &'a str,
    pub recipient: &'a str,
    /// The message as JSON (`channels::Message`).
    pub payload: &'a str,
}

/// The result of an enqueue: the job's id, and whether this call created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    pub created: bool,
}

/// A job a worker holds a lease on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: i64,
    pub idempotency_key: String,
    pub channel: String,
    pub recipient: String,
    pub payload: String,
    /// This claim's attempt number; it fences the outcome against a later claim.
    pub attempt: i64,
    pub failures: i64,
    pub expires_at: UnixMillis,
    /// When the job became due: with the id, its place in the claim order.
    pub run_at: UnixMillis,
    /// The routed message and step this job delivers, if it came from a route.
    pub route: Option<RouteStep>,
    /// A fan-out job's recipients, a JSON array (`recipient` is then empty).
    pub recipients: Option<String>,
}

impl ClaimedJob {
    /// The job's place in the order claims take due jobs in.
    pub fn due_position(&self) -> DuePosition {
        DuePosition {
            run_at: self.run_at,
            id: self.id,
        }
    }
}

/// A place in the order claims take due jobs in: `(run_at, id)`, the key of the due index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DuePosition {
    pub run_at: UnixMillis,
    pub id: i64,
}

impl DuePosition {
    /// Before every job.
    pub const START: DuePosition = DuePosition {
        run_at: i64::MIN,
        id: i64::MIN,
    };
}

/// A job's place in a routed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteStep {
    pub message_id: String,
    pub step: i64,
}

/// The outcome of one attempt, ready to record.
#[derive(Debug, Clone)]
pub struct Completion {
    pub job_id: i64,
    pub attempt: i64,
    pub worker: String,
    pub started_at: UnixMillis,
    pub duration_ms: i64,
    /// The verdict's name (`delivered`, `retryable`, …) or a local reason.
    pub outcome: &'static str,
    pub status: Option<i64>,
    pub detail: String,
    pub next: Next,
    /// The provider's id for what it accepted (for receipts and read status).
    pub provider_ref: Option<String>,
    /// The routed message and step, when the job came from a route.
    pub route: Option<RouteStep>,
    /// This channel cannot reach the recipient now (recipient invalid, account disabled,
    /// retries exhausted, circuit open): if the route has a further step, this step ends
    /// here and the next one starts in the same transaction; otherwise `next` applies.
    pub move_on: bool,
}

fn route_of(message_id: Option<String>, step: Option<i64>) -> Option<RouteStep> {
    Some(RouteStep {
        message_id: message_id?,
        step: step?,
    })
}

/// The due jobs of a claim on SQLite as one JSON array (see `Outbox::claim_on_sqlite`).
const SQLITE_DUE_JOBS: &str = "SELECT json_group_array(json_array(id, idempotency_key, \
     channel, recipient, payload, attempts + 1, failures, expires_at, message_id, step, \
     recipients, run_at)) FROM (SELECT * FROM delivery_jobs INDEXED BY delivery_jobs_due \
     WHERE state IN ('queued', 'retry_wait') AND run_at <= $1 AND (run_at, id) > ($3, $4) \
     ORDER BY run_at, id LIMIT $2)";

/// A claim on PostgreSQL: the due jobs as a CTE joined by id, so the planner updates
/// them through the primary key, where `id IN (subquery)` may hash-join against the
/// whole table.
const POSTGRES_CLAIM: &str = "WITH due AS (SELECT id FROM delivery_jobs \
     WHERE state IN ('queued', 'retry_wait') AND run_at <= $3 AND (run_at, id) > ($5, $6) \
     ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
     UPDATE delivery_jobs SET state = 'leased', lease_owner = $1, lease_until = $2, \
     attempts = delivery_jobs.attempts + 1, updated_at = $3 \
     FROM due WHERE delivery_jobs.id = due.id \
     RETURNING delivery_jobs.id, idempotency_key, channel, recipient, payload, attempts, \
     failures, expires_at, message_id, step, recipients, run_at";

/// Run before [`POSTGRES_CLAIM`] in its transaction (see `Outbox::claim_after`).
const POSTGRES_CLAIM_PLANNER: &str = "SELECT set_config('enable_sort', 'off', true), \
     set_config('enable_bitmapscan', 'off', true)";

/// One attempt row as the JSON the recording statements read.
#[derive(serde::Serialize)]
struct AttemptJson<'a> {
    job_id: i64,
    attempt: i64,
    worker: &'a str,
    started_at: UnixMillis,
    duration_ms: i64,
    outcome: &'a str,
    status: Option<i64>,
    detail: std::borrow::Cow<'a, str>,
    provider_ref: Option<&'a str>,
}

impl<'a> From<&'a Completion> for AttemptJson<'a> {
    fn from(done: &'a Completion) -> Self {
        Self {
            job_id: done.job_id,
            attempt: done.attempt,
            worker: &done.worker,
            started_at: done.started_at,
            duration_ms: done.duration_ms,
            outcome: done.outcome,
            status: done.status,
            // PostgreSQL text cannot hold NUL, which a provider's binary answer may.
            detail: if done.detail.contains('\0') {
                done.detail.replace('\0', "\u{fffd}").into()
            } else {
                done.detail.as_str().into()
            },
            provider_ref: done.provider_ref.as_deref(),
        }
    }
}

/// An INSERT of a job that creates it only when its idempotency key (`$1`) is new and
/// answers its id, written once for each backend; `columns` and `values` are the job's
/// other columns and their values.
///
/// On PostgreSQL the keys live in `delivery_job_keys` (see migration 7): the key is taken
/// there first, with the id the job will have, and the job is written only if the key was
/// new. Two transactions queueing one key meet on its primary key there, as they met on the
/// jobs table's unique index before: the second waits for the first and then finds it.
pub(super) struct NewJobSql {
    postgres: String,
    sqlite: String,
}

impl NewJobSql {
    pub(super) fn new(columns: &str, values: &str) -> Self {
        Self {
            postgres: format!(
                "WITH key AS (INSERT INTO delivery_job_keys (idempotency_key, job_id) \
                 VALUES ($1, nextval(pg_get_serial_sequence('delivery_jobs', 'id'))) \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING job_id) \
                 INSERT INTO delivery_jobs (id, idempotency_key, {columns}) \
                 OVERRIDING SYSTEM VALUE SELECT job_id, $1, {values} FROM key RETURNING id"
            ),
            sqlite: format!(
                "INSERT INTO delivery_jobs (idempotency_key, {columns}) VALUES ($1, {values}) \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
            ),
        }
    }

    pub(super) fn on(&self, backend: Backend) -> &str {
        match backend {
            Backend::Postgres => &self.postgres,
            Backend::Sqlite => &self.sqlite,
        }
    }
}

/// `{1,2,3}`: ids as a PostgreSQL array literal.
fn postgres_array(ids: &[i64]) -> String {
    use std::fmt::Write as _;
    let mut literal = String::with_capacity(ids.len() * 8 + 2);
    literal.push('{');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            literal.push(',');
        }
        let _ = write!(literal, "{id}");
    }
    literal.push('}');
    literal
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(value).map_err(|error| sqlx::Error::Encode(error.into()))
}

// A batch of outcomes is recorded by statements whose text does not depend on the batch
// size: the rows travel as one JSON parameter. A multi-row VALUES list would be a new
// statement for every batch size, parsed and planned again each time (and evicting the
// driver's statement cache), which cost more than the rows themselves.

fn insert_attempts_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => {
            "INSERT INTO delivery_attempts (job_id, attempt, worker, started_at, duration_ms, \
             outcome, status, detail, provider_ref) \
             SELECT job_id, attempt, worker, started_at, duration_ms, outcome, status, detail, \
             provider_ref FROM json_to_recordset($1::json) AS x(job_id BIGINT, attempt BIGINT, \
             worker TEXT, started_at BIGINT, duration_ms BIGINT, outcome TEXT, status BIGINT, \
             detail TEXT, provider_ref TEXT)"
        }
        Backend::Sqlite => {
            "INSERT INTO delivery_attempts (job_id, attempt, worker, started_at, duration_ms, \
             outcome, status, detail, provider_ref) \
             SELECT json_extract(value, '$.job_id'), json_extract(value, '$.attempt'), \
             json_extract(value, '$.worker'), json_extract(value, '$.started_at'), \
             json_extract(value, '$.duration_ms'), json_extract(value, '$.outcome'), \
             json_extract(value, '$.status'), json_extract(value, '$.detail'), \
             json_extract(value, '$.provider_ref') FROM json_each($1)"
        }
    }
}

fn mark_sent_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => {
            // An array, not a set from JSON: `id = ANY(array)` is always a primary-key
            // lookup, where a join with a JSON set was planned as a hash join over a
            // sequential scan of every job whenever the table had no statistics yet.
            "UPDATE delivery_jobs SET state = 'sent', lease_owner = NULL, lease_until = NULL, \
             last_error = NULL, updated_at = $1 \
             WHERE id = ANY($2::TEXT::BIGINT[]) AND state <> 'sent'"
        }
        Backend::Sqlite => {
            "UPDATE delivery_jobs SET state = 'sent', lease_owner = NULL, lease_until = NULL, \
             last_error = NULL, updated_at = $1 \
             WHERE id IN (SELECT value FROM json_each($2)) AND state <> 'sent'"
        }
    }
}
/// Job ids per `IN (...)` list.
const IDS_PER_STATEMENT: usize = 1000;

impl Outbox {
    /// Puts a job in the outbox as part of the caller's transaction, so the business
    /// write and its deliveries commit or vanish together.
    pub async fn enqueue(
        conn: &mut AnyConnection,
        job: &NewJob<'_>,
        now: UnixMillis,
        max_age: std::time::Duration,
    ) -> Result<Enqueued, sqlx::Error> {
        let row = QueuedRow {
            idempotency_key: job.idempotency_key,
            channel: job.channel,
            recipient: job.recipient,
            recipients: None,
            payload: job.payload,
            expires_at: now.saturating_add(millis(max_age)),
            route: None,
        };
        Self::insert_queued(conn, &row, now).await
    }

    /// Inserts a queued job unless its key exists; either way answers the key's job.
    pub(super) async fn insert_queued(
        conn: &mut AnyConnection,
        row: &QueuedRow<'_>,
        now: UnixMillis,
    ) -> Result<Enqueued, sqlx::Error> {
        static QUEUED: LazyLock<NewJobSql> = LazyLock::new(|| {
            NewJobSql::new(
                "channel, recipient, recipients, payload, state, run_at, created_at, \
                 updated_at, expires_at, message_id, step",
                "$2, $3, $4, $5, 'queued', $6, $6, $6, $7, $8, $9",
            )
        });
        let backend = Backend::of(conn);
        let inserted: Option<(i64,)> = sqlx::query_as(QUEUED.on(backend))
            .bind(row.idempotency_key)
            .bind(row.channel)
            .bind(row.recipient)
            .bind(row.recipients)
            .bind(row.payload)
            .bind(now)
            .bind(row.expires_at)
            .bind(row.route.map(|(message_id, _)| message_id))
            .bind(row.route.map(|(_, step)| step))
            .fetch_optional(&mut *conn)
            .await?;
        if let Some((id,)) = inserted {
            return Ok(Enqueued { id, created: true });
        }
        let existing = match backend {
            Backend::Postgres => "SELECT job_id FROM delivery_job_keys WHERE idempotency_key = $1",
            Backend::Sqlite => "SELECT id FROM delivery_jobs WHERE idempotency_key = $1",
        };
        let (id,): (i64,) = sqlx::query_as(existing)
            .bind(row.idempotency_key)
            .fetch_one(&mut *conn)
            .await?;
        Ok(Enqueued { id, created: false })
    }

    /// Enqueues several jobs in one transaction of their own.
    pub async fn enqueue_all(
        &self,
        jobs: &[NewJob<'_>],
        now: UnixMillis,
        max_age: std::time::Duration,
    ) -> Result<Vec<Enqueued>, sqlx::Error> {
        let mut tx = self.db.writer().begin().await?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(Self::enqueue(&mut tx, job, now, max_age).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Leases up to `limit` due jobs to `worker` until `now + lease`. On PostgreSQL,
    /// `SKIP LOCKED` lets several instances claim side by side without waiting on each
    /// other; SQLite's single writer connection serialises claims instead.
    pub async fn claim(
        &self,
        worker: &str,
        now: UnixMillis,
        lease: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedJob>, sqlx::Error> {
        self.claim_after(worker, now, lease, limit, DuePosition::START)
            .await
    }

    /// [`Outbox::claim`] of the due jobs after `after` in the claim order only.
    ///
    /// On PostgreSQL an update leaves the job's old entry in the due index until a vacuum
    /// removes it, so a claim from the start walks past every job claimed since the last
    /// vacuum: claims got slower with every job sent (a claim of 256 jobs after 25,600
    /// sends spent 1.2 of its 4.6 ms walking dead entries). A dispatcher starts its claims
    /// where its last one ended instead. Jobs can still become due behind that place (a
    /// transaction that enqueued them committed late, a lease that expired, jobs handed
    /// back): the dispatcher claims from the start too, often enough that they wait little.
    pub async fn claim_after(
        &self,
        worker: &str,
        now: UnixMillis,
        lease: std::time::Duration,
        limit: i64,
        after: DuePosition,
    ) -> Result<Vec<ClaimedJob>, sqlx::Error> {
        if self.db.backend() == Backend::Sqlite {
            return self.claim_on_sqlite(worker, now, lease, limit, after).await;
        }
        // Without statistics on the table (a new database, or autovacuum not run yet) the
        // planner guessed a handful of due jobs and read all of them through a bitmap scan,
        // then sorted them to take the first few: every claim cost the whole backlog. The
        // due index is already in claim order; these settings last for this transaction.
        let mut tx = self.db.writer().begin().await?;
        sqlx::query(POSTGRES_CLAIM_PLANNER)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(POSTGRES_CLAIM)
            .bind(worker)
            .bind(now.saturating_add(millis(lease)))
            .bind(now)
            .bind(limit)
            .bind(after.run_at)
            .bind(after.id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut jobs = rows
            .iter()
            .map(|row| {
                Ok(ClaimedJob {
                    id: row.try_get("id")?,
                    idempotency_key: row.try_get("idempotency_key")?,
                    channel: row.try_get("channel")?,
                    recipient: row.try_get("recipient")?,
                    payload: row.try_get("payload")?,
                    attempt: row.try_get("attempts")?,
                    failures: row.try_get("failures")?,
                    expires_at: row.try_get("expires_at")?,
                    run_at: row.try_get("run_at")?,
                    route: route_of(row.try_get("message_id")?, row.try_get("step")?),
                    recipients: row.try_get("recipients")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        // RETURNING order is unspecified; send oldest first.
        jobs.sort_by_key(|job| job.id);
        Ok(jobs)
    }

    /// [`Outbox::claim`] on SQLite: the due jobs read as one JSON row, then leased by id, in
    /// one transaction of the single writer connection. The driver hands each result row
    /// from its database thread to the caller separately (a thread wake-up each), so one
    /// row for the whole claim instead of one per job is most of what a claim costs.
    ///
    /// `INDEXED BY` because SQLite's planner, without statistics, prefers the `(state,
    /// updated_at)` index for `state IN (...)`: it then reads every queued row and sorts
    /// them to take the first few, so each claim cost as much as the whole backlog.
    async fn claim_on_sqlite(
        &self,
        worker: &str,
        now: UnixMillis,
        lease: std::time::Duration,
        limit: i64,
        after: DuePosition,
    ) -> Result<Vec<ClaimedJob>, sqlx::Error> {
        type Due = (
            i64,
            String,
            String,
            String,
            String,
            i64,
            i64,
            UnixMillis,
            Option<String>,
            Option<i64>,
            Option<String>,
            UnixMillis,
        );
        let mut tx = self.db.writer().begin().await?;
        let (due,): (String,) = sqlx::query_as(SQLITE_DUE_JOBS)
            .bind(now)
            .bind(limit)
            .bind(after.run_at)
            .bind(after.id)
            .fetch_one(&mut *tx)
            .await?;
        let due: Vec<Due> = serde_json::from_str(&due)
            .map_err(|error| sqlx::Error::Decode(format!("claimed jobs: {error}").into()))?;
        if due.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = due.iter().map(|job| job.0).collect();
        let ids = serde_json::to_string(&ids)
            .map_err(|error| sqlx::Error::Encode(error.to_string().into()))?;
        sqlx::query(
            "UPDATE delivery_jobs SET state = 'leased', lease_owner = $1, lease_until = $2, \
             attempts = attempts + 1, updated_at = $3 \
             WHERE id IN (SELECT value FROM json_each($4))",
        )
        .bind(worker)
        .bind(now.saturating_add(millis(lease)))
        .bind(now)
        .bind(ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut jobs: Vec<ClaimedJob> = due
            .into_iter()
            .map(
                |(
                    id,
                    key,
                    channel,
                    recipient,
                    payload,
                    attempt,
                    failures,
                    expires_at,
                    message,
                    step,
                    recipients,
                    run_at,
                )| {
                    ClaimedJob {
                        id,
                        idempotency_key: key,
                        channel,
                        recipient,
                        payload,
                        attempt,
                        failures,
                        expires_at,
                        run_at,
                        route: route_of(message, step),
                        recipients,
                    }
                },
            )
            .collect();
        jobs.sort_by_key(|job| job.id);
        Ok(jobs)
    }

    /// Hands back jobs this worker claimed but never started (at shutdown): they are due
    /// again at once and the claim does not count as an attempt.
    pub async fn release(
        &self,
        worker: &str,
        ids: &[i64],
        now: UnixMillis,
    ) -> Result<(), sqlx::Error> {
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let list = (0..chunk.len())
                .map(|i| format!("${}", i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "UPDATE delivery_jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL, \
                 attempts = attempts - 1, updated_at = $1 \
                 WHERE lease_owner = $2 AND state = 'leased' AND id IN ({list})"
            );
            let sql = self.db.backend().positional(&sql);
            let mut release = sqlx::query(&sql).bind(now).bind(worker);
            for id in chunk {
                release = release.bind(*id);
            }
            release.execute(self.db.writer()).await?;
        }
        Ok(())
    }

    /// Returns the jobs of workers whose lease ran out (a crash, a kill, a hung call) to
    /// the queue, logging an `abandoned` attempt for each: the provider may or may not
    /// have received that call, and this row is how a duplicate is explained later.
    pub async fn reap_expired_leases(&self, now: UnixMillis) -> Result<u64, sqlx::Error> {
        // SQLite's planner would walk every leased row by the state index (see
        // `claim_on_sqlite`); the partial index holds exactly the leases, by expiry.
        let (hint, lock) = match self.db.backend() {
            Backend::Postgres => ("", "FOR UPDATE SKIP LOCKED"),
            Backend::Sqlite => ("INDEXED BY delivery_jobs_leases", ""),
        };
        let mut tx = self.db.writer().begin().await?;
        let expired: Vec<(i64, i64, Option<String>, i64, i64)> = sqlx::query_as(&format!(
            "SELECT id, attempts, lease_owner, updated_at, expires_at FROM delivery_jobs {hint} \
             WHERE state = 'leased' AND lease_until <= $1 ORDER BY lease_until LIMIT 1000 {lock}"
        ))
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for (id, attempt, owner, claimed_at, expires_at) in &expired {
            sqlx::query(
                "INSERT INTO delivery_attempts (job_id, attempt, worker, started_at, outcome, detail) \
                 VALUES ($1, $2, $3, $4, 'abandoned', \
                 'the lease expired before an outcome was recorded; the provider may have received this call')",
            )
            .bind(id)
            .bind(attempt)
            .bind(owner.as_deref().unwrap_or("unknown"))
            .bind(claimed_at)
            .execute(&mut *tx)
            .await?;
            let (state, error) = if *expires_at < now {
                (
                    "dead",
                    Some("maximum age reached after an abandoned attempt"),
                )
            } else {
                ("queued", None)
            };
            sqlx::query(
                "UPDATE delivery_jobs SET state = $1, lease_owner = NULL, lease_until = NULL, \
                 run_at = $2, updated_at = $2, last_error = COALESCE($3, last_error) \
                 WHERE id = $4 AND state = 'leased'",
            )
            .bind(state)
            .bind(now)
            .bind(error)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(expired.len() as u64)
    }

    /// Records a batch of outcomes in one transaction: one commit (and one fsync on
    /// SQLite) for many sends, with multi-row statements for the attempts and for the
    /// common case, deliveries, so a batch costs a handful of round trips rather than two
    /// per send (the lag between a send and its record is what a crash can duplicate).
    /// An outcome only moves its job if the job is still held by the same claim, so a
    /// slow worker cannot overwrite a later claim's state; a delivery is always kept,
    /// since the message did reach the provider.
    pub async fn complete(&self, batch: &[Completion], now: UnixMillis) -> Result<(), sqlx::Error> {
        self.complete_with(batch, &[], now).await
    }

    /// [`Outbox::complete`], plus the recipients that fan-out calls did not deliver, each
    /// queued (or ended) as a job of its own in the same transaction.
    pub async fn complete_with(
        &self,
        batch: &[Completion],
        fan_outs: &[FanOutRemainder],
        now: UnixMillis,
    ) -> Result<(), sqlx::Error> {
        let backend = self.db.backend();
        let mut tx = self.db.writer().begin().await?;
        if !batch.is_empty() {
            let rows: Vec<AttemptJson<'_>> = batch.iter().map(AttemptJson::from).collect();
            sqlx::query(insert_attempts_sql(backend))
                .bind(to_json(&rows)?)
                .execute(&mut *tx)
                .await?;
        }
        let delivered: Vec<i64> = batch
            .iter()
            .filter(|done| done.next == Next::Sent)
            .map(|done| done.job_id)
            .collect();
        if !delivered.is_empty() {
            let ids = match backend {
                Backend::Postgres => postgres_array(&delivered),
                Backend::Sqlite => to_json(&delivered)?,
            };
            sqlx::query(mark_sent_sql(backend))
                .bind(now)
                .bind(ids)
                .execute(&mut *tx)
                .await?;
        }
        for done in batch.iter().filter(|done| done.next != Next::Sent) {
            if done.move_on
                && let Some(route) = &done.route
                && Self::move_to_next_step(&mut tx, done, route, now).await?
            {
                continue;
            }
            let update = match &done.next {
                Next::Retry {
                    run_at,
                    counts_as_failure,
                } => sqlx::query(
                    "UPDATE delivery_jobs SET state = 'retry_wait', lease_owner = NULL, \
                     lease_until = NULL, run_at = $1, failures = failures + $2, last_error = $3, \
                     updated_at = $4 WHERE id = $5 AND state = 'leased' AND attempts = $6",
                )
                .bind(*run_at)
                .bind(i64::from(*counts_as_failure))
                .bind(&done.detail)
                .bind(now)
                .bind(done.job_id)
                .bind(done.attempt),
                Next::Sent | Next::Failed | Next::Dead => Self::end_job(
                    done,
                    if done.next == Next::Dead {
                        "dead"
                    } else {
                        "failed"
                    },
                    &done.detail,
                    now,
                ),
            };
            update.execute(&mut *tx).await?;
        }
        for remainder in fan_outs {
            Self::split_fan_out(&mut tx, remainder, now).await?;
        }
        tx.commit().await
    }

    /// Ends a job whose claim is still current as `state` (`failed` or `dead`).
    pub(super) fn end_job<'q>(
        done: &'q Completion,
        state: &'static str,
        detail: &'q str,
        now: UnixMillis,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        sqlx::query(
            "UPDATE delivery_jobs SET state = $1, lease_owner = NULL, lease_until = NULL, \
             failures = failures + 1, last_error = $2, updated_at = $3 \
             WHERE id = $4 AND state = 'leased' AND attempts = $5",
        )
        .bind(state)
        .bind(detail)
        .bind(now)
        .bind(done.job_id)
        .bind(done.attempt)
    }

    /// Ends this step and starts the route's next addressable step, if there is one.
    /// False (and nothing written) when the route has no further step or the claim is no
    /// longer current.
    async fn move_to_next_step(
        tx: &mut AnyConnection,
        done: &Completion,
        route: &RouteStep,
        now: UnixMillis,
    ) -> Result<bool, sqlx::Error> {
        let next = Self::next_step(tx, &route.message_id, route.step).await?;
        let Some((step, channel, recipient, payload)) = next else {
            return Ok(false);
        };
        let state = if done.next == Next::Dead {
            "dead"
        } else {
            "failed"
        };
        let detail = format!("{}; moved on to step {step} (`{channel}`)", done.detail);
        let ended = Self::end_job(done, state, &detail, now)
            .execute(&mut *tx)
            .await?;
        if ended.rows_affected() == 0 {
            return Ok(false);
        }
        let (expires_at,): (i64,) =
            sqlx::query_as("SELECT expires_at FROM delivery_jobs WHERE id = $1")
                .bind(done.job_id)
                .fetch_one(&mut *tx)
                .await?;
        let job = StepJob {
            message_id: &route.message_id,
            step,
            channel: &channel,
            recipient: &recipient,
            payload: &payload,
        };
        Self::enqueue_step(tx, &job, now, expires_at).await?;
        Ok(true)
    }

    /// The route's first addressable step after `step` that has no job yet: its number,
    /// channel, recipient address and payload.
    pub(super) async fn next_step(
        tx: &mut AnyConnection,
        message_id: &str,
        step: i64,
    ) -> Result<Option<(i64, String, String, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT step, channel, recipient, payload FROM message_steps \
             WHERE message_id = $1 AND step > $2 AND job_id IS NULL AND recipient IS NOT NULL \
             ORDER BY step LIMIT 1",
        )
        .bind(message_id)
        .bind(step)
        .fetch_optional(&mut *tx)
        .await
    }

    /// Queues the job of one route step and links the step to it. The job inherits the
    /// message's maximum age, so a long route cannot outlive the retry policy.
    pub(super) async fn enqueue_step(
        tx: &mut AnyConnection,
        job: &StepJob<'_>,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<i64, sqlx::Error> {
        let key = format!("{}/{}", job.message_id, job.step);
        let row = QueuedRow {
            idempotency_key: &key,
            channel: job.channel,
            recipient: job.recipient,
            recipients: None,
            payload: job.payload,
            expires_at,
            route: Some((job.message_id, job.step)),
        };
        let id = Self::insert_queued(tx, &row, now).await?.id;
        sqlx::query("UPDATE message_steps SET job_id = $1 WHERE message_id = $2 AND step = $3")
            .bind(id)
            .bind(job.message_id)
            .bind(job.step)
            .execute(&mut *tx)
            .await?;
        Ok(id)
    }
}

/// A job row to queue.
pub(super) struct QueuedRow<'a> {
    pub idempotency_key: &'a str,
    pub channel: &'a str,
    pub recipient: &'a str,
    /// A fan-out job's recipients, a JSON array.
    pub recipients: Option<&'a str>,
    pub payload: &'a str,
    pub expires_at: UnixMillis,
    /// The routed message and step the job delivers.
    pub route: Option<(&'a str, i64)>,
}

/// One route step's job, ready to queue.
#[derive(Debug, Clone)]
pub(super) struct StepJob<'a> {
    pub message_id: &'a str,
    pub step: i64,
    pub channel: &'a str,
    pub recipient: &'a str,
    pub payload: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::TestDb;

    /// A claim must read as many index entries as it leases, not the whole backlog.
    #[tokio::test]
    async fn a_claim_on_sqlite_walks_the_due_index_without_sorting() {
        let db = TestDb::sqlite().await.unwrap();
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {SQLITE_DUE_JOBS}"))
                .bind(0_i64)
                .bind(10_i64)
                .bind(0_i64)
                .bind(0_i64)
                .fetch_all(db.db.reader())
                .await
                .unwrap();
        let steps: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            steps
                .iter()
                .any(|step| step.contains("USING INDEX delivery_jobs_due")),
            "{steps:?}"
        );
        assert!(
            !steps.iter().any(|step| step.contains("TEMP B-TREE")),
            "{steps:?}"
        );
    }

    /// The plan of `sql` on a PostgreSQL table of queued jobs that has never been analysed
    /// (the state every new database starts in), after `settings` in the same transaction.
    async fn postgres_plan_without_statistics(settings: Option<&str>, sql: &str) -> Option<String> {
        let test_db = TestDb::postgres().await.unwrap()?;
        let outbox = Outbox::new(test_db.db.clone());
        let keys: Vec<String> = (0..5_000).map(|i| format!("k-{i}")).collect();
        let jobs: Vec<NewJob<'_>> = keys
            .iter()
            .map(|key| NewJob {
                idempotency_key: key,
                channel: "log",
                recipient: key,
                payload: "{}",
            })
            .collect();
        outbox
            .enqueue_all(&jobs, 1_000, std::time::Duration::from_secs(3600))
            .await
            .unwrap();
        let mut tx = test_db.db.writer().begin().await.unwrap();
        if let Some(settings) = settings {
            sqlx::query(settings).execute(&mut *tx).await.unwrap();
        }
        let plan: Vec<(String,)> = sqlx::query_as(sql).fetch_all(&mut *tx).await.unwrap();
        tx.rollback().await.unwrap();
        test_db.cleanup().await.unwrap();
        Some(
            plan.into_iter()
                .map(|(line,)| line)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }

    /// Without statistics the planner would read and sort every due job per claim.
    #[tokio::test]
    async fn a_claim_on_postgres_walks_the_due_index_without_sorting() {
        let sql = format!(
            "EXPLAIN {}",
            POSTGRES_CLAIM
                .replace("$1", "'w'")
                .replace("$2", "9000")
                .replace("$3", "2000")
                .replace("$4", "100")
                .replace("$5", "0")
                .replace("$6", "0")
        );
        let Some(plan) = postgres_plan_without_statistics(Some(POSTGRES_CLAIM_PLANNER), &sql).await
        else {
            return;
        };
        assert!(
            plan.contains("Index Scan using delivery_jobs_due"),
            "{plan}"
        );
        assert!(!plan.contains("Sort"), "{plan}");
    }

    /// Recording deliveries must look their jobs up by id, not scan the table.
    #[tokio::test]
    async fn marking_jobs_sent_on_postgres_looks_them_up_by_id() {
        let sql = format!(
            "EXPLAIN {}",
            mark_sent_sql(Backend::Postgres)
                .replace("$1", "3000")
                .replace("$2", &format!("'{}'", postgres_array(&[1, 2, 3])))
        );
        let Some(plan) = postgres_plan_without_statistics(None, &sql).await else {
            return;
        };
        assert!(plan.contains("delivery_jobs_pkey"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }

    #[test]
    fn ids_become_a_postgres_array_literal() {
        assert_eq!(postgres_array(&[]), "{}");
        assert_eq!(postgres_array(&[7]), "{7}");
        assert_eq!(postgres_array(&[1, -2, 30]), "{1,-2,30}");
    }

    /// A database upgraded to the keys table must still know the keys of the jobs it had:
    /// a key forgotten there would queue its job again and send the message twice.
    #[tokio::test]
    async fn keys_of_jobs_queued_before_the_keys_table_still_count_after_it() {
        let Some(test_db) = TestDb::postgres().await.unwrap() else {
            return;
        };
        let db = &test_db.db;
        // Back to the schema before migration 7's keys table, with one job queued there.
        for sql in [
            "DROP TABLE delivery_job_keys",
            "ALTER TABLE delivery_jobs ADD CONSTRAINT delivery_jobs_idempotency_key_key \
             UNIQUE (idempotency_key)",
            "DELETE FROM _sqlx_migrations WHERE version = 20261206000007",
            "INSERT INTO delivery_jobs (idempotency_key, channel, recipient, payload, state, \
             run_at, created_at, updated_at, expires_at) \
             VALUES ('order-42', 'log', 'u1', '{}', 'sent', 1, 1, 1, 2)",
        ] {
            sqlx::query(sql).execute(db.writer()).await.unwrap();
        }
        let (old_id,): (i64,) = sqlx::query_as("SELECT id FROM delivery_jobs")
            .fetch_one(db.reader())
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let outbox = Outbox::new(db.clone());
        let again = outbox
            .enqueue_all(
                &[
                    NewJob {
                        idempotency_key: "order-42",
                        channel: "log",
                        recipient: "u1",
                        payload: "{}",
                    },
                    NewJob {
                        idempotency_key: "order-43",
                        channel: "log",
                        recipient: "u1",
                        payload: "{}",
                    },
                ],
                10,
                std::time::Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert_eq!(
            again[0],
            Enqueued {
                id: old_id,
                created: false
            }
        );
        assert!(again[1].created);
        assert!(again[1].id > old_id, "new jobs take ids after the old ones");
        test_db.cleanup().await.unwrap();
    }
}
