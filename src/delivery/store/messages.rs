//! Routed messages: one message to one person over an ordered route of channels. Every
//! step is resolved when the message is accepted, the first addressable step's job is
//! queued in the same transaction, and later steps are queued by `Outbox::complete` when
//! an earlier one cannot reach the person (see `move_to_next_step`).

use serde::Serialize;
use sqlx::AnyConnection;

use super::queue::StepJob;
use super::{JobState, Outbox};
use crate::clock::{UnixMillis, millis};

/// A message to accept.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The caller's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// SHA-256 of the request as the caller sent it, so the same key with another
    /// message is refused instead of silently answered with the first one.
    pub request_sha256: String,
    /// The recipient object as given, JSON.
    pub recipient: String,
    pub steps: Vec<NewStep>,
}

/// One channel of a route.
#[derive(Debug, Clone)]
pub struct NewStep {
    pub channel: String,
    /// The person's address on this channel; `None` skips the step for `skipped`.
    pub recipient: Option<String>,
    /// The content for this channel (`channels::Message`), JSON.
    pub payload: String,
    pub skipped: Option<String>,
}

/// What accepting one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A new message with this id (or the earlier one with the same key and request).
    Message { id: String, created: bool },
    /// The idempotency key names an earlier, different message.
    KeyReused { id: String },
}

/// Where a routed message stands, for `GET /api/v1/messages/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Accepted, no call made yet.
    Queued,
    /// A step is being tried or waits for a retry.
    Sending,
    /// A step reached the person.
    Delivered,
    /// Every step failed or was skipped, or the content was refused.
    Failed,
}

/// Where one step of a route stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// The route has not reached this step (and will not if an earlier one delivers).
    Waiting,
    Queued,
    Sending,
    /// Waiting for a retry after a failed attempt or a rate limit.
    Retrying,
    Delivered,
    Failed,
    /// The recipient has no address for this channel.
    Skipped,
}

/// One provider call of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MessageAttempt {
    /// RFC 3339.
    pub at: String,
    pub outcome: String,
    pub status: Option<i64>,
    pub detail: Option<String>,
    /// The provider's id for what it accepted.
    pub provider_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MessageStep {
    pub step: i64,
    pub channel: String,
    pub state: StepState,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
    pub attempts: Vec<MessageAttempt>,
    /// What the provider reported later (delivered, undelivered, opened, ...).
    pub receipts: Vec<MessageReceipt>,
}

/// A delivery receipt for a step's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MessageReceipt {
    /// RFC 3339.
    pub at: String,
    pub status: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: String,
    pub state: MessageState,
    /// RFC 3339.
    pub created_at: String,
    #[schema(value_type = Object)]
    pub recipient: serde_json::Value,
    pub steps: Vec<MessageStep>,
}

/// step, channel, job id, skipped reason, job state, job's last error.
type StepRow = (
    i64,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);
/// job id, started at, outcome, HTTP status, detail, provider ref.
type AttemptOfStep = (
    i64,
    i64,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
);

fn rfc3339(ms: UnixMillis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|at| at.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

impl Outbox {
    /// Accepts messages in one transaction: all or none. The first addressable step of
    /// each new message is queued at once.
    pub async fn accept_messages(
        &self,
        messages: &[NewMessage],
        now: UnixMillis,
        max_age: std::time::Duration,
    ) -> Result<Vec<Accepted>, sqlx::Error> {
        let mut tx = self.db.writer().begin().await?;
        let mut out = Vec::with_capacity(messages.len());
        for message in messages {
            out.push(Self::accept_one(&mut tx, message, now, max_age).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Accepts one message inside the caller's transaction (the `/send-test` command
    /// commits it with the chat message's callback id and audit row).
    pub(crate) async fn accept_one(
        tx: &mut AnyConnection,
        message: &NewMessage,
        now: UnixMillis,
        max_age: std::time::Duration,
    ) -> Result<Accepted, sqlx::Error> {
        if let Some(key) = &message.idempotency_key {
            let earlier: Option<(String, Option<String>)> = sqlx::query_as(
                "SELECT id, request_sha256 FROM messages WHERE idempotency_key = $1",
            )
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((id, sha)) = earlier {
                if sha.as_deref() == Some(message.request_sha256.as_str()) {
                    return Ok(Accepted::Message { id, created: false });
                }
                return Ok(Accepted::KeyReused { id });
            }
        }
        let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(
            "INSERT INTO messages (id, idempotency_key, request_sha256, recipient, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(message.idempotency_key.as_deref())
        .bind(&message.request_sha256)
        .bind(&message.recipient)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (index, step) in message.steps.iter().enumerate() {
            sqlx::query(
                "INSERT INTO message_steps (message_id, step, channel, recipient, payload, skipped) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&id)
            .bind(i64::try_from(index).unwrap_or(i64::MAX))
            .bind(&step.channel)
            .bind(step.recipient.as_deref())
            .bind(&step.payload)
            .bind(step.skipped.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        let first = message
            .steps
            .iter()
            .enumerate()
            .find_map(|(index, step)| Some((index, step, step.recipient.as_deref()?)));
        if let Some((index, step, recipient)) = first {
            let job = StepJob {
                message_id: &id,
                step: i64::try_from(index).unwrap_or(i64::MAX),
                channel: &step.channel,
                recipient,
                payload: &step.payload,
            };
            let expires_at = now.saturating_add(millis(max_age));
            Self::enqueue_step(tx, &job, now, expires_at).await?;
        }
        Ok(Accepted::Message { id, created: true })
    }

    /// A routed message with each step and its attempts, or `None` if there is no such id.
    pub async fn message(&self, id: &str) -> Result<Option<MessageView>, sqlx::Error> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT recipient, created_at FROM messages WHERE id = $1")
                .bind(id)
                .fetch_optional(self.db.reader())
                .await?;
        let Some((recipient, created_at)) = row else {
            return Ok(None);
        };
        let steps: Vec<StepRow> = sqlx::query_as(
            "SELECT s.step, s.channel, s.job_id, s.skipped, j.state, j.last_error \
                 FROM message_steps s LEFT JOIN delivery_jobs j ON j.id = s.job_id \
                 WHERE s.message_id = $1 ORDER BY s.step",
        )
        .bind(id)
        .fetch_all(self.db.reader())
        .await?;
        let attempts: Vec<AttemptOfStep> = sqlx::query_as(
            "SELECT a.job_id, a.started_at, a.outcome, a.status, a.detail, a.provider_ref \
                 FROM delivery_attempts a JOIN message_steps s ON s.job_id = a.job_id \
                 WHERE s.message_id = $1 ORDER BY a.id",
        )
        .bind(id)
        .fetch_all(self.db.reader())
        .await?;
        let receipts: Vec<(i64, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT r.job_id, r.received_at, r.status, r.detail \
             FROM delivery_receipts r JOIN message_steps s ON s.job_id = r.job_id \
             WHERE s.message_id = $1 ORDER BY r.id",
        )
        .bind(id)
        .fetch_all(self.db.reader())
        .await?;
        let steps: Vec<MessageStep> = steps
            .into_iter()
            .map(|(step, channel, job_id, skipped, job_state, last_error)| {
                let state = match (
                    skipped.is_some(),
                    job_state.as_deref().and_then(JobState::parse),
                ) {
                    (true, _) => StepState::Skipped,
                    (false, None) => StepState::Waiting,
                    (false, Some(JobState::Queued)) => StepState::Queued,
                    (false, Some(JobState::Leased)) => StepState::Sending,
                    (false, Some(JobState::RetryWait)) => StepState::Retrying,
                    (false, Some(JobState::Sent)) => StepState::Delivered,
                    (false, Some(JobState::Failed | JobState::Dead)) => StepState::Failed,
                };
                let reason = match state {
                    StepState::Skipped => skipped,
                    StepState::Failed | StepState::Retrying => last_error,
                    _ => None,
                };
                let attempts = attempts
                    .iter()
                    .filter(|attempt| Some(attempt.0) == job_id)
                    .map(
                        |(_, at, outcome, status, detail, provider_ref)| MessageAttempt {
                            at: rfc3339(*at),
                            outcome: outcome.clone(),
                            status: *status,
                            detail: detail.clone(),
                            provider_ref: provider_ref.clone(),
                        },
                    )
                    .collect();
                let receipts = receipts
                    .iter()
                    .filter(|receipt| Some(receipt.0) == job_id)
                    .map(|(_, at, status, detail)| MessageReceipt {
                        at: rfc3339(*at),
                        status: status.clone(),
                        detail: detail.clone(),
                    })
                    .collect();
                MessageStep {
                    step,
                    channel,
                    state,
                    reason,
                    attempts,
                    receipts,
                }
            })
            .collect();
        Ok(Some(MessageView {
            id: id.to_string(),
            state: message_state(&steps),
            created_at: rfc3339(created_at),
            recipient: serde_json::from_str(&recipient).unwrap_or(serde_json::Value::Null),
            steps,
        }))
    }
}

/// Delivered once any step delivered; failed when no step is pending any more; queued
/// until the first call; sending in between.
fn message_state(steps: &[MessageStep]) -> MessageState {
    if steps.iter().any(|s| s.state == StepState::Delivered) {
        return MessageState::Delivered;
    }
    let pending = steps.iter().any(|s| {
        matches!(
            s.state,
            StepState::Queued | StepState::Sending | StepState::Retrying
        )
    });
    if !pending {
        return MessageState::Failed;
    }
    let tried = steps.iter().any(|s| !s.attempts.is_empty())
        || steps.iter().any(|s| s.state == StepState::Sending);
    if tried {
        MessageState::Sending
    } else {
        MessageState::Queued
    }
}
