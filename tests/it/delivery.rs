//! Workers against real outbox tables: delivery, retry on the policy's schedule, rate
//! limits, missing channels, panicking adapters, the maximum age, and graceful drain.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qunfa::channels::{
    AddressKind, Audience, Channel, ChannelStatus, LogChannel, Message, SendContext, SendResult,
    Verdict,
};
use qunfa::clock::{Clock, ManualClock, SharedClock};
use qunfa::db::testing::TestDb;
use qunfa::delivery::{DeliverySetup, Dispatcher, JobState, NewJob, Outbox};
use qunfa::rules::{DeliverySettings, RetryPolicy};
use tokio_util::sync::CancellationToken;

/// A provider that answers from a script, then delivers.
#[derive(Debug, Default)]
struct Scripted {
    answers: Mutex<Vec<Verdict>>,
    calls: AtomicUsize,
    panic_first: bool,
    delay: Option<Duration>,
}

#[async_trait::async_trait]
impl Channel for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::ExternalId)
    }

    async fn send(&self, _ctx: &SendContext<'_>, _message: &Message) -> SendResult {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.panic_first && call == 0 {
            panic!("adapter bug");
        }
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        let verdict = {
            let mut answers = self.answers.lock().unwrap();
            if answers.is_empty() {
                Verdict::Delivered
            } else {
                answers.remove(0)
            }
        };
        SendResult::new(verdict, Some(200), "scripted")
    }
}

struct Setup {
    settings: DeliverySettings,
    channels: BTreeMap<String, ChannelStatus>,
}

impl DeliverySetup for Setup {
    fn settings(&self) -> DeliverySettings {
        self.settings.clone()
    }
    fn channel(&self, id: &str) -> Option<ChannelStatus> {
        self.channels.get(id).cloned()
    }
}

fn settings() -> DeliverySettings {
    DeliverySettings {
        retry: RetryPolicy {
            schedule: vec![Duration::from_secs(10), Duration::from_secs(60)],
            jitter: 0.0,
            max_age: Duration::from_secs(3_600),
        },
        poll_interval: Duration::from_millis(20),
        ..DeliverySettings::default()
    }
}

struct Harness {
    test_db: TestDb,
    outbox: Outbox,
    clock: ManualClock,
    dispatcher: Dispatcher<Setup>,
}

async fn harness(channels: Vec<(&str, ChannelStatus)>) -> Harness {
    let test_db = TestDb::sqlite().await.unwrap();
    let outbox = Outbox::new(test_db.db.clone());
    let clock = ManualClock::new(1_000_000);
    let setup = Setup {
        settings: settings(),
        channels: channels
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    };
    let shared: SharedClock = Arc::new(clock.clone());
    let dispatcher = Dispatcher::new(
        outbox.clone(),
        Arc::new(setup),
        shared,
        "test-worker".into(),
    );
    Harness {
        test_db,
        outbox,
        clock,
        dispatcher,
    }
}

/// A harness whose dispatcher sends through `channel` (as `net`) with `concurrency` slots.
async fn harness_with_concurrency(channel: Arc<Scripted>, concurrency: usize) -> Harness {
    let mut h = harness(vec![("net", ChannelStatus::Ready(channel.clone()))]).await;
    let setup = Setup {
        settings: DeliverySettings {
            concurrency,
            ..settings()
        },
        channels: [("net".to_string(), ChannelStatus::Ready(channel))].into(),
    };
    let shared: SharedClock = Arc::new(h.clock.clone());
    h.dispatcher = Dispatcher::new(h.outbox.clone(), Arc::new(setup), shared, "w".into());
    h
}

async fn enqueue(h: &Harness, channel: &str, n: usize) -> Vec<i64> {
    let keys: Vec<String> = (0..n).map(|i| format!("{channel}-{i}")).collect();
    let payload = serde_json::to_string(&Message::text("你好")).unwrap();
    let jobs: Vec<NewJob<'_>> = keys
        .iter()
        .map(|k| NewJob {
            idempotency_key: k,
            channel,
            recipient: "u1",
            payload: &payload,
        })
        .collect();
    let now = h.clock.now_ms();
    h.outbox
        .enqueue_all(&jobs, now, settings().retry.max_age)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect()
}

fn ready(channel: impl Channel + 'static) -> ChannelStatus {
    ChannelStatus::Ready(Arc::new(channel))
}

#[tokio::test]
async fn every_job_reaches_the_log_channel_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let clock: SharedClock = Arc::new(ManualClock::new(0));
    let h = harness(vec![(
        "log",
        ready(LogChannel::new("log", path.clone(), clock)),
    )])
    .await;
    enqueue(&h, "log", 100).await;
    assert_eq!(h.dispatcher.drain_due().await.unwrap(), 100);
    assert_eq!(h.dispatcher.drain_due().await.unwrap(), 0);
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 100);
    assert_eq!(h.outbox.summary(0).await.unwrap().sent, 100);
    h.test_db.cleanup().await.unwrap();
}

#[tokio::test]
async fn failures_retry_on_the_schedule_and_then_deliver() {
    let channel = Scripted {
        answers: Mutex::new(vec![
            Verdict::Retryable { after: None },
            Verdict::Retryable { after: None },
        ]),
        ..Scripted::default()
    };
    let h = harness(vec![("flaky", ready(channel))]).await;
    let ids = enqueue(&h, "flaky", 1).await;
    h.dispatcher.drain_due().await.unwrap();
    let (job, _) = h.outbox.job(ids[0]).await.unwrap().unwrap();
    assert_eq!((job.state, job.failures), (JobState::RetryWait, 1));
    assert_eq!(job.run_at, 1_000_000 + 10_000, "first step of the schedule");
    h.clock.advance(Duration::from_secs(9));
    assert_eq!(h.dispatcher.drain_due().await.unwrap(), 0, "not due yet");
    h.clock.advance(Duration::from_secs(1));
    h.dispatcher.drain_due().await.unwrap();
    let (job, _) = h.outbox.job(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        job.run_at,
        1_010_000 + 60_000,
        "second step of the schedule"
    );
    h.clock.advance(Duration::from_secs(60));
    h.dispatcher.drain_due().await.unwrap();
    let (job, attempts) = h.outbox.job(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Sent);
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["retryable", "retryable", "delivered"]);
    h.test_db.cleanup().await.unwrap();
}

#[tokio::test]
async fn rate_limits_wait_as_asked_without_spending_the_retry_budget() {
    let channel = Scripted {
        answers: Mutex::new(vec![Verdict::RateLimited {
            wait: Duration::from_secs(600),
        }]),
        ..Scripted::default()
    };
    let h = harness(vec![("slow", ready(channel))]).await;
    let ids = enqueue(&h, "slow", 1).await;
    h.dispatcher.drain_due().await.unwrap();
    let (job, _) = h.outbox.job(ids[0]).await.unwrap().unwrap();
    assert_eq!((job.state, job.failures), (JobState::RetryWait, 0));
    assert!(job.run_at >= 1_000_000 + 540_000, "{}", job.run_at);
    h.test_db.cleanup().await.unwrap();
}

#[tokio::test]
async fn permanent_refusals_fail_and_exhausted_retries_die_with_the_reason() {
    let blocked = Scripted {
        answers: Mutex::new(vec![Verdict::ContentBlocked]),
        ..Scripted::default()
    };
    let down = Scripted {
        answers: Mutex::new(vec![Verdict::Retryable { after: None }; 1000]),
        ..Scripted::default()
    };
    let h = harness(vec![("blocked", ready(blocked)), ("down", ready(down))]).await;
    let blocked_id = enqueue(&h, "blocked", 1).await[0];
    let down_id = enqueue(&h, "down", 1).await[0];
    for _ in 0..100 {
        h.dispatcher.drain_due().await.unwrap();
        h.clock.advance(Duration::from_secs(60));
    }
    let (job, attempts) = h.outbox.job(blocked_id).await.unwrap().unwrap();
    assert_eq!((job.state, attempts.len()), (JobState::Failed, 1));
    let (job, attempts) = h.outbox.job(down_id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert!(job.last_error.unwrap().contains("retries exhausted"));
    // One hour of maximum age at one try a minute (after the 10 s first step).
    assert!((55..=62).contains(&attempts.len()), "{}", attempts.len());
    h.test_db.cleanup().await.unwrap();
}

#[tokio::test]
async fn missing_or_disabled_channels_wait_instead_of_losing_the_job() {
    let h = harness(vec![(
        "hooks",
        ChannelStatus::Disabled {
            reason: "environment variable `X` is not set".into(),
        },
    )])
    .await;
    let disabled = enqueue(&h, "hooks", 1).await[0];
    let missing = enqueue(&h, "gone", 1).await[0];
    h.dispatcher.drain_due().await.unwrap();
    for (id, needle) in [(disabled, "`X` is not set"), (missing, "not in the rules")] {
        let (job, attempts) = h.outbox.job(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::RetryWait);
        assert!(job.last_error.unwrap().contains(needle));
        assert_eq!(attempts[0].outcome, "not_sent");
    }
    h.test_db.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_panicking_adapter_is_a_retry_not_a_stuck_job() {
    let channel = Scripted {
        panic_first: true,
        ..Scripted::default()
    };
    let h = harness(vec![("buggy", ready(channel))]).await;
    let id = enqueue(&h, "buggy", 1).await[0];
    h.dispatcher.drain_due().await.unwrap();
    let (job, attempts) = h.outbox.job(id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, attempts[0].outcome.as_str()),
        (JobState::RetryWait, "adapter_panic")
    );
    h.test_db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_dispatcher_delivers_and_drains_on_shutdown() {
    let channel = Arc::new(Scripted {
        delay: Some(Duration::from_millis(5)),
        ..Scripted::default()
    });
    let h = harness(vec![("net", ChannelStatus::Ready(channel.clone()))]).await;
    enqueue(&h, "net", 300).await;
    let cancel = CancellationToken::new();
    let outbox = h.outbox.clone();
    let run = tokio::spawn(h.dispatcher.run(cancel.clone(), Duration::from_secs(5)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while outbox.summary(0).await.unwrap().sent < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    run.await.unwrap();
    assert_eq!(channel.calls.load(Ordering::SeqCst), 300);
    let summary = outbox.summary(0).await.unwrap();
    assert_eq!((summary.sent, summary.leased), (300, 0));
    h.test_db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_claimed_jobs_it_never_started() {
    let channel = Arc::new(Scripted {
        delay: Some(Duration::from_millis(50)),
        ..Scripted::default()
    });
    let h = harness_with_concurrency(channel.clone(), 2).await;
    enqueue(&h, "net", 100).await;
    let cancel = CancellationToken::new();
    let outbox = h.outbox.clone();
    let run = tokio::spawn(h.dispatcher.run(cancel.clone(), Duration::from_secs(5)));
    while channel.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    run.await.unwrap();
    let summary = outbox.summary(0).await.unwrap();
    assert_eq!(
        summary.leased, 0,
        "nothing left leased after a graceful stop"
    );
    assert_eq!(summary.sent + summary.queued, 100);
    assert!(
        summary.queued >= 90,
        "the claimed-ahead jobs went back: {summary:?}"
    );
    let next = outbox
        .list_jobs(Some(JobState::Queued), None, 1)
        .await
        .unwrap();
    assert_eq!(next[0].attempts, 0, "a handed-back claim is not an attempt");
    h.test_db.cleanup().await.unwrap();
}

/// Claims start where the last one ended; a job that becomes due behind that place (here
/// enqueued with an earlier due time while the backlog is being sent) is still sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_due_behind_the_running_claims_is_still_sent() {
    let channel = Arc::new(Scripted {
        delay: Some(Duration::from_millis(1)),
        ..Scripted::default()
    });
    let h = harness_with_concurrency(channel.clone(), 1).await;
    enqueue(&h, "net", 120).await;
    let cancel = CancellationToken::new();
    let outbox = h.outbox.clone();
    let run = tokio::spawn(h.dispatcher.run(cancel.clone(), Duration::from_secs(5)));
    while channel.calls.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let payload = serde_json::to_string(&Message::text("迟到")).unwrap();
    let behind = NewJob {
        idempotency_key: "behind",
        channel: "net",
        recipient: "u2",
        payload: &payload,
    };
    let earlier = h.clock.now_ms() - 60_000;
    outbox
        .enqueue_all(&[behind], earlier, settings().retry.max_age)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while outbox.summary(0).await.unwrap().sent < 121 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job behind the claims was not sent"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    run.await.unwrap();
    assert_eq!(channel.calls.load(Ordering::SeqCst), 121);
    h.test_db.cleanup().await.unwrap();
}
