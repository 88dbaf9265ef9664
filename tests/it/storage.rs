//! The storage suite, run against SQLite and (when `QUNFA_TEST_POSTGRES_URL` is set)
//! PostgreSQL, each test on a fresh database: the two backends must behave the same.

use std::collections::HashSet;
use std::time::Duration;

use qunfa::db::Db;
use qunfa::db::testing::TestDb;
use qunfa::delivery::{Completion, DuePosition, JobState, NewJob, Next, Outbox, Requeue};

/// Runs one async test body on both backends.
macro_rules! on_both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let test_db = TestDb::sqlite().await.expect("create SQLite test database");
                ($body)(test_db.db.clone()).await;
                test_db.cleanup().await.expect("remove test database");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(test_db) = TestDb::postgres()
                    .await
                    .expect("create PostgreSQL test database")
                else {
                    eprintln!("QUNFA_TEST_POSTGRES_URL is not set: PostgreSQL half not run");
                    return;
                };
                ($body)(test_db.db.clone()).await;
                test_db.cleanup().await.expect("drop test database");
            }
        }
    };
}

const DAY: Duration = Duration::from_secs(86_400);
const LEASE: Duration = Duration::from_secs(30);

fn job(key: &str) -> NewJob<'_> {
    NewJob {
        idempotency_key: key,
        channel: "log",
        recipient: "zhangsan",
        payload: r#"{"text":"hi"}"#,
    }
}

async fn enqueue_n(outbox: &Outbox, n: usize, now: i64) -> Vec<i64> {
    let keys: Vec<String> = (0..n).map(|i| format!("k-{i}")).collect();
    let jobs: Vec<NewJob<'_>> = keys.iter().map(|k| job(k)).collect();
    outbox
        .enqueue_all(&jobs, now, DAY)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

fn done(job_id: i64, attempt: i64, next: Next) -> Completion {
    Completion {
        job_id,
        attempt,
        worker: "w1".into(),
        started_at: 1_000,
        duration_ms: 5,
        outcome: match next {
            Next::Sent => "delivered",
            _ => "retryable",
        },
        status: Some(200),
        detail: "provider said so".into(),
        next,
        provider_ref: None,
        route: None,
        move_on: false,
    }
}

on_both_backends!(migrations_are_idempotent, |db: Db| async move {
    let report = db.migrate().await.unwrap();
    assert_eq!(report.applied, 0);
    assert!(report.version > 0);
});

on_both_backends!(a_newer_schema_is_refused, |db: Db| async move {
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'from the future', TRUE, $1, 0)",
    )
    .bind(vec![0u8; 48])
    .execute(db.writer())
    .await
    .unwrap();
    let error = db.migrate().await.unwrap_err().to_string();
    assert!(error.contains("newer qunfa"), "{error}");
});

on_both_backends!(the_same_key_twice_is_one_job, |db: Db| async move {
    let outbox = Outbox::new(db.clone());
    let first = outbox.enqueue_all(&[job("same")], 0, DAY).await.unwrap()[0];
    let second = outbox.enqueue_all(&[job("same")], 5, DAY).await.unwrap()[0];
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.id, second.id);
    assert_eq!(outbox.summary(10).await.unwrap().queued, 1);
});

on_both_backends!(
    concurrent_enqueues_of_one_key_make_one_job,
    |db: Db| async move {
        let outbox = Outbox::new(db.clone());
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let outbox = outbox.clone();
                tokio::spawn(async move {
                    let keys = ["a", "b", "c", "d"];
                    let jobs: Vec<NewJob<'_>> = keys.iter().map(|key| job(key)).collect();
                    outbox.enqueue_all(&jobs, 0, DAY).await.unwrap()
                })
            })
            .collect();
        let mut created = 0;
        let mut ids = HashSet::new();
        for racer in racers {
            for enqueued in racer.await.unwrap() {
                created += usize::from(enqueued.created);
                ids.insert(enqueued.id);
            }
        }
        assert_eq!(created, 4, "each key created once");
        assert_eq!(ids.len(), 4, "every racer answered the same four ids");
        assert_eq!(outbox.summary(0).await.unwrap().queued, 4);
    }
);

on_both_backends!(
    an_enqueue_rolled_back_with_its_transaction_leaves_nothing,
    |db: Db| async move {
        let outbox = Outbox::new(db.clone());
        let mut tx = db.writer().begin().await.unwrap();
        Outbox::enqueue(&mut tx, &job("k"), 0, DAY).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(outbox.summary(0).await.unwrap().queued, 0);
    }
);

on_both_backends!(
    claims_take_only_due_jobs_and_never_the_same_twice,
    |db: Db| async move {
        let outbox = Outbox::new(db.clone());
        enqueue_n(&outbox, 5, 1_000).await;
        outbox
            .enqueue_all(&[job("later")], 50_000, DAY)
            .await
            .unwrap();
        let first = outbox.claim("w1", 2_000, LEASE, 3).await.unwrap();
        let second = outbox.claim("w2", 2_000, LEASE, 10).await.unwrap();
        assert_eq!(first.len(), 3);
        assert_eq!(second.len(), 2, "the future job is not due");
        let ids: HashSet<i64> = first.iter().chain(&second).map(|j| j.id).collect();
        assert_eq!(ids.len(), 5);
        assert!(first.iter().all(|j| j.attempt == 1));
        let summary = outbox.summary(2_000).await.unwrap();
        assert_eq!((summary.leased, summary.queued), (5, 1));
    }
);

on_both_backends!(
    a_claim_after_a_place_skips_what_is_due_before_it,
    |db: Db| async move {
        let outbox = Outbox::new(db.clone());
        let early = enqueue_n(&outbox, 3, 1_000).await;
        let first = outbox.claim("w1", 2_000, LEASE, 2).await.unwrap();
        let place = first.iter().map(|j| j.due_position()).max().unwrap();
        assert_eq!(place.id, early[1]);
        // Handed back: due again, but behind the place the claims have reached.
        outbox.release("w1", &[early[0]], 2_000).await.unwrap();
        let after = outbox
            .claim_after("w1", 2_000, LEASE, 10, place)
            .await
            .unwrap();
        assert_eq!(after.iter().map(|j| j.id).collect::<Vec<_>>(), [early[2]]);
        assert_eq!(after[0].run_at, 1_000);
        let from_start = outbox
            .claim_after("w1", 2_000, LEASE, 10, DuePosition::START)
            .await
            .unwrap();
        assert_eq!(
            from_start.iter().map(|j| j.id).collect::<Vec<_>>(),
            [early[0]]
        );
    }
);

on_both_backends!(concurrent_claimers_get_disjoint_jobs, |db: Db| async move {
    let outbox = Outbox::new(db.clone());
    enqueue_n(&outbox, 200, 0).await;
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let outbox = outbox.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = outbox
                    .claim(&format!("w{worker}"), 1, LEASE, 7)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 200);
    assert_eq!(unique.len(), 200);
});

on_both_backends!(
    outcomes_move_jobs_and_fill_the_attempts_log,
    |db: Db| async move {
        let outbox = Outbox::new(db.clone());
        let ids = enqueue_n(&outbox, 4, 0).await;
        let claimed = outbox.claim("w1", 1, LEASE, 10).await.unwrap();
        assert_eq!(claimed.len(), 4);
        let batch = vec![
            done(ids[0], 1, Next::Sent),
            done(
                ids[1],
                1,
                Next::Retry {
                    run_at: 60_000,
                    counts_as_failure: true,
                },
            ),
            done(ids[2], 1, Next::Failed),
            done(ids[3], 1, Next::Dead),
        ];
        outbox.complete(&batch, 2).await.unwrap();
        let state = |i: usize| {
            let outbox = outbox.clone();
            let id = ids[i];
            async move { outbox.job(id).await.unwrap().unwrap() }
        };
        assert_eq!(state(0).await.0.state, JobState::Sent);
        let (retry, attempts) = state(1).await;
        assert_eq!(
            (retry.state, retry.failures, retry.run_at),
            (JobState::RetryWait, 1, 60_000)
        );
        assert_eq!(retry.last_error.as_deref(), Some("provider said so"));
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].status, Some(200));
        assert_eq!(state(2).await.0.state, JobState::Failed);
        assert_eq!(state(3).await.0.state, JobState::Dead);
        // Not due before its retry time, due after.
        assert!(
            outbox
                .claim("w1", 59_999, LEASE, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let again = outbox.claim("w1", 60_000, LEASE, 10).await.unwrap();
        assert_eq!((again.len(), again[0].attempt), (1, 2));
    }
);

on_both_backends!(
    a_stale_outcome_cannot_overwrite_a_later_claim,
    |db: Db| async move {
        let outbox = Outbox::new(db.clone());
        let ids = enqueue_n(&outbox, 1, 0).await;
        outbox.claim("slow", 0, LEASE, 1).await.unwrap();
        // The slow worker's lease runs out and another worker takes the job.
        assert_eq!(outbox.reap_expired_leases(30_000).await.unwrap(), 1);
        let retaken = outbox.claim("fast", 30_000, LEASE, 1).await.unwrap();
        assert_eq!(retaken[0].attempt, 2);
        outbox
            .complete(&[done(ids[0], 1, Next::Failed)], 30_001)
            .await
            .unwrap();
        assert_eq!(
            outbox.job(ids[0]).await.unwrap().unwrap().0.state,
            JobState::Leased
        );
        outbox
            .complete(&[done(ids[0], 2, Next::Sent)], 30_002)
            .await
            .unwrap();
        let (row, attempts) = outbox.job(ids[0]).await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Sent);
        let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["abandoned", "retryable", "delivered"]);
        assert_eq!(attempts[0].worker, "slow");
    }
);

on_both_backends!(
    expired_leases_past_max_age_die_instead_of_looping,
    |db: Db| async move {
        let outbox = Outbox::new(db.clone());
        let ids = outbox
            .enqueue_all(&[job("old")], 0, Duration::from_secs(10))
            .await
            .unwrap();
        outbox.claim("w1", 0, LEASE, 1).await.unwrap();
        outbox.reap_expired_leases(40_000).await.unwrap();
        let (row, _) = outbox.job(ids[0].id).await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Dead);
        assert!(row.last_error.unwrap().contains("maximum age"));
    }
);

on_both_backends!(
    operators_list_inspect_and_requeue_jobs,
    |db: Db| async move {
        let outbox = Outbox::new(db.clone());
        let ids = enqueue_n(&outbox, 5, 0).await;
        outbox.claim("w1", 0, LEASE, 2).await.unwrap();
        outbox
            .complete(
                &[done(ids[0], 1, Next::Dead), done(ids[1], 1, Next::Sent)],
                1,
            )
            .await
            .unwrap();
        let dead = outbox
            .list_jobs(Some(JobState::Dead), None, 50)
            .await
            .unwrap();
        assert_eq!(dead.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[0]]);
        let page1 = outbox.list_jobs(None, None, 2).await.unwrap();
        let page2 = outbox.list_jobs(None, Some(page1[1].id), 10).await.unwrap();
        assert_eq!(page1.len() + page2.len(), 5);
        assert_eq!(
            outbox.requeue(ids[1], 5, DAY).await.unwrap(),
            Requeue::NotFinal(JobState::Sent)
        );
        assert_eq!(
            outbox.requeue(999_999, 5, DAY).await.unwrap(),
            Requeue::NotFound
        );
        assert_eq!(
            outbox.requeue(ids[0], 5, DAY).await.unwrap(),
            Requeue::Requeued
        );
        let summary = outbox.summary(1_005).await.unwrap();
        assert_eq!((summary.queued, summary.sent, summary.dead), (4, 1, 0));
        assert_eq!(summary.lag_ms, 1_005);
        let json = serde_json::to_value(&page1[0]).unwrap();
        assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(json["state"], "dead");
    }
);

on_both_backends!(
    grouped_inserts_report_each_row_after_one_commit,
    |db: Db| async move {
        let event = |id: String| qunfa::db::Insert {
            table: "inbound_events",
            columns: &["account", "event_id", "received_at"],
            unique: &["account", "event_id"],
            values: vec!["acct".into(), id.as_str().into(), 1i64.into()],
        };
        let writes: Vec<_> = (0..300)
            .map(|i| {
                let db = db.clone();
                let insert = event(format!("e{}", i % 120));
                tokio::spawn(async move { db.grouped().insert(insert).await })
            })
            .collect();
        let mut inserted = 0;
        for write in writes {
            inserted += usize::from(write.await.unwrap().unwrap());
        }
        assert_eq!(inserted, 120, "each key is new exactly once");
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM inbound_events")
            .fetch_one(db.reader())
            .await
            .unwrap();
        assert_eq!(rows, 120);
    }
);
