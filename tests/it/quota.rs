//! Quota counters on SQLite and (when `QUNFA_TEST_POSTGRES_URL` is set) PostgreSQL, each
//! test on a fresh database.

use std::sync::Arc;

use jiff::tz::TimeZone;
use qunfa::db::Db;
use qunfa::db::testing::TestDb;
use qunfa::delivery::quota::{Grant, Quotas, WindowUsage};
use qunfa::rules::Limits;

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

/// Asia/Shanghai (UTC+8 all year), fixed so the tests do not need the host's zoneinfo.
fn shanghai() -> TimeZone {
    TimeZone::fixed(jiff::tz::offset(8))
}

/// A Shanghai wall-clock time as Unix milliseconds.
fn local(date: (i16, i8, i8), time: (i8, i8, i8)) -> i64 {
    jiff::civil::date(date.0, date.1, date.2)
        .at(time.0, time.1, time.2, 0)
        .to_zoned(shanghai())
        .expect("valid instant")
        .timestamp()
        .as_millisecond()
}

fn granted(grants: &[Grant]) -> usize {
    grants.iter().filter(|g| **g == Grant::Granted).count()
}

on_both_backends!(
    a_full_minute_waits_for_the_next_minute,
    |db: Db| async move {
        let quotas = Quotas::new(db, shanghai());
        let limits = Limits {
            per_minute: Some(3),
            ..Limits::default()
        };
        let now = local((2026, 11, 25), (10, 30, 15));
        let next_minute = local((2026, 11, 25), (10, 31, 0));
        let first = quotas
            .reserve("robot", &limits, &["a", "b"], now)
            .await
            .unwrap();
        assert_eq!(first, [Grant::Granted, Grant::Granted]);
        let second = quotas
            .reserve("robot", &limits, &["c", "d", "e"], now + 30_000)
            .await
            .unwrap();
        let wait = Grant::Wait {
            until: next_minute,
            limit: "per_minute",
        };
        assert_eq!(second, [Grant::Granted, wait, wait]);
        assert_eq!(
            quotas
                .reserve("robot", &limits, &["d"], next_minute)
                .await
                .unwrap(),
            [Grant::Granted]
        );
        assert_eq!(
            quotas.reserve("other", &limits, &["d"], now).await.unwrap(),
            [Grant::Granted],
            "each channel account has its own counters"
        );
    }
);

on_both_backends!(
    day_windows_roll_over_at_local_midnight,
    |db: Db| async move {
        let quotas = Quotas::new(db, shanghai());
        let limits = Limits {
            per_day: Some(2),
            ..Limits::default()
        };
        let late = local((2026, 11, 25), (23, 59, 0));
        let midnight = local((2026, 11, 26), (0, 0, 0));
        let grants = quotas
            .reserve("dingtalk", &limits, &["a", "b", "c"], late)
            .await
            .unwrap();
        assert_eq!(
            grants[2],
            Grant::Wait {
                until: midnight,
                limit: "per_day"
            }
        );
        assert_eq!(
            quotas
                .reserve("dingtalk", &limits, &["c"], midnight - 1)
                .await
                .unwrap()[0],
            grants[2]
        );
        assert_eq!(
            quotas
                .reserve("dingtalk", &limits, &["c"], midnight)
                .await
                .unwrap(),
            [Grant::Granted]
        );
    }
);

on_both_backends!(month_windows_span_the_calendar_month, |db: Db| async move {
    let quotas = Quotas::new(db, shanghai());
    let limits = Limits {
        per_month: Some(3),
        ..Limits::default()
    };
    for (day, recipient) in [(1, "a"), (12, "b"), (30, "c")] {
        let now = local((2026, 11, day), (9, 0, 0));
        assert_eq!(
            quotas
                .reserve("wechat", &limits, &[recipient], now)
                .await
                .unwrap(),
            [Grant::Granted]
        );
    }
    let december = local((2026, 12, 1), (0, 0, 0));
    assert_eq!(
        quotas
            .reserve("wechat", &limits, &["d"], december - 1)
            .await
            .unwrap(),
        [Grant::Wait {
            until: december,
            limit: "per_month"
        }]
    );
    assert_eq!(
        quotas
            .reserve("wechat", &limits, &["d"], december)
            .await
            .unwrap(),
        [Grant::Granted]
    );
});

on_both_backends!(
    per_recipient_limits_count_each_recipient,
    |db: Db| async move {
        let quotas = Quotas::new(db, shanghai());
        // The WeChat service account: 4 mass sends a month reach each follower.
        let limits = Limits {
            per_day: Some(100),
            recipient_per_month: Some(2),
            ..Limits::default()
        };
        let now = local((2026, 11, 25), (10, 0, 0));
        let end_of_month = local((2026, 12, 1), (0, 0, 0));
        let wait = Grant::Wait {
            until: end_of_month,
            limit: "recipient_per_month",
        };
        assert_eq!(
            quotas
                .reserve("oa", &limits, &["a", "b", "a"], now)
                .await
                .unwrap(),
            [Grant::Granted; 3]
        );
        assert_eq!(
            quotas
                .reserve("oa", &limits, &["a", "b", "c", "b"], now + 1)
                .await
                .unwrap(),
            [wait, Grant::Granted, Grant::Granted, wait]
        );
        let usage = quotas.usage("oa", &limits, now + 2).await.unwrap();
        assert_eq!(
            usage.windows,
            [WindowUsage {
                limit: "per_day",
                quota: 100,
                used: 5,
                left: 95,
                resets_at: local((2026, 11, 26), (0, 0, 0)),
            }],
            "recipients kept waiting use none of the account's quota"
        );
    }
);

on_both_backends!(usage_reports_every_account_window, |db: Db| async move {
    let quotas = Quotas::new(db, shanghai());
    let limits = Limits {
        per_minute: Some(20),
        per_day: Some(500),
        per_month: Some(10_000),
        ..Limits::default()
    };
    let now = local((2026, 11, 25), (10, 0, 30));
    let before = quotas.usage("robot", &limits, now).await.unwrap();
    assert!(
        before
            .windows
            .iter()
            .all(|w| w.used == 0 && w.left == w.quota)
    );
    quotas
        .reserve("robot", &limits, &["a", "b", "c"], now)
        .await
        .unwrap();
    quotas
        .reserve("robot", &limits, &["d"], now + 60_000)
        .await
        .unwrap();
    let after = quotas.usage("robot", &limits, now + 60_000).await.unwrap();
    let summary: Vec<_> = after
        .windows
        .iter()
        .map(|w| (w.limit, w.used, w.left, w.resets_at))
        .collect();
    assert_eq!(
        summary,
        [
            ("per_minute", 1, 19, local((2026, 11, 25), (10, 2, 0))),
            ("per_day", 4, 496, local((2026, 11, 26), (0, 0, 0))),
            ("per_month", 4, 9_996, local((2026, 12, 1), (0, 0, 0))),
        ]
    );
});

on_both_backends!(counts_survive_reopening_the_database, |db: Db| async move {
    let limits = Limits {
        per_day: Some(2),
        recipient_per_day: Some(1),
        ..Limits::default()
    };
    let now = local((2026, 11, 25), (10, 0, 0));
    let quotas = Quotas::new(db.clone(), shanghai());
    quotas.reserve("robot", &limits, &["a"], now).await.unwrap();
    db.close().await;

    let reopened = Db::open(db.url()).await.expect("reopen the database");
    let quotas = Quotas::new(reopened.clone(), shanghai());
    assert_eq!(
        quotas
            .reserve("robot", &limits, &["a", "b", "c"], now + 1000)
            .await
            .unwrap(),
        [
            Grant::Wait {
                until: local((2026, 11, 26), (0, 0, 0)),
                limit: "recipient_per_day"
            },
            Grant::Granted,
            Grant::Wait {
                until: local((2026, 11, 26), (0, 0, 0)),
                limit: "per_day"
            },
        ]
    );
    reopened.close().await;
});

on_both_backends!(
    concurrent_reservers_never_grant_more_than_the_limit,
    |db: Db| async move {
        // Two instances: separate pools on the same database.
        let second = Db::open(db.url()).await.expect("open a second instance");
        let limits = Limits {
            per_minute: Some(25),
            recipient_per_minute: Some(3),
            ..Limits::default()
        };
        let now = local((2026, 11, 25), (10, 0, 0));
        let recipients: Vec<String> = (0..10).map(|i| format!("user-{i}")).collect();
        let recipients = Arc::new(recipients);
        let mut tasks = Vec::new();
        for (instance, pool) in [db.clone(), second.clone()].into_iter().enumerate() {
            let recipients = Arc::clone(&recipients);
            tasks.push(tokio::spawn(async move {
                let quotas = Quotas::new(pool, shanghai());
                let mut granted_to = vec![0usize; recipients.len()];
                for call in 0..40 {
                    // Overlapping batches, in a different order on each instance.
                    let picks: Vec<usize> = (0..3)
                        .map(|k| (call * 3 + k + instance * 5) % recipients.len())
                        .collect();
                    let batch: Vec<&str> = picks.iter().map(|i| recipients[*i].as_str()).collect();
                    let grants = quotas
                        .reserve("app", &limits, &batch, now + call as i64)
                        .await
                        .expect("reserve");
                    for (pick, grant) in picks.iter().zip(grants) {
                        if grant == Grant::Granted {
                            granted_to[*pick] += 1;
                        }
                    }
                }
                granted_to
            }));
        }
        let mut per_recipient = vec![0usize; recipients.len()];
        for task in tasks {
            for (total, granted) in per_recipient.iter_mut().zip(task.await.unwrap()) {
                *total += granted;
            }
        }
        assert!(per_recipient.iter().all(|n| *n <= 3), "{per_recipient:?}");
        let total: usize = per_recipient.iter().sum();
        assert_eq!(
            total, 25,
            "demand exceeds the limit, so exactly the limit is granted"
        );
        let usage = Quotas::new(db.clone(), shanghai())
            .usage("app", &limits, now)
            .await
            .unwrap();
        assert_eq!(usage.windows[0].used, 25);
        second.close().await;
    }
);

on_both_backends!(
    purge_deletes_only_windows_ended_a_month_ago,
    |db: Db| async move {
        let quotas = Quotas::new(db, shanghai());
        let limits = Limits {
            per_minute: Some(10),
            per_day: Some(10),
            per_month: Some(10),
            ..Limits::default()
        };
        let october = local((2026, 10, 10), (12, 0, 0));
        quotas
            .reserve("robot", &limits, &["a"], october)
            .await
            .unwrap();
        // On 9 November every October window ended less than a month ago.
        let early = local((2026, 11, 9), (12, 0, 0));
        assert_eq!(quotas.purge_before(early).await.unwrap(), 0);
        // On 20 November the minute and the day of 10 October did; the month of October
        // only does on 1 December.
        let later = local((2026, 11, 20), (12, 0, 0));
        assert_eq!(quotas.purge_before(later).await.unwrap(), 2);
        let usage = quotas.usage("robot", &limits, october).await.unwrap();
        let used: Vec<u32> = usage.windows.iter().map(|w| w.used).collect();
        assert_eq!(used, [0, 0, 1], "the October month counter is kept");
        assert_eq!(
            quotas
                .purge_before(local((2026, 12, 1), (0, 0, 1)))
                .await
                .unwrap(),
            1
        );
    }
);

#[tokio::test]
async fn unlimited_channels_never_touch_the_database() {
    let test_db = TestDb::sqlite().await.expect("create SQLite test database");
    let quotas = Quotas::new(test_db.db.clone(), shanghai());
    test_db.db.close().await;
    let grants = quotas
        .reserve("log", &Limits::default(), &["a", "b"], 0)
        .await
        .expect("no database call for unlimited limits");
    assert_eq!(granted(&grants), 2);
    assert!(
        quotas
            .reserve(
                "log",
                &Limits {
                    per_day: Some(1),
                    ..Limits::default()
                },
                &["a"],
                0
            )
            .await
            .is_err(),
        "a limited channel does need the (closed) database"
    );
    test_db.cleanup().await.expect("remove test database");
}
