//! Fan-out jobs end to end over a real outbox (SQLite, and PostgreSQL when configured): a
//! job's recipients go out in calls of the channel's batch size; what a call does not
//! deliver carries on as jobs of its own, once; a call that fails for everyone retries the
//! job as a whole; a quota that runs out part-way holds the rest for their window.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{DeliverySetup, Dispatcher, Outbox};
use crate::channels::{
    AddressKind, Audience, Channel, ChannelStatus, Message, SendContext, SendResult, Verdict,
};
use crate::clock::{Clock, ManualClock, SharedClock};
use crate::db::testing::TestDb;
use crate::delivery::policy::Next;
use crate::delivery::store::{FanOutRemainder, NewFanOut, RecipientOutcome};
use crate::rules::{DeliverySettings, Limits};

const BATCH: usize = 3;
/// Two days, so a recipient held for tomorrow's quota is still within its age.
const MAX_AGE: Duration = Duration::from_secs(2 * 86_400);

/// A batching provider: refuses the addresses in `invalid`, fails every call while `down`,
/// and records the recipients of each call.
#[derive(Debug, Default)]
struct Batcher {
    invalid: BTreeSet<String>,
    down: Mutex<bool>,
    calls: Mutex<Vec<Vec<String>>>,
}

#[async_trait::async_trait]
impl Channel for Batcher {
    fn kind(&self) -> &'static str {
        "batcher"
    }
    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::WecomUser)
    }
    fn max_batch(&self) -> usize {
        BATCH
    }
    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        self.send_batch(std::slice::from_ref(ctx), message)
            .await
            .remove(0)
    }
    async fn send_batch(&self, batch: &[SendContext<'_>], _: &Message) -> Vec<SendResult> {
        let to: Vec<String> = batch.iter().map(|ctx| ctx.recipient.to_string()).collect();
        self.calls.lock().unwrap().push(to.clone());
        if *self.down.lock().unwrap() {
            let down = SendResult::new(Verdict::Retryable { after: None }, Some(503), "down");
            return vec![down; batch.len()];
        }
        to.iter()
            .map(|recipient| {
                if self.invalid.contains(recipient) {
                    SendResult::new(Verdict::RecipientInvalid, Some(200), "invaliduser")
                } else {
                    SendResult::new(Verdict::Delivered, Some(200), "ok").with_ref("msgid-1")
                }
            })
            .collect()
    }
}

struct Setup {
    channel: Arc<Batcher>,
    limits: Limits,
}

impl DeliverySetup for Setup {
    fn settings(&self) -> DeliverySettings {
        DeliverySettings::default()
    }
    fn channel(&self, _: &str) -> Option<ChannelStatus> {
        Some(ChannelStatus::Ready(self.channel.clone()))
    }
    fn batch_size(&self, _: &str) -> usize {
        BATCH
    }
    fn largest_batch(&self) -> usize {
        BATCH
    }
    fn limits(&self, _: &str) -> Limits {
        self.limits
    }
}

struct Harness {
    test_db: TestDb,
    outbox: Outbox,
    clock: Arc<ManualClock>,
    channel: Arc<Batcher>,
    dispatcher: Dispatcher<Setup>,
}

async fn harness(db: TestDb, invalid: &[&str], limits: Limits) -> Harness {
    let outbox = Outbox::new(db.db.clone());
    let clock = Arc::new(ManualClock::new(1_764_000_000_000));
    let shared: SharedClock = clock.clone();
    let channel = Arc::new(Batcher {
        invalid: invalid.iter().map(|r| r.to_string()).collect(),
        ..Batcher::default()
    });
    let setup = Arc::new(Setup {
        channel: channel.clone(),
        limits,
    });
    let dispatcher = Dispatcher::new(outbox.clone(), setup, shared, "w".into());
    Harness {
        test_db: db,
        outbox,
        clock,
        channel,
        dispatcher,
    }
}

const SEVEN: [&str; 7] = ["r1", "r2", "r3", "r4", "r5", "r6", "r7"];

impl Harness {
    async fn fan_out(&self, recipients: &[&str]) {
        let created = self
            .outbox
            .fan_out(
                "campaign-1",
                "wecom",
                r#"{"text":"新品上市"}"#,
                recipients,
                100,
                self.clock.now_ms(),
                MAX_AGE,
            )
            .await
            .unwrap();
        assert_eq!(created, 1);
    }

    /// (key, recipient, state, attempts) of every job, by id.
    async fn jobs(&self) -> Vec<(String, String, String, i64)> {
        sqlx::query_as(
            "SELECT idempotency_key, recipient, state, attempts FROM delivery_jobs ORDER BY id",
        )
        .fetch_all(self.outbox.db().reader())
        .await
        .unwrap()
    }

    /// (job key, outcome, detail) of every attempt, by id.
    async fn attempts(&self) -> Vec<(String, String, String)> {
        sqlx::query_as(
            "SELECT j.idempotency_key, a.outcome, a.detail FROM delivery_attempts a \
             JOIN delivery_jobs j ON j.id = a.job_id ORDER BY a.id",
        )
        .fetch_all(self.outbox.db().reader())
        .await
        .unwrap()
    }

    fn calls(&self) -> Vec<Vec<String>> {
        self.channel.calls.lock().unwrap().clone()
    }
}

fn names(calls: &[&[&str]]) -> Vec<Vec<String>> {
    calls
        .iter()
        .map(|call| call.iter().map(|r| r.to_string()).collect())
        .collect()
}

async fn calls_of_the_batch_size_and_the_undelivered_carry_on(db: TestDb) {
    let h = harness(db, &["r2", "r7"], Limits::default()).await;
    h.fan_out(&SEVEN).await;
    assert_eq!(h.dispatcher.drain_due().await.unwrap(), 1);
    assert_eq!(
        h.calls(),
        names(&[&["r1", "r2", "r3"], &["r4", "r5", "r6"], &["r7"]])
    );
    let jobs = h.jobs().await;
    let job = |key: &str, recipient: &str, state: &str| {
        (key.to_string(), recipient.to_string(), state.to_string(), 1)
    };
    assert_eq!(
        jobs,
        vec![
            job("campaign-1#0", "", "sent"),
            job("campaign-1#0/r2", "r2", "failed"),
            job("campaign-1#0/r7", "r7", "failed"),
        ]
    );
    let attempts = h.attempts().await;
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert_eq!(attempts[0].0, "campaign-1#0");
    assert_eq!(attempts[0].1, "partial");
    assert_eq!(
        attempts[0].2,
        "delivered to 5 of 7 recipients; the other 2 carry on as jobs of their own"
    );
    assert!(
        attempts[1..]
            .iter()
            .all(|(_, outcome, detail)| outcome == "recipient_invalid" && detail == "invaliduser"),
        "{attempts:?}"
    );
    let provider_ref: Option<String> =
        sqlx::query_scalar("SELECT provider_ref FROM delivery_attempts ORDER BY id LIMIT 1")
            .fetch_one(h.outbox.db().reader())
            .await
            .unwrap();
    assert_eq!(provider_ref.as_deref(), Some("msgid-1"));

    let (row, _) = h.outbox.job(1).await.unwrap().expect("the fan-out job");
    assert_eq!(row.fan_out_size, Some(7));
    // Nothing is due any more: no recipient is sent twice.
    assert_eq!(h.dispatcher.drain_due().await.unwrap(), 0);
    assert_eq!(h.calls().len(), 3);
    // A PostgreSQL test database outlives the process unless it is dropped.
    h.test_db.cleanup().await.unwrap();
}

#[tokio::test]
async fn fan_out_calls_of_the_batch_size_and_the_undelivered_carry_on_sqlite() {
    calls_of_the_batch_size_and_the_undelivered_carry_on(TestDb::sqlite().await.unwrap()).await;
}

#[tokio::test]
async fn fan_out_calls_of_the_batch_size_and_the_undelivered_carry_on_postgres() {
    if let Some(db) = TestDb::postgres().await.unwrap() {
        calls_of_the_batch_size_and_the_undelivered_carry_on(db).await;
    }
}

#[tokio::test]
async fn a_call_that_fails_for_everyone_retries_the_job_as_a_whole() {
    let h = harness(TestDb::sqlite().await.unwrap(), &[], Limits::default()).await;
    *h.channel.down.lock().unwrap() = true;
    h.fan_out(&SEVEN).await;
    h.dispatcher.drain_due().await.unwrap();
    let jobs = h.jobs().await;
    assert_eq!(
        jobs.len(),
        1,
        "no job per recipient for an outage: {jobs:?}"
    );
    assert_eq!(jobs[0].2, "retry_wait");
    let attempts = h.attempts().await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].1, "retryable");
    assert_eq!(attempts[0].2, "down (all 7 recipients)");

    *h.channel.down.lock().unwrap() = false;
    h.clock.advance(Duration::from_secs(60));
    assert_eq!(h.dispatcher.drain_due().await.unwrap(), 1);
    let jobs = h.jobs().await;
    assert_eq!(
        jobs,
        vec![(
            "campaign-1#0".to_string(),
            String::new(),
            "sent".to_string(),
            2
        )]
    );
    assert_eq!(h.calls().len(), 6, "three calls down, three calls up");
}

#[tokio::test]
async fn a_quota_that_runs_out_part_way_holds_the_rest_for_their_window() {
    let limits = Limits {
        per_day: Some(4),
        ..Limits::default()
    };
    let h = harness(TestDb::sqlite().await.unwrap(), &[], limits).await;
    h.fan_out(&SEVEN).await;
    h.dispatcher.drain_due().await.unwrap();
    let sent: usize = h.calls().iter().map(Vec::len).sum();
    assert_eq!(sent, 4, "{:?}", h.calls());
    let waiting: Vec<(String, String, String, i64)> = h
        .jobs()
        .await
        .into_iter()
        .filter(|job| job.2 == "retry_wait")
        .collect();
    assert_eq!(
        waiting.iter().map(|job| job.1.as_str()).collect::<Vec<_>>(),
        ["r5", "r6", "r7"]
    );
    let run_at: Vec<i64> = sqlx::query_scalar(
        "SELECT run_at FROM delivery_jobs WHERE state = 'retry_wait' ORDER BY id",
    )
    .fetch_all(h.outbox.db().reader())
    .await
    .unwrap();
    // Midnight in Shanghai, when the day's quota is new, spread by the retry jitter (±20 %).
    let wait = 86_400_000;
    let earliest = 1_764_000_000_000 + wait * 8 / 10;
    assert!(run_at.iter().all(|at| *at >= earliest), "{run_at:?}");
}

#[tokio::test]
async fn recording_a_split_twice_makes_no_second_job() {
    let h = harness(TestDb::sqlite().await.unwrap(), &[], Limits::default()).await;
    let remainder = FanOutRemainder {
        idempotency_key: "c#0".to_string(),
        channel: "wecom".to_string(),
        payload: "{}".to_string(),
        expires_at: i64::MAX,
        worker: "w".to_string(),
        started_at: 1,
        duration_ms: 2,
        recipients: vec![RecipientOutcome {
            recipient: "r9".to_string(),
            outcome: "retryable",
            status: Some(503),
            detail: "down".to_string(),
            next: Next::Retry {
                run_at: 10,
                counts_as_failure: true,
            },
        }],
    };
    for _ in 0..2 {
        h.outbox
            .complete_with(&[], std::slice::from_ref(&remainder), 5)
            .await
            .unwrap();
    }
    assert_eq!(
        h.jobs().await,
        vec![(
            "c#0/r9".to_string(),
            "r9".to_string(),
            "retry_wait".to_string(),
            1
        )]
    );
    assert_eq!(h.attempts().await.len(), 1);
}

#[tokio::test]
async fn a_fan_out_is_refused_without_recipients_or_with_a_broken_address() {
    let h = harness(TestDb::sqlite().await.unwrap(), &[], Limits::default()).await;
    let mut conn = h.outbox.db().writer().acquire().await.unwrap();
    for recipients in [&[][..], &["ok", "two\nlines"][..], &[""][..]] {
        let job = NewFanOut {
            idempotency_key: "k",
            channel: "wecom",
            payload: "{}",
            recipients,
        };
        let refused = Outbox::enqueue_fan_out(&mut conn, &job, 0, MAX_AGE).await;
        assert!(
            matches!(refused, Err(sqlx::Error::InvalidArgument(_))),
            "{recipients:?}: {refused:?}"
        );
    }
    drop(conn);
    h.fan_out(&["a"]).await;
    let again = h
        .outbox
        .fan_out("campaign-1", "wecom", "{}", &["a"], 100, 0, MAX_AGE)
        .await
        .unwrap();
    assert_eq!(again, 0, "the same key twice is one fan-out");
    assert!(h.jobs().await.iter().all(|job| job.3 == 0));
}
