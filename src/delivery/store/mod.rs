//! All SQL of the outbox. `queue.rs`: enqueue inside the caller's transaction, claim with a
//! lease, reap the leases of crashed workers, record outcomes in batches. `inspect.rs`: the
//! read side for operators and metrics. The same statements serve SQLite and PostgreSQL;
//! only row locking differs.

mod fan_out;
mod inspect;
mod messages;
mod queue;
mod receipts;

use serde::{Deserialize, Serialize};

use crate::db::Db;

pub use fan_out::{FanOutRemainder, NewFanOut, RecipientOutcome};
pub use inspect::{AttemptRow, JobRow, OutboxSummary, Requeue};
pub use messages::{
    Accepted, MessageAttempt, MessageState, MessageStep, MessageView, NewMessage, NewStep,
    StepState,
};
pub use queue::{ClaimedJob, Completion, DuePosition, Enqueued, NewJob, RouteStep};
pub use receipts::ReceiptsRecorded;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Leased,
    Sent,
    RetryWait,
    Failed,
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Leased,
        JobState::Sent,
        JobState::RetryWait,
        JobState::Failed,
        JobState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Leased => "leased",
            JobState::Sent => "sent",
            JobState::RetryWait => "retry_wait",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The outbox tables, through the database's write and read pools.
#[derive(Debug, Clone)]
pub struct Outbox {
    db: Db,
}

impl Outbox {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}
