//! Delivery receipts: providers' later reports on what they accepted, recorded against
//! the attempt whose provider ref they name. A receipt that says the message never
//! arrived (undelivered SMS, bounced e-mail) moves a routed message on to its next channel.

use sqlx::AnyConnection;

use super::Outbox;
use super::queue::StepJob;
use crate::channels::{Receipt, ReceiptStatus};
use crate::clock::UnixMillis;

/// What recording a batch of receipts did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiptsRecorded {
    pub stored: usize,
    /// Seen before (the provider retried its callback).
    pub duplicates: usize,
    /// Naming no attempt of this channel; kept, in case the attempt's record is late.
    pub unmatched: usize,
    /// Routed messages moved on to their next channel because of a failure receipt.
    pub moved_on: usize,
}

impl Outbox {
    /// Records receipts for `channel` in one transaction.
    pub async fn record_receipts(
        &self,
        channel: &str,
        receipts: &[Receipt],
        now: UnixMillis,
    ) -> Result<ReceiptsRecorded, sqlx::Error> {
        let mut tx = self.db.writer().begin().await?;
        let mut recorded = ReceiptsRecorded::default();
        for receipt in receipts {
            let attempt: Option<(i64, i64)> = sqlx::query_as(
                "SELECT a.job_id, a.attempt FROM delivery_attempts a \
                 JOIN delivery_jobs j ON j.id = a.job_id \
                 WHERE a.provider_ref = $1 AND j.channel = $2 ORDER BY a.id DESC LIMIT 1",
            )
            .bind(&receipt.provider_ref)
            .bind(channel)
            .fetch_optional(&mut *tx)
            .await?;
            let inserted = sqlx::query(
                "INSERT INTO delivery_receipts \
                 (channel, event_key, provider_ref, status, detail, job_id, attempt, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_key) DO NOTHING",
            )
            .bind(channel)
            .bind(&receipt.event_key)
            .bind(&receipt.provider_ref)
            .bind(receipt.status.as_str())
            .bind(&receipt.detail)
            .bind(attempt.map(|(job, _)| job))
            .bind(attempt.map(|(_, number)| number))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                recorded.duplicates += 1;
                continue;
            }
            recorded.stored += 1;
            let Some((job_id, _)) = attempt else {
                recorded.unmatched += 1;
                continue;
            };
            if receipt.status == ReceiptStatus::Failed
                && Self::undelivered(&mut tx, job_id, &receipt.detail, now).await?
            {
                recorded.moved_on += 1;
            }
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// Marks a sent job as not delivered after all and starts its route's next step. True
    /// when a next step was started.
    async fn undelivered(
        tx: &mut AnyConnection,
        job_id: i64,
        detail: &str,
        now: UnixMillis,
    ) -> Result<bool, sqlx::Error> {
        let reason = format!("the provider reported it undelivered: {detail}");
        let updated = sqlx::query(
            "UPDATE delivery_jobs SET state = 'failed', last_error = $1, updated_at = $2 \
             WHERE id = $3 AND state = 'sent'",
        )
        .bind(&reason)
        .bind(now)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        let route: Option<(Option<String>, Option<i64>, i64)> =
            sqlx::query_as("SELECT message_id, step, expires_at FROM delivery_jobs WHERE id = $1")
                .bind(job_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((Some(message_id), Some(step), expires_at)) = route else {
            return Ok(false);
        };
        let next = Self::next_step(tx, &message_id, step).await?;
        let Some((next_step, channel, recipient, payload)) = next else {
            return Ok(false);
        };
        let job = StepJob {
            message_id: &message_id,
            step: next_step,
            channel: &channel,
            recipient: &recipient,
            payload: &payload,
        };
        // A receipt can come long after the send; the next step still gets a fair chance.
        Self::enqueue_step(tx, &job, now, expires_at.max(now)).await?;
        Ok(true)
    }
}
