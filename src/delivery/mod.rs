//! When and how often to send: the durable outbox (jobs are rows before anything is
//! sent), leases so a crashed worker's jobs are claimed again, the retry policy, and the
//! workers that call `channels`. Decides nothing about *what* to send.

pub mod alerts;
pub mod breaker;
pub mod policy;
pub mod quota;
pub mod route;
pub mod store;
pub mod worker;

#[cfg(test)]
mod fan_out_tests;
#[cfg(test)]
mod governance_tests;

pub use policy::Next;
pub use store::{
    Accepted, AttemptRow, ClaimedJob, Completion, DuePosition, Enqueued, JobRow, JobState,
    MessageView, NewJob, NewMessage, NewStep, Outbox, OutboxSummary, Requeue, RouteStep,
};
pub use worker::{DeliverySetup, Dispatcher, report_gauges};
