//! The workers: claim due jobs in batches, send each through its channel with a bounded
//! number in flight, classify the answer, and record outcomes in batched transactions.
//! On shutdown they stop claiming and let in-flight sends finish within a bound; a send
//! still running after that keeps its lease and is reaped (as `abandoned`) later.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::breaker::{Admission, BreakerSettings, Breakers, Transition};
use super::policy::{Next, decide};
use super::quota::{Grant, Quotas};
use super::store::{
    ClaimedJob, Completion, DuePosition, FanOutRemainder, Outbox, RecipientOutcome,
};
use crate::channels::{ChannelStatus, Message, SendContext, SendResult, Verdict};
use crate::clock::{SharedClock, UnixMillis, millis};
use crate::rules::{DeliverySettings, Limits};

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|at| at.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Where the workers read the settings and channels in force; implemented over the
/// hot-reloaded rules by the app, and over fixed values by tests.
pub trait DeliverySetup: Send + Sync + 'static {
    fn settings(&self) -> DeliverySettings;
    fn channel(&self, id: &str) -> Option<ChannelStatus>;

    /// Recipients per provider call for this channel.
    fn batch_size(&self, id: &str) -> usize {
        let _ = id;
        1
    }

    /// The largest batch size of any channel, so claims lease enough jobs to fill one.
    fn largest_batch(&self) -> usize {
        1
    }

    /// Send quotas of a channel account.
    fn limits(&self, id: &str) -> Limits {
        let _ = id;
        Limits::default()
    }

    /// Tells the operators (the ops chat) about `text`, once per `key`; `about_channel` is
    /// never used to carry an alert about itself.
    fn alert(&self, key: String, about_channel: String, text: String) {
        let _ = (key, about_channel, text);
    }
}

/// Most outcomes recorded in one transaction.
const RECORD_BATCH: usize = 512;
/// How many jobs per concurrency slot one claim may lease ahead of the sends. Twice 8:
/// with claims of up to 256 jobs the slots ran dry while a claim committed (the outbox
/// benchmark's one-call-per-recipient runs went from 0.46 to 0.50 of the bare loop on
/// SQLite, 0.36 to 0.38 on PostgreSQL). Leased jobs that a crash leaves unsent are not
/// sent twice; they wait for their lease to run out.
const CLAIM_AHEAD: usize = 16;

/// A claim running beside the sends: how many jobs it asked for, where it started, and
/// what it got.
type ClaimTask =
    tokio::task::JoinHandle<(usize, DuePosition, Result<Vec<ClaimedJob>, sqlx::Error>)>;
/// How often a claim starts from the beginning of the due order at least, for jobs that
/// became due behind where the claims were (see `Outbox::claim_after`).
const FULL_CLAIM_EVERY: Duration = Duration::from_secs(1);
/// How often expired leases are looked for at most.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// Most jobs one claim leases, however large the batches.
const MAX_CLAIM: usize = 10_000;
/// Longest a send waits in its worker for its paced slot; a longer wait hands the job
/// back with a new due time instead of holding a concurrency slot.
const MAX_PACING_SLEEP: Duration = Duration::from_secs(10);

/// Outcomes of jobs that were not sent because of the channel's own governance (its
/// circuit, its quota, its pacing): no call was made, so they say nothing about the
/// account's health.
const GOVERNED: [&str; 5] = [
    "circuit_open",
    "quota",
    "paced",
    "not_sent",
    "invalid_payload",
];

/// Claims and sends outbox jobs for one process.
pub struct Dispatcher<S> {
    outbox: Outbox,
    setup: Arc<S>,
    clock: SharedClock,
    worker_id: String,
    wake: Arc<Notify>,
    quotas: Arc<Quotas>,
    breakers: Arc<Breakers>,
}

impl<S: DeliverySetup> Dispatcher<S> {
    /// `worker_id` names this process in leases and the attempts log.
    pub fn new(outbox: Outbox, setup: Arc<S>, clock: SharedClock, worker_id: String) -> Self {
        let zone = super::quota::zone_named(&setup.settings().quota_time_zone);
        Self {
            quotas: Arc::new(Quotas::new(outbox.db().clone(), zone)),
            breakers: Arc::default(),
            outbox,
            setup,
            clock,
            worker_id,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The circuit breakers of this dispatcher's channels, for `/readyz` and metrics.
    pub fn breakers(&self) -> Arc<Breakers> {
        self.breakers.clone()
    }

    /// Shares the circuit breakers with whoever reports on them (the `/quota` command).
    pub fn with_breakers(mut self, breakers: Arc<Breakers>) -> Self {
        self.breakers = breakers;
        self
    }

    /// Shares a wake-up signal with whoever enqueues in this process.
    pub fn woken_by(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// Notifying this makes an idle dispatcher look for jobs at once (after an enqueue
    /// in this process) instead of at the next poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Sends every job that is due now, records the outcomes, and returns how many were
    /// attempted; jobs that become due meanwhile (retries) are left for the next call.
    /// Tests drive delivery with this and a manual clock.
    pub async fn drain_due(&self) -> Result<usize, sqlx::Error> {
        let mut attempted = 0;
        let started_at = self.clock.now_ms();
        loop {
            self.outbox.reap_expired_leases(self.clock.now_ms()).await?;
            let settings = self.setup.settings();
            let limit = i64::try_from(settings.concurrency).unwrap_or(i64::MAX);
            let jobs = self
                .outbox
                .claim(&self.worker_id, started_at, settings.lease, limit)
                .await?;
            if jobs.is_empty() {
                return Ok(attempted);
            }
            attempted += jobs.len();
            let mut waiting: VecDeque<ClaimedJob> = jobs.into();
            let mut groups = Vec::new();
            while let Some(group) = self.next_group(&mut waiting) {
                groups.push(group);
            }
            let sends = groups.into_iter().map(|group| self.send_group(group));
            let records: Vec<Record> = futures::future::join_all(sends)
                .await
                .into_iter()
                .flatten()
                .collect();
            let (completions, remainders) = Record::split(records);
            self.outbox
                .complete_with(&completions, &remainders, self.clock.now_ms())
                .await?;
        }
    }

    /// Runs until `cancel` fires, then stops claiming, hands back the jobs it claimed but
    /// did not start, waits up to `drain` for in-flight sends, and records every outcome
    /// it has.
    ///
    /// Claims run ahead of the sends: up to [`CLAIM_AHEAD`] × `concurrency` jobs are
    /// leased per claim and queued locally, so one claim transaction (one fsync) feeds
    /// many sends. Claiming again starts when fewer than `concurrency` jobs are waiting.
    pub async fn run(self, cancel: CancellationToken, drain: Duration) {
        let this = Arc::new(self);
        let (done_tx, done_rx) = mpsc::channel::<Record>(RECORD_BATCH);
        let recorder = tokio::spawn(record_outcomes(
            this.outbox.clone(),
            this.clock.clone(),
            done_rx,
        ));
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut waiting: VecDeque<ClaimedJob> = VecDeque::new();
        let mut last_reap: Option<Instant> = None;
        let mut failing_since: Option<Instant> = None;
        // After a claim that found the queue drained (or failed), wait for the poll
        // interval, a wake-up or a finished send before asking again.
        let mut queue_drained = false;
        // The claim in progress, if any: it runs beside the sends, so the slots are refilled
        // from `waiting` while the database commits the next lease (one fsync) instead of
        // idling until it returns. Its result is the number asked for and the jobs.
        let mut claiming: Option<ClaimTask> = None;
        // Where the next claim starts (see `Outbox::claim_after`), and when a claim last
        // started from the beginning of the due order.
        let mut claim_from = DuePosition::START;
        let mut last_full_claim = Instant::now();
        while !cancel.is_cancelled() {
            while in_flight.try_join_next().is_some() {}
            let settings = this.setup.settings();
            if last_reap.is_none_or(|at| at.elapsed() >= REAP_EVERY) {
                last_reap = Some(Instant::now());
                if let Err(error) = this.outbox.reap_expired_leases(this.clock.now_ms()).await {
                    tracing::warn!(%error, "cannot reap expired leases");
                }
            }
            let claim_target = (settings.concurrency * CLAIM_AHEAD)
                .max(this.setup.largest_batch() * 2)
                .min(MAX_CLAIM);
            if claiming.is_none() && waiting.len() < claim_target / 2 && !queue_drained {
                let want = claim_target - waiting.len();
                if last_full_claim.elapsed() >= FULL_CLAIM_EVERY {
                    claim_from = DuePosition::START;
                }
                if claim_from == DuePosition::START {
                    last_full_claim = Instant::now();
                }
                let from = claim_from;
                let this = this.clone();
                let lease = settings.lease;
                claiming = Some(tokio::spawn(async move {
                    let limit = i64::try_from(want).unwrap_or(i64::MAX);
                    let claimed = this
                        .outbox
                        .claim_after(&this.worker_id, this.clock.now_ms(), lease, limit, from)
                        .await;
                    (want, from, claimed)
                }));
            }
            while in_flight.len() < settings.concurrency {
                let Some(group) = this.next_group(&mut waiting) else {
                    break;
                };
                let this = this.clone();
                let done_tx = done_tx.clone();
                in_flight.spawn(async move {
                    for record in this.send_group(group).await {
                        // The recorder only stops after every sender is gone, so this cannot
                        // fail while the dispatcher runs.
                        let _ = done_tx.send(record).await;
                    }
                });
            }
            let no_claim_running = claiming.is_none();
            let claim_done = async {
                match claiming.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                claimed = claim_done => {
                    claiming = None;
                    queue_drained = true;
                    match claimed {
                        Ok((want, from, Ok(jobs))) => {
                            if let Some(since) = failing_since.take() {
                                tracing::info!(after = ?since.elapsed(), "claiming jobs works again");
                            }
                            // Short of jobs after a place: look from the start before
                            // calling the queue drained.
                            queue_drained = jobs.len() < want && from == DuePosition::START;
                            claim_from = if jobs.len() < want {
                                DuePosition::START
                            } else {
                                jobs.iter()
                                    .map(ClaimedJob::due_position)
                                    .max()
                                    .unwrap_or(DuePosition::START)
                            };
                            waiting.extend(jobs);
                        }
                        Ok((_, _, Err(error))) => {
                            if failing_since.is_none() {
                                failing_since = Some(Instant::now());
                                tracing::error!(%error, "cannot claim outbox jobs; retrying every poll interval");
                            }
                        }
                        Err(error) => tracing::error!(%error, "the claim task stopped abnormally"),
                    }
                }
                _ = tokio::time::sleep(settings.poll_interval), if queue_drained && no_claim_running => {
                    queue_drained = false;
                }
                _ = this.wake.notified(), if queue_drained => queue_drained = false,
                _ = cancel.cancelled() => break,
            }
        }
        // A claim still running leases jobs this process will not send: wait for it so they
        // are handed back below rather than stuck until their lease runs out.
        if let Some(task) = claiming.take()
            && let Ok((_, _, Ok(jobs))) = task.await
        {
            waiting.extend(jobs);
        }
        let unstarted: Vec<i64> = waiting.iter().map(|job| job.id).collect();
        if let Err(error) = this
            .outbox
            .release(&this.worker_id, &unstarted, this.clock.now_ms())
            .await
        {
            tracing::warn!(%error, jobs = unstarted.len(), "cannot hand back unstarted jobs; they return after their lease");
        }
        let left = in_flight.len();
        if left > 0 {
            tracing::info!(
                in_flight = left,
                ?drain,
                "waiting for in-flight sends to finish"
            );
            let finished = tokio::time::timeout(drain, async {
                while in_flight.join_next().await.is_some() {}
            })
            .await;
            if finished.is_err() {
                tracing::warn!(
                    still_running = in_flight.len(),
                    "in-flight sends did not finish in time; their jobs will be retried after their lease"
                );
                in_flight.abort_all();
            }
        }
        drop(done_tx);
        drop(this);
        if let Err(error) = recorder.await {
            tracing::error!(%error, "the outcome recorder stopped abnormally");
        }
    }

    /// The next jobs to send in one provider call: the first waiting job and the jobs
    /// right behind it with the same channel and content, up to the channel's batch size.
    /// A campaign's jobs are claimed together in id order, so its batches stay contiguous.
    /// A fan-out job is a group of its own: its recipients fill the calls.
    fn next_group(&self, waiting: &mut VecDeque<ClaimedJob>) -> Option<Vec<ClaimedJob>> {
        let first = waiting.pop_front()?;
        let size = if first.recipients.is_some() {
            1
        } else {
            self.setup.batch_size(&first.channel).max(1)
        };
        let mut group = vec![first];
        while group.len() < size {
            let same = waiting.front().is_some_and(|next| {
                next.recipients.is_none()
                    && next.channel == group[0].channel
                    && next.payload == group[0].payload
            });
            if !same {
                break;
            }
            group.extend(waiting.pop_front());
        }
        Some(group)
    }

    /// One attempt at a group of jobs (one provider call, or one per job for channels
    /// without batching); never fails, never panics outward: every job ends in a
    /// completion to record.
    async fn send_group(&self, jobs: Vec<ClaimedJob>) -> Vec<Record> {
        if let [job] = jobs.as_slice()
            && job.recipients.is_some()
        {
            return self.send_fan_out(job).await;
        }
        let Some(first) = jobs.first() else {
            return Vec::new();
        };
        let channel_id = first.channel.clone();
        let settings = self.setup.settings();
        let started_at = self.clock.now_ms();
        let timer = Instant::now();
        let targets: Vec<SendContext<'_>> = jobs.iter().map(target).collect();
        let attempts = self
            .governed_attempt(&first.channel, &first.payload, &targets, &settings)
            .await;
        drop(targets);
        let now = self.clock.now_ms();
        let duration_ms = i64::try_from(timer.elapsed().as_millis()).unwrap_or(i64::MAX);
        let mut rng = rand::rng();
        let mut counts = OutcomeCounts::default();
        let records = jobs
            .into_iter()
            .zip(attempts)
            .map(|(job, (outcome, result))| {
                counts.add(outcome);
                let (next, detail) = next_step(&settings, &result, &job, now, &mut rng);
                // Another channel may reach the person when this one cannot; refused
                // content stops the message, since the route shares its content.
                let move_on = matches!(
                    result.verdict,
                    Verdict::RecipientInvalid | Verdict::AccountDisabled
                ) || next == Next::Dead
                    || outcome == "circuit_open";
                Record::Job(Completion {
                    job_id: job.id,
                    attempt: job.attempt,
                    worker: self.worker_id.clone(),
                    started_at,
                    duration_ms,
                    outcome,
                    status: result.status.map(i64::from),
                    detail,
                    next,
                    provider_ref: result.provider_ref,
                    route: job.route,
                    move_on,
                })
            })
            .collect();
        counts.report(&channel_id);
        records
    }

    /// One attempt at a fan-out job: its recipients in calls of the channel's batch size,
    /// each under the channel's governance. When the calls went the same way for everyone
    /// without a delivery (the provider was down, the circuit open), the job itself retries
    /// or ends; otherwise it is done and each recipient not delivered carries on as a job
    /// of its own.
    async fn send_fan_out(&self, job: &ClaimedJob) -> Vec<Record> {
        let settings = self.setup.settings();
        let started_at = self.clock.now_ms();
        let timer = Instant::now();
        let recipients: Vec<String> = match job.recipients.as_deref().map(serde_json::from_str) {
            Some(Ok(recipients)) => recipients,
            _ => Vec::new(),
        };
        let finish =
            |outcome: &'static str, detail: String, next: Next, provider_ref: Option<String>| {
                Record::Job(Completion {
                    job_id: job.id,
                    attempt: job.attempt,
                    worker: self.worker_id.clone(),
                    started_at,
                    duration_ms: i64::try_from(timer.elapsed().as_millis()).unwrap_or(i64::MAX),
                    outcome,
                    status: None,
                    detail,
                    next,
                    provider_ref,
                    route: None,
                    move_on: false,
                })
            };
        if recipients.is_empty() {
            let detail = "the stored recipient list of this fan-out job is not a list of addresses";
            return vec![finish(
                "invalid_payload",
                detail.to_string(),
                Next::Failed,
                None,
            )];
        }
        let keys: Vec<String> = recipients
            .iter()
            .map(|recipient| format!("{}/{recipient}", job.idempotency_key))
            .collect();
        let targets: Vec<SendContext<'_>> = recipients
            .iter()
            .zip(&keys)
            .map(|(recipient, key)| SendContext {
                job_id: job.id,
                idempotency_key: key,
                attempt: job.attempt,
                recipient,
            })
            .collect();
        let size = self.setup.batch_size(&job.channel).max(1);
        let mut attempts = Vec::with_capacity(targets.len());
        for call in targets.chunks(size) {
            let answers = self
                .governed_attempt(&job.channel, &job.payload, call, &settings)
                .await;
            attempts.extend(answers);
        }
        drop(targets);
        let now = self.clock.now_ms();
        let mut rng = rand::rng();
        let mut counts = OutcomeCounts::default();
        let mut delivered = 0usize;
        let mut provider_ref = None;
        let mut undelivered = Vec::new();
        for (recipient, (outcome, result)) in recipients.into_iter().zip(attempts) {
            counts.add(outcome);
            if result.verdict == Verdict::Delivered {
                delivered += 1;
                // One reference per call; a job of several calls keeps the first.
                provider_ref = provider_ref.or(result.provider_ref);
                continue;
            }
            let (next, detail) = next_step(&settings, &result, job, now, &mut rng);
            undelivered.push(RecipientOutcome {
                recipient,
                outcome,
                status: result.status.map(i64::from),
                detail,
                next,
            });
        }
        counts.report(&job.channel);
        let total = delivered + undelivered.len();
        if delivered == 0
            && let Some(first) = undelivered.first()
            && undelivered
                .iter()
                .all(|other| other.outcome == first.outcome && same_next(&other.next, &first.next))
        {
            let detail = format!("{} (all {total} recipients)", first.detail);
            let mut record = finish(first.outcome, detail, first.next.clone(), None);
            if let Record::Job(completion) = &mut record {
                completion.status = first.status;
            }
            return vec![record];
        }
        let outcome = if undelivered.is_empty() {
            "delivered"
        } else {
            "partial"
        };
        let detail = format!(
            "delivered to {delivered} of {total} recipients{}",
            if undelivered.is_empty() {
                String::new()
            } else {
                format!(
                    "; the other {} carry on as jobs of their own",
                    undelivered.len()
                )
            }
        );
        let mut records = vec![finish(outcome, detail, Next::Sent, provider_ref)];
        if !undelivered.is_empty() {
            records.push(Record::Split(FanOutRemainder {
                idempotency_key: job.idempotency_key.clone(),
                channel: job.channel.clone(),
                payload: job.payload.clone(),
                expires_at: job.expires_at,
                worker: self.worker_id.clone(),
                started_at,
                duration_ms: i64::try_from(timer.elapsed().as_millis()).unwrap_or(i64::MAX),
                recipients: undelivered,
            }));
        }
        records
    }

    /// Sends `jobs` (which share channel and content) under the channel's governance: no
    /// call while its circuit is open (the jobs move on along their routes, or wait), a
    /// paced start within the minute, and a quota reserved in the database for every
    /// recipient before the call; what the quota cannot take waits for its window. One
    /// outcome per job, in order.
    async fn governed_attempt(
        &self,
        channel_id: &str,
        payload: &str,
        jobs: &[SendContext<'_>],
        settings: &DeliverySettings,
    ) -> Vec<(&'static str, SendResult)> {
        if jobs.is_empty() {
            return Vec::new();
        }
        let breaker = BreakerSettings {
            failure_threshold: settings.circuit.failures,
            cooldown: settings.circuit.cooldown,
            disabled_cooldown: settings.circuit.disabled_cooldown,
        };
        let now = self.clock.now_ms();
        let held = |outcome: &'static str, wait_ms: i64, detail: String| {
            let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
            (
                outcome,
                SendResult::new(Verdict::RateLimited { wait }, None, detail),
            )
        };
        if let Admission::Open { until } = self.breakers.admit(channel_id, &breaker, now) {
            let detail = format!(
                "the circuit of channel `{channel_id}` is open until {}; no call was made",
                rfc3339(until)
            );
            return jobs
                .iter()
                .map(|_| held("circuit_open", until - now, detail.clone()))
                .collect();
        }
        let limits = self.setup.limits(channel_id);
        if limits.per_minute.is_some() {
            let sends = u32::try_from(jobs.len()).unwrap_or(u32::MAX);
            let longest =
                MAX_PACING_SLEEP.min(settings.lease.saturating_sub(settings.http_timeout) / 2);
            let wait = self
                .quotas
                .pace_batch(channel_id, &limits, sends, now, longest);
            if wait > longest {
                let detail = format!(
                    "paced: channel `{channel_id}` sends at most {} a minute, spread evenly",
                    limits.per_minute.unwrap_or_default()
                );
                let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                return jobs
                    .iter()
                    .map(|_| held("paced", wait_ms, detail.clone()))
                    .collect();
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        let grants = if limits.is_unlimited() {
            vec![Grant::Granted; jobs.len()]
        } else {
            let recipients: Vec<&str> = jobs.iter().map(|job| job.recipient).collect();
            match self
                .quotas
                .reserve(channel_id, &limits, &recipients, self.clock.now_ms())
                .await
            {
                Ok(grants) => grants,
                Err(error) => {
                    tracing::warn!(channel = %channel_id, %error, "cannot reserve quota; the sends wait for a retry");
                    let result = SendResult::new(
                        Verdict::Retryable { after: None },
                        None,
                        format!("cannot reserve quota: {error}"),
                    );
                    return jobs.iter().map(|_| ("not_sent", result.clone())).collect();
                }
            }
        };
        let granted: Vec<SendContext<'_>> = jobs
            .iter()
            .zip(&grants)
            .filter(|(_, grant)| **grant == Grant::Granted)
            .map(|(job, _)| job.clone())
            .collect();
        let mut sent = self
            .attempt(channel_id, payload, &granted, settings)
            .await
            .into_iter();
        let outcomes: Vec<(&'static str, SendResult)> = grants
            .iter()
            .map(|grant| match grant {
                Grant::Granted => sent.next().unwrap_or_else(|| {
                    (
                        "adapter_error",
                        SendResult::new(Verdict::Retryable { after: None }, None, "no result"),
                    )
                }),
                Grant::Wait { until, .. } => held(
                    "quota",
                    until - self.clock.now_ms(),
                    format!(
                        "{}; waiting for the window that starts at {}",
                        grant.reason(&limits).unwrap_or_default(),
                        rfc3339(*until)
                    ),
                ),
            })
            .collect();
        self.record_health(channel_id, &breaker, &outcomes);
        outcomes
    }

    /// Feeds the answer of one provider call to the channel's breaker and alerts the ops
    /// chat when the circuit opens or closes.
    fn record_health(
        &self,
        channel_id: &str,
        breaker: &BreakerSettings,
        outcomes: &[(&'static str, SendResult)],
    ) {
        let called: Vec<&SendResult> = outcomes
            .iter()
            .filter(|(outcome, _)| !GOVERNED.contains(outcome))
            .map(|(_, result)| result)
            .collect();
        // One call, one verdict for the account: any delivery shows it works.
        let verdict = called
            .iter()
            .find(|result| result.verdict == Verdict::Delivered)
            .or_else(|| called.first())
            .map(|result| result.verdict.clone());
        let Some(verdict) = verdict else {
            return;
        };
        let now = self.clock.now_ms();
        let Some(transition) = self.breakers.record(channel_id, breaker, &verdict, now) else {
            return;
        };
        self.breakers.report();
        let (key, text) = match transition {
            Transition::Opened { reason, until } => {
                tracing::warn!(channel = %channel_id, %reason, "circuit opened; no calls until {}", rfc3339(until));
                (
                    format!("circuit-open:{channel_id}:{now}"),
                    format!(
                        "channel `{channel_id}` circuit OPEN / 渠道熔断: {reason}. No calls until {}; routed messages move on to their next channel.",
                        rfc3339(until)
                    ),
                )
            }
            Transition::Closed => {
                tracing::info!(channel = %channel_id, "circuit closed; the channel works again");
                (
                    format!("circuit-closed:{channel_id}:{now}"),
                    format!("channel `{channel_id}` works again, circuit closed / 渠道已恢复"),
                )
            }
        };
        self.setup.alert(key, channel_id.to_string(), text);
    }

    /// Calls the channel for `jobs` (which share channel and content) and returns one
    /// outcome per job, in order.
    async fn attempt(
        &self,
        channel_id: &str,
        payload: &str,
        jobs: &[SendContext<'_>],
        settings: &DeliverySettings,
    ) -> Vec<(&'static str, SendResult)> {
        let Some(first) = jobs.first() else {
            return Vec::new();
        };
        let every = |outcome: &'static str, result: SendResult| {
            jobs.iter()
                .map(|_| (outcome, result.clone()))
                .collect::<Vec<_>>()
        };
        let not_sent = |detail: String| {
            every(
                "not_sent",
                SendResult::new(Verdict::Retryable { after: None }, None, detail),
            )
        };
        let channel = match self.setup.channel(channel_id) {
            Some(ChannelStatus::Ready(channel)) => channel,
            Some(ChannelStatus::Disabled { reason }) => {
                return not_sent(format!("channel `{channel_id}` is disabled: {reason}"));
            }
            None => {
                return not_sent(format!(
                    "channel `{channel_id}` is not in the rules; add it or the job dies at its maximum age"
                ));
            }
        };
        let message: Message = match serde_json::from_str(payload) {
            Ok(message) => message,
            Err(error) => {
                return every(
                    "invalid_payload",
                    SendResult::new(
                        Verdict::ContentBlocked,
                        None,
                        format!("the stored message is not valid: {error}"),
                    ),
                );
            }
        };
        let contexts = jobs;
        // Adapters bound their own calls; this is the backstop that keeps a job from
        // outliving its lease if one does not.
        let bound = settings.http_timeout + Duration::from_secs(5);
        let send = async {
            match contexts {
                [one] => vec![channel.send(one, &message).await],
                many => channel.send_batch(many, &message).await,
            }
        };
        match tokio::time::timeout(bound, AssertUnwindSafe(send).catch_unwind()).await {
            Ok(Ok(results)) if results.len() == jobs.len() => results
                .into_iter()
                .map(|result| (result.verdict.as_str(), result))
                .collect(),
            Ok(Ok(results)) => {
                tracing::error!(channel = %channel_id, expected = jobs.len(), got = results.len(), "channel adapter returned the wrong number of results");
                every(
                    "adapter_error",
                    SendResult::new(
                        Verdict::Retryable { after: None },
                        None,
                        format!(
                            "the channel adapter answered {} results for {} recipients; this is a bug in qunfa",
                            results.len(),
                            jobs.len()
                        ),
                    ),
                )
            }
            Ok(Err(_panic)) => {
                tracing::error!(channel = %channel_id, job.id = first.job_id, "channel adapter panicked");
                every(
                    "adapter_panic",
                    SendResult::new(
                        Verdict::Retryable { after: None },
                        None,
                        "the channel adapter panicked; this is a bug in qunfa",
                    ),
                )
            }
            Err(_) => every(
                "timeout",
                SendResult::new(
                    Verdict::Retryable { after: None },
                    None,
                    format!("no answer within {}ms", millis(bound)),
                ),
            ),
        }
    }
}

/// Writes outcomes in batches until every sender is gone. A failed write is retried, a
/// bounded number of times once shutting down, so a dead database cannot hang exit; what
/// is not recorded is reaped and retried after its lease.
async fn record_outcomes(outbox: Outbox, clock: SharedClock, mut done: mpsc::Receiver<Record>) {
    let mut records = Vec::with_capacity(RECORD_BATCH);
    while done.recv_many(&mut records, RECORD_BATCH).await > 0 {
        let (batch, remainders) = Record::split(std::mem::take(&mut records));
        let mut tries = 0u32;
        while let Err(error) = outbox
            .complete_with(&batch, &remainders, clock.now_ms())
            .await
        {
            tries += 1;
            tracing::error!(%error, outcomes = batch.len(), tries, "cannot record delivery outcomes");
            if done.is_closed() && tries >= 10 {
                tracing::error!(
                    outcomes = batch.len(),
                    "giving up; these jobs will be retried after their lease expires"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(tries.min(10)))).await;
        }
    }
}

/// What a send leaves to record: a job's outcome, or the recipients a fan-out call did
/// not deliver (recorded in the same transaction as the fan-out job's own outcome, which
/// is sent to the recorder right before it).
#[derive(Debug)]
enum Record {
    Job(Completion),
    Split(FanOutRemainder),
}

impl Record {
    fn split(records: Vec<Record>) -> (Vec<Completion>, Vec<FanOutRemainder>) {
        let mut completions = Vec::with_capacity(records.len());
        let mut remainders = Vec::new();
        for record in records {
            match record {
                Record::Job(completion) => completions.push(completion),
                Record::Split(remainder) => remainders.push(remainder),
            }
        }
        (completions, remainders)
    }
}

/// What becomes of a job (or a fan-out's recipient) after this answer, and the detail to
/// record, which says so when the answer ends the job at its maximum age.
fn next_step(
    settings: &DeliverySettings,
    result: &SendResult,
    job: &ClaimedJob,
    now: UnixMillis,
    rng: &mut impl rand::Rng,
) -> (Next, String) {
    let next = decide(
        &settings.retry,
        &result.verdict,
        job.failures,
        now,
        job.expires_at,
        rng,
    );
    let detail = if next == Next::Dead {
        format!(
            "retries exhausted within the maximum age: {}",
            result.detail
        )
    } else {
        result.detail.clone()
    };
    (next, detail)
}

/// A job as the channel sees it.
fn target(job: &ClaimedJob) -> SendContext<'_> {
    SendContext {
        job_id: job.id,
        idempotency_key: &job.idempotency_key,
        attempt: job.attempt,
        recipient: &job.recipient,
    }
}

/// Whether two recipients' next steps are the same but for the jitter of a retry.
fn same_next(a: &Next, b: &Next) -> bool {
    match (a, b) {
        (
            Next::Retry {
                counts_as_failure: a,
                ..
            },
            Next::Retry {
                counts_as_failure: b,
                ..
            },
        ) => a == b,
        _ => a == b,
    }
}

/// Attempts per outcome of one group, counted once per group rather than once per
/// recipient (a metrics lookup per recipient would cost more than recording them).
#[derive(Default)]
struct OutcomeCounts(Vec<(&'static str, u64)>);

impl OutcomeCounts {
    fn add(&mut self, outcome: &'static str) {
        match self.0.iter_mut().find(|(seen, _)| *seen == outcome) {
            Some((_, count)) => *count += 1,
            None => self.0.push((outcome, 1)),
        }
    }

    fn report(&self, channel: &str) {
        for (outcome, count) in &self.0 {
            metrics::counter!(
                "qunfa_delivery_attempts_total",
                "channel" => channel.to_string(),
                "outcome" => *outcome,
            )
            .increment(*count);
        }
    }
}

/// Publishes job counts per state and the queue's lag as gauges, every `every`.
pub async fn report_gauges(
    outbox: Outbox,
    clock: SharedClock,
    cancel: CancellationToken,
    every: Duration,
) {
    loop {
        match outbox.summary(clock.now_ms()).await {
            Ok(summary) => {
                for (state, count) in [
                    ("queued", summary.queued),
                    ("leased", summary.leased),
                    ("sent", summary.sent),
                    ("retry_wait", summary.retry_wait),
                    ("failed", summary.failed),
                    ("dead", summary.dead),
                ] {
                    metrics::gauge!("qunfa_outbox_jobs", "state" => state).set(count as f64);
                }
                metrics::gauge!("qunfa_outbox_lag_seconds").set(summary.lag_ms as f64 / 1000.0);
            }
            Err(error) => tracing::warn!(%error, "cannot read outbox counts for metrics"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = cancel.cancelled() => return,
        }
    }
}
